//! The JSON exporter: every record with its raw samples, rewritten whole after each workload.

use super::{replace_file, ExportError, Exporter, Samples};
use crate::Record;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One workload in the JSON file: the CSV row plus every timing sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonResult {
    pub record: Record,
    pub samples: Samples,
}

/// The whole JSON file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonReport {
    pub schema_version: u32,
    pub results: Vec<JsonResult>,
}

/// Keeps every result and rewrites the file after each one (as hyperfine does).
pub struct JsonExporter {
    path: PathBuf,
    report: JsonReport,
}

impl JsonExporter {
    /// Start an empty report at `path` (written on the first `add`).
    pub fn create(path: &Path) -> Result<Self, ExportError> {
        let report = JsonReport {
            schema_version: crate::SCHEMA_VERSION,
            results: Vec::new(),
        };
        replace_file(path, &to_text(&report))?;
        Ok(JsonExporter {
            path: path.to_path_buf(),
            report,
        })
    }
}

fn to_text(report: &JsonReport) -> String {
    serde_json::to_string_pretty(report).expect("records always serialize") + "\n"
}

impl Exporter for JsonExporter {
    fn add(&mut self, record: &Record, samples: &Samples) -> Result<(), ExportError> {
        self.report.results.push(JsonResult {
            record: record.clone(),
            samples: samples.clone(),
        });
        replace_file(&self.path, &to_text(&self.report))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_raw_samples_and_stays_valid_after_each_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let mut ex = JsonExporter::create(&path).unwrap();
        let parse = || -> JsonReport {
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        };
        assert!(parse().results.is_empty());
        let samples = Samples {
            ttft_ms: vec![3.0, 2.5],
            itl_ms: vec![0.5, 0.25, 0.75],
        };
        let rec = Record {
            strategy: "concat".into(),
            ..Record::default()
        };
        ex.add(&rec, &samples).unwrap();
        ex.add(&rec, &Samples::default()).unwrap();
        let back = parse();
        assert_eq!(back.schema_version, crate::SCHEMA_VERSION);
        assert_eq!(back.results.len(), 2);
        assert_eq!(back.results[0].samples, samples);
        assert_eq!(back.results[0].record, rec);
        assert!(!dir.path().join("run.json.partial").exists());
    }
}
