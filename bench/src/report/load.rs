//! Reading many CSVs (many machines, many dates, shards of one sweep): tell run CSVs from
//! plan CSVs, check every run row's `schema_version`, and merge each kind into one table.

use std::path::PathBuf;

use super::table::CsvTable;
use super::ReportError;
use crate::{Status, SCHEMA_VERSION};

/// What a CSV file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvKind {
    /// `kvbench run` output: one row per workload per run (bench/src/record.rs).
    Run,
    /// `kvbench plan --format csv` output: one row per model × dtype × context × deployment.
    Plan,
}

/// Columns only a run CSV has; a file with one of them is read as a run CSV.
const RUN_MARKERS: &[&str] = &["tokens_per_s", "ttft_ms", "tpot_ms", "itl_p50_ms"];

/// Every input, merged per kind.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// All run rows, schema-checked, columns unioned.
    pub runs: CsvTable,
    /// All plan rows, columns unioned.
    pub plans: CsvTable,
}

/// Decides whether a table is a run CSV or a plan CSV.
pub fn classify(table: &CsvTable, path: &std::path::Path) -> Result<CsvKind, ReportError> {
    if RUN_MARKERS.iter().any(|c| table.has(c)) {
        Ok(CsvKind::Run)
    } else if table.has("model") {
        Ok(CsvKind::Plan)
    } else {
        Err(ReportError::UnknownCsv {
            path: path.to_path_buf(),
        })
    }
}

/// Checks every row's `schema_version` against the one this build reads.
///
/// Rows of an older version would be upgraded here, one step at a time; version 1 is the
/// first the runner wrote, so every other version is refused with a line saying what to do.
pub fn check_schema(table: &CsvTable, path: &std::path::Path) -> Result<(), ReportError> {
    if !table.has("schema_version") {
        return Err(ReportError::NoSchemaVersion {
            path: path.to_path_buf(),
        });
    }
    for row in 0..table.len() {
        let text = table.get(row, "schema_version");
        let found: u32 = text
            .trim()
            .parse()
            .map_err(|_| ReportError::BadSchemaVersion {
                origin: table.origins[row].to_string(),
                value: text.to_string(),
            })?;
        if found != SCHEMA_VERSION {
            return Err(ReportError::SchemaMismatch {
                origin: table.origins[row].to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
    }
    Ok(())
}

/// Whether a column's unit rules out negative and infinite values: a time, a rate, a
/// bandwidth or a byte count.
fn is_magnitude(column: &str) -> bool {
    ["_ms", "_per_s", "_gbps", "_gflops", "pct_of_limit"]
        .iter()
        .any(|unit| column.ends_with(unit))
        || column.split('_').any(|word| word == "bytes")
}

/// Whether a row says it was timed: `ok` or `fallback` (or no status at all). Other rows
/// were not timed and hold 0 or nothing in their timing columns.
fn is_timed(table: &CsvTable, row: usize) -> bool {
    let status = table.get(row, "status");
    status.trim().is_empty() || Status::from_word(status).is_some_and(Status::is_timed)
}

/// Refuses a negative or infinite time, rate, bandwidth or byte count in a timed row: no
/// measurement gives one, so the file is corrupt, and a report would show it or a
/// comparison read it as "no data". Empty and non-numeric cells are left to the reader.
pub fn check_values(table: &CsvTable) -> Result<(), ReportError> {
    let columns: Vec<&String> = table.columns().iter().filter(|c| is_magnitude(c)).collect();
    for row in (0..table.len()).filter(|&r| is_timed(table, r)) {
        for column in &columns {
            let Some(value) = table.num(row, column) else {
                continue;
            };
            if value < 0.0 || value.is_infinite() {
                let status = table.get(row, "status");
                return Err(ReportError::BadValue {
                    origin: table.origins[row].to_string(),
                    column: column.to_string(),
                    value: table.get(row, column).trim().to_string(),
                    status: match status.trim() {
                        "" => "no status".to_string(),
                        s => format!("status {s}"),
                    },
                });
            }
        }
    }
    Ok(())
}

/// Reads, checks and merges CSV files. Runs and plans may be mixed in one call.
pub fn load(paths: &[PathBuf]) -> Result<Inputs, ReportError> {
    if paths.is_empty() {
        return Err(ReportError::NoInputs);
    }
    let mut inputs = Inputs::default();
    for path in paths {
        let table = CsvTable::read(path)?;
        match classify(&table, path)? {
            CsvKind::Run => {
                check_schema(&table, path)?;
                check_values(&table)?;
                inputs.runs.append(table);
            }
            CsvKind::Plan => inputs.plans.append(table),
        }
    }
    // One header-only shard among others is fine; a report of nothing is not.
    if inputs.runs.is_empty() && inputs.plans.is_empty() {
        let also = match paths.len() - 1 {
            0 => String::new(),
            n => format!(", nor do the other {n} CSV(s)"),
        };
        return Err(ReportError::NoRows {
            path: paths[0].clone(),
            also,
        });
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn merges_shards_with_different_extra_columns() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(&dir, "a.csv", "schema_version,host,tokens_per_s\n1,m1,10\n");
        let b = file(
            &dir,
            "b.csv",
            "host,schema_version,tokens_per_s,new_col\nm2,1,20,x\n",
        );
        let inputs = load(&[a, b]).unwrap();
        assert_eq!(inputs.runs.len(), 2);
        assert_eq!(inputs.runs.get(1, "host"), "m2");
        assert_eq!(inputs.runs.get(1, "tokens_per_s"), "20");
        assert_eq!(inputs.runs.get(0, "new_col"), "");
        assert!(inputs.plans.is_empty());
    }

    #[test]
    fn newer_schema_is_refused_naming_file_line_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(&dir, "old.csv", "schema_version,tokens_per_s\n1,10\n");
        let b = file(&dir, "new.csv", "schema_version,tokens_per_s\n1,10\n2,11\n");
        let msg = load(&[a, b]).unwrap_err().to_string();
        assert!(msg.contains("new.csv:3"), "{msg}");
        assert!(msg.contains("schema_version 2"), "{msg}");
        assert!(msg.contains(&format!("reads {SCHEMA_VERSION}")), "{msg}");
    }

    #[test]
    fn run_csv_without_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(&dir, "a.csv", "tokens_per_s\n10\n");
        let msg = load(&[a]).unwrap_err().to_string();
        assert!(
            msg.contains("a.csv") && msg.contains("schema_version"),
            "{msg}"
        );
    }

    #[test]
    fn non_numeric_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(&dir, "a.csv", "schema_version,tokens_per_s\nv1,10\n");
        let msg = load(&[a]).unwrap_err().to_string();
        assert!(msg.contains("`v1`"), "{msg}");
    }

    #[test]
    fn unrelated_csv_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(&dir, "a.csv", "x,y\n1,2\n");
        let msg = load(&[a]).unwrap_err().to_string();
        assert!(msg.contains("a.csv") && msg.contains("neither"), "{msg}");
    }

    #[test]
    fn header_only_inputs_are_refused_unless_another_has_rows() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file(&dir, "empty.csv", "schema_version,tokens_per_s\n");
        let msg = load(std::slice::from_ref(&empty)).unwrap_err().to_string();
        assert!(msg.contains("empty.csv has a header but no rows:"), "{msg}");
        let plan = file(&dir, "plan.csv", "model,context\n");
        let msg = load(&[empty.clone(), plan]).unwrap_err().to_string();
        assert!(msg.contains("nor do the other 1 CSV(s)"), "{msg}");
        // An empty shard next to one with rows is a sweep split unevenly.
        let full = file(&dir, "full.csv", "schema_version,tokens_per_s\n1,10\n");
        assert_eq!(load(&[empty, full]).unwrap().runs.len(), 1);
    }

    #[test]
    fn a_negative_or_infinite_measurement_in_a_timed_row_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let header = "schema_version,status,ttft_ms,tokens_per_s,kv_bytes_used,cosine\n";
        for (cells, column) in [
            ("ok,-5,10,64,0.9", "`ttft_ms` is -5"),
            ("ok,1,inf,64,0.9", "`tokens_per_s` is inf"),
            ("fallback,1,10,-64,0.9", "`kv_bytes_used` is -64"),
        ] {
            let a = file(
                &dir,
                "a.csv",
                &format!("{header}1,ok,1,10,64,0.9\n1,{cells}\n"),
            );
            let msg = load(&[a]).unwrap_err().to_string();
            assert!(msg.contains("a.csv:3: "), "{msg}");
            assert!(msg.contains(column) && msg.contains("re-run"), "{msg}");
        }
        // Rows that were not timed hold zeros or nothing; a cosine may be negative; NaN and
        // text are left to the reader (compare calls them unreadable).
        let a = file(
            &dir,
            "a.csv",
            &format!("{header}1,failed,0,,0,-0.2\n1,refused,,,,\n1,ok,NaN,abc,0,-1\n"),
        );
        assert_eq!(load(&[a]).unwrap().runs.len(), 3);
    }

    #[test]
    fn plan_csv_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(&dir, "p.csv", "model,context,kv_bytes\nllama,1024,5\n");
        let inputs = load(&[a]).unwrap();
        assert_eq!(inputs.plans.len(), 1);
        assert!(inputs.runs.is_empty());
    }
}
