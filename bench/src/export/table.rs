//! The results table: the columns a reader compares first, for the terminal and markdown.

use super::{RunResult, RunSerializer};
use crate::record::status;
use crate::Record;
use tabled::builder::Builder;

/// Columns of the run table.
pub const HEADER: [&str; 15] = [
    "model",
    "workload",
    "strategy",
    "dtype",
    "batch",
    "prompt+gen",
    "status",
    "TTFT ms",
    "ITL p50 ms",
    "ITL p99 ms",
    "tokens/s",
    "KV allocated",
    "KV used",
    "rel error",
    "% of limit",
];

/// A box-drawn table for a terminal: the one terminal table writer.
pub fn terminal<H: AsRef<str>, C: AsRef<str>>(headers: &[H], rows: &[Vec<C>]) -> String {
    let mut b = Builder::new();
    b.push_record(headers.iter().map(|h| h.as_ref().to_string()));
    for r in rows {
        b.push_record(r.iter().map(|c| c.as_ref().to_string()));
    }
    b.build().with(tabled::settings::Style::sharp()).to_string()
}

/// Serializes a run as the terminal table.
pub struct RunTable;

impl RunSerializer for RunTable {
    fn serialize(&self, results: &[RunResult]) -> String {
        let records: Vec<Record> = results.iter().map(|r| r.record.clone()).collect();
        terminal(&HEADER, &rows(&records)) + "\n"
    }
}

/// The table's cells, one row per record.
pub fn rows(records: &[Record]) -> Vec<Vec<String>> {
    records.iter().map(row).collect()
}

fn row(r: &Record) -> Vec<String> {
    let ok = r.status.is_timed();
    let timed = |v: f64, f: fn(f64) -> String| if ok { f(v) } else { "-".into() };
    let dtype = if !r.cache_dtype.is_empty() {
        r.cache_dtype.clone()
    } else if r.k_dtype == r.v_dtype {
        r.k_dtype.clone()
    } else {
        format!("k={},v={}", r.k_dtype, r.v_dtype)
    };
    let strategy = if r.block_size > 0 {
        format!("{} b{}", r.strategy, r.block_size)
    } else {
        r.strategy.clone()
    };
    vec![
        r.model.clone(),
        r.workload.clone(),
        strategy,
        dtype,
        r.batch.to_string(),
        format!("{}+{}", r.prompt, r.gen),
        r.status.to_string(),
        timed(r.ttft_ms, ms),
        timed(r.itl_p50_ms, ms),
        timed(r.itl_p99_ms, ms),
        timed(r.tokens_per_s, |v| format!("{v:.1}")),
        if ok {
            bytes(r.kv_bytes_allocated)
        } else {
            "-".into()
        },
        if ok {
            bytes(r.kv_bytes_used)
        } else {
            "-".into()
        },
        if ok || r.status == status::FAILED {
            format!("{:.1e}", r.rel_error)
        } else {
            "-".into()
        },
        if ok && r.limit_gbps > 0.0 {
            crate::flags::roofline_label(r)
        } else {
            "-".into()
        },
    ]
}

/// Milliseconds with about three significant digits.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.3}")
    } else if v < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// Bytes in binary units (KiB, MiB, GiB), as the planner reports them.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(536_870_912), "512.00 MiB");
        assert_eq!(bytes(1_342_177_280), "1.25 GiB");
        assert_eq!(ms(1.23456), "1.235");
        assert_eq!(ms(12.3456), "12.35");
        assert_eq!(ms(123.456), "123.5");
    }

    #[test]
    fn failed_rows_show_no_timing() {
        let r = Record {
            status: status::REFUSED,
            ttft_ms: 5.0,
            k_dtype: "int4".into(),
            v_dtype: "int8".into(),
            ..Record::default()
        };
        let t = terminal(&HEADER, &rows(&[r]));
        let line = t.lines().nth(3).unwrap();
        assert!(
            line.contains("refused") && line.contains("k=int4,v=int8"),
            "{t}"
        );
        assert!(!line.contains("5.000"), "{t}");
    }
}
