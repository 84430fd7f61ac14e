//! The tiered KV cache from the command line: `kvbench plan --tiers` against hand
//! calculations, and `kvbench run --strategy offload` through real tiers (host, disk, and a
//! redis-server started here), with its errors.

mod common;

use assert_cmd::Command;
use common::{calibration, kvbench};
use kvbench_workloads::tier::local_redis::LocalRedis;
use predicates::prelude::*;
use std::path::Path;

#[test]
fn plan_tiers_of_the_issue_example() {
    // Llama-3-70B f16: 327,680 B/token (REFERENCE.md). 80 GiB → 262,144 tokens, 64
    // sequences of 4096; 512 GiB → 1,677,721 tokens, 409 sequences; 1.25 GiB over PCIe 5
    // (63.015 GB/s) loads in 21.30 ms.
    kvbench()
        .args([
            "plan",
            "--model",
            "llama3-70b",
            "--tiers",
            "hbm:80GiB,dram:512GiB,ssd:4TiB",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("262,144"))
        .stdout(predicate::str::contains("1,677,721"))
        .stdout(predicate::str::contains("409"))
        .stdout(predicate::str::contains("21.30"))
        .stdout(predicate::str::contains("resident"));
}

#[test]
fn plan_tiers_break_even_by_hand() {
    // Llama-3.1-8B over 25 GbE at 700.01 effective TFLOP/s: loading wins for
    // n > R/6.25e9 − 53,248 − 1 = 112,001.6 − 53,249 = 58,752.6 (planner::tiers tests).
    kvbench()
        .args([
            "plan",
            "--model",
            "llama3.1-8b",
            "--tiers",
            "remote:1TiB@25gbe",
            "--prefill-tflops",
            "700.01",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("≥ 58753 tokens"));
}

#[test]
fn plan_tiers_errors_are_one_line_with_a_fix() {
    let out = kvbench()
        .args(["plan", "--tiers", "dram:1GiB,dramm:2GiB"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("did you mean `dram`"), "{err}");
    assert!(out.stdout.is_empty(), "nothing is printed before the error");
    kvbench()
        .args(["plan", "--tiers", "ssd:1TiB@pcie9"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown link `pcie9`"));
}

fn offload_run(dir: &Path, tiers: &str, extra: &[&str]) -> Command {
    offload_run_in(dir, &dir.join("tier"), tiers, extra)
}

fn offload_run_in(dir: &Path, tier_dir: &Path, tiers: &str, extra: &[&str]) -> Command {
    let mut cmd = kvbench();
    cmd.args([
        "run",
        "--workload",
        "attention",
        "--strategy",
        "offload",
        "--tier",
        tiers,
        "--q-heads",
        "4",
        "--kv-heads",
        "2",
        "--head-dim",
        "32",
        "--hidden",
        "128",
        "--layers",
        "2",
        "--cache-dtype",
        "int8",
        "--prompt",
        "64",
        "--shared-prefix",
        "64",
        "--gen",
        "4",
        "-r",
        "1",
        "--warmup",
        "0",
    ])
    .arg("--tier-dir")
    .arg(tier_dir)
    .arg("--calibration")
    .arg(calibration(dir))
    .arg("-o")
    .arg(dir.join("out.csv"))
    .args(extra);
    cmd
}

/// Prefix-reuse rows by tier: (identical, blocks verified, hash failures).
fn prefix_rows(dir: &Path) -> Vec<(String, String, u64, u64)> {
    let mut r = csv::Reader::from_path(dir.join("out.prefix-reuse.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |row: &csv::StringRecord, name: &str| {
        row[h.iter().position(|c| c == name).unwrap()].to_string()
    };
    r.records()
        .map(Result::unwrap)
        .map(|row| {
            (
                col(&row, "tier"),
                col(&row, "identical"),
                col(&row, "blocks_verified").parse().unwrap(),
                col(&row, "hash_failures").parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn run_offload_through_host_disk_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRedis::start().unwrap();
    let (tiers, extra) = match &server {
        Some(s) => ("host,disk,redis", vec!["--redis-url".to_string(), s.url()]),
        None => {
            eprintln!("SKIPPED the redis tier: redis-server is not installed");
            ("host,disk", vec![])
        }
    };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    offload_run(dir.path(), tiers, &extra)
        .assert()
        .success()
        .stdout(predicate::str::contains("TTFT recompute ms"))
        .stdout(predicate::str::contains("break-even"));
    let rows = prefix_rows(dir.path());
    assert_eq!(rows.len(), tiers.split(',').count());
    for (tier, identical, verified, failures) in rows {
        // 64 prefix tokens = 4 blocks per layer, 2 layers.
        assert_eq!(
            (identical.as_str(), verified, failures),
            ("true", 8, 0),
            "{tier}"
        );
    }
    let mut r = csv::Reader::from_path(dir.path().join("out.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let at = |name: &str| h.iter().position(|c| c == name).unwrap();
    let mut tiers_seen = Vec::new();
    for row in r.records().map(Result::unwrap) {
        assert_eq!(&row[at("status")], "ok", "{row:?}");
        // Blocks really went through the tier, every one verified, no fault.
        assert!(
            row[at("tier_blocks_loaded")].parse::<u64>().unwrap() > 0,
            "{row:?}"
        );
        assert_eq!(&row[at("tier_hash_failures")], "0");
        assert_eq!(&row[at("tier_fallbacks")], "0");
        tiers_seen.push(row[at("tier")].to_string());
    }
    assert_eq!(tiers_seen.join(","), tiers);
    // The disk tier's file is gone after the run.
    let left = std::fs::read_dir(dir.path().join("tier")).unwrap().count();
    assert_eq!(left, 0);
}

#[test]
fn run_offload_to_an_unusable_tier_dir_is_an_error_row_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("tier");
    let out = offload_run_in(dir.path(), &bad, "disk", &[])
        .assert()
        .failure()
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("tier directory `{}` is not usable", bad.display())),
        "{err}"
    );
}

#[test]
fn run_offload_to_an_unreachable_redis_names_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = offload_run(
        dir.path(),
        "redis",
        &["--redis-url", "redis://127.0.0.1:1/"],
    )
    .assert()
    .failure()
    .get_output()
    .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot reach Redis at redis://127.0.0.1:1/"),
        "{err}"
    );
    assert_eq!(
        err.matches("cannot reach Redis").count(),
        1,
        "one line: {err}"
    );
}
