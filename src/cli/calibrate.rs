//! `kvbench calibrate` (not implemented yet).

use clap::Args;

#[derive(Debug, Args)]
pub struct CalibrateArgs {}

pub fn run(_args: CalibrateArgs) -> anyhow::Result<()> {
    anyhow::bail!("`kvbench calibrate` is not implemented yet")
}
