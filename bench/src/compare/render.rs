//! The comparison as text: a table of changes, notes, and a one-line summary.

use super::verdict::Verdict;
use super::Comparison;

/// Renders the comparison. `all` also lists metrics that are the same or within noise.
pub fn render(c: &Comparison, all: bool) -> String {
    let mut shown: Vec<_> = c
        .findings
        .iter()
        .filter(|f| all || f.verdict.notable())
        .collect();
    // Failures first, then the rest, each group in baseline order.
    shown.sort_by_key(|f| f.verdict);
    let mut out = String::new();
    if shown.is_empty() {
        out.push_str("no changes beyond thresholds\n");
    } else {
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|f| {
                let change = f
                    .change
                    .map_or(String::new(), |x| format!("{:+.1}%", x * 100.0));
                vec![
                    f.workload.clone(),
                    f.metric.clone(),
                    f.base.clone(),
                    f.new.clone(),
                    change,
                    f.rule.clone(),
                    f.verdict.word().to_string(),
                ]
            })
            .collect();
        out.push_str(&crate::export::markdown::table(
            &[
                "workload", "metric", "baseline", "new", "change", "rule", "verdict",
            ],
            &rows,
        ));
    }
    for n in &c.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(&summary(c));
    out.push('\n');
    out
}

/// One line: how much was compared and what came out.
pub fn summary(c: &Comparison) -> String {
    let fails = c.failures().count();
    let verdict = if fails == 0 {
        "PASS".to_string()
    } else {
        format!("FAIL ({fails} failing)")
    };
    format!(
        "{verdict}: {} workloads matched, {} checks: {} regressed, {} changed, {} missing, \
         {} improved, {} within noise/tolerance, {} new workloads",
        c.matched,
        c.findings.len(),
        c.count(Verdict::Regressed),
        c.count(Verdict::Changed),
        c.count(Verdict::Missing),
        c.count(Verdict::Improved),
        c.count(Verdict::WithinNoise) + c.count(Verdict::WithinTolerance),
        c.count(Verdict::Added),
    )
}
