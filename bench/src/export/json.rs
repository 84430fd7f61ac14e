//! A run as JSON (one document: every record with its raw samples) and as JSON lines (one
//! result per line, for streaming readers).

use super::{RunResult, RunSerializer};
use serde::{Deserialize, Serialize};

/// The whole JSON file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonReport {
    pub schema_version: u32,
    pub results: Vec<RunResult>,
}

/// Serializes a run as one JSON document.
pub struct RunJson;

impl RunSerializer for RunJson {
    fn serialize(&self, results: &[RunResult]) -> String {
        let report = JsonReport {
            schema_version: crate::SCHEMA_VERSION,
            results: results.to_vec(),
        };
        serde_json::to_string_pretty(&report).expect("records always serialize") + "\n"
    }
}

/// Serializes a run as JSON lines: one `{"record":…,"samples":…}` per line.
pub struct RunJsonl;

impl RunSerializer for RunJsonl {
    fn serialize(&self, results: &[RunResult]) -> String {
        results
            .iter()
            .map(|r| serde_json::to_string(r).expect("records always serialize") + "\n")
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Samples;
    use crate::Record;

    #[test]
    fn keeps_raw_samples() {
        let samples = Samples {
            ttft_ms: vec![3.0, 2.5],
            itl_ms: vec![0.5, 0.25, 0.75],
        };
        let rec = Record {
            strategy: "concat".into(),
            ..Record::default()
        };
        let results = vec![
            RunResult {
                record: rec.clone(),
                samples: samples.clone(),
            },
            RunResult {
                record: rec.clone(),
                samples: Samples::default(),
            },
        ];
        let back: JsonReport = serde_json::from_str(&RunJson.serialize(&results)).unwrap();
        assert_eq!(back.schema_version, crate::SCHEMA_VERSION);
        assert_eq!(back.results, results);
        let lines = RunJsonl.serialize(&results);
        let first: RunResult = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first.samples, samples);
        assert_eq!(lines.lines().count(), 2);
    }
}
