//! Plan CSVs (`kvbench plan … --format csv`, columns in results/plan-csv.md): KV memory
//! against context per model and dtype, and concurrent sequences per GPU deployment.

use super::chart::{Chart, Series, Style};
use super::markdown::{bytes, num, MdTable};
use super::run_charts::NamedChart;
use super::runs::Section;
use super::table::CsvTable;
use super::view::slug;

/// Column names, with the alternatives a plan CSV may use.
const CONTEXT: &[&str] = &["seq_tokens", "context", "seq", "max_len"];
const DTYPE: &[&str] = &["cache_dtype", "dtype", "kv_dtype"];
const SEQ_BYTES: &[&str] = &["seq_bytes", "kv_bytes_per_seq", "kv_bytes"];
const SEQS: &[&str] = &["max_seqs", "concurrency", "max_concurrent_seqs"];

/// `model dtype` of a plan row.
fn model_dtype(t: &CsvTable, r: usize, dtype_col: Option<&str>) -> String {
    let model = t.get(r, "model");
    match dtype_col.map(|c| t.get(r, c)).filter(|d| !d.is_empty()) {
        Some(d) => format!("{model} {d}"),
        None => model.to_string(),
    }
}

/// The deployment of a plan row: `GPU ×count tp=… pp=…`, or None without one.
fn deployment(t: &CsvTable, r: usize) -> Option<String> {
    let gpu = t.get(r, "gpu").trim();
    if gpu.is_empty() {
        return None;
    }
    let mut s = gpu.to_string();
    for (col, label) in [("gpus", "×"), ("tp", " tp="), ("pp", " pp=")] {
        let v = t.get(r, col).trim();
        if !v.is_empty() && v != "1" {
            s.push_str(&format!("{label}{v}"));
        }
    }
    Some(s)
}

/// Adds (x, y) to the series `name`, creating it in first-seen order; repeats are dropped.
fn push_point(series: &mut Vec<Series>, name: String, p: (f64, f64)) {
    match series.iter_mut().find(|s| s.name == name) {
        Some(s) if !s.points.contains(&p) => s.points.push(p),
        Some(_) => {}
        None => series.push(Series {
            name,
            points: vec![p],
        }),
    }
}

/// KV memory per sequence against context, one line per model and dtype.
pub fn memory_chart(t: &CsvTable) -> Option<NamedChart> {
    let x = t.first_present(CONTEXT)?;
    let y = t.first_present(SEQ_BYTES)?;
    let d = t.first_present(DTYPE);
    let mut series = Vec::new();
    for r in 0..t.len() {
        if let (Some(ctx), Some(b)) = (t.num(r, x), t.num(r, y)) {
            push_point(
                &mut series,
                model_dtype(t, r, d),
                (ctx, b / f64::from(1u32 << 30)),
            );
        }
    }
    Some(NamedChart {
        file: "plan-kv-memory-vs-context.svg".into(),
        chart: Chart {
            title: "Planned KV memory per sequence against context".into(),
            x_label: "context (tokens)".into(),
            y_label: "KV cache per sequence (GiB)".into(),
            x_log: true,
            y_log: true,
            style: Style::Lines,
            series,
        },
    })
}

/// Concurrent sequences against context, one chart per GPU deployment.
pub fn concurrency_charts(t: &CsvTable) -> Vec<NamedChart> {
    let (Some(x), Some(y)) = (t.first_present(CONTEXT), t.first_present(SEQS)) else {
        return Vec::new();
    };
    let d = t.first_present(DTYPE);
    let mut by_deployment: Vec<(String, Vec<Series>)> = Vec::new();
    for r in 0..t.len() {
        let (Some(dep), Some(ctx), Some(n)) = (deployment(t, r), t.num(r, x), t.num(r, y)) else {
            continue;
        };
        let i = match by_deployment.iter().position(|(k, _)| *k == dep) {
            Some(i) => i,
            None => {
                by_deployment.push((dep, Vec::new()));
                by_deployment.len() - 1
            }
        };
        push_point(&mut by_deployment[i].1, model_dtype(t, r, d), (ctx, n));
    }
    by_deployment
        .into_iter()
        .map(|(dep, series)| NamedChart {
            file: format!("plan-concurrency-{}.svg", slug(&dep)),
            chart: Chart {
                title: format!("Concurrent sequences per deployment · {dep}"),
                x_label: "context per sequence (tokens)".into(),
                y_label: "sequences that fit".into(),
                x_log: true,
                y_log: true,
                style: Style::Lines,
                series,
            },
        })
        .collect()
}

/// Every plan chart.
pub fn charts(t: &CsvTable) -> Vec<NamedChart> {
    let mut out: Vec<NamedChart> = memory_chart(t).into_iter().collect();
    out.extend(concurrency_charts(t));
    out
}

/// The capacity table: one row per plan row, the columns a sizing decision needs.
pub fn capacity(t: &CsvTable) -> Section {
    let d = t.first_present(DTYPE);
    let x = t.first_present(CONTEXT);
    let y = t.first_present(SEQ_BYTES);
    let n = t.first_present(SEQS);
    let mut table = MdTable::new(&[
        "model",
        "deployment",
        "context",
        "KV / token",
        "KV / sequence",
        "token capacity",
        "sequences",
    ]);
    let opt = |r: usize, c: Option<&str>, f: fn(f64) -> String| {
        c.and_then(|c| t.num(r, c)).map_or("–".to_string(), f)
    };
    for r in 0..t.len() {
        table.rows.push(vec![
            model_dtype(t, r, d),
            deployment(t, r).unwrap_or_else(|| "–".into()),
            opt(r, x, num),
            opt(r, Some("kv_bytes_per_token"), bytes),
            opt(r, y, bytes),
            opt(r, Some("token_capacity"), num),
            opt(r, n, num),
        ]);
    }
    Section {
        title: "Planned capacity per model, dtype and GPU".into(),
        intro: "From `kvbench plan --format csv`: KV bytes per token and per sequence, and \
                what fits beside the weights on each deployment (vLLM's block arithmetic)."
            .into(),
        table,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plans() -> CsvTable {
        let mut text = String::from(
            "model,cache_dtype,seq_tokens,kv_bytes_per_token,seq_bytes,gpu,gpus,tp,token_capacity,max_seqs\n",
        );
        // Llama-3.1-8B f16: 131,072 B/token (REFERENCE.md); int8 (q8_0) is 8.5/16 of that.
        for (dtype, per_token) in [("f16", 131_072.0), ("q8_0", 69_632.0)] {
            for ctx in [1024u32, 4096, 16384] {
                let cap = 400_000.0 * 131_072.0 / per_token;
                text.push_str(&format!(
                    "llama-3.1-8b,{dtype},{ctx},{per_token},{},h100-80gb,1,1,{cap},{}\n",
                    per_token * ctx as f64,
                    (cap / ctx as f64).floor()
                ));
            }
        }
        CsvTable::parse(&text, Path::new("p.csv")).unwrap()
    }

    #[test]
    fn memory_chart_has_a_line_per_model_and_dtype_in_gib() {
        let c = memory_chart(&plans()).unwrap();
        let names: Vec<&str> = c.chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["llama-3.1-8b f16", "llama-3.1-8b q8_0"]);
        // 131,072 B × 4096 tokens = 0.5 GiB.
        assert_eq!(c.chart.series[0].points[1], (4096.0, 0.5));
    }

    #[test]
    fn concurrency_chart_per_deployment() {
        let c = concurrency_charts(&plans());
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].file, "plan-concurrency-h100-80gb.svg");
        assert_eq!(c[0].chart.series[0].points[0], (1024.0, 390.0));
    }

    #[test]
    fn capacity_table_in_human_units() {
        let s = capacity(&plans());
        assert_eq!(s.table.rows.len(), 6);
        assert_eq!(s.table.rows[0][3], "128 KiB");
        assert_eq!(s.table.rows[1][4], "512 MiB");
        assert_eq!(s.table.rows[0][1], "h100-80gb");
    }
}
