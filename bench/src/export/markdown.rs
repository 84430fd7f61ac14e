//! The markdown exporter: the results table as a markdown page, rewritten after each workload.

use super::{replace_file, table, ExportError, Exporter, Samples};
use crate::Record;
use std::path::{Path, PathBuf};

/// Writes the summary table (see [`table`]) as a markdown table.
pub struct MarkdownExporter {
    path: PathBuf,
    records: Vec<Record>,
}

impl MarkdownExporter {
    /// Start an empty page at `path`.
    pub fn create(path: &Path) -> Result<Self, ExportError> {
        replace_file(path, "")?;
        Ok(MarkdownExporter {
            path: path.to_path_buf(),
            records: Vec::new(),
        })
    }
}

/// The markdown page for `records`: the table, then one line per row that is not `ok`.
pub fn render(records: &[Record]) -> String {
    let mut out = String::from("# kvbench run\n\n");
    if let Some(r) = records.first() {
        out.push_str(&format!(
            "{} · {} ({} cores, {} threads) · kvbench {} ({}) · {}\n\n",
            r.host, r.cpu, r.cores, r.threads, r.kvbench_version, r.git_commit, r.timestamp
        ));
    }
    out.push_str(&table::render(records, table::Style::Markdown));
    out.push('\n');
    for r in records
        .iter()
        .filter(|r| r.status != crate::record::status::OK)
    {
        out.push_str(&format!(
            "\n- {} {} {}: **{}** {}",
            r.model, r.strategy, r.k_dtype, r.status, r.detail
        ));
    }
    out.push('\n');
    out
}

impl Exporter for MarkdownExporter {
    fn add(&mut self, record: &Record, _samples: &Samples) -> Result<(), ExportError> {
        self.records.push(record.clone());
        replace_file(&self.path, &render(&self.records))
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_a_markdown_table_and_failure_notes() {
        let ok = Record {
            model: "tiny".into(),
            strategy: "paged".into(),
            k_dtype: "f16".into(),
            v_dtype: "f16".into(),
            status: "ok".into(),
            tokens_per_s: 1234.5,
            ..Record::default()
        };
        let failed = Record {
            status: "failed".into(),
            detail: "rel_error 0.3 > bound 0.1".into(),
            ..ok.clone()
        };
        let page = render(&[ok, failed]);
        let table_lines: Vec<&str> = page.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(table_lines.len(), 4, "{page}"); // header, rule, two rows
        assert!(table_lines[1].contains("---"));
        assert!(page.contains("1234.5"));
        assert!(page.contains("**failed** rel_error 0.3 > bound 0.1"));
    }
}
