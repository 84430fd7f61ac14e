//! kvbench: KV-cache capacity planner and attention-cache benchmark. This binary only parses
//! arguments and wires the library crates together.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(err) = cli::run(args) {
        // One line, the whole chain: what went wrong and how to fix it.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
