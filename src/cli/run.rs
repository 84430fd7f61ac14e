//! `kvbench run` (not implemented yet).

use clap::Args;

#[derive(Debug, Args)]
pub struct RunArgs {}

pub fn run(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kvbench run` is not implemented yet")
}
