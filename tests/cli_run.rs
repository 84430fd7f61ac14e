//! `kvbench run` driven as a user would: tiny shapes, the CSV parsed back, and its errors.

mod common;

use common::{calibration, kvbench};
use predicates::prelude::*;
use std::path::Path;

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
        // Once: a cause that is both in the message and the error's source was printed twice.
        assert_eq!(stderr.matches(expected).count(), 1, "{args:?}: {stderr}");
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

#[test]
fn a_cache_too_large_to_count_is_refused_before_any_row_runs() {
    // Found by cli_properties: 2^32 sequences of 2^32 tokens. Before, the row ran into the
    // planner's overflow and the run printed two errors (the row's and the summary's).
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let out = dir.path().join("x.csv");
    let assert = kvbench()
        .args([
            "run",
            "--workload",
            "attention",
            "--q-heads",
            "4",
            "--kv-heads",
            "2",
        ])
        .args(["--head-dim", "16", "--batch", "4294967295"])
        .args(["--shared-prefix", "4294967295", "-o"])
        .arg(&out)
        .arg("--calibration")
        .arg(&cal)
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].ends_with("bytes does not fit in 64 bits; use smaller sizes"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().last(), Some(errors[0]));
    assert!(!out.exists(), "no report for a sweep refused up front");
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
            .assert()
            .success();
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

#[test]
fn tiny_run_writes_csv_json_md_with_checkable_figures() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let out = dir.path().join("runs/tiny.csv");
    let assert = kvbench()
        .args(["run", "--workload", "attention,decoder"])
        .args([
            "--q-heads",
            "4",
            "--kv-heads",
            "2",
            "--head-dim",
            "16",
            "--hidden",
            "64",
        ])
        .args([
            "--layers",
            "2",
            "--strategy",
            "contiguous,paged",
            "--cache-dtype",
            "f16,int8",
        ])
        .args([
            "--prompt",
            "12",
            "--gen",
            "4",
            "--batch",
            "2",
            "--block-size",
            "8",
        ])
        .args([
            "-r",
            "3",
            "--warmup",
            "1",
            "--threads",
            "2",
            "--format",
            "table,json,md",
        ])
        .arg("--calibration")
        .arg(&cal)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(
        stdout.contains("TTFT ms") && stdout.contains("paged b8"),
        "{stdout}"
    );

    let h = header(&out);
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 2 * 2 * 2);
    let num = |row: &csv::StringRecord, c: &str| col(&h, row, c).parse::<f64>().unwrap();
    for row in &rows {
        assert_eq!(col(&h, row, "status"), "ok");
        assert_eq!(col(&h, row, "verified"), "true");
        assert_eq!(col(&h, row, "schema_version"), "1");
        assert_eq!(col(&h, row, "threads"), "2");
        assert_eq!(num(row, "ttft_samples"), 3.0);
        assert_eq!(num(row, "itl_samples"), 12.0);
        // The planner's prediction equals what the layout allocated.
        assert_eq!(
            col(&h, row, "kv_bytes_predicted"),
            col(&h, row, "kv_bytes_allocated")
        );
        // tokens/s = batch / TPOT
        let tps = 2.0 / (num(row, "tpot_ms") / 1e3);
        assert!((num(row, "tokens_per_s") - tps).abs() <= 1e-6 * tps);
        assert!(num(row, "itl_p50_ms") <= num(row, "itl_p99_ms"));
        // Limits from the calibration file (2 threads → all-thread figures).
        assert_eq!(num(row, "limit_gbps"), 20.0);
        assert_eq!(num(row, "limit_gflops"), 100.0);
        let pct = 100.0 * num(row, "achieved_gbps") / 20.0;
        assert!((num(row, "pct_of_limit") - pct).abs() <= 1e-9 * pct.max(1.0));
    }
    // Contiguous f16 by hand: batch 2 × 2 layers × 2 KV heads × (K + V) × 16 tokens × 16 × 2 B.
    let contiguous_f16 = rows
        .iter()
        .find(|r| col(&h, r, "strategy") == "contiguous" && col(&h, r, "k_dtype") == "f16")
        .unwrap();
    assert_eq!(
        num(contiguous_f16, "kv_bytes_allocated"),
        (2 * 2 * 2 * 2 * 16 * 16 * 2) as f64
    );
    assert_eq!(col(&h, contiguous_f16, "block_size"), "0");
    // Paged, block 8: 16 tokens = 2 whole blocks, the same bytes here.
    let paged_f16 = rows
        .iter()
        .find(|r| col(&h, r, "strategy") == "paged" && col(&h, r, "k_dtype") == "f16")
        .unwrap();
    assert_eq!(col(&h, paged_f16, "block_size"), "8");
    assert_eq!(
        num(paged_f16, "kv_bytes_allocated"),
        (2 * 2 * 2 * 2 * 16 * 16 * 2) as f64
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 8);
    assert_eq!(
        results[0]["samples"]["itl_ms"].as_array().unwrap().len(),
        12
    );
    assert_eq!(
        results[0]["samples"]["ttft_ms"].as_array().unwrap().len(),
        3
    );
    let md = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert_eq!(md.lines().filter(|l| l.starts_with('|')).count(), 2 + 8);
}

#[test]
fn ctrl_c_stops_cleanly_and_keeps_finished_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let out = dir.path().join("interrupted.csv");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kvbench"))
        .args(["run", "--workload", "attention"])
        .args([
            "--q-heads",
            "4",
            "--kv-heads",
            "2",
            "--head-dim",
            "16",
            "--hidden",
            "64",
        ])
        .args([
            "--strategy",
            "contiguous",
            "--prompt",
            "64",
            "--gen",
            "256",
            "-r",
            "20",
        ])
        // About a second per workload: the run is far from done when the first row appears.
        .args(["--batch", "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16"])
        .arg("--calibration")
        .arg(&cal)
        .arg("-o")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first finished row, then press Ctrl-C.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let rows = std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if rows >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no row written in 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let h = header(&out);
    let rows = read_csv(&out);
    assert!(!rows.is_empty() && rows.len() < 16, "{} rows", rows.len());
    for row in &rows {
        // Every kept row is complete: a finished, verified, timed workload.
        assert_eq!(col(&h, row, "status"), "ok");
        assert_eq!(col(&h, row, "itl_samples"), (20 * 256).to_string());
    }
}

#[test]
fn a_workload_that_cannot_fit_is_refused_with_its_figure() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let out = dir.path().join("big.csv");
    // Llama-3-70B whole: 80 layers of f32 weights are far beyond any test machine's memory.
    let assert = kvbench()
        .args([
            "run",
            "--model",
            "llama3-70b",
            "--prompt",
            "4096",
            "--gen",
            "128",
        ])
        .arg("--calibration")
        .arg(&cal)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("refused: llama3-70b"), "{stderr}");
    let h = header(&out);
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(col(&h, &rows[0], "status"), "refused");
    let detail = col(&h, &rows[0], "detail");
    // REFERENCE.md: Llama-3-70B holds 320 KiB per token in f16; 4224 tokens = 1.29 GiB.
    assert_eq!(
        col(&h, &rows[0], "kv_bytes_predicted"),
        (4224u64 * 327_680).to_string()
    );
    assert!(
        detail.contains("KV cache 1.29 GiB") && detail.contains("weights"),
        "{detail}"
    );
    assert!(detail.contains("lower --prompt"), "{detail}");
}

#[test]
fn cuda_without_a_gpu_is_refused_in_one_line_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let out = dir.path().join("cuda.csv");
    let output = kvbench()
        .args(["run", "--backend", "cuda", "--workload", "attention"])
        .args([
            "--q-heads",
            "4",
            "--kv-heads",
            "2",
            "--head-dim",
            "64",
            "--hidden",
            "256",
        ])
        .args([
            "--prompt", "16", "--gen", "2", "-r", "1", "--format", "none",
        ])
        .arg("--calibration")
        .arg(&cal)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if kvbench_workloads::cuda::device_info().is_ok() {
        // A machine with an NVIDIA GPU runs it: the row names the GPU.
        let h = header(&out);
        let rows = read_csv(&out);
        assert_eq!(col(&h, &rows[0], "backend"), "cuda");
        assert!(!col(&h, &rows[0], "gpu").is_empty());
        return;
    }
    // Anywhere else: one line that says what is missing and how to fix it, exit 1, no file.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--backend cpu"), "{stderr}");
    assert!(!out.exists(), "nothing is written without a GPU");
}

/// An attention shape needs no --hidden (it defaults to q_heads × head_dim), a run too long
/// for --max-minutes is refused with its estimate before anything runs, and --prefill names
/// its valid values.
#[test]
fn attention_runs_are_estimated_and_prefill_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let out = dir.path().join("a.csv");
    let shape = [
        "run",
        "--workload",
        "attention",
        "--q-heads",
        "4",
        "--kv-heads",
        "2",
        "--head-dim",
        "16",
        "--gen",
        "2",
        "-r",
        "1",
        "--format",
        "none",
    ];
    kvbench()
        .args(shape)
        .args(["--prompt", "64,32", "--layers", "1,2", "--prefill", "fill"])
        .arg("--calibration")
        .arg(&cal)
        .arg("-o")
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("estimate: about"));
    let rows = read_csv(&out);
    let header = csv::Reader::from_path(&out)
        .unwrap()
        .headers()
        .unwrap()
        .clone();
    let col = |r: &csv::StringRecord, name: &str| {
        r[header.iter().position(|h| h == name).unwrap()].to_string()
    };
    // 2 layer counts × 2 prompts, hidden = 4 × 16, every row filled.
    assert_eq!(rows.len(), 4);
    assert!(rows
        .iter()
        .all(|r| col(r, "hidden") == "64" && col(r, "prefill") == "fill"));
    let layers: Vec<String> = rows.iter().map(|r| col(r, "layers")).collect();
    assert!(
        layers.contains(&"1".into()) && layers.contains(&"2".into()),
        "{layers:?}"
    );
    // The fixture's 20 GB/s makes a 2M-token prompt's causal prefill take hours.
    kvbench()
        .args(shape)
        .args(["--prompt", "2000000", "--max-minutes", "1"])
        .arg("--calibration")
        .arg(&cal)
        .arg("-o")
        .arg(dir.path().join("b.csv"))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("--max-minutes 1").and(predicate::str::contains("minutes")),
        );
    assert!(
        !dir.path().join("b.csv").exists(),
        "nothing is written for a refused run"
    );
    // A negative budget gets our message, not clap's "unexpected argument '-1'".
    for minutes in ["-1", "0"] {
        kvbench()
            .args(shape)
            .args(["--prompt", "64", "--max-minutes", minutes])
            .assert()
            .failure()
            .stderr(predicate::str::contains(format!(
                "--max-minutes {minutes}: give a positive number"
            )));
    }
    kvbench()
        .args(shape)
        .args(["--prompt", "64", "--prefill", "auto"])
        .arg("--calibration")
        .arg(&cal)
        .assert()
        .failure()
        .stderr(predicate::str::contains("valid: compute"));
}
