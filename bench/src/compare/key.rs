//! Matching rows of two runs by their workload key, and short labels that name a workload by
//! the key columns that actually vary.

use std::collections::HashMap;

use super::columns::{key_columns, FINGERPRINT};
use super::CompareError;
use crate::report::table::CsvTable;

/// The key columns two tables share, and those only one has.
#[derive(Debug, Clone)]
pub struct KeyColumns {
    /// Key columns present in both tables (the match is on these).
    pub shared: Vec<String>,
    /// Key columns present in only one table (ignored for matching, reported as a note).
    pub one_sided: Vec<String>,
    /// Of those, the ones the baseline has and the new table lacks.
    pub only_base: Vec<String>,
    /// And those the new table has and the baseline lacks.
    pub only_new: Vec<String>,
    /// Shared key columns whose value differs between rows: what a label shows.
    pub varying: Vec<String>,
}

/// A cell normalised for matching: numbers by value ("16.0" matches "16").
fn normalise(cell: &str) -> String {
    let t = cell.trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => format!("{v}"),
        _ => t.to_string(),
    }
}

impl KeyColumns {
    /// The key columns of a pair of tables.
    pub fn of(base: &CsvTable, new: &CsvTable) -> Self {
        let kb = key_columns(base.columns());
        let kn = key_columns(new.columns());
        let shared: Vec<String> = kb.iter().filter(|c| kn.contains(c)).cloned().collect();
        let one_sided = kb
            .iter()
            .chain(&kn)
            .filter(|c| !shared.contains(c))
            .cloned()
            .collect();
        let only_base = kb.iter().filter(|c| !kn.contains(c)).cloned().collect();
        let only_new = kn.iter().filter(|c| !kb.contains(c)).cloned().collect();
        let varying = shared
            .iter()
            .filter(|c| {
                let mut values = (0..base.len())
                    .map(|r| normalise(base.get(r, c)))
                    .chain((0..new.len()).map(|r| normalise(new.get(r, c))));
                let first = values.next();
                values.any(|v| Some(&v) != first.as_ref())
            })
            .cloned()
            .collect();
        KeyColumns {
            shared,
            one_sided,
            only_base,
            only_new,
            varying,
        }
    }

    /// The key of one row, restricted to `columns`.
    pub fn key_of(table: &CsvTable, row: usize, columns: &[String]) -> Vec<String> {
        columns
            .iter()
            .map(|c| normalise(table.get(row, c)))
            .collect()
    }

    /// Map from key to row; two rows with one key (say, two machines) is an error. `which`
    /// names `table`, `other` the other file (blamed when it lacks key columns `table` has).
    pub fn index(
        &self,
        table: &CsvTable,
        which: &str,
        other: &str,
    ) -> Result<HashMap<Vec<String>, usize>, CompareError> {
        let mut map = HashMap::new();
        for row in 0..table.len() {
            let key = Self::key_of(table, row, &self.shared);
            if let Some(first) = map.insert(key, row) {
                // Rows that differ only in a key column the other file lacks look alike.
                let lacking = if which.starts_with("baseline") {
                    &self.only_base
                } else {
                    &self.only_new
                };
                let hint = if lacking.is_empty() {
                    String::new()
                } else {
                    format!(
                        " because {other} lacks key column(s) {}, so rows are matched without \
                         them",
                        lacking
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(CompareError::DuplicateKey {
                    hint,
                    which: which.to_string(),
                    first: table.origins[first].to_string(),
                    second: table.origins[row].to_string(),
                    workload: self.label(table, row),
                });
            }
        }
        Ok(map)
    }

    /// A short name for a row's workload: its varying key columns as `name=value`.
    pub fn label(&self, table: &CsvTable, row: usize) -> String {
        let shown: Vec<String> = if self.varying.is_empty() {
            self.shared.iter().take(1).cloned().collect()
        } else {
            self.varying.clone()
        };
        shown
            .iter()
            .map(|c| format!("{c}={}", table.get(row, c)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The machine a row ran on, as `cpu=… cores=… gpu=… threads=…`.
pub fn fingerprint(table: &CsvTable, row: usize) -> String {
    FINGERPRINT
        .iter()
        .map(|c| format!("{c}={}", table.get(row, c).trim()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn t(text: &str) -> CsvTable {
        CsvTable::parse(text, Path::new("t.csv")).unwrap()
    }

    #[test]
    fn keys_match_numbers_by_value_and_ignore_measurements() {
        let a = t("strategy,prompt,tokens_per_s,host\npaged,512,10,a\npaged,1024,9,a\n");
        let b = t("prompt,strategy,tokens_per_s,host\n512.0,paged,11,b\n1024,paged,8,b\n");
        let k = KeyColumns::of(&a, &b);
        assert_eq!(k.shared, ["strategy", "prompt"]);
        assert_eq!(k.varying, ["prompt"]);
        let ib = k.index(&b, "new", "a").unwrap();
        assert_eq!(ib[&KeyColumns::key_of(&a, 0, &k.shared)], 0);
        assert_eq!(ib[&KeyColumns::key_of(&a, 1, &k.shared)], 1);
        assert_eq!(k.label(&a, 1), "prompt=1024");
    }

    #[test]
    fn a_key_column_only_one_side_has_is_set_aside() {
        let a = t("strategy,tokens_per_s\npaged,1\n");
        let b = t("strategy,tier,tokens_per_s\npaged,host,1\n");
        let k = KeyColumns::of(&a, &b);
        assert_eq!(k.shared, ["strategy"]);
        assert_eq!(k.one_sided, ["tier"]);
    }

    #[test]
    fn duplicate_workloads_name_both_lines() {
        let a = t("strategy,host,tokens_per_s\npaged,m1,1\npaged,m2,2\n");
        let k = KeyColumns::of(&a, &a);
        let msg = k.index(&a, "baseline", "t.csv").unwrap_err().to_string();
        assert!(msg.contains("t.csv:2") && msg.contains("t.csv:3"), "{msg}");
    }
}
