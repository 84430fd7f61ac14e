//! Regression tests for issue 10, one per category of failure it found, driving the binary
//! as a user would (ripgrep keeps its tests/regression.rs the same way).

mod common;

use common::{calibration, kvbench, BASELINE};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A tiny attention workload: a run of it takes milliseconds.
const TINY: &[&str] = &[
    "--workload",
    "attention",
    "--q-heads",
    "4",
    "--kv-heads",
    "2",
    "--head-dim",
    "16",
    "--hidden",
    "64",
    "--prompt",
    "8",
    "--gen",
    "4",
    "-r",
    "1",
    "--warmup",
    "0",
];

/// The binary's stderr after a failing run, asserted to be one `error:` line.
fn one_line_error(args: &[&str]) -> String {
    let out = kvbench().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    let last = err
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(last.starts_with("error: "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    last
}

/// Runs the binary with its stdout closed straight away, as `| head -0` would.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let bin = assert_cmd::cargo::cargo_bin("kvbench");
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

// --- Panics -------------------------------------------------------------------------------

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let csv = dir.path().join("run.csv");
    // 3,000 plan rows are far more than a pipe's 64 KiB buffer: the write must hit EPIPE.
    let seqs: Vec<String> = (1..=3000).map(|s| s.to_string()).collect();
    let seqs = seqs.join(",");
    let mut run: Vec<&str> = vec!["run"];
    run.extend(TINY);
    run.extend([
        "--calibration",
        cal.to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
    ]);
    for args in [
        vec!["plan", "--seq", &seqs, "--format", "csv"],
        vec!["plan"],
        vec!["models"],
        vec!["models", "--gpus", "--format", "json"],
        vec!["compare", BASELINE, BASELINE],
        run,
    ] {
        let (code, err) = with_closed_stdout(&args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // The run kept its files although nobody read its table.
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn a_closed_stderr_costs_no_file_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let csv = dir.path().join("run.csv");
    let mut run: Vec<&str> = vec!["run"];
    run.extend(TINY);
    run.extend([
        "--calibration",
        cal.to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
    ]);
    // A run prints its notes and "wrote …" lines on stderr: with nobody reading them the
    // run still succeeds and keeps its file.
    let bin = assert_cmd::cargo::cargo_bin("kvbench");
    let mut child = Command::new(bin)
        .args(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn a_command_line_that_does_not_parse_is_one_line() {
    for (args, says) in [
        (vec!["run", "--bogus"], "'--bogus'"),
        (vec!["plan", "--tp", "x"], "'--tp <TP>'"),
        (vec!["plnn"], "similar subcommand exists: 'plan'"),
        (vec!["compare"], "<BASELINE> <NEW>"),
    ] {
        let out = kvbench().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(err.contains("--help'"), "{args:?}: {err}");
    }
}

#[test]
fn an_estimate_past_u64_is_refused_not_allocated() {
    // Weights of 2^20 layers × 3 × 2^30 × 2^31 f32 overflow u64: the row must be refused
    // with a total at least its largest part, not built.
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let csv = dir.path().join("big.csv");
    let out = kvbench()
        .args([
            "run",
            "--q-heads",
            "2",
            "--kv-heads",
            "1",
            "--head-dim",
            "2",
        ])
        .args(["--hidden", "1073741824", "--intermediate", "2147483648"])
        .args([
            "--layers", "1048576", "--prompt", "1", "--gen", "1", "-r", "1",
        ])
        .arg("--calibration")
        .arg(&cal)
        .arg("-o")
        .arg(&csv)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let rows = kvbench_bench::export::csv::read_records(&csv).unwrap();
    assert_eq!(rows[0].status, kvbench_bench::Status::Refused);
    assert!(
        rows[0].detail.contains("weights 16777216.00 TiB"),
        "{}",
        rows[0].detail
    );
}

// --- Unbounded work -----------------------------------------------------------------------

#[test]
fn work_and_inputs_are_bounded() {
    let seqs: Vec<String> = (1..=10_000).map(|s| s.to_string()).collect();
    let batches: Vec<String> = (1..=1_000).map(|s| s.to_string()).collect();
    let e = one_line_error(&[
        "plan",
        "--seq",
        &seqs.join(","),
        "--batch",
        &batches.join(","),
    ]);
    assert!(
        e.contains("10000000 rows") && e.contains("--max-rows"),
        "{e}"
    );
    let e = one_line_error(&["plan", "--config", "/dev/zero"]);
    assert!(e.contains("larger than 16 MiB"), "{e}");
    let e = one_line_error(&["run", "--config", "/dev/zero"]);
    assert!(e.contains("larger than 16 MiB"), "{e}");
    let e = one_line_error(&[
        "run",
        "--workload",
        "attention",
        "--prompt",
        "8",
        "--gen",
        "1",
        "--calibration",
        "/dev/zero",
    ]);
    assert!(e.contains("larger than 1 MiB"), "{e}");
    let prompts: Vec<String> = (1..=2_000).map(|s| s.to_string()).collect();
    let e = one_line_error(&["run", "--prompt", &prompts.join(","), "--max-rows", "1000"]);
    assert!(
        e.contains("2000 rows") && e.contains("--max-rows 2000"),
        "{e}"
    );
}

// --- Flags silently ignored or rewritten --------------------------------------------------

#[test]
fn every_flag_is_checked_whatever_else_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let cal = cal.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["plan", "--pp", "0"], "--pp 0"),
        (&["plan", "--mem-util", "5"], "--mem-util 5"),
        (
            &["plan", "--weights-dtype", "bogus"],
            "--weights-dtype bogus",
        ),
        (&["plan", "--prefill-tflops", "0"], "--prefill-tflops 0"),
        (&["plan", "--seq", "1024,0"], "--seq 0"),
        (&["plan", "--seq", "1024,1024"], "--seq names 1024 twice"),
        (
            &["plan", "--cache-dtype", "fp8-e4m3/tensor/g64"],
            "not both",
        ),
        (&["plan", "--cache-dtype", "kivi2/r64/r32"], "given twice"),
        (&["plan", "--cache-dtype", "q4_0/g64"], "fixed block"),
        (&["run", "-r", "0", "--calibration", cal], "--repetitions 0"),
        (
            &[
                "run",
                "--strategy",
                "contiguous,contiguous",
                "--calibration",
                cal,
            ],
            "--strategy names contiguous twice",
        ),
        (&["run", "--prompt", "8,8"], "--prompt names 8 twice"),
        (&["run", "--threads", "100000"], "--threads 100000"),
        (&["calibrate", "--passes", "0"], "--passes 0"),
        (&["calibrate", "--threads", "100000"], "--threads 100000"),
    ];
    for (args, says) in cases {
        let e = one_line_error(args);
        assert!(e.contains(says), "{args:?}: {e}");
    }
}

// --- Files lost or half-written -----------------------------------------------------------

#[test]
fn a_run_that_refuses_to_start_touches_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let csv = dir.path().join("run.csv");
    std::fs::write(&csv, "the user's previous file\n").unwrap();
    std::fs::create_dir(dir.path().join("run.json")).unwrap();
    let out = kvbench()
        .arg("run")
        .args(TINY)
        .args(["--format", "json", "--calibration"])
        .arg(&cal)
        .arg("-o")
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it is a folder"));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text, "the user's previous file\n");
}

const PREVIOUS: &str = "the user's previous file\n";

/// One layer of llama3-8b with `[prompt, gen, repetitions]`, run to a CSV that holds
/// [`PREVIOUS`], its stderr piped: the child, the CSV and the folder holding both.
fn run_over_a_previous_file([prompt, gen, reps]: [&str; 3]) -> (Child, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let csv = dir.path().join("run.csv");
    std::fs::write(&csv, PREVIOUS).unwrap();
    let child = Command::new(assert_cmd::cargo::cargo_bin("kvbench"))
        .args(["run", "--model", "llama3-8b", "--layers", "1"])
        .args(["--prompt", prompt, "--gen", gen, "-r", reps])
        .args(["--max-minutes", "100000000", "--calibration"])
        .arg(&cal)
        .arg("-o")
        .arg(&csv)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, csv, dir)
}

/// What a user's Ctrl-C sends.
fn ctrl_c(child: &Child) {
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

#[test]
fn ctrl_c_before_the_first_row_keeps_the_previous_file() {
    // Endless timed runs: Ctrl-C lands before the first row or in it (its tuning,
    // verification or timed steps), and is honoured at the row's next check either way.
    let (mut child, csv, _dir) = run_over_a_previous_file(["16", "16", "1000000"]);
    // The calibration note comes after the Ctrl-C handler is installed and before running.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("cal.json"), "{line}");
    ctrl_c(&child);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), PREVIOUS, "{rest}");
    assert!(
        rest.contains("as it was") && !rest.contains("wrote"),
        "{rest}"
    );
}

#[test]
fn ctrl_c_in_a_long_verification_ends_the_run_within_a_minute() {
    // 4608 tokens: in this (debug) build the row's f64 reference alone takes minutes, and
    // before the interrupt reached it a Ctrl-C in it waited for the whole of it.
    let (mut child, csv, _dir) = run_over_a_previous_file(["512", "4096", "20"]);
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    // Past the start-up, into the row's fill and verification.
    std::thread::sleep(std::time::Duration::from_secs(3));
    ctrl_c(&child);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed().as_secs() > 60 {
            child.kill().unwrap();
            panic!("still running a minute after Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), PREVIOUS);
}

#[test]
fn an_empty_shard_writes_a_header_that_report_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let cal = calibration(dir.path());
    let empty = dir.path().join("shard1.csv");
    // One workload in two shards: the first is empty.
    kvbench()
        .arg("run")
        .args(TINY)
        .args(["--shard", "1/2", "--calibration"])
        .arg(&cal)
        .arg("-o")
        .arg(&empty)
        .assert()
        .success();
    let text = std::fs::read_to_string(&empty).unwrap();
    assert!(
        text.starts_with("schema_version,") && text.lines().count() == 1,
        "{text}"
    );
    let out = dir.path().join("report");
    kvbench()
        .arg("report")
        .arg(&empty)
        .arg(BASELINE)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_report_replaces_its_own_outputs_and_a_failed_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let report = |inputs: &[&Path]| {
        kvbench()
            .arg("report")
            .args(inputs)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap()
    };
    assert!(report(&[Path::new(BASELINE)]).status.success());
    std::fs::write(out.join("charts/stale.svg"), "<svg/>").unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let first_md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "neither,run,nor,plan\n1,2,3,4\n").unwrap();
    // A report that fails on its inputs leaves the previous one whole.
    let failed = report(&[Path::new(BASELINE), &bad]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(out.join("charts/stale.svg").exists());
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        first_md
    );
    // A new report replaces the outputs it owns, and only those.
    assert!(report(&[Path::new(BASELINE)]).status.success());
    assert!(!out.join("charts/stale.svg").exists());
    assert_eq!(
        entries(&out),
        ["charts", "merged-runs.csv", "notes.txt", "report.md"]
    );
    // Nothing is left beside the report (the temporary build folder is gone).
    assert_eq!(entries(dir.path()), ["bad.csv", "report"]);
    // A user's file where the report writes is refused before anything is deleted: a CSV
    // kept in charts/ (here the report's own input), a folder named report.md.
    let kept = out.join("charts/myrun.csv");
    std::fs::copy(BASELINE, &kept).unwrap();
    let refused = report(&[&kept]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("myrun.csv") && err.contains("move it") && err.lines().count() == 1,
        "{err}"
    );
    assert!(kept.exists() && out.join("report.md").exists());
    std::fs::remove_file(&kept).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("report.md")).unwrap();
    std::fs::write(other.join("report.md/important.txt"), "mine").unwrap();
    let refused = kvbench()
        .args(["report", BASELINE, "-o"])
        .arg(&other)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(other.join("report.md/important.txt").exists());
}

// --- The CI gate passes when it compared nothing ------------------------------------------

/// The baseline with `edit` applied to its rows (header first).
fn edited(dir: &Path, name: &str, edit: impl Fn(&mut Vec<Vec<String>>)) -> String {
    let mut rows: Vec<Vec<String>> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(BASELINE)
        .unwrap()
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    edit(&mut rows);
    let path = dir.join(name);
    let mut w = csv::Writer::from_path(&path).unwrap();
    for r in rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
    path.to_string_lossy().to_string()
}

fn set_column(rows: &mut [Vec<String>], column: &str, value: &str) {
    let at = rows[0].iter().position(|c| c == column).unwrap();
    for r in rows.iter_mut().skip(1) {
        r[at] = value.to_string();
    }
}

fn drop_column(rows: &mut [Vec<String>], column: &str) {
    let at = rows[0].iter().position(|c| c == column).unwrap();
    for r in rows.iter_mut() {
        r.remove(at);
    }
}

#[test]
fn compare_fails_when_it_cannot_judge() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let no_tps = edited(d, "no-tps.csv", |r| drop_column(r, "tokens_per_s"));
    let nan = edited(d, "nan.csv", |r| set_column(r, "tokens_per_s", "NaN"));
    let empty = edited(d, "empty.csv", |r| set_column(r, "tokens_per_s", ""));
    let text = edited(d, "text.csv", |r| set_column(r, "rel_error", "n/a"));
    let header = edited(d, "header.csv", |r| r.truncate(1));
    let other = edited(d, "other.csv", |r| set_column(r, "model", "another-model"));
    let dup = edited(d, "dup.csv", |r| {
        let first = r[1].clone();
        r.push(first);
    });
    let ratios = ["--timing", "ratios"];
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec![BASELINE, &no_tps],
            format!("new run {no_tps} has no `tokens_per_s` column"),
        ),
        (vec![BASELINE, &nan], "check(s) failed".into()),
        (
            vec![BASELINE, &nan, ratios[0], ratios[1]],
            "check(s) failed".into(),
        ),
        (vec![&nan, BASELINE], "check(s) failed".into()),
        (vec![BASELINE, &empty], "check(s) failed".into()),
        (
            vec![BASELINE, &text, "--timing", "off"],
            "check(s) failed".into(),
        ),
        (vec![&header, &header], "both have no rows".into()),
        (
            vec![BASELINE, &other, "--allow-missing"],
            "none of the 36 workloads".into(),
        ),
        (vec![BASELINE, &dup], format!("new run {dup} has two rows")),
    ];
    for (args, says) in cases {
        let mut all = vec!["compare"];
        all.extend(&args);
        let e = one_line_error(&all);
        assert!(e.contains(&says), "{args:?}: {e}");
    }
    // The gate itself still passes identical runs.
    kvbench()
        .args(["compare", BASELINE, BASELINE])
        .assert()
        .success();
}

#[test]
fn compare_refuses_negative_or_infinite_timings_in_either_file() {
    // Every ttft_ms at -5 was judged "no data" and passed, either way round.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let negative = edited(d, "negative.csv", |r| set_column(r, "ttft_ms", "-5"));
    let infinite = edited(d, "infinite.csv", |r| set_column(r, "tokens_per_s", "inf"));
    let bytes = edited(d, "bytes.csv", |r| set_column(r, "peak_rss_bytes", "-1"));
    for (bad, says) in [
        (&negative, "negative.csv:2: `ttft_ms` is -5"),
        (&infinite, "infinite.csv:2: `tokens_per_s` is inf"),
        (&bytes, "bytes.csv:2: `peak_rss_bytes` is -1"),
    ] {
        for args in [[BASELINE, bad.as_str()], [bad.as_str(), BASELINE]] {
            for timing in ["auto", "ratios"] {
                let e = one_line_error(&["compare", args[0], args[1], "--timing", timing]);
                assert!(e.contains(says) && e.contains("re-run"), "{e}");
            }
        }
    }
}

// --- Messages that point the wrong way ----------------------------------------------------

#[test]
fn messages_blame_the_flag_and_the_file_at_fault() {
    let e = one_line_error(&["plan", "--gpu", "h100", "--tp", "0"]);
    assert!(e.contains("--tp 0"), "{e}");
    let e = one_line_error(&["plan", "--kv-budget", "0GiB"]);
    assert!(e.contains("--kv-budget 0GiB: must be positive"), "{e}");
    let e = one_line_error(&["plan", "--kv-budget", "58.5"]);
    assert!(e.contains("add a unit, e.g. 58.5GiB"), "{e}");
    // --spread-k is a multiplier, not a fraction.
    let e = one_line_error(&["compare", BASELINE, BASELINE, "--spread-k", "nan"]);
    assert!(
        e.contains("--spread-k NaN") && e.contains("multiplier"),
        "{e}"
    );
    assert!(!e.contains("10%"), "{e}");
    // The new file lacks a key column: baseline rows that differ only there look alike, and
    // the message says which file lacks it.
    let dir = tempfile::tempdir().unwrap();
    let lacking = edited(dir.path(), "lacking.csv", |r| drop_column(r, "strategy"));
    let e = one_line_error(&["compare", BASELINE, &lacking]);
    assert!(
        e.contains(&format!("because {lacking} lacks key column(s) `strategy`")),
        "{e}"
    );
}
