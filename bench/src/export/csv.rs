//! The run CSV: the contract, one row per workload (columns in bench/src/record.rs), with the
//! header even when there is no row.

use super::{RunResult, RunSerializer};
use crate::Record;
use std::path::Path;

/// Serializes records as the run CSV.
pub struct RunCsv;

impl RunSerializer for RunCsv {
    fn serialize(&self, results: &[RunResult]) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        if results.is_empty() {
            // serde writes the header with the first row; an empty run still has columns.
            w.write_record(header()).expect("writing to memory");
        }
        for r in results {
            w.serialize(&r.record).expect("records always serialize");
        }
        String::from_utf8(w.into_inner().expect("writing to memory")).expect("CSV is UTF-8")
    }
}

/// Column names of the run CSV, in order.
pub fn header() -> Vec<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(Record::default())
        .expect("records always serialize");
    let text = String::from_utf8(w.into_inner().expect("writing to memory")).expect("UTF-8");
    let mut r = csv::Reader::from_reader(text.as_bytes());
    r.headers()
        .expect("a header row")
        .iter()
        .map(String::from)
        .collect()
}

/// Read a run CSV back into records (columns matched by name).
pub fn read_records(path: &Path) -> Result<Vec<Record>, csv::Error> {
    csv::Reader::from_path(path)?.deserialize().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Samples;

    fn result(i: u32) -> RunResult {
        RunResult {
            record: Record {
                schema_version: crate::SCHEMA_VERSION,
                strategy: "paged".into(),
                model: "tiny, with a comma".into(),
                prompt: i,
                tokens_per_s: 1.5 * i as f64,
                verified: true,
                ..Record::default()
            },
            samples: Samples::default(),
        }
    }

    #[test]
    fn rows_round_trip_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let results: Vec<_> = (1..=3).map(result).collect();
        std::fs::write(&path, RunCsv.serialize(&results)).unwrap();
        let back = read_records(&path).unwrap();
        let want: Vec<Record> = results.into_iter().map(|r| r.record).collect();
        assert_eq!(back, want);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("schema_version,kvbench_version,git_commit,"));
    }

    #[test]
    fn no_rows_is_the_header_alone() {
        let text = RunCsv.serialize(&[]);
        let with_row = RunCsv.serialize(&[result(1)]);
        assert_eq!(text.lines().count(), 1);
        assert_eq!(text.lines().next(), with_row.lines().next());
    }
}
