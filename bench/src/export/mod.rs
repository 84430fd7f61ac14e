//! Exporters behind one trait: CSV (the contract, written row by row), JSON (with raw
//! samples) and markdown, each rewritten or appended after every finished workload so an
//! interrupted run keeps what it finished; plus the results table printed on stdout.

pub mod csv;
pub mod json;
pub mod markdown;
pub mod table;

use crate::Record;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Raw timing samples of one workload, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// One prefill time per repetition.
    pub ttft_ms: Vec<f64>,
    /// Every decode step of every repetition, in order.
    pub itl_ms: Vec<f64>,
}

/// An export failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {cause}")]
pub struct ExportError {
    pub path: PathBuf,
    pub cause: std::io::Error,
}

impl ExportError {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
        move |cause| ExportError {
            path: path.to_path_buf(),
            cause,
        }
    }
}

/// One output format. `add` is called once per finished workload and must leave a complete,
/// readable file behind.
pub trait Exporter {
    /// Record one finished workload.
    fn add(&mut self, record: &Record, samples: &Samples) -> Result<(), ExportError>;
    /// Where it writes.
    fn path(&self) -> &Path;
}

/// Create the parent folder of `path` if needed.
fn ensure_parent(path: &Path) -> Result<(), ExportError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(ExportError::at(path)),
        None => Ok(()),
    }
}

/// Replace `path` with `text` atomically (write a sibling, then rename), so a reader or a
/// crash never sees half a file.
fn replace_file(path: &Path, text: &str) -> Result<(), ExportError> {
    ensure_parent(path)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(ExportError::at(path))?;
    std::fs::rename(&tmp, path).map_err(ExportError::at(path))
}
