//! `kvbench report` (not implemented yet).

use clap::Args;

#[derive(Debug, Args)]
pub struct ReportArgs {}

pub fn run(_args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kvbench report` is not implemented yet")
}
