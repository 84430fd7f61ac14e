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
    String::from_utf8(bytes).map_err(|_| InputError::NotText {
        path: path.to_path_buf(),
        what,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
