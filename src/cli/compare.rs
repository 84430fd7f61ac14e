//! `kvbench compare BASELINE NEW`: per-metric verdicts, non-zero exit on regression.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kvbench_bench::compare::{self, render, Options, Thresholds, TimingMode};

/// Which timing comparisons to make.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TimingArg {
    /// Timing across the two runs when their machine fingerprints (cpu, cores, gpu, threads)
    /// match, else "not comparable"; plus the in-run ratios of --thresholds.
    Auto,
    /// Only in-run ratios from --thresholds (paged/contiguous, int8/f16, pct_of_limit): stable
    /// on a noisy or different machine.
    Ratios,
    /// Compare no timing.
    Off,
}

/// Compare a new run CSV with a baseline: exact metrics must match, error metrics stay within
/// tolerance, timing must not worsen beyond both the measured spread and a threshold.
/// Exit status: 0 no regression, 1 regression or unusable input.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Baseline run CSV (e.g. results/baseline/ci-quick.csv).
    pub baseline: PathBuf,
    /// New run CSV to judge against the baseline.
    pub new: PathBuf,
    /// Thresholds file (TOML: defaults, [metric.NAME] overrides, [[ratio]] checks); see
    /// ci/thresholds.toml.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// Default timing threshold, relative: 0.1 fails a metric 10% worse (and beyond spread).
    #[arg(long, value_name = "FRACTION")]
    pub threshold: Option<f64>,
    /// Per-metric threshold (timing) or relative tolerance (error), repeatable:
    /// --metric tokens_per_s=0.2 --metric rel_error=0.01.
    #[arg(long = "metric", value_name = "NAME=VALUE")]
    pub metrics: Vec<String>,
    /// A timing change must exceed K × (MAD of baseline + MAD of new) to count.
    #[arg(long, value_name = "K")]
    pub spread_k: Option<f64>,
    /// Which timing comparisons to make.
    #[arg(long, value_enum, default_value = "auto")]
    pub timing: TimingArg,
    /// Do not fail when a baseline workload is absent from the new run.
    #[arg(long)]
    pub allow_missing: bool,
    /// List every check, including those that are the same or within noise.
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: CompareArgs) -> anyhow::Result<std::process::ExitCode> {
    let mut thresholds = match &args.thresholds {
        Some(path) => Thresholds::from_file(path)?,
        None => Thresholds::default(),
    };
    if let Some(t) = args.threshold {
        thresholds.set_timing_threshold(t)?;
    }
    if let Some(k) = args.spread_k {
        thresholds.set_spread_k(k)?;
    }
    for m in &args.metrics {
        thresholds.set_from_flag(m)?;
    }
    let opts = Options {
        thresholds,
        timing: match args.timing {
            TimingArg::Auto => TimingMode::Auto,
            TimingArg::Ratios => TimingMode::Ratios,
            TimingArg::Off => TimingMode::Off,
        },
        allow_missing: args.allow_missing,
    };
    let result = compare::compare_files(&args.baseline, &args.new, &opts).with_context(|| {
        format!(
            "comparing {} with baseline {}",
            args.new.display(),
            args.baseline.display()
        )
    })?;
    super::out::print(&render::render(&result, args.all))?;
    let failing = result.failures().count();
    if failing > 0 {
        anyhow::bail!(
            "{failing} check(s) failed against baseline {} (see the table above)",
            args.baseline.display()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
