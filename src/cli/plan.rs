//! `kvbench plan` (not implemented yet).

use clap::Args;

#[derive(Debug, Args)]
pub struct PlanArgs {}

pub fn run(_args: PlanArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kvbench plan` is not implemented yet")
}
