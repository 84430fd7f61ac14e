//! `kvbench run` driven as a user would: tiny shapes, the CSV parsed back, and its errors.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn kvbench() -> Command {
    Command::cargo_bin("kvbench").unwrap()
}

/// A calibration file with round figures, so runs skip measuring and % of limit is checkable.
fn calibration(dir: &Path) -> PathBuf {
    let path = dir.join("cal.json");
    std::fs::write(
        &path,
        r#"{"host":"test","cpu":"test cpu","cpu_flags":["avx2"],"cores":2,"threads":2,
        "timestamp":"2026-01-01T00:00:00Z","kvbench_version":"0.1.0","method":"full",
        "llc_bytes":0,"buffer_bytes":0,"read_gbps_1t":10.0,"read_gbps":20.0,"copy_gbps":15.0,
        "gemm_gflops_1t":50.0,"gemm_gflops":100.0,"gemm_n":0}"#,
    )
    .unwrap();
    path
}

/// Read a run CSV by column name.
fn read_csv(path: &Path) -> Vec<csv::StringRecord> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records().map(Result::unwrap).collect()
}

fn header(path: &Path) -> csv::StringRecord {
    csv::Reader::from_path(path)
        .unwrap()
        .headers()
        .unwrap()
        .clone()
}

fn col<'a>(h: &csv::StringRecord, row: &'a csv::StringRecord, name: &str) -> &'a str {
    let i = h
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    &row[i]
}

#[test]
fn help_documents_every_agreed_flag() {
    let out = kvbench().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--model",
        "--layers",
        "--q-heads",
        "--kv-heads",
        "--head-dim",
        "--hidden",
        "--intermediate",
        "--workload",
        "--strategy",
        "--cache-dtype",
        "--k-dtype",
        "--v-dtype",
        "--prompt",
        "--gen",
        "--batch",
        "--block-size",
        "--shared-prefix",
        "--window",
        "--residual",
        "--no-mlp",
        "--backend",
        "--threads",
        "--repetitions",
        "--warmup",
        "--seed",
        "--output",
        "--format",
        "--shard",
        "--calibration",
        "--tier",
        "--tier-dir",
        "--redis-url",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn user_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let out = dir.path().join("x.csv");
    let cases: &[(&[&str], &str)] = &[
        (&["--model", "lama3-8b"], "did you mean llama3-8b"),
        (&["--model", "llama3-8b", "--layers", "99"], "--layers 99"),
        (
            &[
                "--q-heads",
                "6",
                "--kv-heads",
                "4",
                "--head-dim",
                "16",
                "--hidden",
                "64",
            ],
            "q_heads 6 is not a multiple of kv_heads 4",
        ),
        (&["--strategy", "pagd"], "\"pagd\" is not known"),
        (&["--cache-dtype", "int5"], "unknown cache dtype 'int5'"),
        (&["--batch", "1,0"], "--batch 0"),
        (
            &["--prompt", "8", "--shared-prefix", "9"],
            "--shared-prefix 9",
        ),
        (&["--strategy", "offload"], "needs --tier"),
        (&["--threads", "0"], "--threads 0"),
        (&["--format", "xml"], "--format \"xml\""),
        (&["--calibration", "/no/such/cal.json"], "kvbench calibrate"),
    ];
    for (args, expected) in cases {
        let mut cmd = kvbench();
        cmd.arg("run").args(*args).arg("-o").arg(&out);
        if !args.contains(&"--calibration") {
            cmd.arg("--calibration").arg(&cal);
        }
        let assert = cmd.assert().failure().code(1);
        let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // clap's own usage errors for malformed values
    kvbench()
        .args(["run", "--shard", "5/4"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("shards count from 1"));
    kvbench()
        .args(["run", "--prompt", "ten"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--prompt"));
}

/// A tiny sweep: 2 batches × 2 prompts × 3 strategies = 12 workloads.
const TINY: &[&str] = &[
    "--q-heads",
    "4",
    "--kv-heads",
    "2",
    "--head-dim",
    "16",
    "--hidden",
    "64",
    "--layers",
    "2",
    "--strategy",
    "none,contiguous,paged",
    "--prompt",
    "8,16",
    "--gen",
    "3",
    "--batch",
    "1,2",
    "--block-size",
    "4",
    "-r",
    "2",
    "--warmup",
    "1",
    "--threads",
    "2",
];

#[test]
fn shards_partition_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let whole = dir.path().join("whole.csv");
    // Exit status depends on the workloads' verification; the partition does not.
    kvbench()
        .arg("run")
        .args(TINY)
        .arg("--calibration")
        .arg(&cal)
        .arg("-o")
        .arg(&whole)
        .output()
        .unwrap();
    let h = header(&whole);
    let key = |row: &csv::StringRecord| {
        ["sweep_index", "strategy", "prompt", "batch"].map(|c| col(&h, row, c).to_string())
    };
    let all: Vec<_> = read_csv(&whole).iter().map(key).collect();
    assert_eq!(all.len(), 12);
    let mut union = Vec::new();
    for i in 1..=3 {
        let part = dir.path().join(format!("part{i}.csv"));
        kvbench()
            .arg("run")
            .args(TINY)
            .args(["--shard", &format!("{i}/3")])
            .arg("--calibration")
            .arg(&cal)
            .arg("-o")
            .arg(&part)
            .output()
            .unwrap();
        let rows = read_csv(&part);
        assert_eq!(rows.len(), 4, "shard {i}/3");
        for row in &rows {
            assert_eq!(col(&h, row, "shard"), format!("{i}/3"));
        }
        union.extend(rows.iter().map(key));
    }
    union.sort();
    let mut all_sorted = all.clone();
    all_sorted.sort();
    // Disjoint (no duplicates) and complete (same workloads as the whole sweep).
    assert_eq!(union, all_sorted);
}
