//! Comparison tests on runs built from `Record`s, the same rows `kvbench run` writes.

use super::*;
use crate::Record;
use std::path::PathBuf;

/// A row: decoder workload, batch 1, timing consistent (tokens/s = 1000 / TPOT).
fn rec(strategy: &str, dtype: &str, prompt: u32, tpot_ms: f64, itl_mad_ms: f64) -> Record {
    let bits = match dtype {
        "f16" => 16.0,
        "int8" => 9.0,
        _ => 32.0,
    };
    Record {
        schema_version: crate::SCHEMA_VERSION,
        kvbench_version: "0.1.0".into(),
        git_commit: "abc".into(),
        host: "ci-1".into(),
        cpu: "AMD EPYC 7B13".into(),
        cores: 2,
        threads: 2,
        backend: "cpu".into(),
        workload: "decoder".into(),
        model: "tiny".into(),
        layers: 2,
        q_heads: 8,
        kv_heads: 2,
        head_dim: 64,
        hidden: 512,
        strategy: strategy.into(),
        k_dtype: dtype.into(),
        v_dtype: dtype.into(),
        bits_per_element: bits,
        batch: 1,
        prompt,
        gen: 16,
        block_size: if strategy == "paged" { 16 } else { 0 },
        repetitions: 3,
        verified: true,
        status: crate::Status::Ok,
        rel_error: if dtype == "int8" { 4e-3 } else { 2e-4 },
        cosine: 0.9999,
        ttft_ms: prompt as f64 * 0.01,
        ttft_mad_ms: 0.01,
        itl_p50_ms: tpot_ms,
        itl_p90_ms: tpot_ms * 1.1,
        itl_p99_ms: tpot_ms * 1.3,
        itl_mad_ms,
        tpot_ms,
        tokens_per_s: 1000.0 / tpot_ms,
        kv_bytes_used: (prompt as u64 + 16) * 2 * 2 * 2 * 64 * 2,
        kv_bytes_allocated: (prompt as u64 + 16) * 2 * 2 * 2 * 64 * 2,
        kv_bytes_predicted: (prompt as u64 + 16) * 2 * 2 * 2 * 64 * 2,
        ..Record::default()
    }
}

/// A small sweep: 2 strategies × 2 dtypes × 2 prompts.
fn sweep(slowdown: f64, mad: f64) -> Vec<Record> {
    let mut out = Vec::new();
    for s in ["contiguous", "paged"] {
        for d in ["f16", "int8"] {
            for p in [128, 512] {
                let tpot = (1.0 + p as f64 / 256.0) * if s == "paged" { 1.1 } else { 1.0 };
                out.push(rec(s, d, p, tpot * slowdown, mad));
            }
        }
    }
    out
}

fn table(records: &[Record]) -> CsvTable {
    let mut w = csv::Writer::from_writer(vec![]);
    for r in records {
        w.serialize(r).unwrap();
    }
    let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
    CsvTable::parse(&text, Path::new("run.csv")).unwrap()
}

fn run(base: &[Record], new: &[Record], opts: &Options) -> Comparison {
    compare(&table(base), &table(new), opts).unwrap()
}

fn regressed(c: &Comparison) -> Vec<(String, String)> {
    c.failures()
        .map(|f| (f.workload.clone(), f.metric.clone()))
        .collect()
}

#[test]
fn identical_runs_pass_with_every_metric_the_same() {
    let s = sweep(1.0, 0.01);
    let c = run(&s, &s, &Options::default());
    assert!(c.passed(), "{}", render::render(&c, false));
    assert_eq!(c.matched, 8);
    assert!(c.findings.iter().all(|f| f.verdict == Verdict::Same));
    // 8 rows × (9 exact + 3 error + 6 timing) metrics; achieved_gbps, achieved_gflops,
    // pct_of_limit, the prefill and tier rates are 0 in both (not measured): not compared.
    assert_eq!(c.findings.len(), 8 * (9 + 3 + 6));
    assert!(render::render(&c, false).starts_with("no changes beyond thresholds"));
}

#[test]
fn a_planted_timing_regression_is_caught_and_named() {
    let base = sweep(1.0, 0.01);
    let mut new = base.clone();
    // paged int8 at 512 tokens decodes 30% slower.
    let slow = new
        .iter_mut()
        .find(|r| r.strategy == "paged" && r.k_dtype == "int8" && r.prompt == 512)
        .unwrap();
    slow.tpot_ms *= 1.3;
    slow.itl_p50_ms *= 1.3;
    slow.tokens_per_s /= 1.3;
    let c = run(&base, &new, &Options::default());
    assert!(!c.passed());
    // The label names the workload by the key columns that vary, in CSV order.
    let want = "strategy=paged k_dtype=int8 v_dtype=int8 prompt=512 block_size=16";
    let got = regressed(&c);
    assert!(
        got.contains(&(want.into(), "tokens_per_s".into())),
        "{got:?}"
    );
    assert!(got.contains(&(want.into(), "tpot_ms".into())), "{got:?}");
    assert!(got.contains(&(want.into(), "itl_p50_ms".into())), "{got:?}");
    assert_eq!(got.len(), 3, "{got:?}");
    let tps = c
        .findings
        .iter()
        .find(|f| f.metric == "tokens_per_s" && f.verdict == Verdict::Regressed)
        .unwrap();
    // 1 / 1.3 − 1 = −23.08%
    assert!((tps.change.unwrap() + 0.230769).abs() < 1e-5);
    let text = render::render(&c, false);
    assert!(
        text.contains("REGRESSED") && text.contains("FAIL (3 failing)"),
        "{text}"
    );
}

#[test]
fn noisy_runs_within_their_spread_pass() {
    // Everything 25% slower, but each run's ITL MAD is 0.6 ms on TPOTs of 1.5–3.3 ms:
    // 2 × (0.6 + 0.6) = 2.4 ms exceeds every difference (at most 0.83 ms).
    let c = run(&sweep(1.0, 0.6), &sweep(1.25, 0.6), &Options::default());
    assert!(c.passed(), "{}", render::render(&c, false));
    assert!(c.count(Verdict::WithinNoise) > 0);
    // With quiet runs the same slowdown is a regression.
    let c = run(&sweep(1.0, 0.01), &sweep(1.25, 0.01), &Options::default());
    assert!(!c.passed());
}

#[test]
fn a_mean_pulled_away_from_its_median_by_outliers_is_noise() {
    // One descheduled step: TPOT (a mean) 30% up, the median ITL unchanged.
    let base = sweep(1.0, 0.01);
    let mut new = base.clone();
    new[0].tpot_ms *= 1.3;
    new[0].tokens_per_s /= 1.3;
    let c = run(&base, &new, &Options::default());
    assert!(c.passed(), "{}", render::render(&c, false));
    // The same 30% in the median too is a real slowdown.
    new[0].itl_p50_ms *= 1.3;
    let c = run(&base, &new, &Options::default());
    let got: Vec<String> = regressed(&c).into_iter().map(|(_, m)| m).collect();
    assert_eq!(got, ["itl_p50_ms", "tpot_ms", "tokens_per_s"]);
}

#[test]
fn a_raised_threshold_lets_a_known_slowdown_pass() {
    let mut opts = Options::default();
    for m in [
        "tokens_per_s",
        "tpot_ms",
        "itl_p50_ms",
        "itl_p90_ms",
        "itl_p99_ms",
    ] {
        opts.thresholds.set_from_flag(&format!("{m}=0.3")).unwrap();
    }
    let c = run(&sweep(1.0, 0.01), &sweep(1.25, 0.01), &opts);
    assert!(c.passed(), "{}", render::render(&c, false));
}

#[test]
fn other_machines_are_not_comparable_rather_than_failing() {
    let base = sweep(1.0, 0.01);
    let mut new = sweep(3.0, 0.01);
    for r in &mut new {
        r.cpu = "Apple M2".into();
        r.host = "laptop".into();
    }
    let c = run(&base, &new, &Options::default());
    assert!(c.passed(), "{}", render::render(&c, false));
    assert!(c
        .notes
        .iter()
        .any(|n| n.contains("not comparable") && n.contains("Apple M2")));
    // Exact metrics are still compared across machines.
    new[0].kv_bytes_allocated += 1;
    let c = run(&base, &new, &Options::default());
    assert_eq!(
        regressed(&c),
        [(
            "strategy=contiguous k_dtype=f16 v_dtype=f16 prompt=128 block_size=0".into(),
            "kv_bytes_allocated".into()
        )]
    );
}

#[test]
fn exact_and_error_metrics_are_strict() {
    let base = sweep(1.0, 0.01);
    let mut new = base.clone();
    new[1].bits_per_element = 8.5;
    new[2].rel_error *= 1.2; // beyond the 5% tolerance
    new[3].rel_error *= 1.01; // within it
    new[4].verified = false;
    let c = run(&base, &new, &Options::default());
    let got: Vec<String> = regressed(&c).into_iter().map(|(_, m)| m).collect();
    assert_eq!(got, ["bits_per_element", "rel_error", "verified"]);
    assert_eq!(c.count(Verdict::WithinTolerance), 1);
}

#[test]
fn missing_workloads_fail_unless_allowed_and_new_ones_are_listed() {
    let base = sweep(1.0, 0.01);
    let mut new = base.clone();
    new.pop();
    new.push(rec("concat", "f16", 128, 1.0, 0.01));
    let c = run(&base, &new, &Options::default());
    assert_eq!(c.count(Verdict::Missing), 1);
    assert_eq!(c.count(Verdict::Added), 1);
    assert!(!c.passed());
    let opts = Options {
        allow_missing: true,
        ..Options::default()
    };
    assert!(run(&base, &new, &opts).passed());
}

#[test]
fn extra_columns_in_the_new_run_are_tolerated() {
    let base = table(&sweep(1.0, 0.01));
    let mut new = base.clone();
    new.add_column("peak_device_gbps".into());
    new.add_column("numa_node".into());
    for r in &mut new.rows {
        *r.last_mut().unwrap() = "0".into();
        let n = r.len();
        r[n - 2] = "1.0".into();
    }
    let c = compare(&base, &new, &Options::default()).unwrap();
    assert!(c.passed());
    assert!(c.notes.iter().any(|n| n.contains("`numa_node`")));
    assert!(c.notes.iter().any(|n| n.contains("`peak_device_gbps`")));
}

fn ci_like_ratios() -> Thresholds {
    let text = r#"
        [[ratio]]
        name = "paged/contiguous tokens_per_s"
        metric = "tokens_per_s"
        column = "strategy"
        numerator = "paged"
        denominator = "contiguous"
        ignore = ["block_size"]
        threshold = 0.15
    "#;
    Thresholds::from_toml(text, Path::new("t.toml")).unwrap()
}

#[test]
fn in_run_ratios_ignore_a_uniformly_slower_machine() {
    let opts = Options {
        thresholds: ci_like_ratios(),
        timing: TimingMode::Ratios,
        allow_missing: false,
    };
    // The whole machine is 2× slower (another CI box, a busy neighbour): ratios hold.
    let c = run(&sweep(1.0, 0.01), &sweep(2.0, 0.01), &opts);
    assert!(c.passed(), "{}", render::render(&c, true));
    let ratio: Vec<&Finding> = c
        .findings
        .iter()
        .filter(|f| f.metric == "paged/contiguous tokens_per_s")
        .collect();
    // 2 dtypes × 2 prompts, then their median; contiguous/paged TPOT ratio 1/1.1 = 0.9091 in
    // both runs.
    assert_eq!(ratio.len(), 5);
    assert!(ratio[..4]
        .iter()
        .all(|f| f.base == "0.9091" && f.new == "0.9091"));
    assert_eq!(ratio[4].workload, "median of 4 pairs");
    assert_eq!(ratio[4].verdict, Verdict::Same);
}

#[test]
fn a_ratio_limited_by_only_counts_the_chosen_rows() {
    let mut th = ci_like_ratios();
    th.ratio[0].only = [("k_dtype".to_string(), "int8".to_string())].into();
    let opts = Options {
        thresholds: th,
        timing: TimingMode::Ratios,
        allow_missing: false,
    };
    let c = run(&sweep(1.0, 0.01), &sweep(1.0, 0.01), &opts);
    let pairs: Vec<&Finding> = c
        .findings
        .iter()
        .filter(|f| f.metric == "paged/contiguous tokens_per_s")
        .collect();
    // Of 2 dtypes × 2 prompts only the 2 int8 pairs, too few for a median (it needs 3).
    assert_eq!(pairs.len(), 2, "{pairs:?}");
    assert!(
        pairs.iter().all(|f| f.workload.contains("prompt")),
        "{pairs:?}"
    );
}

#[test]
fn in_run_ratios_catch_paged_falling_behind_contiguous() {
    let opts = Options {
        thresholds: ci_like_ratios(),
        timing: TimingMode::Ratios,
        allow_missing: false,
    };
    let base = sweep(1.0, 0.01);
    let mut new = sweep(2.0, 0.01);
    for r in new.iter_mut().filter(|r| r.strategy == "paged") {
        r.tpot_ms *= 1.4;
        r.itl_p50_ms *= 1.4;
        r.tokens_per_s /= 1.4;
    }
    let c = run(&base, &new, &opts);
    let got = regressed(&c);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got
        .iter()
        .all(|(_, m)| m == "paged/contiguous tokens_per_s"));
    assert!(got
        .iter()
        .any(|(w, _)| w == "k_dtype=int8 v_dtype=int8 prompt=512"));
    assert!(got.iter().any(|(w, _)| w == "median of 4 pairs"));
}

#[test]
fn the_median_ratio_catches_a_systematic_slowdown_that_noise_hides_pair_by_pair() {
    let opts = Options {
        thresholds: ci_like_ratios(),
        timing: TimingMode::Ratios,
        allow_missing: false,
    };
    // Each run's steps are so noisy (MAD 1 ms on TPOTs of 0.75–2.5 ms) that no single pair
    // is beyond its spread, but paged is 40% slower in every pair: the median is −28.6%.
    let base = sweep(1.0, 1.0);
    let mut new = sweep(1.0, 1.0);
    for r in new.iter_mut().filter(|r| r.strategy == "paged") {
        r.tpot_ms *= 1.4;
        r.itl_p50_ms *= 1.4;
        r.tokens_per_s /= 1.4;
    }
    let c = run(&base, &new, &opts);
    let got = regressed(&c);
    assert_eq!(
        got,
        [(
            "median of 4 pairs".to_string(),
            "paged/contiguous tokens_per_s".to_string()
        )]
    );
    // Noise that moves single pairs both ways leaves the median alone.
    let mut noisy = sweep(1.0, 1.0);
    noisy[4].tpot_ms *= 1.6; // paged f16 128
    noisy[4].itl_p50_ms *= 1.6;
    noisy[4].tokens_per_s /= 1.6;
    noisy[7].tpot_ms /= 1.6; // paged int8 512
    noisy[7].itl_p50_ms /= 1.6;
    noisy[7].tokens_per_s *= 1.6;
    assert!(run(&base, &noisy, &opts).passed());
}

#[test]
fn a_ratio_with_no_pairs_is_reported_not_silent() {
    let mut th = ci_like_ratios();
    th.ratio[0].numerator = Some("pagd".into());
    let opts = Options {
        thresholds: th,
        timing: TimingMode::Ratios,
        allow_missing: false,
    };
    let c = run(&sweep(1.0, 0.01), &sweep(1.0, 0.01), &opts);
    assert_eq!(c.count(Verdict::NoData), 1);
    assert!(render::render(&c, false).contains("no pair of rows"));
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_baseline_of_another_schema_says_to_regenerate_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(
        &dir,
        "base.csv",
        "schema_version,strategy,tokens_per_s\n0,paged,1\n",
    );
    let new = write(
        &dir,
        "new.csv",
        &format!(
            "schema_version,strategy,tokens_per_s\n{},paged,1\n",
            crate::SCHEMA_VERSION
        ),
    );
    let msg = compare_files(&base, &new, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("baseline"), "{msg}");
    assert!(
        msg.contains("base.csv") && msg.contains("schema_version 0"),
        "{msg}"
    );
    assert!(msg.contains("regenerate the baseline"), "{msg}");
}

#[test]
fn a_plan_csv_is_not_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(&dir, "plan.csv", "model,context\nllama,1024\n");
    let msg = compare_files(&base, &base, &Options::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("plan.csv is not a run CSV"), "{msg}");
}

#[test]
fn a_single_pair_is_held_to_its_own_wider_threshold() {
    let mut th = ci_like_ratios();
    // One quiet pair 60% worse: beyond a 15% threshold, within a 100% pair threshold.
    let base = sweep(1.0, 0.01);
    let mut new = base.clone();
    new[4].tpot_ms *= 1.6;
    new[4].itl_p50_ms *= 1.6;
    new[4].tokens_per_s /= 1.6;
    let opts = |th: Thresholds| Options {
        thresholds: th,
        timing: TimingMode::Ratios,
        allow_missing: false,
    };
    assert!(!run(&base, &new, &opts(th.clone())).passed());
    th.ratio[0].pair_threshold = Some(1.0);
    let c = run(&base, &new, &opts(th.clone()));
    assert!(c.passed(), "{}", render::render(&c, true));
    // With pairs off, only the median (unchanged: one pair of four moved) is reported.
    th.ratio[0].pair_threshold = None;
    th.ratio[0].check_pairs = false;
    let c = run(&base, &new, &opts(th));
    assert!(c.passed(), "{}", render::render(&c, true));
    let ratio: Vec<&Finding> = c
        .findings
        .iter()
        .filter(|f| f.metric.contains('/'))
        .collect();
    assert_eq!(ratio.len(), 1);
    assert_eq!(ratio[0].workload, "median of 4 pairs");
}

#[test]
fn a_negative_or_infinite_timing_is_refused_not_judged_no_data() {
    // Every ttft_ms of one run at -5 (or inf) was "no data" (or unreadable) and passed.
    let good = sweep(1.0, 0.01);
    for value in [-5.0, f64::INFINITY] {
        let mut bad = good.clone();
        for r in &mut bad {
            r.ttft_ms = value;
        }
        for timing in [TimingMode::Auto, TimingMode::Ratios, TimingMode::Off] {
            let opts = Options {
                timing,
                ..Options::default()
            };
            for (base, new) in [(&good, &bad), (&bad, &good)] {
                let msg = compare(&table(base), &table(new), &opts)
                    .unwrap_err()
                    .to_string();
                assert!(msg.contains("run.csv:2: `ttft_ms` is"), "{msg}");
            }
        }
    }
    // Rows that were not timed carry zeros: still compared, not refused.
    let mut failed = good.clone();
    failed[0] = Record {
        status: crate::Status::Failed,
        ttft_ms: 0.0,
        tpot_ms: 0.0,
        itl_p50_ms: 0.0,
        tokens_per_s: 0.0,
        ..failed[0].clone()
    };
    let c = run(&failed, &failed, &Options::default());
    assert!(c.passed(), "{}", render::render(&c, true));
}
