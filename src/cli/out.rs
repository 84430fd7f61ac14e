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

/// Writes one line to stderr. Unlike `eprintln!`, which panics when stderr is a closed pipe
/// or a full disk, a note that cannot be shown is dropped: the files and exit status still
/// say what happened.
pub fn write_note(line: std::fmt::Arguments) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}

/// `say!("wrote {}", path)`: [`write_note`] with `format!` arguments.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::out::write_note(format_args!($($arg)*))
    };
}
pub(crate) use say;
