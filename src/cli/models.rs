//! `kvbench models` (not implemented yet).

use clap::Args;

#[derive(Debug, Args)]
pub struct ModelsArgs {}

pub fn run(_args: ModelsArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kvbench models` is not implemented yet")
}
