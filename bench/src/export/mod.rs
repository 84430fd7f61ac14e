//! One export layer for every command, in the manner of hyperfine's `export` module: pure
//! serializers (table, csv, json, jsonl, markdown) behind one trait, and one manager that
//! owns the targets (a file, or `-` for stdout). Every target is checked before anything is
//! written; file targets are rewritten whole and atomically after every finished workload, so
//! an interrupted run keeps what it finished and a user's previous file is only replaced by a
//! complete one.

pub mod atomic;
pub mod csv;
pub mod json;
pub mod markdown;
pub mod rows;
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

/// One finished workload: its CSV row and every timing sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub record: Record,
    pub samples: Samples,
}

/// An export failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {cause}", path.display())]
pub struct ExportError {
    pub path: PathBuf,
    // Not a `#[source]`: the message already holds it, and a chain would print it twice.
    pub cause: std::io::Error,
}

impl ExportError {
    pub(crate) fn at(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
        move |cause| ExportError {
            path: path.to_path_buf(),
            cause,
        }
    }

    fn refuse(path: &Path, why: String) -> ExportError {
        ExportError {
            path: path.to_path_buf(),
            cause: std::io::Error::other(why),
        }
    }
}

/// The formats every command can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A box-drawn table for a terminal.
    Table,
    /// Comma-separated values with a header row (the run CSV is the contract).
    Csv,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// A GitHub markdown table (or page, for a run).
    Markdown,
}

impl Format {
    /// Every name a user may write, for messages.
    pub const NAMES: &'static str = "table, csv, json, jsonl, md";

    /// The format a user named, e.g. in `--format table,json`.
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "table" => Format::Table,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "jsonl" | "ndjson" => Format::Jsonl,
            "md" | "markdown" => Format::Markdown,
            _ => return None,
        })
    }

    /// File extension of a file in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Table => "txt",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Markdown => "md",
        }
    }

    /// The run serializer of this format.
    pub fn run_serializer(self) -> Box<dyn RunSerializer> {
        match self {
            Format::Table => Box::new(table::RunTable),
            Format::Csv => Box::new(csv::RunCsv),
            Format::Json => Box::new(json::RunJson),
            Format::Jsonl => Box::new(json::RunJsonl),
            Format::Markdown => Box::new(markdown::RunPage),
        }
    }
}

/// A pure serializer of a run: the whole output for the results so far (maybe none, which
/// for a CSV is its header alone).
pub trait RunSerializer {
    fn serialize(&self, results: &[RunResult]) -> String;
}

/// Where an output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Printed once, when the run ends.
    Stdout,
    /// A file, rewritten atomically after every result.
    File(PathBuf),
}

impl Target {
    /// `-` is stdout; anything else a file path.
    pub fn parse(path: &Path) -> Target {
        if path.as_os_str() == "-" {
            Target::Stdout
        } else {
            Target::File(path.to_path_buf())
        }
    }
}

/// Owns a run's outputs: checks them all before the first write, rewrites the files after
/// every result, and gives the stdout text at the end.
pub struct ExportManager {
    outputs: Vec<(Box<dyn RunSerializer>, Target)>,
    results: Vec<RunResult>,
}

impl ExportManager {
    /// Checks every target (no folder, no file in the way, no path or stdout named twice)
    /// without touching any existing file.
    pub fn new(outputs: Vec<(Format, Target)>) -> Result<Self, ExportError> {
        let mut seen: Vec<&Target> = Vec::new();
        for (_, target) in &outputs {
            if seen.contains(&target) {
                let path = match target {
                    Target::File(p) => p.as_path(),
                    Target::Stdout => Path::new("-"),
                };
                return Err(ExportError::refuse(
                    path,
                    "two outputs would write it; give each format its own target".into(),
                ));
            }
            seen.push(target);
            if let Target::File(path) = target {
                atomic::check_target(path)?;
            }
        }
        Ok(ExportManager {
            outputs: outputs
                .into_iter()
                .map(|(f, t)| (f.run_serializer(), t))
                .collect(),
            results: Vec::new(),
        })
    }

    /// Records one finished workload and rewrites every file target.
    pub fn add(&mut self, record: &Record, samples: &Samples) -> Result<(), ExportError> {
        self.results.push(RunResult {
            record: record.clone(),
            samples: samples.clone(),
        });
        self.write_files()
    }

    /// Ends the run. A finished run with no result (an empty shard) still writes its files,
    /// a header-only CSV that `kvbench report` accepts; an interrupted one with no result
    /// leaves the user's previous files as they were. Returns the text for stdout.
    pub fn finish(&self, interrupted: bool) -> Result<String, ExportError> {
        if self.results.is_empty() && !interrupted {
            self.write_files()?;
        }
        Ok(self
            .outputs
            .iter()
            .filter(|(_, t)| *t == Target::Stdout)
            .map(|(s, _)| s.serialize(&self.results))
            .collect())
    }

    /// The files this manager writes.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.outputs.iter().filter_map(|(_, t)| match t {
            Target::File(p) => Some(p.as_path()),
            Target::Stdout => None,
        })
    }

    fn write_files(&self) -> Result<(), ExportError> {
        for (serializer, target) in &self.outputs {
            if let Target::File(path) = target {
                atomic::write(path, serializer.serialize(&self.results).as_bytes())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prompt: u32) -> Record {
        Record {
            schema_version: crate::SCHEMA_VERSION,
            strategy: "paged".into(),
            prompt,
            status: crate::record::Status::Ok,
            ..Record::default()
        }
    }

    #[test]
    fn a_bad_target_is_refused_before_any_file_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("run.csv");
        std::fs::write(&csv, "previous\n").unwrap();
        let json_is_a_folder = dir.path().join("run.json");
        std::fs::create_dir(&json_is_a_folder).unwrap();
        let err = ExportManager::new(vec![
            (Format::Csv, Target::File(csv.clone())),
            (Format::Json, Target::File(json_is_a_folder)),
        ])
        .err()
        .unwrap();
        assert!(err.to_string().contains("folder"), "{err}");
        assert_eq!(std::fs::read_to_string(&csv).unwrap(), "previous\n");
    }

    #[test]
    fn an_interrupted_run_without_rows_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("run.csv");
        std::fs::write(&csv, "previous\n").unwrap();
        let m = ExportManager::new(vec![(Format::Csv, Target::File(csv.clone()))]).unwrap();
        m.finish(true).unwrap();
        assert_eq!(std::fs::read_to_string(&csv).unwrap(), "previous\n");
        // A finished run with no rows (an empty shard) writes the header alone.
        m.finish(false).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert!(
            text.starts_with("schema_version,") && text.lines().count() == 1,
            "{text}"
        );
    }

    #[test]
    fn files_hold_every_finished_row_and_stdout_waits_for_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("run.csv");
        let mut m = ExportManager::new(vec![
            (Format::Csv, Target::File(csv.clone())),
            (Format::Jsonl, Target::Stdout),
        ])
        .unwrap();
        m.add(&record(1), &Samples::default()).unwrap();
        m.add(&record(2), &Samples::default()).unwrap();
        assert_eq!(csv::read_records(&csv).unwrap(), vec![record(1), record(2)]);
        let out = m.finish(false).unwrap();
        assert_eq!(out.lines().count(), 2, "{out}");
        assert_eq!(m.files().collect::<Vec<_>>(), [csv.as_path()]);
    }

    #[test]
    fn the_same_target_twice_is_refused() {
        let err = ExportManager::new(vec![
            (Format::Table, Target::Stdout),
            (Format::Csv, Target::Stdout),
        ])
        .err()
        .unwrap();
        assert!(err.to_string().contains("two outputs"), "{err}");
    }
}
