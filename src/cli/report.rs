//! `kvbench report CSV... -o DIR`: merge run and plan CSVs (many machines, many shards) into
//! a folder with report.md, SVG charts and the merged CSVs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

/// Merge run CSVs (any number of machines, dates or `--shard` pieces) and plan CSVs into one
/// report: report.md with a table per question, SVG charts, merged-runs.csv / merged-plans.csv.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run CSVs from `kvbench run` and/or plan CSVs from `kvbench plan --format csv`.
    #[arg(required = true, value_name = "CSV")]
    pub inputs: Vec<PathBuf>,
    /// Folder to write the report into (created if missing).
    #[arg(short, long, value_name = "DIR", default_value = "results/report")]
    pub output: PathBuf,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let summary = kvbench_bench::report::write_report(&args.inputs, &args.output)
        .with_context(|| format!("writing the report into {}", args.output.display()))?;
    let mut text = format!(
        "merged {} run rows from {} machine(s) and {} plan rows\nwrote {}\n",
        summary.run_rows,
        summary.machines.len(),
        summary.plan_rows,
        summary.report.display()
    );
    for c in &summary.charts {
        text.push_str(&format!("wrote {}\n", c.display()));
    }
    super::out::print(&text)?;
    Ok(ExitCode::SUCCESS)
}
