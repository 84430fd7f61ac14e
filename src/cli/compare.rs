//! `kvbench compare` (not implemented yet).

use clap::Args;

#[derive(Debug, Args)]
pub struct CompareArgs {}

pub fn run(_args: CompareArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kvbench compare` is not implemented yet")
}
