//! Machine limits: read and copy bandwidth over arrays far larger than the last-level cache,
//! and the f32 GEMM rate (the `gemm` crate). Every result is the best of several passes, as
//! STREAM reports, because a ceiling is what the machine can do, not what it did on average
//! while others shared it.

use crate::env;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Errors reading, writing or measuring a calibration.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("cannot read calibration {path}: {cause} (run `kvbench calibrate` to create it)")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "calibration {path} is not valid ({cause}); delete it and run `kvbench calibrate` again"
    )]
    Parse {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("cannot write calibration {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot start a pool of {threads} threads: {why}")]
    Pool { threads: usize, why: String },
    #[error("a {what} of {value} bytes is too small: {why}")]
    TooSmall {
        what: &'static str,
        value: u64,
        why: &'static str,
    },
}

/// This machine's measured ceilings, as stored in `results/calibration-<host>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub host: String,
    pub cpu: String,
    /// SIMD features the kernels can use, detected at run time (e.g. avx2, fma, f16c).
    pub cpu_flags: Vec<String>,
    pub cores: u32,
    /// Threads used for the all-thread figures.
    pub threads: u32,
    pub timestamp: String,
    pub kvbench_version: String,
    /// `full` (kvbench calibrate) or `short` (measured by `run` when no file was found).
    pub method: String,
    /// Largest cache level found in sysfs, 0 if unknown.
    pub llc_bytes: u64,
    /// Size of each streamed array.
    pub buffer_bytes: u64,
    /// Read bandwidth, one thread (GB/s, 1e9 bytes).
    pub read_gbps_1t: f64,
    /// Read bandwidth, all threads (GB/s).
    pub read_gbps: f64,
    /// Copy bandwidth, all threads, bytes read + bytes written per second (GB/s, STREAM's count).
    pub copy_gbps: f64,
    /// f32 GEMM rate, one thread (GFLOP/s, 2·m·n·k per product).
    pub gemm_gflops_1t: f64,
    /// f32 GEMM rate, all threads (GFLOP/s).
    pub gemm_gflops: f64,
    /// Square GEMM size used.
    pub gemm_n: u32,
    /// The GPU's limits, when calibrated with `--backend cuda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuLimits>,
}

/// Measured limits of GPU 0 (`kvbench calibrate --backend cuda`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuLimits {
    /// The GPU as the `gpu` CSV column names it.
    pub device: String,
    /// Device-to-device copy, bytes read + written per second (GB/s).
    pub copy_gbps: f64,
    /// cuBLAS SGEMM rate (GFLOP/s).
    pub gemm_f32_gflops: f64,
    /// cuBLAS f16 GEMM rate with f32 accumulation (GFLOP/s).
    pub gemm_f16_gflops: f64,
}

/// How long and how large to measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrateOptions {
    /// Bytes per streamed array; 0 = automatic (16 × LLC, at least 256 MiB).
    pub buffer_bytes: u64,
    /// Timed passes per figure (best kept).
    pub passes: u32,
    /// Square GEMM size.
    pub gemm_n: u32,
    pub threads: usize,
    /// Recorded in the file: `full` or `short`.
    pub short: bool,
}

impl CalibrateOptions {
    /// What `kvbench calibrate` does by default.
    pub fn full(threads: usize) -> Self {
        CalibrateOptions {
            buffer_bytes: 0,
            passes: 5,
            gemm_n: 1536,
            threads,
            short: false,
        }
    }

    /// A quick measurement (about a second) for a run that found no calibration file.
    pub fn short(threads: usize) -> Self {
        CalibrateOptions {
            buffer_bytes: 128 << 20,
            passes: 2,
            gemm_n: 768,
            threads,
            short: true,
        }
    }
}

impl Calibration {
    /// Read a calibration file.
    pub fn load(path: &Path) -> Result<Calibration, CalibrateError> {
        let text = std::fs::read_to_string(path).map_err(|cause| CalibrateError::Read {
            path: path.into(),
            cause,
        })?;
        serde_json::from_str(&text).map_err(|cause| CalibrateError::Parse {
            path: path.into(),
            cause,
        })
    }

    /// Write it as pretty JSON, creating the folder.
    pub fn save(&self, path: &Path) -> Result<(), CalibrateError> {
        let write = |cause| CalibrateError::Write {
            path: path.into(),
            cause,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let text = serde_json::to_string_pretty(self).expect("a calibration always serializes");
        std::fs::write(path, text + "\n").map_err(write)
    }

    /// Read bandwidth a run with `threads` threads can expect.
    pub fn read_limit_gbps(&self, threads: u32) -> f64 {
        if threads <= 1 {
            self.read_gbps_1t
        } else {
            self.read_gbps
        }
    }

    /// (bandwidth GB/s, GEMM GFLOP/s) a workload on `backend` with `threads` CPU threads is
    /// measured against; `None` when this calibration does not cover that backend.
    pub fn limits_for(
        &self,
        backend: kvbench_workloads::Backend,
        threads: u32,
    ) -> Option<(f64, f64)> {
        match backend {
            kvbench_workloads::Backend::Cpu => Some((
                self.read_limit_gbps(threads),
                self.gemm_limit_gflops(threads),
            )),
            kvbench_workloads::Backend::Cuda => {
                self.gpu.as_ref().map(|g| (g.copy_gbps, g.gemm_f32_gflops))
            }
        }
    }

    /// GEMM rate a run with `threads` threads can expect.
    pub fn gemm_limit_gflops(&self, threads: u32) -> f64 {
        if threads <= 1 {
            self.gemm_gflops_1t
        } else {
            self.gemm_gflops
        }
    }
}

/// Where `kvbench calibrate` stores this host's calibration by default.
pub fn default_path() -> PathBuf {
    PathBuf::from(format!("results/calibration-{}.json", env::host_name()))
}

/// Measure this machine.
pub fn calibrate(opts: &CalibrateOptions) -> Result<Calibration, CalibrateError> {
    let threads = opts.threads.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CalibrateError::Pool {
            threads,
            why: e.to_string(),
        })?;
    let llc = last_level_cache_bytes();
    let buffer_bytes = if opts.buffer_bytes == 0 {
        (16 * llc).max(256 << 20)
    } else {
        opts.buffer_bytes
    };
    if buffer_bytes < 1 << 20 {
        return Err(CalibrateError::TooSmall {
            what: "streamed array",
            value: buffer_bytes,
            why: "arrays must be far larger than the CPU caches; use at least 1 MiB",
        });
    }
    let words = (buffer_bytes / 8) as usize;
    let passes = opts.passes.max(1);
    // Touch every page first so page faults are not timed.
    let src: Vec<u64> = (0..words as u64).collect();
    let mut dst = vec![0u64; words];

    let read_gbps_1t = best_gbps(passes, buffer_bytes, || {
        std::hint::black_box(sum_words(&src));
    });
    let read_gbps = pool.install(|| {
        best_gbps(passes, buffer_bytes, || {
            std::hint::black_box(par_sum_words(&src, threads));
        })
    });
    let copy_gbps = pool.install(|| {
        best_gbps(passes, 2 * buffer_bytes, || {
            par_copy(&src, &mut dst, threads);
            std::hint::black_box(&dst);
        })
    });
    drop(dst);
    drop(src);

    let n = opts.gemm_n.max(64) as usize;
    let gemm_gflops_1t = gemm_rate(n, passes, 1);
    let gemm_gflops = pool.install(|| gemm_rate(n, passes, threads));

    let environment = env::Environment::capture();
    Ok(Calibration {
        host: environment.host,
        cpu: environment.cpu,
        cpu_flags: cpu_flags(),
        cores: environment.cores,
        threads: threads as u32,
        timestamp: env::timestamp_now(),
        kvbench_version: environment.kvbench_version,
        method: if opts.short { "short" } else { "full" }.into(),
        llc_bytes: llc,
        buffer_bytes: words as u64 * 8,
        read_gbps_1t,
        read_gbps,
        copy_gbps,
        gemm_gflops_1t,
        gemm_gflops,
        gemm_n: n as u32,
        gpu: None,
    })
}

/// Best rate in GB/s of `passes` runs of `f`, each moving `bytes`.
fn best_gbps(passes: u32, bytes: u64, mut f: impl FnMut()) -> f64 {
    let best = (0..passes)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    bytes as f64 / best / 1e9
}

/// Sum of all words; integer adds vectorize freely (no float reassociation), so the loop is
/// limited by memory, not by the adder.
pub fn sum_words(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

fn par_sum_words(words: &[u64], threads: usize) -> u64 {
    let chunk = words.len().div_ceil(threads).max(1);
    words
        .par_chunks(chunk)
        .map(sum_words)
        .reduce(|| 0, u64::wrapping_add)
}

fn par_copy(src: &[u64], dst: &mut [u64], threads: usize) {
    let chunk = src.len().div_ceil(threads).max(1);
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// Best f32 GEMM rate (GFLOP/s) of an n×n×n product on `threads` threads.
fn gemm_rate(n: usize, passes: u32, threads: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.25).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.5).collect();
    let mut c = vec![0f32; n * n];
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut run = || matmul(n, &a, &b, &mut c, parallelism);
    run(); // warm-up: packing buffers, thread start
    let best = (0..passes.max(1))
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    std::hint::black_box(&c);
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// c = a · b for row-major n×n f32 matrices.
pub fn matmul(n: usize, a: &[f32], b: &[f32], c: &mut [f32], par: gemm::Parallelism) {
    assert!(a.len() == n * n && b.len() == n * n && c.len() == n * n);
    // SAFETY: the three slices each hold n·n elements (checked above), addressed row-major
    // (column stride 1, row stride n), and `c` does not alias `a` or `b` (distinct borrows).
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            n as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Size of the largest CPU cache listed in sysfs (Linux), 0 if unknown.
pub fn last_level_cache_bytes() -> u64 {
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("size")).ok())
        .filter_map(|s| parse_cache_size(s.trim()))
        .max()
        .unwrap_or(0)
}

/// "32768K" / "8M" / "1024" (sysfs cache size) to bytes.
fn parse_cache_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// SIMD features detected at run time that matter to the kernels.
pub fn cpu_flags() -> Vec<String> {
    #[allow(unused_mut)]
    let mut flags: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_x86_feature_detected!($f) { flags.push($f); } )* };
        }
        probe!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avx512fp16"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($f) { flags.push($f); } )* };
        }
        probe!("neon", "fp16", "dotprod", "bf16", "sve", "sve2");
    }
    flags.into_iter().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("32768K"), Some(32 << 20));
        assert_eq!(parse_cache_size("8M"), Some(8 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("x"), None);
    }

    #[test]
    fn kernels_compute_what_they_claim() {
        // Σ 0..n = n(n−1)/2
        let words: Vec<u64> = (0..100_003).collect();
        assert_eq!(sum_words(&words), 100_003 * 100_002 / 2);
        assert_eq!(par_sum_words(&words, 3), 100_003 * 100_002 / 2);
        let mut dst = vec![0; words.len()];
        par_copy(&words, &mut dst, 4);
        assert_eq!(dst, words);
        // 2×2 product by hand: [[1,2],[3,4]]·[[5,6],[7,8]] = [[19,22],[43,50]]
        let mut c = [0f32; 4];
        matmul(
            2,
            &[1., 2., 3., 4.],
            &[5., 6., 7., 8.],
            &mut c,
            gemm::Parallelism::None,
        );
        assert_eq!(c, [19., 22., 43., 50.]);
    }

    #[test]
    fn short_calibration_is_plausible_and_round_trips() {
        let opts = CalibrateOptions {
            buffer_bytes: 16 << 20,
            passes: 1,
            gemm_n: 128,
            threads: 2,
            short: true,
        };
        let cal = calibrate(&opts).unwrap();
        // Anything that ran at all moves more than 0.1 GB/s and less than 10 TB/s.
        for v in [cal.read_gbps_1t, cal.read_gbps, cal.copy_gbps] {
            assert!(v > 0.1 && v < 10_000.0, "{cal:?}");
        }
        assert!(cal.gemm_gflops > 0.01 && cal.gemm_gflops < 100_000.0);
        assert_eq!(cal.method, "short");
        assert_eq!(cal.buffer_bytes, 16 << 20);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cal.json");
        cal.save(&path).unwrap();
        let back = Calibration::load(&path).unwrap();
        // JSON keeps ~17 significant digits; the last one may round.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs();
        assert!(close(back.read_gbps, cal.read_gbps) && close(back.gemm_gflops, cal.gemm_gflops));
        assert_eq!(
            Calibration {
                read_gbps_1t: 0.0,
                read_gbps: 0.0,
                copy_gbps: 0.0,
                gemm_gflops_1t: 0.0,
                gemm_gflops: 0.0,
                ..back
            },
            Calibration {
                read_gbps_1t: 0.0,
                read_gbps: 0.0,
                copy_gbps: 0.0,
                gemm_gflops_1t: 0.0,
                gemm_gflops: 0.0,
                ..cal
            }
        );
    }

    #[test]
    fn bad_files_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.json");
        let e = Calibration::load(&missing).unwrap_err().to_string();
        assert!(
            e.contains("none.json") && e.contains("kvbench calibrate"),
            "{e}"
        );
        let junk = dir.path().join("junk.json");
        std::fs::write(&junk, "{not json").unwrap();
        let e = Calibration::load(&junk).unwrap_err().to_string();
        assert!(e.contains("junk.json") && e.contains("delete it"), "{e}");
    }

    #[test]
    fn tiny_buffers_are_refused() {
        let mut opts = CalibrateOptions::short(1);
        opts.buffer_bytes = 1000;
        let e = calibrate(&opts).unwrap_err().to_string();
        assert!(e.contains("1000"), "{e}");
    }
}
