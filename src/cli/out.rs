//! Everything the binary prints on stdout goes through here: fallible writes (not `println!`,
//! which panics on a closed pipe), so `kvbench plan | head -1` ends quietly as ripgrep does.

use std::io::{self, Write};

/// Writes `text` to stdout and flushes it.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// As [`print`], but a closed stdout is not an error: for a run, whose files matter more than
/// the table a `head` has stopped reading.
pub fn print_unless_closed(text: &str) -> io::Result<()> {
    match print(text) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Whether an error came from writing to a closed pipe (anywhere in its chain).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
