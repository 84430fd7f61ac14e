//! The one markdown writer: GitHub tables (for run pages, plan and model rows, reports and
//! comparisons), and the run page built from them.

use super::{table, RunResult, RunSerializer};

/// A GitHub-flavoured markdown table; `|` in cells is escaped.
pub fn table<H: AsRef<str>, C: AsRef<str>>(headers: &[H], rows: &[Vec<C>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let line = |cells: &mut dyn Iterator<Item = String>| {
        format!("| {} |\n", cells.collect::<Vec<_>>().join(" | "))
    };
    let mut out = line(&mut headers.iter().map(|h| esc(h.as_ref())));
    out.push_str(&format!(
        "|{}|\n",
        headers
            .iter()
            .map(|_| " --- ")
            .collect::<Vec<_>>()
            .join("|")
    ));
    for r in rows {
        out.push_str(&line(&mut r.iter().map(|c| esc(c.as_ref()))));
    }
    out
}

/// Serializes a run as a markdown page: the results table, then one line per row that is
/// not `ok`.
pub struct RunPage;

impl RunSerializer for RunPage {
    fn serialize(&self, results: &[RunResult]) -> String {
        let records: Vec<_> = results.iter().map(|r| r.record.clone()).collect();
        let mut out = String::from("# kvbench run\n\n");
        if let Some(r) = records.first() {
            out.push_str(&format!(
                "{} · {} ({} cores, {} threads) · kvbench {} ({}) · {}\n\n",
                r.host, r.cpu, r.cores, r.threads, r.kvbench_version, r.git_commit, r.timestamp
            ));
        }
        out.push_str(&table(&table::HEADER, &table::rows(&records)));
        for r in records.iter().filter(|r| r.status != crate::Status::Ok) {
            out.push_str(&format!(
                "\n- {} {} {}: **{}** {}",
                r.model, r.strategy, r.k_dtype, r.status, r.detail
            ));
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Samples;
    use crate::{Record, Status};

    #[test]
    fn tables_render_and_escape_pipes() {
        let t = table(&["a", "b"], &[vec!["1", "x|y"]]);
        assert_eq!(t, "| a | b |\n| --- | --- |\n| 1 | x\\|y |\n");
    }

    #[test]
    fn page_has_a_markdown_table_and_failure_notes() {
        let ok = Record {
            model: "tiny".into(),
            strategy: "paged".into(),
            k_dtype: "f16".into(),
            v_dtype: "f16".into(),
            tokens_per_s: 1234.5,
            ..Record::default()
        };
        let failed = Record {
            status: Status::Failed,
            detail: "rel_error 0.3 > bound 0.1".into(),
            ..ok.clone()
        };
        let results: Vec<_> = [ok, failed]
            .into_iter()
            .map(|record| RunResult {
                record,
                samples: Samples::default(),
            })
            .collect();
        let page = RunPage.serialize(&results);
        let table_lines: Vec<&str> = page.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(table_lines.len(), 4, "{page}"); // header, rule, two rows
        assert!(table_lines[1].contains("---"));
        assert!(page.contains("1234.5"));
        assert!(page.contains("**failed** rel_error 0.3 > bound 0.1"));
    }
}
