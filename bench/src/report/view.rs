//! Naming things in a merged run table: the machine a row ran on, the key columns that vary,
//! and short descriptions of workloads for tables and legends.

use std::collections::HashSet;

use super::table::CsvTable;
use crate::compare::columns::key_columns;

/// The machine a row ran on: host, CPU, thread count and GPU when there is one.
pub fn machine(t: &CsvTable, r: usize) -> String {
    let host = t.get(r, "host").trim();
    let cpu = t.get(r, "cpu").trim();
    let threads = t.get(r, "threads").trim();
    let gpu = t.get(r, "gpu").trim();
    let mut parts = Vec::new();
    if !cpu.is_empty() {
        parts.push(cpu.to_string());
    }
    if !threads.is_empty() {
        parts.push(format!("{threads} threads"));
    }
    if !gpu.is_empty() && gpu != "none" {
        parts.push(gpu.to_string());
    }
    match (host.is_empty(), parts.is_empty()) {
        (false, false) => format!("{host} ({})", parts.join(", ")),
        (false, true) => host.to_string(),
        (true, false) => parts.join(", "),
        (true, true) => "unknown machine".into(),
    }
}

/// A file-name-safe slug of a label.
pub fn slug(label: &str) -> String {
    let mut s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.trim_matches('-').chars().take(60).collect()
}

/// The workload-key columns whose value differs among `rows`; `block_size` only when it
/// tells rows apart beyond `strategy` (non-paged rows carry 0, so it usually just follows).
pub fn varying(t: &CsvTable, rows: &[usize]) -> Vec<String> {
    let cols: Vec<String> = key_columns(t.columns())
        .into_iter()
        .filter(|c| {
            let first = rows.first().map(|&r| t.get(r, c));
            rows.iter().any(|&r| Some(t.get(r, c)) != first)
        })
        .collect();
    let distinct = |cs: &[&str]| {
        rows.iter()
            .map(|&r| cs.iter().map(|c| t.get(r, c)).collect::<Vec<_>>())
            .collect::<HashSet<_>>()
            .len()
    };
    let follows_strategy = distinct(&["strategy"]) == distinct(&["strategy", "block_size"]);
    cols.into_iter()
        .filter(|c| !(c == "block_size" && follows_strategy))
        .collect()
}

/// Rows in the order of the whole sweep (`sweep_index`), so shards merged in any order read
/// as one run; rows without an index keep their order, after those with one.
pub fn sweep_order(t: &CsvTable, mut rows: Vec<usize>) -> Vec<usize> {
    rows.sort_by_key(|&r| t.num(r, "sweep_index").map_or(u64::MAX, |v| v as u64));
    rows
}

/// The cache dtype of a row: `int8`, or `int4/f16` when K and V differ.
pub fn dtype(t: &CsvTable, r: usize) -> String {
    let (k, v) = (t.get(r, "k_dtype"), t.get(r, "v_dtype"));
    let named = t.get(r, "cache_dtype");
    if k.is_empty() && !named.is_empty() {
        return named.to_string();
    }
    if k == v || v.is_empty() {
        k.to_string()
    } else {
        format!("{k}/{v}")
    }
}

/// A row described by `columns`: names and dtypes as values, numbers as `name=value`.
pub fn describe(t: &CsvTable, r: usize, columns: &[String]) -> String {
    let mut parts = Vec::new();
    // K, V and their combined name (`cache_dtype`) say one thing: show it once.
    let is_dtype = |c: &str| matches!(c, "k_dtype" | "v_dtype" | "cache_dtype");
    let has_dtype = columns.iter().any(|c| is_dtype(c));
    if has_dtype {
        parts.push(dtype(t, r));
    }
    for c in columns {
        if is_dtype(c) {
            continue;
        }
        let v = t.get(r, c);
        if v.parse::<f64>().is_ok() || v == "true" || v == "false" {
            parts.push(format!("{c}={v}"));
        } else {
            parts.push(v.to_string());
        }
    }
    // Strategy reads best first: "paged int8 prompt=512".
    if has_dtype && columns.iter().any(|c| c == "strategy") {
        let strategy = t.get(r, "strategy").to_string();
        if let Some(i) = parts.iter().position(|p| *p == strategy) {
            let s = parts.remove(i);
            parts.insert(0, s);
        }
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn t(text: &str) -> CsvTable {
        CsvTable::parse(text, Path::new("t.csv")).unwrap()
    }

    #[test]
    fn describes_workloads_briefly() {
        let tab = t("strategy,k_dtype,v_dtype,prompt,cache_dtype,tokens_per_s\n\
                     paged,int8,int8,512,int8,1\ncontiguous,int4,f16,128,\"k=int4,v=f16\",2\n");
        let v = varying(&tab, &[0, 1]);
        assert_eq!(
            v,
            ["strategy", "k_dtype", "v_dtype", "prompt", "cache_dtype"]
        );
        assert_eq!(describe(&tab, 0, &v), "paged int8 prompt=512");
        assert_eq!(describe(&tab, 1, &v), "contiguous int4/f16 prompt=128");
        assert_eq!(describe(&tab, 1, &[]), "all");
    }

    #[test]
    fn a_column_another_determines_is_left_out() {
        let tab = t("strategy,block_size,prompt,tokens_per_s\n\
                     contiguous,0,128,1\npaged,16,128,2\ncontiguous,0,512,1\npaged,16,512,2\n");
        assert_eq!(varying(&tab, &[0, 1, 2, 3]), ["strategy", "prompt"]);
        // Two block sizes for paged: block_size now tells rows apart.
        let tab = t("strategy,block_size,tokens_per_s\ncontiguous,0,1\npaged,16,2\npaged,32,3\n");
        assert_eq!(varying(&tab, &[0, 1, 2]), ["strategy", "block_size"]);
        // Other columns are kept even when few rows make them look redundant.
        let tab = t("strategy,k_dtype,tokens_per_s\ncontiguous,f16,1\npaged,int8,2\n");
        assert_eq!(varying(&tab, &[0, 1]), ["strategy", "k_dtype"]);
    }

    #[test]
    fn shards_read_in_sweep_order() {
        let tab = t("sweep_index,tokens_per_s\n2,1\n0,2\n\n");
        let tab2 = t("sweep_index,tokens_per_s\n1,3\n,4\n");
        let mut all = tab.clone();
        all.append(tab2);
        assert_eq!(sweep_order(&all, vec![0, 1, 2, 3]), [1, 2, 0, 3]);
    }

    #[test]
    fn machines_are_named_by_host_and_hardware() {
        let tab = t("host,cpu,threads,gpu,tokens_per_s\nci-1,AMD EPYC,2,,1\n,,,,2\n");
        assert_eq!(machine(&tab, 0), "ci-1 (AMD EPYC, 2 threads)");
        assert_eq!(machine(&tab, 1), "unknown machine");
        assert_eq!(
            slug("ci-1 (AMD EPYC, 2 threads)"),
            "ci-1-amd-epyc-2-threads"
        );
    }
}
