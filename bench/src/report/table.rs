//! A CSV read by column name: the report and compare code never depend on column order, and
//! columns they do not know (added by a newer runner) ride along untouched.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::ReportError;

/// A CSV held as text cells, addressed by column name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CsvTable {
    /// Column names in file order (after a merge: first-seen order).
    columns: Vec<String>,
    /// Where each column is: reports look cells up by name millions of times.
    positions: HashMap<String, usize>,
    /// One entry per data row, cells in `columns` order ("" where a row has no value).
    pub rows: Vec<Vec<String>>,
    /// Where each row came from (file and 1-based line), for error messages.
    pub origins: Vec<RowOrigin>,
}

/// Where a row was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOrigin {
    /// The CSV file.
    pub file: PathBuf,
    /// 1-based line number in that file (the header is line 1).
    pub line: u64,
}

impl std::fmt::Display for RowOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

impl CsvTable {
    /// Reads a CSV file with a header row.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let text = crate::input::read_text(path, crate::input::CSV_CAP, "run or plan CSV")?;
        Self::parse(&text, path)
    }

    /// Parses CSV text; `path` only labels errors and row origins.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ReportError> {
        let bad = |message: String| ReportError::BadCsv {
            path: path.to_path_buf(),
            message,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            // A run interrupted mid-write may leave a short last row; it is reported below.
            .flexible(true)
            .from_reader(text.as_bytes());
        let columns: Vec<String> = reader
            .headers()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(|c| c.trim().to_string())
            .collect();
        if columns.iter().all(|c| c.is_empty()) {
            return Err(bad("it has no header row".into()));
        }
        let mut seen = BTreeSet::new();
        for c in &columns {
            if !seen.insert(c.as_str()) {
                return Err(bad(format!("column `{c}` appears twice in the header")));
            }
        }
        let mut table = CsvTable::default();
        for c in columns {
            table.add_column(c);
        }
        for record in reader.records() {
            let record = record.map_err(|e| bad(e.to_string()))?;
            let pos = record.position();
            // With CRLF endings the csv crate starts a record at the `\n` ending the line
            // before, still counted as that line.
            let at_newline =
                pos.is_some_and(|p| text.as_bytes().get(p.byte() as usize) == Some(&b'\n'));
            let line = pos.map_or(0, |p| p.line()) + u64::from(at_newline);
            if record.len() != table.columns.len() {
                return Err(bad(format!(
                    "line {line} has {} fields but the header has {}; a run stopped mid-row? \
                     delete that line and retry",
                    record.len(),
                    table.columns.len()
                )));
            }
            table.rows.push(record.iter().map(str::to_string).collect());
            table.origins.push(RowOrigin {
                file: path.to_path_buf(),
                line,
            });
        }
        Ok(table)
    }

    /// Column names in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Adds a column at the end, empty in every row so far (a no-op if present).
    pub fn add_column(&mut self, name: String) {
        if self.has(&name) {
            return;
        }
        self.positions.insert(name.clone(), self.columns.len());
        self.columns.push(name);
        for r in &mut self.rows {
            r.push(String::new());
        }
    }

    /// Position of a column, if present.
    pub fn index(&self, column: &str) -> Option<usize> {
        self.positions.get(column).copied()
    }

    /// Whether the table has a column.
    pub fn has(&self, column: &str) -> bool {
        self.index(column).is_some()
    }

    /// The first of `names` that the table has (column aliases across versions).
    pub fn first_present<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names.iter().copied().find(|n| self.has(n))
    }

    /// Cell text of row `row` in `column` ("" when the column is absent).
    pub fn get(&self, row: usize, column: &str) -> &str {
        self.index(column)
            .and_then(|i| self.rows[row].get(i))
            .map_or("", String::as_str)
    }

    /// Cell of row `row` in `column` as a number, `None` when empty or not a number.
    pub fn num(&self, row: usize, column: &str) -> Option<f64> {
        self.get(row, column).trim().parse::<f64>().ok()
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Appends `other`'s rows, adding its unknown columns (earlier rows get "" there).
    pub fn append(&mut self, other: CsvTable) {
        for c in &other.columns {
            self.add_column(c.clone());
        }
        let map: Vec<usize> = other
            .columns
            .iter()
            .map(|c| self.index(c).expect("column added above"))
            .collect();
        for row in other.rows {
            let mut out = vec![String::new(); self.columns.len()];
            for (cell, &to) in row.into_iter().zip(&map) {
                out[to] = cell;
            }
            self.rows.push(out);
        }
        self.origins.extend(other.origins);
    }

    /// Writes the table as CSV.
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let werr = |e: csv::Error| ReportError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut w = csv::Writer::from_path(path).map_err(werr)?;
        w.write_record(&self.columns).map_err(werr)?;
        for r in &self.rows {
            w.write_record(r).map_err(werr)?;
        }
        w.flush().map_err(|e| ReportError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Distinct values of `f(row)` in first-seen order.
    pub fn distinct_by(&self, f: impl Fn(usize) -> String) -> Vec<String> {
        // A set beside the list: first-seen order, linear time on 100,000s of rows.
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<String> = Vec::new();
        for r in 0..self.len() {
            let v = f(r);
            if seen.insert(v.clone()) {
                out.push(v);
            }
        }
        out
    }

    /// Distinct values of a column in first-seen order.
    pub fn distinct(&self, column: &str) -> Vec<String> {
        match self.index(column) {
            Some(i) => self.distinct_by(|r| self.rows[r].get(i).cloned().unwrap_or_default()),
            None if self.is_empty() => Vec::new(),
            None => vec![String::new()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> CsvTable {
        CsvTable::parse(text, Path::new("t.csv")).unwrap()
    }

    #[test]
    fn reads_by_name_whatever_the_order() {
        let t = parse("b,a\n2,1\n4,3\n");
        assert_eq!(t.get(0, "a"), "1");
        assert_eq!(t.num(1, "b"), Some(4.0));
        assert_eq!(t.get(0, "missing"), "");
        assert_eq!(t.origins[1].line, 3);
    }

    #[test]
    fn line_numbers_are_right_with_crlf_endings() {
        let t = parse("b,a\r\n2,1\r\n4,3\r\n");
        assert_eq!(t.origins[0].line, 2);
        assert_eq!(t.origins[1].line, 3);
        assert_eq!(t.get(1, "a"), "3");
    }

    #[test]
    fn append_unions_columns() {
        let mut t = parse("a,b\n1,2\n");
        t.append(parse("b,c\n5,6\n"));
        assert_eq!(t.columns, ["a", "b", "c"]);
        assert_eq!(t.rows, [["1", "2", ""], ["", "5", "6"]]);
    }

    #[test]
    fn short_row_is_a_clear_error() {
        let err = CsvTable::parse("a,b\n1,2\n3\n", Path::new("x.csv")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.csv") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn duplicate_header_is_rejected() {
        let err = CsvTable::parse("a,a\n1,2\n", Path::new("x.csv")).unwrap_err();
        assert!(err.to_string().contains("`a` appears twice"));
    }
}
