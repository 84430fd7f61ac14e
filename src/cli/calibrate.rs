//! `kvbench calibrate`: measure this machine's limits and store them for `kvbench run`.

use anyhow::{bail, Result};
use clap::Args;
use kvbench_bench::calibrate::{self, CalibrateOptions, Calibration, GpuLimits};
use kvbench_bench::options::{self, defaults};
use std::path::PathBuf;
use std::process::ExitCode;

/// Measure read bandwidth (the best of several read kernels, one thread and all), copy
/// bandwidth and the f32 GEMM rate (the best of two kernels), with arrays far larger than the
/// last-level cache, and store them with the machine's fingerprint and every method's figure.
/// `kvbench run` reads the file to report achieved GB/s and GFLOP/s as a share of these limits.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// Where to store the calibration [default: results/calibration-<host>.json].
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Threads for the all-thread figures [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// MiB per streamed array [default: 4 × last-level cache, at least 256].
    #[arg(long, value_name = "MIB")]
    pub buffer_mib: Option<u64>,
    /// Timed passes per figure; the best is kept.
    #[arg(long, default_value_t = defaults::PASSES, value_name = "N")]
    pub passes: u32,
    /// Size n of the n×n×n f32 GEMM [default: 4096; 2048 with --short].
    #[arg(long, value_name = "N")]
    pub gemm_n: Option<u32>,
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
    let mut opts =
        CalibrateOptions::from_flags(threads, args.short || cuda, args.passes, args.gemm_n, None)?;
    if let Some(mib) = args.buffer_mib {
        opts.buffer_bytes = options::buffer_bytes(mib, kvbench_bench::env::available_memory())?;
    }
    // The output path is checked before minutes of measuring, not after.
    let path = args.output.unwrap_or_else(calibrate::default_path);
    kvbench_bench::export::atomic::check_target(&path)?;
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
    cal.save(&path)?;
    super::out::print(&format!("{}\n", cal.render()))?;
    super::out::say!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
