//! `kvbench compare` driven as CI and users drive it: identical runs pass, a planted
//! regression fails with a table that names it, noisy runs within their spread pass, other
//! machines are "not comparable", and bad inputs give one clear line.

use assert_cmd::Command;
use kvbench_bench::Record;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn kvbench() -> Command {
    Command::cargo_bin("kvbench").unwrap()
}

/// A decoder row with consistent timing: tokens/s = batch × 1000 / TPOT.
fn row(strategy: &str, dtype: &str, prompt: u32, tpot_ms: f64, mad_ms: f64) -> Record {
    let per_token: u64 = if dtype == "f16" { 1024 } else { 576 };
    let bytes = (u64::from(prompt) + 16) * per_token;
    Record {
        schema_version: kvbench_bench::SCHEMA_VERSION,
        host: "ci".into(),
        cpu: "AMD EPYC".into(),
        cores: 2,
        threads: 2,
        backend: "cpu".into(),
        workload: "decoder".into(),
        model: "mini-gqa".into(),
        layers: 2,
        q_heads: 8,
        kv_heads: 2,
        head_dim: 64,
        hidden: 512,
        strategy: strategy.into(),
        k_dtype: dtype.into(),
        v_dtype: dtype.into(),
        bits_per_element: if dtype == "f16" { 16.0 } else { 9.0 },
        batch: 1,
        prompt,
        gen: 16,
        block_size: if strategy == "paged" { 16 } else { 0 },
        verified: true,
        status: kvbench_bench::Status::Ok,
        rel_error: if dtype == "f16" { 3e-4 } else { 5e-3 },
        cosine: 0.9999,
        error_bound: 0.05,
        ttft_ms: f64::from(prompt) / 50.0,
        ttft_mad_ms: 0.05,
        itl_p50_ms: tpot_ms,
        itl_p90_ms: tpot_ms * 1.1,
        itl_p99_ms: tpot_ms * 1.2,
        itl_mad_ms: mad_ms,
        tpot_ms,
        tokens_per_s: 1000.0 / tpot_ms,
        kv_bytes_used: bytes,
        kv_bytes_allocated: bytes,
        kv_bytes_predicted: bytes,
        achieved_gbps: bytes as f64 / tpot_ms / 1e6,
        limit_gbps: 20.0,
        pct_of_limit: bytes as f64 / tpot_ms / 1e6 / 20.0 * 100.0,
        ..Record::default()
    }
}

/// contiguous and paged × f16 and int8 × two prompts, `slow` times slower.
fn sweep(slow: f64, mad_ms: f64) -> Vec<Record> {
    let mut out = Vec::new();
    for s in ["contiguous", "paged"] {
        for d in ["f16", "int8"] {
            for p in [128u32, 512] {
                let tpot = (0.5 + f64::from(p) / 512.0) * if s == "paged" { 1.05 } else { 1.0 };
                let mut r = row(s, d, p, tpot * slow, mad_ms);
                // A slower machine also calibrates a lower limit: % of limit holds.
                r.limit_gbps = 20.0 / slow;
                r.pct_of_limit = r.achieved_gbps / r.limit_gbps * 100.0;
                out.push(r);
            }
        }
    }
    out
}

fn write(dir: &Path, name: &str, rows: &[Record]) -> PathBuf {
    let path = dir.join(name);
    let mut w = csv::Writer::from_path(&path).unwrap();
    for r in rows {
        w.serialize(r).unwrap();
    }
    w.flush().unwrap();
    path
}

fn thresholds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/thresholds.toml")
}

#[test]
fn identical_runs_pass() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.csv", &sweep(1.0, 0.01));
    kvbench()
        .args(["compare"])
        .arg(&a)
        .arg(&a)
        .assert()
        .success()
        .stdout(predicate::str::contains("no changes beyond thresholds"))
        .stdout(predicate::str::contains("PASS: 8 workloads matched"));
}

#[test]
fn a_planted_regression_fails_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let base = sweep(1.0, 0.01);
    let mut new = base.clone();
    // Plant: paged int8 at 512 tokens decodes 40% slower, and its allocation grows a block.
    let r = new
        .iter_mut()
        .find(|r| r.strategy == "paged" && r.k_dtype == "int8" && r.prompt == 512)
        .unwrap();
    r.tpot_ms *= 1.4;
    r.itl_p50_ms *= 1.4;
    r.tokens_per_s /= 1.4;
    r.kv_bytes_allocated += 16 * 576;
    let (a, b) = (
        write(dir.path(), "a.csv", &base),
        write(dir.path(), "b.csv", &new),
    );
    let out = kvbench()
        .args(["compare"])
        .arg(&a)
        .arg(&b)
        .assert()
        .failure()
        .code(1)
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let regressed: Vec<&str> = stdout.lines().filter(|l| l.contains("REGRESSED")).collect();
    assert_eq!(regressed.len(), 3, "{stdout}");
    assert!(regressed
        .iter()
        .all(|l| l.contains("strategy=paged k_dtype=int8 v_dtype=int8 prompt=512")));
    assert!(
        regressed
            .iter()
            .any(|l| l.contains("tokens_per_s") && l.contains("-28.6%")),
        "{stdout}"
    );
    assert!(stdout
        .lines()
        .any(|l| l.contains("kv_bytes_allocated") && l.contains("CHANGED")));
    assert!(stdout.contains("FAIL (4 failing)"), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("4 check(s) failed against baseline"),
        "{stderr}"
    );
}

#[test]
fn noisy_runs_within_spread_pass_and_quiet_ones_fail() {
    let dir = tempfile::tempdir().unwrap();
    // 20% slower everywhere; with a 0.5 ms MAD the largest difference (0.3 ms) is within
    // 2 × (0.5 + 0.5) ms.
    let a = write(dir.path(), "a.csv", &sweep(1.0, 0.5));
    let b = write(dir.path(), "b.csv", &sweep(1.2, 0.5));
    kvbench().arg("compare").arg(&a).arg(&b).assert().success();
    let a = write(dir.path(), "qa.csv", &sweep(1.0, 0.001));
    let b = write(dir.path(), "qb.csv", &sweep(1.2, 0.001));
    kvbench().arg("compare").arg(&a).arg(&b).assert().code(1);
    // ... unless the threshold is raised for every timing metric the slowdown touches.
    let mut cmd = kvbench();
    cmd.arg("compare")
        .arg(&a)
        .arg(&b)
        .args(["--threshold", "0.25"]);
    cmd.assert().success();
}

#[test]
fn another_machine_is_not_comparable_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut other = sweep(2.0, 0.01);
    for r in &mut other {
        r.cpu = "Intel Xeon".into();
    }
    let a = write(dir.path(), "a.csv", &sweep(1.0, 0.01));
    let b = write(dir.path(), "b.csv", &other);
    kvbench()
        .arg("compare")
        .arg(&a)
        .arg(&b)
        .assert()
        .success()
        .stdout(predicate::str::contains("timing not comparable"))
        .stdout(predicate::str::contains("Intel Xeon"));
}

#[test]
fn ci_ratio_mode_ignores_machine_speed_but_catches_a_relative_slowdown() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.csv", &sweep(1.0, 0.01));
    let b = write(dir.path(), "b.csv", &sweep(1.8, 0.01));
    let ratios = |a: &Path, b: &Path| {
        let mut c = kvbench();
        c.arg("compare")
            .arg(a)
            .arg(b)
            .arg("--thresholds")
            .arg(thresholds())
            .args(["--timing", "ratios"]);
        c
    };
    ratios(&a, &b).assert().success();
    let mut slow_paged = sweep(1.8, 0.01);
    for r in slow_paged.iter_mut().filter(|r| r.strategy == "paged") {
        r.tpot_ms *= 1.5;
        r.itl_p50_ms *= 1.5;
        r.tokens_per_s /= 1.5;
    }
    let c = write(dir.path(), "c.csv", &slow_paged);
    ratios(&a, &c)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("paged/contiguous itl_p50"))
        .stdout(predicate::str::contains("REGRESSED"));
}

#[test]
fn a_baseline_of_another_schema_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = sweep(1.0, 0.01);
    for r in &mut old {
        r.schema_version = kvbench_bench::SCHEMA_VERSION + 1;
    }
    let a = write(dir.path(), "old.csv", &old);
    let b = write(dir.path(), "new.csv", &sweep(1.0, 0.01));
    let out = kvbench()
        .arg("compare")
        .arg(&a)
        .arg(&b)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("old.csv") && stderr.contains("regenerate the baseline"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_and_files_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.csv", &sweep(1.0, 0.01));
    for (args, want) in [
        (
            vec!["--metric", "tokens_per_sec=0.2"],
            "--metric tokens_per_sec=0.2: not a timing or error metric",
        ),
        (
            vec!["--metric", "kv_bytes_used=0.2"],
            "exact metrics have no threshold",
        ),
        (
            vec!["--threshold=-0.1"],
            "--threshold -0.1: must be a non-negative number",
        ),
    ] {
        let out = kvbench()
            .arg("compare")
            .arg(&a)
            .arg(&a)
            .args(&args)
            .assert()
            .code(1)
            .get_output()
            .clone();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
    kvbench()
        .arg("compare")
        .arg(&a)
        .arg(dir.path().join("missing.csv"))
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("cannot read").and(predicate::str::contains("missing.csv")),
        );
}
