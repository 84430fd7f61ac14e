//! `kvbench calibrate`: measure this machine's limits and store them for `kvbench run`.

use anyhow::{bail, Result};
use clap::Args;
use kvbench_bench::calibrate::{self, CalibrateOptions, Calibration, GpuLimits};
use kvbench_bench::options::{self, defaults};
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Measure read bandwidth (one thread and all), copy bandwidth and the f32 GEMM rate, with
/// arrays far larger than the last-level cache, and store them with the CPU model and flags.
/// `kvbench run` reads the file to report achieved GB/s and GFLOP/s as a share of these limits.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Where to store the calibration [default: results/calibration-<host>.json].
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Threads for the all-thread figures [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// MiB per streamed array [default: 16 × last-level cache, at least 256].
    #[arg(long, value_name = "MIB")]
    pub buffer_mib: Option<u64>,
    /// Timed passes per figure; the best is kept.
    #[arg(long, default_value_t = defaults::PASSES, value_name = "N")]
    pub passes: u32,
    /// Size n of the n×n×n f32 GEMM.
    #[arg(long, default_value_t = defaults::GEMM_N, value_name = "N")]
    pub gemm_n: u32,
    /// A quick, less precise measurement (what `run` does when no file exists).
    #[arg(long)]
    pub short: bool,
    /// What to measure: cpu, or cuda (GPU 0's copy bandwidth and cuBLAS GEMM rates, plus a
    /// short CPU calibration so the file serves both kinds of row).
    #[arg(long, default_value = "cpu", value_name = "NAME")]
    pub backend: String,
}

pub fn run(args: CalibrateArgs) -> Result<ExitCode> {
    let cuda = match args.backend.to_ascii_lowercase().as_str() {
        "cpu" => false,
        "cuda" | "gpu" => true,
        other => bail!("--backend {other:?} is not known; valid: cpu, cuda"),
    };
    // Every option is checked, even those --short leaves unused.
    let threads = options::threads(args.threads, options::available_cores())?;
    options::positive("--passes", args.passes, "time each figure at least once")?;
    options::positive("--gemm-n", args.gemm_n, "the GEMM needs n of at least 1")?;
    let mut opts = if args.short || cuda {
        CalibrateOptions::short(threads)
    } else {
        CalibrateOptions {
            passes: args.passes,
            gemm_n: args.gemm_n,
            ..CalibrateOptions::full(threads)
        }
    };
    if let Some(mib) = args.buffer_mib {
        opts.buffer_bytes = options::buffer_bytes(mib, kvbench_bench::env::available_memory())?;
    }
    // GPU first: when there is none, say so before spending time on the CPU.
    let gpu = if cuda {
        let l = kvbench_workloads::cuda::calibrate()?;
        Some(GpuLimits {
            device: l.device.label(),
            copy_gbps: l.copy_gbps,
            gemm_f32_gflops: l.gemm_f32_gflops,
            gemm_f16_gflops: l.gemm_f16_gflops,
        })
    } else {
        None
    };
    let cal = Calibration {
        gpu,
        ..calibrate::calibrate(&opts)?
    };
    let path = args.output.unwrap_or_else(calibrate::default_path);
    cal.save(&path)?;
    let mut text = String::new();
    writeln!(text, "{} — {} ({} threads)", cal.host, cal.cpu, cal.threads)?;
    writeln!(text, "  flags            {}", cal.cpu_flags.join(" "))?;
    writeln!(
        text,
        "  arrays           {} MiB (last-level cache {} MiB)",
        cal.buffer_bytes >> 20,
        cal.llc_bytes >> 20
    )?;
    writeln!(text, "  read, 1 thread   {:8.1} GB/s", cal.read_gbps_1t)?;
    writeln!(
        text,
        "  read, {} threads {:8.1} GB/s",
        cal.threads, cal.read_gbps
    )?;
    writeln!(text, "  copy (r+w)       {:8.1} GB/s", cal.copy_gbps)?;
    writeln!(
        text,
        "  f32 GEMM, 1 thr  {:8.1} GFLOP/s (n = {})",
        cal.gemm_gflops_1t, cal.gemm_n
    )?;
    writeln!(text, "  f32 GEMM, all    {:8.1} GFLOP/s", cal.gemm_gflops)?;
    if let Some(g) = &cal.gpu {
        writeln!(text, "{}", g.device)?;
        writeln!(text, "  copy (r+w)       {:8.1} GB/s", g.copy_gbps)?;
        writeln!(text, "  f32 GEMM         {:8.1} GFLOP/s", g.gemm_f32_gflops)?;
        writeln!(text, "  f16 GEMM         {:8.1} GFLOP/s", g.gemm_f16_gflops)?;
    }
    super::out::print(&text)?;
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
