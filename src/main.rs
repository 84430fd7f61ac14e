//! kvbench: KV-cache capacity planner and attention-cache benchmark. This binary only parses
//! arguments and wires the library crates together; only `main` decides the exit status.

mod cli;

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if matches!(args.command, cli::Command::Run(_)) {
        if let Err(err) = on_interrupt_stop_the_run() {
            return fail(&err);
        }
    }
    match cli::run(args) {
        Ok(code) => code,
        // The reader went away (`kvbench plan | head -1`): nothing left to say.
        Err(err) if cli::out::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

/// One line, the whole chain: what went wrong and how to fix it.
fn fail(err: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {err:#}");
    ExitCode::FAILURE
}

/// The first Ctrl-C asks the run to stop after the current step (its files keep every
/// finished row); a second one quits at once.
fn on_interrupt_stop_the_run() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if cli::run::STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(INTERRUPTED.into());
        }
        let _ = writeln!(
            std::io::stderr(),
            "\nstopping after the current step (Ctrl-C again to quit now)…"
        );
    })
    .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))
}
