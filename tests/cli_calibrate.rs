//! `kvbench calibrate` driven as a user would.

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn writes_a_calibration_run_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cal.json");
    let out = Command::cargo_bin("kvbench")
        .unwrap()
        .args([
            "calibrate",
            "--buffer-mib",
            "8",
            "--passes",
            "1",
            "--gemm-n",
            "128",
            "--threads",
            "2",
            "-o",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("GB/s") && stdout.contains("GFLOP/s"),
        "{stdout}"
    );
    let cal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(cal["buffer_bytes"], 8 << 20);
    assert_eq!(cal["threads"], 2);
    assert_eq!(cal["method"], "full");
    for key in [
        "read_gbps_1t",
        "read_gbps",
        "copy_gbps",
        "gemm_gflops_1t",
        "gemm_gflops",
    ] {
        let v = cal[key].as_f64().unwrap();
        assert!(v > 0.0 && v.is_finite(), "{key} = {v}");
    }
    assert!(cal["cpu"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(cal["cpu_flags"].is_array());
}

#[test]
fn errors_name_the_bad_value() {
    Command::cargo_bin("kvbench")
        .unwrap()
        .args([
            "calibrate",
            "--buffer-mib",
            "0",
            "-o",
            "/tmp/never-written-kvbench.json",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--buffer-mib 0"));
    Command::cargo_bin("kvbench")
        .unwrap()
        .args(["calibrate", "--backend", "tpu"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--backend \"tpu\""));
    // A GEMM probe too large to allocate is refused, not aborted on (a 4 TB request).
    for n in ["1000000", "4294967295"] {
        Command::cargo_bin("kvbench")
            .unwrap()
            .args(["calibrate", "--gemm-n", n])
            .assert()
            .code(1)
            .stderr(predicate::str::contains(format!(
                "--gemm-n {n}: give at most"
            )));
    }
    // An output path that cannot be a file is refused (before measuring: it prints no
    // figures).
    let dir = tempfile::tempdir().unwrap();
    Command::cargo_bin("kvbench")
        .unwrap()
        .args(["calibrate", "--short", "-o"])
        .arg(dir.path())
        .assert()
        .code(1)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("it is a folder"));
}
