//! Charts of a merged run table: tokens/s and ITL against context per strategy (one chart
//! per machine and workload kind), KV memory against context per dtype, and error against
//! bits per element.

use std::collections::BTreeMap;

use super::chart::{Chart, Series, Style};
use super::table::CsvTable;
use super::view::{describe, dtype, machine, slug, sweep_order, varying};

/// A chart and the file name it is written to.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedChart {
    /// File name (no directory), ending in `.svg`.
    pub file: String,
    /// The chart.
    pub chart: Chart,
}

fn timed(t: &CsvTable, r: usize) -> bool {
    let s = t.get(r, "status");
    s.is_empty() || s == "ok"
}

/// The row's `% of limit` is a plain share of the limit: neither `cache_resident` nor
/// `limit_exceeded` is set (CSVs from before the flags have neither column).
fn within_limit(t: &CsvTable, r: usize) -> bool {
    ["cache_resident", "limit_exceeded"]
        .iter()
        .all(|c| matches!(t.get(r, c), "" | "0" | "false"))
}

/// Groups rows by a label, keeping first-seen order.
fn group_by(
    rows: impl Iterator<Item = usize>,
    label: impl Fn(usize) -> String,
) -> Vec<(String, Vec<usize>)> {
    // An index beside the list: first-seen order, linear in rows.
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in rows {
        let l = label(r);
        match at.get(&l) {
            Some(&i) => out[i].1.push(r),
            None => {
                at.insert(l.clone(), out.len());
                out.push((l, vec![r]));
            }
        }
    }
    out
}

/// One series per distinct workload (the varying key columns other than `x` and those
/// fixed by the group), points (x, y).
fn series_of(t: &CsvTable, rows: &[usize], x: &str, y: &str) -> Vec<Series> {
    let cols: Vec<String> = varying(t, rows)
        .into_iter()
        .filter(|c| c != x && c != "workload")
        .collect();
    group_by(sweep_order(t, rows.to_vec()).into_iter(), |r| {
        describe(t, r, &cols)
    })
    .into_iter()
    .map(|(name, rs)| Series {
        name,
        points: rs
            .iter()
            .filter_map(|&r| Some((t.num(r, x)?, t.num(r, y)?)))
            .collect(),
    })
    .collect()
}

/// A metric against prompt length, one chart per machine and workload kind.
fn per_machine(
    t: &CsvTable,
    y: &str,
    y_label: &str,
    (what, file): (&str, &str),
    y_log: bool,
    keep: &dyn Fn(usize) -> bool,
) -> Vec<NamedChart> {
    let rows =
        (0..t.len()).filter(|&r| timed(t, r) && keep(r) && t.num(r, y).is_some_and(|v| v > 0.0));
    group_by(rows, |r| {
        format!("{} · {}", machine(t, r), t.get(r, "workload"))
    })
    .into_iter()
    .map(|(group, rs)| NamedChart {
        file: format!("{file}-vs-context-{}.svg", slug(&group)),
        chart: Chart {
            title: format!("{what} against context · {group}"),
            x_label: "context (prompt tokens)".into(),
            y_label: y_label.into(),
            x_log: true,
            y_log,
            style: Style::Lines,
            series: series_of(t, &rs, "prompt", y),
        },
    })
    .collect()
}

/// Tokens/s against context length per strategy (and dtype), per machine.
pub fn tokens_per_s(t: &CsvTable) -> Vec<NamedChart> {
    let names = ("Decode tokens/s", "tokens-per-s");
    // Log scale: recomputing (none) is orders of magnitude slower than caching.
    per_machine(t, "tokens_per_s", "decode tokens/s", names, true, &|_| true)
}

/// Median inter-token latency against context length, per machine.
pub fn itl(t: &CsvTable) -> Vec<NamedChart> {
    let names = ("Inter-token latency (p50)", "itl");
    per_machine(t, "itl_p50_ms", "ITL p50 (ms)", names, true, &|_| true)
}

/// Decode bandwidth as a share of the machine's read limit against context (the roofline
/// view), per machine. Rows flagged `cache_resident` or `limit_exceeded` are left out: their
/// percentage is not a share of the limit.
pub fn pct_of_limit(t: &CsvTable) -> Vec<NamedChart> {
    let names = ("Decode bandwidth, % of the read limit", "pct-of-limit");
    per_machine(t, "pct_of_limit", "% of limit", names, false, &|r| {
        within_limit(t, r)
    })
}

/// KV bytes allocated against context, one line per strategy and dtype (machine-independent,
/// one chart per workload kind). `none` keeps no cache and is left out.
pub fn kv_memory(t: &CsvTable) -> Vec<NamedChart> {
    let rows = (0..t.len()).filter(|&r| {
        t.get(r, "strategy") != "none" && t.num(r, "kv_bytes_allocated").is_some_and(|v| v > 0.0)
    });
    group_by(rows, |r| t.get(r, "workload").to_string())
        .into_iter()
        .map(|(workload, rs)| {
            // Drop repeats of one workload from other machines: memory does not depend on them.
            let mut seen = std::collections::HashSet::new();
            let rs: Vec<usize> = rs
                .into_iter()
                .filter(|&r| {
                    let cols = crate::compare::columns::key_columns(t.columns());
                    seen.insert(
                        cols.iter()
                            .map(|c| t.get(r, c).to_string())
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let mut series = series_of(t, &rs, "prompt", "kv_bytes_allocated");
            for s in &mut series {
                for p in &mut s.points {
                    p.1 /= 1024.0 * 1024.0;
                }
            }
            NamedChart {
                file: format!("kv-memory-vs-context-{}.svg", slug(&workload)),
                chart: Chart {
                    title: format!("KV memory against context per dtype · {workload}"),
                    x_label: "context (prompt tokens; the cache also holds gen)".into(),
                    y_label: "KV bytes allocated (MiB)".into(),
                    x_log: true,
                    y_log: false,
                    style: Style::Lines,
                    series,
                },
            }
        })
        .collect()
}

/// Worst relative error against bits per element, one point per cache dtype.
pub fn error_vs_bits(t: &CsvTable) -> Vec<NamedChart> {
    let mut worst: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in (0..t.len()).filter(|&r| timed(t, r)) {
        let (Some(bits), Some(err)) = (t.num(r, "bits_per_element"), t.num(r, "rel_error")) else {
            continue;
        };
        let e = worst.entry(dtype(t, r)).or_insert((bits, err));
        e.1 = e.1.max(err);
    }
    if worst.is_empty() {
        return Vec::new();
    }
    let mut series: Vec<Series> = worst
        .into_iter()
        .map(|(name, p)| Series {
            name,
            points: vec![p],
        })
        .collect();
    series.sort_by(|a, b| b.points[0].0.total_cmp(&a.points[0].0));
    vec![NamedChart {
        file: "error-vs-bits.svg".into(),
        chart: Chart {
            title: "Attention error against bits per element".into(),
            x_label: "bits per element (with scales and zero points)".into(),
            y_label: "relative error vs f64 reference (worst)".into(),
            x_log: false,
            y_log: true,
            style: Style::Points,
            series,
        },
    }]
}

/// Every chart of a run table.
pub fn all(t: &CsvTable) -> Vec<NamedChart> {
    let mut out = tokens_per_s(t);
    out.extend(itl(t));
    out.extend(pct_of_limit(t));
    out.extend(kv_memory(t));
    out.extend(error_vs_bits(t));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn runs() -> CsvTable {
        let mut text = String::from(
            "host,cpu,threads,workload,strategy,k_dtype,v_dtype,prompt,gen,status,tokens_per_s,itl_p50_ms,kv_bytes_allocated,bits_per_element,rel_error\n",
        );
        for host in ["a", "b"] {
            for s in ["none", "contiguous", "paged"] {
                for d in ["f16", "int8"] {
                    for p in [128, 512, 2048] {
                        let tps = 1e5 / p as f64 * if host == "b" { 2.0 } else { 1.0 };
                        let bits = if d == "f16" { 16.0 } else { 9.0 };
                        let bytes = if s == "none" {
                            0
                        } else {
                            (p + 32) * bits as u32 * 16
                        };
                        let err = if d == "f16" { 2e-4 } else { 4e-3 };
                        text.push_str(&format!(
                            "{host},X,2,decoder,{s},{d},{d},{p},32,ok,{tps},{},{bytes},{bits},{err}\n",
                            1e3 / tps
                        ));
                    }
                }
            }
        }
        CsvTable::parse(&text, Path::new("r.csv")).unwrap()
    }

    #[test]
    fn limit_charts_leave_flagged_rows_out() {
        let text = "host,cpu,threads,workload,strategy,k_dtype,v_dtype,prompt,gen,status,pct_of_limit,cache_resident,limit_exceeded\n\
                    a,X,2,attention,paged,f16,f16,512,32,ok,189,true,false\n\
                    a,X,2,attention,paged,f16,f16,4096,32,ok,122,false,true\n\
                    a,X,2,attention,paged,f16,f16,32768,32,ok,91,false,false\n";
        let t = CsvTable::parse(text, Path::new("r.csv")).unwrap();
        let charts = pct_of_limit(&t);
        assert_eq!(charts.len(), 1);
        let points: Vec<_> = charts[0]
            .chart
            .series
            .iter()
            .flat_map(|s| s.points.clone())
            .collect();
        assert_eq!(points, vec![(32768.0, 91.0)]);
    }

    #[test]
    fn one_throughput_chart_per_machine_with_a_line_per_strategy_and_dtype() {
        let charts = tokens_per_s(&runs());
        assert_eq!(charts.len(), 2);
        assert_eq!(
            charts[0].file,
            "tokens-per-s-vs-context-a-x-2-threads-decoder.svg"
        );
        let names: Vec<&str> = charts[0]
            .chart
            .series
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "none f16",
                "none int8",
                "contiguous f16",
                "contiguous int8",
                "paged f16",
                "paged int8"
            ]
        );
        assert!(charts[0].chart.series.iter().all(|s| s.points.len() == 3));
        // Machine b is twice as fast at 128 tokens: 1e5 / 128 × 2.
        assert_eq!(charts[1].chart.series[0].points[0], (128.0, 1562.5));
    }

    #[test]
    fn memory_chart_skips_none_and_other_machines_repeats() {
        let charts = kv_memory(&runs());
        assert_eq!(charts.len(), 1);
        let names: Vec<&str> = charts[0]
            .chart
            .series
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "contiguous f16",
                "contiguous int8",
                "paged f16",
                "paged int8"
            ]
        );
        let s = &charts[0].chart.series[0];
        assert_eq!(s.points.len(), 3);
        // (2048 + 32) × 16 × 16 bytes in MiB.
        assert_eq!(s.points[2], (2048.0, 2080.0 * 256.0 / 1048576.0));
    }

    #[test]
    fn error_chart_has_one_point_per_dtype() {
        let charts = error_vs_bits(&runs());
        let pts: Vec<(&str, (f64, f64))> = charts[0]
            .chart
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.points[0]))
            .collect();
        assert_eq!(pts, [("f16", (16.0, 2e-4)), ("int8", (9.0, 4e-3))]);
    }
}
