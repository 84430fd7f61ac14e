//! `kvbench report` driven as a user would: shards and machines merged into one report with
//! charts, plan CSVs charted, the committed sample CSVs reported, schema errors in one line.

use assert_cmd::Command;
use kvbench_bench::Record;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn kvbench() -> Command {
    Command::cargo_bin("kvbench").unwrap()
}

fn row(host: &str, threads: u32, strategy: &str, dtype: &str, prompt: u32) -> Record {
    let per_token: u64 = if dtype == "f16" { 1024 } else { 576 };
    let tpot = (0.5 + f64::from(prompt) / 512.0) * 2.0 / f64::from(threads);
    Record {
        schema_version: kvbench_bench::SCHEMA_VERSION,
        host: host.into(),
        cpu: "AMD EPYC".into(),
        cores: 2,
        threads,
        backend: "cpu".into(),
        workload: "decoder".into(),
        model: "mini-gqa".into(),
        strategy: strategy.into(),
        k_dtype: dtype.into(),
        v_dtype: dtype.into(),
        bits_per_element: if dtype == "f16" { 16.0 } else { 9.0 },
        batch: 1,
        prompt,
        gen: 16,
        status: kvbench_bench::Status::Ok,
        verified: true,
        rel_error: if dtype == "f16" { 3e-4 } else { 5e-3 },
        ttft_ms: f64::from(prompt) / 50.0,
        itl_p50_ms: tpot,
        tpot_ms: tpot,
        tokens_per_s: 1000.0 / tpot,
        kv_bytes_used: (u64::from(prompt) + 16) * per_token,
        kv_bytes_allocated: (u64::from(prompt) + 16) * per_token,
        kv_bytes_predicted: (u64::from(prompt) + 16) * per_token,
        ..Record::default()
    }
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

/// One machine's sweep split into two shards (by strategy), as `--shard 1/2`, `2/2` would.
fn shards(dir: &Path, host: &str, threads: u32) -> Vec<PathBuf> {
    ["contiguous", "paged"]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let rows: Vec<Record> = ["f16", "int8"]
                .iter()
                .flat_map(|d| [128, 512, 2048].map(|p| row(host, threads, s, d, p)))
                .collect();
            write(dir, &format!("{host}-{}.csv", i + 1), &rows)
        })
        .collect()
}

#[test]
fn two_machines_in_shards_merge_into_one_report_with_charts() {
    let dir = tempfile::tempdir().unwrap();
    let mut inputs = shards(dir.path(), "box-a", 2);
    inputs.extend(shards(dir.path(), "box-b", 1));
    let out = dir.path().join("report");
    kvbench()
        .arg("report")
        .args(&inputs)
        .arg("-o")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "merged 24 run rows from 2 machine(s)",
        ));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for heading in [
        "## Tokens/s and TTFT per strategy and dtype",
        "## Memory per token and waste per layout",
        "## Quantization error against bytes saved",
        "## Measured next to predicted",
    ] {
        assert!(md.contains(heading), "no {heading} in\n{md}");
    }
    // int8 saves 1 − 576/1024 = 43.75% against f16, for every workload.
    assert!(
        md.lines()
            .any(|l| l.starts_with("| int8 | 9 |") && l.contains("| 43.8% |")),
        "{md}"
    );
    let merged = std::fs::read_to_string(out.join("merged-runs.csv")).unwrap();
    assert_eq!(merged.lines().count(), 1 + 24);
    // A tokens/s chart per machine, with a line per strategy and dtype.
    for host in ["box-a-amd-epyc-2-threads", "box-b-amd-epyc-1-threads"] {
        let svg = std::fs::read_to_string(
            out.join(format!("charts/tokens-per-s-vs-context-{host}-decoder.svg")),
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for series in [
            "contiguous f16",
            "contiguous int8",
            "paged f16",
            "paged int8",
        ] {
            assert!(
                svg.contains(&format!(">\n{series}\n</text>")),
                "{series} missing"
            );
        }
        assert!(md.contains(&format!(
            "charts/tokens-per-s-vs-context-{host}-decoder.svg"
        )));
    }
    assert!(out.join("charts/kv-memory-vs-context-decoder.svg").exists());
    assert!(out.join("charts/error-vs-bits.svg").exists());
}

#[test]
fn plan_csvs_are_charted() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.csv");
    let mut text = String::from("model,cache_dtype,seq_tokens,kv_bytes_per_token,seq_bytes,gpu,gpus,tp,token_capacity,max_seqs\n");
    for (d, b) in [("f16", 131072u64), ("int8", 69632)] {
        for s in [1024u64, 8192, 32768] {
            text.push_str(&format!(
                "llama-3.1-8b,{d},{s},{b},{},h100-80gb,1,1,400000,{}\n",
                b * s,
                400000 / s
            ));
        }
    }
    std::fs::write(&plan, text).unwrap();
    let out = dir.path().join("r");
    kvbench()
        .arg("report")
        .arg(&plan)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Planned capacity per model, dtype and GPU"));
    // 131,072 B × 8192 tokens = 1 GiB.
    assert!(
        md.contains("| llama-3.1-8b f16 | h100-80gb | 8192 | 128 KiB | 1 GiB | 400000 | 48 |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(out.join("charts/plan-kv-memory-vs-context.svg")).unwrap();
    assert!(svg.contains("llama-3.1-8b int8"));
    assert!(out.join("charts/plan-concurrency-h100-80gb.svg").exists());
}

#[test]
fn mixed_schema_versions_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.csv", &[row("a", 2, "paged", "f16", 128)]);
    let mut future = row("b", 2, "paged", "f16", 128);
    future.schema_version = kvbench_bench::SCHEMA_VERSION + 1;
    let b = write(dir.path(), "b.csv", &[future]);
    let out = kvbench()
        .arg("report")
        .arg(&a)
        .arg(&b)
        .arg("-o")
        .arg(dir.path().join("r"))
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("b.csv:2: schema_version 2"), "{stderr}");
}

#[test]
fn no_input_and_unreadable_input_are_clear() {
    kvbench()
        .arg("report")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("<CSV>"));
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.csv");
    std::fs::write(&junk, "a,b\n1,2\n").unwrap();
    kvbench()
        .arg("report")
        .arg(&junk)
        .arg("-o")
        .arg(dir.path().join("r"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("junk.csv is neither a run CSV"));
    let absent = dir.path().join("absent.csv");
    let out = kvbench()
        .arg("report")
        .arg(&absent)
        .arg("-o")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read") && err.contains("absent.csv"),
        "{err}"
    );
    // The io error said once: it was both in the message and the error's source.
    assert_eq!(err.matches("(os error").count(), 1, "{err}");
}

#[test]
fn report_from_the_committed_sample_csvs() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/samples");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    inputs.sort();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    kvbench()
        .arg("report")
        .args(&inputs)
        .arg("-o")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("from 2 machine(s)"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for heading in [
        "## Tokens/s and TTFT per strategy and dtype",
        "## Memory per token and waste per layout",
        "## Quantization error against bytes saved",
        "## Measured against the machine's limit",
        "## Measured next to predicted",
        "## Planned capacity per model, dtype and GPU",
    ] {
        assert!(md.contains(heading), "no {heading}");
    }
    // Every chart the page links exists.
    for line in md.lines().filter(|l| l.starts_with("![")) {
        let file = line.split("](").nth(1).unwrap().trim_end_matches(')');
        assert!(out.join(file).exists(), "{file} linked but not written");
    }
}

/// Runs `kvbench report INPUTS -o OUT`, asserts exit 1 with one line, returns that line.
fn refused(inputs: &[&Path], out: &Path) -> String {
    let output = kvbench()
        .arg("report")
        .args(inputs)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    let err = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn a_header_only_csv_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "schema_version,status,tokens_per_s,ttft_ms\n").unwrap();
    let out = dir.path().join("r");
    let err = refused(&[&empty], &out);
    assert!(err.contains("empty.csv has a header but no rows"), "{err}");
    assert!(!out.exists());
}

#[test]
fn negative_or_infinite_figures_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.csv", &[row("a", 2, "paged", "f16", 128)]);
    let out = dir.path().join("r");
    let second_row = || row("b", 2, "paged", "f16", 512);
    let negative = Record {
        ttft_ms: -5.0,
        ..second_row()
    };
    let infinite = Record {
        tokens_per_s: f64::INFINITY,
        ..second_row()
    };
    let gbps = Record {
        achieved_gbps: -1.0,
        ..second_row()
    };
    let cases = [
        (negative, "`ttft_ms` is -5"),
        (infinite, "`tokens_per_s` is inf"),
        (gbps, "`achieved_gbps` is -1"),
    ];
    for (i, (bad_row, says)) in cases.into_iter().enumerate() {
        let rows = [row("b", 2, "paged", "f16", 128), bad_row];
        let bad = write(dir.path(), &format!("bad{i}.csv"), &rows);
        let err = refused(&[&good, &bad], &out);
        assert!(err.contains(&format!("bad{i}.csv:3: {says}")), "{err}");
        assert!(!out.exists());
    }
}

#[test]
fn a_report_folder_under_a_file_says_the_file_is_not_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.csv", &[row("a", 2, "paged", "f16", 128)]);
    let afile = dir.path().join("afile");
    std::fs::write(&afile, "mine").unwrap();
    for out in [afile.join("sub"), afile.join("sub/deeper")] {
        let err = refused(&[&good], &out);
        assert!(
            err.contains(&format!("{} is not a folder", afile.display())),
            "{err}"
        );
        assert!(!err.contains("os error"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&afile).unwrap(), "mine");
}
