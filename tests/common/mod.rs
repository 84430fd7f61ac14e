//! Helpers shared by the CLI tests.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// The committed CI baseline: a real run CSV of 36 workloads.
#[allow(dead_code)] // not every test file compares
pub const BASELINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/results/baseline/ci-quick.csv");

/// The kvbench binary under test.
pub fn kvbench() -> Command {
    Command::cargo_bin("kvbench").unwrap()
}

/// Runs `kvbench plan <args> --format json`, asserts it succeeded, and returns its rows.
#[allow(dead_code)] // only the plan tests read plan rows
pub fn plan_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = kvbench()
        .arg("plan")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A calibration file with round figures, so runs skip measuring.
#[allow(dead_code)] // the plan tests need none
pub fn calibration(dir: &Path) -> PathBuf {
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
