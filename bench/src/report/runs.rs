//! The questions a merged run table answers, one markdown table each: throughput and latency,
//! memory and waste, quantization error against bytes saved, distance to the machine's limit,
//! and every row's measurement beside the planner's prediction and the roofline bound.

use std::collections::HashMap;

use super::markdown::{bytes, num, pct, MdTable};
use super::table::CsvTable;
use super::view::{describe, dtype, machine, sweep_order, varying};
use crate::compare::columns::key_columns;

/// One section of report.md.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Heading (the question).
    pub title: String,
    /// One or two sentences on how to read the table.
    pub intro: String,
    /// The answer.
    pub table: MdTable,
}

/// Rows that were verified and timed.
fn ok_rows(t: &CsvTable) -> Vec<usize> {
    (0..t.len())
        .filter(|&r| {
            let s = t.get(r, "status");
            s.is_empty() || s == "ok"
        })
        .collect()
}

/// Rows grouped by machine (first-seen order), in sweep order within a machine.
fn by_machine(t: &CsvTable, rows: Vec<usize>) -> Vec<usize> {
    let order: std::collections::HashMap<String, usize> = t
        .distinct_by(|r| machine(t, r))
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m, i))
        .collect();
    let rows = sweep_order(t, rows);
    // Stable: sweep order within a machine.
    let mut keyed: Vec<(usize, usize)> = rows
        .into_iter()
        .map(|r| (order[&machine(t, r)], r))
        .collect();
    keyed.sort_by_key(|&(m, _)| m);
    keyed.into_iter().map(|(_, r)| r).collect()
}

/// One row per workload key (the first seen): for machine-independent figures.
fn one_per_key(t: &CsvTable, rows: &[usize]) -> Vec<usize> {
    let keys = key_columns(t.columns());
    let mut seen = std::collections::HashSet::new();
    rows.iter()
        .copied()
        .filter(|&r| seen.insert(keys.iter().map(|c| t.get(r, c)).collect::<Vec<_>>()))
        .collect()
}

/// `value ± spread` when a spread is known.
fn with_spread(t: &CsvTable, r: usize, value: &str, spread: &str) -> String {
    match (t.num(r, value), t.num(r, spread)) {
        (Some(v), Some(s)) if s > 0.0 => format!("{} ± {}", num(v), num(s)),
        (Some(v), _) => num(v),
        _ => "–".into(),
    }
}

fn cell(t: &CsvTable, r: usize, c: &str) -> String {
    t.num(r, c).map_or("–".into(), num)
}

/// Tokens/s, TTFT and ITL per strategy and dtype, per machine.
pub fn throughput(t: &CsvTable) -> Section {
    let rows = by_machine(t, ok_rows(t));
    let cols = varying(t, &rows);
    let mut table = MdTable::new(&[
        "machine",
        "workload",
        "tokens/s",
        "TTFT ms (± MAD)",
        "ITL p50 ms (± MAD)",
        "ITL p99 ms",
    ]);
    for &r in &rows {
        table.rows.push(vec![
            machine(t, r),
            describe(t, r, &cols),
            cell(t, r, "tokens_per_s"),
            with_spread(t, r, "ttft_ms", "ttft_mad_ms"),
            with_spread(t, r, "itl_p50_ms", "itl_mad_ms"),
            cell(t, r, "itl_p99_ms"),
        ]);
    }
    Section {
        title: "Tokens/s and TTFT per strategy and dtype".into(),
        intro: "Decode throughput (batch / TPOT) and prefill time (TTFT) for every verified \
                workload; spreads are median absolute deviations over repetitions and steps."
            .into(),
        table,
    }
}

/// Memory per token and waste per layout (machine-independent: one row per workload).
pub fn memory(t: &CsvTable) -> Section {
    let rows = one_per_key(t, &sweep_order(t, (0..t.len()).collect()));
    let cols = varying(t, &rows);
    let mut table = MdTable::new(&[
        "workload",
        "tokens held",
        "KV used",
        "KV allocated",
        "allocated / token",
        "waste",
        "planner predicted",
        "planner = allocated",
    ]);
    for &r in &rows {
        let tokens = t.num(r, "batch").unwrap_or(1.0)
            * (t.num(r, "prompt").unwrap_or(0.0) + t.num(r, "gen").unwrap_or(0.0));
        let used = t.num(r, "kv_bytes_used").unwrap_or(0.0);
        let alloc = t.num(r, "kv_bytes_allocated").unwrap_or(0.0);
        let predicted = t.num(r, "kv_bytes_predicted");
        let waste = if alloc > 0.0 {
            pct(1.0 - used / alloc)
        } else {
            "–".into()
        };
        let matches = match predicted {
            Some(p) if p == alloc => "yes".to_string(),
            Some(p) => format!("no ({:+} B)", alloc - p),
            None => "–".into(),
        };
        table.rows.push(vec![
            describe(t, r, &cols),
            num(tokens),
            bytes(used),
            bytes(alloc),
            if tokens > 0.0 {
                bytes(alloc / tokens)
            } else {
                "–".into()
            },
            waste,
            predicted.map_or("–".into(), bytes),
            matches,
        ]);
    }
    Section {
        title: "Memory per token and waste per layout".into(),
        intro: "What each layout holds at the end of the run: waste is allocated but unused \
                (preallocation, partial blocks); the planner's figure must equal allocated \
                (docs/storage-contract.md)."
            .into(),
        table,
    }
}

/// Quantization error against bytes saved, per cache dtype.
pub fn quantization(t: &CsvTable) -> Section {
    let rows = ok_rows(t);
    let keys = key_columns(t.columns());
    let not_dtype: Vec<&String> = keys
        .iter()
        .filter(|c| !matches!(c.as_str(), "k_dtype" | "v_dtype" | "cache_dtype"))
        .collect();
    let other_key = |r: usize| not_dtype.iter().map(|c| t.get(r, c)).collect::<Vec<_>>();
    // The f16 twin of each workload: same key but the dtype.
    let f16: HashMap<Vec<&str>, f64> = rows
        .iter()
        .filter(|&&r| dtype(t, r) == "f16")
        .filter_map(|&r| Some((other_key(r), t.num(r, "kv_bytes_allocated")?)))
        .collect();
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for &r in &rows {
        let d = dtype(t, r);
        if !groups.contains_key(&d) {
            order.push(d.clone());
        }
        groups.entry(d).or_default().push(r);
    }
    let mut table = MdTable::new(&[
        "cache dtype",
        "bits / element",
        "rel_error (worst)",
        "cosine (worst)",
        "error bound",
        "bytes saved vs f16",
        "rows",
    ]);
    for d in order {
        let g = &groups[&d];
        let worst = |c: &str, max: bool| {
            g.iter()
                .filter_map(|&r| t.num(r, c))
                .reduce(|a, b| if (b > a) == max { b } else { a })
                .map_or("–".into(), num)
        };
        let mut saved: Vec<f64> = g
            .iter()
            .filter_map(|&r| {
                let base = *f16.get(&other_key(r))?;
                let a = t.num(r, "kv_bytes_allocated")?;
                (base > 0.0).then(|| 1.0 - a / base)
            })
            .collect();
        saved.sort_by(f64::total_cmp);
        let saved = saved.get(saved.len() / 2).map_or("–".into(), |&s| pct(s));
        table.rows.push(vec![
            d,
            worst("bits_per_element", true),
            worst("rel_error", true),
            worst("cosine", false),
            worst("error_bound", true),
            saved,
            g.len().to_string(),
        ]);
    }
    Section {
        title: "Quantization error against bytes saved".into(),
        intro: "Error of attention output against the f64 reference (worst over the runs), \
                next to the cache memory saved against the same workload in f16 (median)."
            .into(),
        table,
    }
}

/// Achieved bandwidth and compute against this machine's measured limits.
pub fn limits(t: &CsvTable) -> Section {
    let rows: Vec<usize> = by_machine(t, ok_rows(t))
        .into_iter()
        .filter(|&r| t.num(r, "limit_gbps").unwrap_or(0.0) > 0.0)
        .collect();
    let cols = varying(t, &rows);
    let mut table = MdTable::new(&[
        "machine",
        "workload",
        "decode GB/s",
        "limit GB/s",
        "decode % of limit",
        "decode GFLOP/s",
        "decode % of GEMM limit",
        "prefill GFLOP/s",
        "limit GFLOP/s",
    ]);
    for &r in &rows {
        table.rows.push(vec![
            machine(t, r),
            describe(t, r, &cols),
            cell(t, r, "achieved_gbps"),
            cell(t, r, "limit_gbps"),
            t.num(r, "pct_of_limit")
                .map_or("–".into(), |p| format!("{}%", num(p))),
            cell(t, r, "decode_gflops"),
            t.num(r, "decode_pct_of_limit")
                .map_or("–".into(), |p| format!("{}%", num(p))),
            cell(t, r, "achieved_gflops"),
            cell(t, r, "limit_gflops"),
        ]);
    }
    Section {
        title: "Measured against the machine's limit".into(),
        intro: "Decode reads the whole cache every step: GB/s against the read bandwidth \
                `kvbench calibrate` measured. Where query heads share a KV head (MQA, wide \
                groups) its FLOPs are the nearer limit: decode GFLOP/s against the measured \
                GEMM rate, as prefill's."
            .into(),
        table,
    }
}

/// Every run row beside the planner's bytes and the roofline bound.
pub fn predicted(t: &CsvTable) -> Section {
    let rows = by_machine(t, (0..t.len()).collect());
    let cols = varying(t, &rows);
    let mut table = MdTable::new(&[
        "machine",
        "workload",
        "status",
        "KV allocated",
        "planner bytes",
        "tokens/s",
        "roofline tokens/s",
        "TPOT ms",
        "roofline TPOT ms",
        "of bound",
    ]);
    for &r in &rows {
        // The roofline bounds a step by its bytes or its FLOPs, whichever takes longer.
        let pct_limit = [t.num(r, "pct_of_limit"), t.num(r, "decode_pct_of_limit")]
            .into_iter()
            .flatten()
            .reduce(f64::max)
            .filter(|p| *p > 0.0);
        let tps = t.num(r, "tokens_per_s").filter(|v| *v > 0.0);
        let tpot = t.num(r, "tpot_ms").filter(|v| *v > 0.0);
        // achieved = bytes / TPOT and bound = bytes / limit, so bound TPOT = TPOT × pct/100.
        let bound_tps = tps.zip(pct_limit).map(|(v, p)| v * 100.0 / p);
        let bound_tpot = tpot.zip(pct_limit).map(|(v, p)| v * p / 100.0);
        table.rows.push(vec![
            machine(t, r),
            describe(t, r, &cols),
            t.get(r, "status").to_string(),
            t.num(r, "kv_bytes_allocated").map_or("–".into(), bytes),
            t.num(r, "kv_bytes_predicted").map_or("–".into(), bytes),
            tps.map_or("–".into(), num),
            bound_tps.map_or("–".into(), num),
            tpot.map_or("–".into(), num),
            bound_tpot.map_or("–".into(), num),
            pct_limit.map_or("–".into(), |p| format!("{}%", num(p))),
        ]);
    }
    Section {
        title: "Measured next to predicted".into(),
        intro: "For every run row: the planner's bytes beside what the layout allocated, and \
                the roofline bound (a decode step's bytes at the machine's measured bandwidth \
                or its attention FLOPs at the measured GEMM rate, whichever takes longer) \
                beside the measured decode rate. `of bound` is how close this machine came to \
                what its memory system and cores allow."
            .into(),
        table,
    }
}

/// Rows that were not timed, with the reason.
pub fn not_timed(t: &CsvTable) -> Option<Section> {
    let ok: std::collections::HashSet<usize> = ok_rows(t).into_iter().collect();
    let rows: Vec<usize> = (0..t.len()).filter(|r| !ok.contains(r)).collect();
    if rows.is_empty() {
        return None;
    }
    let cols = varying(t, &(0..t.len()).collect::<Vec<_>>());
    let mut table = MdTable::new(&["machine", "workload", "status", "detail"]);
    for &r in &rows {
        table.rows.push(vec![
            machine(t, r),
            describe(t, r, &cols),
            t.get(r, "status").to_string(),
            t.get(r, "detail").to_string(),
        ]);
    }
    Some(Section {
        title: "Rows that were not timed".into(),
        intro: "Verification failed, the workload did not fit, or it errored.".into(),
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn runs() -> CsvTable {
        // Two machines, f16 and int8, contiguous; one refused row.
        let text = "\
host,cpu,threads,strategy,k_dtype,v_dtype,batch,prompt,gen,status,detail,tokens_per_s,ttft_ms,ttft_mad_ms,itl_p50_ms,itl_mad_ms,itl_p99_ms,tpot_ms,kv_bytes_used,kv_bytes_allocated,kv_bytes_predicted,bits_per_element,rel_error,cosine,error_bound,achieved_gbps,limit_gbps,pct_of_limit,achieved_gflops,limit_gflops
a,X,2,contiguous,f16,f16,1,96,32,ok,,100,5,0.5,10,0.2,12,10,65536,131072,131072,16,0.001,0.9999,0.002,8,16,50,10,20
a,X,2,contiguous,int8,int8,1,96,32,ok,,120,6,0,8.333,0,9,8.333,36864,73728,73728,9,0.004,0.999,0.008,7.2,16,45,9,20
b,Y,4,contiguous,f16,f16,1,96,32,ok,,200,2.5,0,5,0,6,5,65536,131072,131072,16,0.001,0.9999,0.002,16,32,50,20,40
b,Y,4,contiguous,int8,int8,1,4096,32,refused,needs 9 GiB,0,0,0,0,0,0,0,0,0,0,9,0,0,0,0,0,0,0,0
";
        CsvTable::parse(text, Path::new("r.csv")).unwrap()
    }

    #[test]
    fn throughput_lists_timed_rows_with_spread() {
        let s = throughput(&runs());
        assert_eq!(s.table.rows.len(), 3);
        assert_eq!(s.table.rows[0][0], "a (X, 2 threads)");
        assert_eq!(s.table.rows[0][1], "f16");
        assert_eq!(s.table.rows[0][3], "5 ± 0.5");
        assert_eq!(s.table.rows[2][2], "200");
    }

    #[test]
    fn memory_per_token_and_waste_by_hand() {
        let s = memory(&runs());
        // One row per workload: a's f16 and b's f16 share a key.
        assert_eq!(s.table.rows.len(), 3);
        let f16 = &s.table.rows[0];
        // 131072 B over 1 × (96 + 32) tokens = 1 KiB; used half of allocated.
        assert_eq!(f16[1], "128");
        assert_eq!(f16[4], "1 KiB");
        assert_eq!(f16[5], "50.0%");
        assert_eq!(f16[7], "yes");
    }

    #[test]
    fn quantization_saving_is_against_the_f16_twin() {
        let s = quantization(&runs());
        let int8 = s.table.rows.iter().find(|r| r[0] == "int8").unwrap();
        // 1 − 73728 / 131072 = 43.75%
        assert_eq!(int8[5], "43.8%");
        assert_eq!(int8[2], "0.004");
        let f16 = s.table.rows.iter().find(|r| r[0] == "f16").unwrap();
        assert_eq!(f16[5], "0.0%");
        assert_eq!(f16[6], "2");
    }

    #[test]
    fn roofline_bound_follows_pct_of_limit() {
        let s = predicted(&runs());
        let a_int8 = &s.table.rows[1];
        // 45% of the limit at 120 tokens/s → bound 266.7 tokens/s; TPOT bound 8.333 × 0.45.
        assert_eq!(a_int8[6], "266.7");
        assert_eq!(a_int8[8], "3.75");
        let refused = &s.table.rows[3];
        assert_eq!(refused[2], "refused");
        assert_eq!(refused[6], "–");
    }

    #[test]
    fn a_compute_bound_step_is_bound_by_its_flops() {
        // MQA at 32K: 8.9 GB/s is 18.3 % of the read limit, 284 GFLOP/s 74.4 % of the GEMM
        // limit; the step's bound is its FLOPs' time, 74.4 % of its 1.89 ms.
        let text = "host,cpu,threads,strategy,k_dtype,v_dtype,batch,prompt,gen,status,tokens_per_s,tpot_ms,limit_gbps,pct_of_limit,decode_gflops,limit_gflops,decode_pct_of_limit\n\
                    a,X,2,contiguous,f16,f16,1,32768,16,ok,529.1,1.89,48.6,18.3,284.2,381.7,74.4\n";
        let t = CsvTable::parse(text, Path::new("r.csv")).unwrap();
        let row = &predicted(&t).table.rows[0];
        assert_eq!(row[9], "74.4%");
        assert_eq!(row[8], "1.406");
        let limits = &limits(&t).table.rows[0];
        assert_eq!((limits[5].as_str(), limits[6].as_str()), ("284.2", "74.4%"));
    }

    #[test]
    fn untimed_rows_are_listed_with_their_reason() {
        let s = not_timed(&runs()).unwrap();
        assert_eq!(s.table.rows.len(), 1);
        assert_eq!(s.table.rows[0][3], "needs 9 GiB");
    }
}
