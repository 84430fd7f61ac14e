//! Reading a user's input file with a size cap, so `--config /dev/zero` or a runaway CSV
//! ends with a message instead of reading forever or filling memory.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest config.json read (real ones are a few KiB).
pub const CONFIG_CAP: u64 = 16 << 20;
/// Largest calibration JSON read (real ones are a few KiB).
pub const CALIBRATION_CAP: u64 = 1 << 20;
/// Largest CSV `report` and `compare` read (a million run rows is about 600 MiB).
pub const CSV_CAP: u64 = 1 << 30;

/// An input that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    // `cause`, not `source`: in the message, and not again as the chain's next link.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{} is larger than {cap_mib} MiB, more than a {what} can be; check the path (or split \
         the file)",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        cap_mib: u64,
        what: &'static str,
    },
    #[error("{} is not UTF-8 text; give a {what}", path.display())]
    NotText { path: PathBuf, what: &'static str },
}

/// The text of `path`, reading at most `cap` bytes (one more tells a larger file apart).
pub fn read_text(path: &Path, cap: u64, what: &'static str) -> Result<String, InputError> {
    let read_err = |cause| InputError::Read {
        path: path.to_path_buf(),
        cause,
    };
    refuse_pipe(path).map_err(read_err)?;
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > cap {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            cap_mib: cap >> 20,
            what,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| InputError::NotText {
        path: path.to_path_buf(),
        what,
    })?;
    // A byte-order mark (editors on Windows write one) is not part of the text.
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// A FIFO or socket would block the read until another process writes: refuse it.
#[cfg(unix)]
fn refuse_pipe(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let pipe = std::fs::metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        t.is_fifo() || t.is_socket()
    });
    match pipe {
        true => Err(std::io::Error::other(
            "it is a pipe or socket, not a file; give the file itself",
        )),
        false => Ok(()),
    }
}

#[cfg(not(unix))]
fn refuse_pipe(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_pipe_is_refused_and_a_byte_order_mark_dropped() {
        let dir = tempfile::tempdir().unwrap();
        // A FIFO with no writer used to block the read forever.
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = read_text(&fifo, CONFIG_CAP, "config.json").unwrap_err();
            assert!(err.to_string().contains("pipe"), "{err}");
        }
        let bom = dir.path().join("bom.json");
        std::fs::write(&bom, "\u{feff}{\"a\": 1}").unwrap();
        assert_eq!(
            read_text(&bom, CONFIG_CAP, "config.json").unwrap(),
            "{\"a\": 1}"
        );
    }

    #[test]
    fn an_endless_file_stops_at_the_cap() {
        // /dev/zero never ends: the cap, not the file, bounds the read.
        let e = read_text(Path::new("/dev/zero"), 1 << 20, "config.json").unwrap_err();
        assert!(matches!(e, InputError::TooLarge { cap_mib: 1, .. }), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, "{}").unwrap();
        assert_eq!(read_text(&p, 2, "config.json").unwrap(), "{}");
        assert!(read_text(&p, 1, "config.json").is_err());
    }
}
