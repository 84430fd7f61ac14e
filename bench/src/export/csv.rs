//! The CSV exporter: the run contract, one row per workload, flushed as soon as it is written.

use super::{ensure_parent, ExportError, Exporter, Samples};
use crate::Record;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Writes records to a CSV file with a header row, flushing after every row.
pub struct CsvExporter {
    path: PathBuf,
    writer: csv::Writer<File>,
}

impl CsvExporter {
    /// Create (or truncate) `path`; the header is written with the first row.
    pub fn create(path: &Path) -> Result<Self, ExportError> {
        ensure_parent(path)?;
        let file = File::create(path).map_err(ExportError::at(path))?;
        Ok(CsvExporter {
            path: path.to_path_buf(),
            writer: csv::Writer::from_writer(file),
        })
    }
}

impl Exporter for CsvExporter {
    fn add(&mut self, record: &Record, _samples: &Samples) -> Result<(), ExportError> {
        let to_io = |e: csv::Error| std::io::Error::other(e.to_string());
        self.writer
            .serialize(record)
            .map_err(to_io)
            .map_err(ExportError::at(&self.path))?;
        // Flush every row: a run stopped by Ctrl-C or a crash keeps every finished workload.
        self.writer.flush().map_err(ExportError::at(&self.path))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Read a run CSV back into records (columns matched by name).
pub fn read_records(path: &Path) -> Result<Vec<Record>, csv::Error> {
    csv::Reader::from_path(path)?.deserialize().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u32) -> Record {
        Record {
            schema_version: crate::SCHEMA_VERSION,
            strategy: "paged".into(),
            model: "tiny, with a comma".into(),
            prompt: i,
            tokens_per_s: 1.5 * i as f64,
            verified: true,
            status: "ok".into(),
            ..Record::default()
        }
    }

    #[test]
    fn rows_round_trip_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/a.csv");
        let mut ex = CsvExporter::create(&path).unwrap();
        for i in 1..=3 {
            ex.add(&record(i), &Samples::default()).unwrap();
        }
        let back = read_records(&path).unwrap();
        assert_eq!(back, vec![record(1), record(2), record(3)]);
        let header = std::fs::read_to_string(&path).unwrap();
        assert!(header.starts_with("schema_version,kvbench_version,git_commit,"));
    }

    #[test]
    fn rows_are_on_disk_before_the_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let mut ex = CsvExporter::create(&path).unwrap();
        ex.add(&record(1), &Samples::default()).unwrap();
        ex.add(&record(2), &Samples::default()).unwrap();
        // The exporter is still open (a run in progress, or killed now): the file already
        // holds both complete rows.
        assert_eq!(read_records(&path).unwrap().len(), 2);
        // A run killed mid-write leaves a partial last line; the complete rows still parse.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("1,0.1.0,abc");
        std::fs::write(&path, text).unwrap();
        let complete: Vec<Record> = csv::Reader::from_path(&path)
            .unwrap()
            .deserialize()
            .filter_map(Result::ok)
            .collect();
        assert_eq!(complete, vec![record(1), record(2)]);
        drop(ex);
    }
}
