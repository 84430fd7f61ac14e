//! Command-line interface: one module per subcommand, each parsing and wiring only.

pub mod calibrate;
pub mod compare;
pub mod models;
pub mod out;
pub mod plan;
pub mod report;
pub mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// KV-cache capacity planner and attention-cache benchmark.
#[derive(Debug, Parser)]
#[command(name = "kvbench", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Size the KV cache of a model and the capacity of a GPU deployment.
    Plan(plan::PlanArgs),
    /// List the built-in model registry with shapes.
    Models(models::ModelsArgs),
    /// Run verified attention workloads and time them.
    Run(run::RunArgs),
    /// Measure this machine's limits (bandwidth, GEMM rate).
    Calibrate(calibrate::CalibrateArgs),
    /// Merge run or plan CSVs into a report with tables and charts.
    Report(report::ReportArgs),
    /// Compare a new run CSV with a baseline; non-zero exit on regression.
    Compare(compare::CompareArgs),
}

/// Runs one subcommand; the exit status it asks for (130 for an interrupted run) or an error,
/// which `main` prints as one line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plan(a) => plan::run(a),
        Command::Models(a) => models::run(a),
        Command::Run(a) => run::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Report(a) => report::run(a),
        Command::Compare(a) => compare::run(a),
    }
}
