//! kvbench: KV-cache capacity planner and attention-cache benchmark. This binary only parses
//! arguments and wires the library crates together; only `main` decides the exit status.

mod cli;

use clap::Parser;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;
/// Exit status of a command line that does not parse (clap's convention).
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => return usage_error(&err),
    };
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

/// A flag clap could not parse: one line (clap's own text spreads over five), with clap's tip
/// when it has one. `--help` and `--version` print as clap writes them.
fn usage_error(err: &clap::Error) -> ExitCode {
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // `kvbench` alone: the list of commands is the answer.
        let _ = err.print();
        return ExitCode::from(USAGE);
    }
    let text = err.render().to_string();
    let mut line = String::new();
    for part in text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
    {
        match part.starts_with("tip:") {
            true => line.push_str(&format!(" ({part})")),
            false if line.is_empty() => line.push_str(part),
            false => line.push_str(&format!(" {part}")),
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "{line}; see '{} --help'",
        command_named()
    );
    ExitCode::from(USAGE)
}

/// "kvbench run" when the arguments name a subcommand, else "kvbench".
fn command_named() -> String {
    let cli = <cli::Cli as clap::CommandFactory>::command();
    let names: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    match std::env::args().skip(1).find(|a| names.contains(a)) {
        Some(sub) => format!("kvbench {sub}"),
        None => "kvbench".to_string(),
    }
}

/// One line, the whole chain: what went wrong and how to fix it.
fn fail(err: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {err:#}");
    ExitCode::FAILURE
}

/// The first Ctrl-C asks the run to stop at the row's next check: between decode steps, or
/// between layers of its prompt, tuning or reference (its files keep every finished row);
/// a second one quits at once.
fn on_interrupt_stop_the_run() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if cli::run::STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(INTERRUPTED.into());
        }
        let _ = writeln!(
            std::io::stderr(),
            "\nstopping: the row in progress is dropped, finished rows are kept (Ctrl-C again to quit now)…"
        );
    })
    .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))
}
