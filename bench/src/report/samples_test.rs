//! The report built from the committed sample CSVs (results/samples/, real runs): every
//! chart parses as SVG and carries the series the run holds.

use std::path::{Path, PathBuf};

use super::write_report;

/// The committed sample CSVs, sorted.
fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/samples");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    out.sort();
    out
}

/// Legend and axis texts of an SVG document.
fn texts(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

#[test]
fn report_from_the_committed_samples_has_valid_charts_with_the_expected_series() {
    let inputs = samples();
    assert!(
        inputs.len() >= 4,
        "expected run shards, a 1-thread run and a plan: {inputs:?}"
    );
    let out = tempfile::tempdir().unwrap();
    let summary = write_report(&inputs, out.path()).unwrap();
    // Two shards of one machine and one configuration with another thread count.
    assert_eq!(summary.machines.len(), 2, "{:?}", summary.machines);
    assert!(summary.plan_rows > 0);
    let mut seen = Vec::new();
    for chart in &summary.charts {
        let svg = std::fs::read_to_string(chart).unwrap();
        let doc = roxmltree::Document::parse(&svg)
            .unwrap_or_else(|e| panic!("{} is not valid SVG: {e}", chart.display()));
        assert!(doc.root_element().has_tag_name("svg"));
        let name = chart.file_name().unwrap().to_string_lossy().to_string();
        let t = texts(&doc);
        if name.starts_with("tokens-per-s-vs-context") {
            for strategy in ["none", "contiguous", "paged"] {
                for dtype in ["f16", "int8", "int4"] {
                    let series = format!("{strategy} {dtype}");
                    assert!(t.contains(&series), "{name}: no series {series} in {t:?}");
                }
            }
            // A line per series: 9 strategy × dtype series over 3 prompt lengths.
            let lines = doc
                .descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .filter(|n| n.attribute("stroke-width") == Some("2"))
                .count();
            assert_eq!(lines, 9, "{name}");
        }
        if name == "error-vs-bits.svg" {
            for dtype in ["f16", "int8", "int4"] {
                assert!(t.iter().any(|s| s == dtype), "{name}: no {dtype}");
            }
        }
        seen.push(name);
    }
    for prefix in [
        "tokens-per-s-vs-context-",
        "itl-vs-context-",
        "kv-memory-vs-context-",
        "error-vs-bits",
        "plan-kv-memory-vs-context",
        "plan-concurrency-",
    ] {
        assert!(
            seen.iter().any(|s| s.starts_with(prefix)),
            "no {prefix} chart in {seen:?}"
        );
    }
    let md = std::fs::read_to_string(&summary.report).unwrap();
    // Every sample row was verified, and every layout allocated what the planner predicted.
    assert!(!md.contains("## Rows that were not timed"), "{md}");
    assert!(!md.contains("| no ("), "planner and layout disagree:\n{md}");
    // Every quantized dtype found its f16 twin: the saving is a figure, not a dash.
    for line in md
        .lines()
        .filter(|l| l.starts_with("| int8 |") || l.starts_with("| int4 |"))
    {
        assert!(line.contains('%'), "no saving against f16 in {line}");
    }
}

#[test]
fn a_report_of_many_workloads_bounds_its_tables_and_charts() {
    // 1,200 distinct workloads (the 1-thread sample with its seed renumbered): each table
    // shows MAX_TABLE_ROWS of them and says how many more the merged CSV holds; a chart of
    // more lines than a legend can name is left out with its count.
    let sample = samples()
        .into_iter()
        .find(|p| p.to_string_lossy().contains("1thread"))
        .unwrap();
    let mut reader = csv::Reader::from_path(&sample).unwrap();
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let (seed, model) = (
        header.iter().position(|h| h == "seed").unwrap(),
        header.iter().position(|h| h == "model").unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("many.csv");
    let mut w = csv::Writer::from_path(&big).unwrap();
    w.write_record(&header).unwrap();
    let copies = 1_200usize.div_ceil(rows.len());
    for i in 0..copies {
        for r in &rows {
            let mut r: Vec<String> = r.iter().map(str::to_string).collect();
            r[seed] = i.to_string();
            r[model] = format!("m{i}");
            w.write_record(&r).unwrap();
        }
    }
    w.flush().unwrap();
    let total = copies * rows.len();
    let out = dir.path().join("report");
    let summary = write_report(&[big], &out).unwrap();
    assert_eq!(summary.run_rows, total);
    let md = std::fs::read_to_string(&summary.report).unwrap();
    let hidden = total - super::write::MAX_TABLE_ROWS;
    assert!(
        md.contains(&format!("*{hidden} more rows are in the merged CSV")),
        "{}",
        &md[..2000]
    );
    // One model per copy and per strategy × dtype: far more lines than a legend names.
    assert!(md.contains("left out:"), "{}", &md[..2000]);
    for chart in &summary.charts {
        let svg = std::fs::read_to_string(chart).unwrap();
        let lines = svg.matches("<polyline").count();
        assert!(
            lines <= 2 * super::write::MAX_CHART_SERIES + 8,
            "{}: {lines}",
            chart.display()
        );
    }
}
