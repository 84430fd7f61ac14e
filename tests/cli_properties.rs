//! Random argument vectors for every subcommand (issue 10): known flags with random values,
//! including empty, huge, negative, NaN and repeated list items. Whatever the input: no
//! panic, no hang past a bound, exit 0 or an error whose message is one line, and no file
//! left half-written. Work per case is bounded: tiny shapes for `run`, sizes that are either
//! refused or small, and a timeout per invocation.

mod common;

use common::{calibration, kvbench, BASELINE};
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;

/// Values that break parsers and validators: empty, zero, negative, NaN, huge, repeated.
const ODD: &[&str] = &[
    "",
    "0",
    "-1",
    "NaN",
    "inf",
    "1",
    "2",
    "1,1",
    "1,0",
    ",",
    "4294967295",
    "4294967296",
    "99999999999999999999",
    "abc",
    "-",
];
/// Sizes: refused at once (0, huge, no unit) or tiny.
const SIZES: &[&str] = &[
    "", "0", "0GiB", "58.5", "1GiB", "-1GiB", "NaNGiB", "99999TiB", "1e3",
];
/// Counts that multiply work without memory (repetitions, warm-up, passes): never large.
const SMALL: &[&str] = &["", "0", "1", "2", "-1", "NaN", "abc", "1,1"];
const DTYPES: &[&str] = &[
    "f16",
    "int4/g64",
    "fp8-e4m3/tensor/g64",
    "kivi2/r64/r32",
    "q4_0/g64",
    "f16,f16",
    "bogus",
    "",
    "int8/g0",
    "kivi4",
];

fn pick(values: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(values).prop_map(String::from)
}

/// (flag, value pool) per subcommand.
fn flags(command: &str) -> Vec<(&'static str, &'static [&'static str])> {
    match command {
        "plan" => vec![
            ("--seq", ODD),
            ("--batch", ODD),
            ("--tp", ODD),
            ("--pp", ODD),
            ("--gpus", ODD),
            ("--mem-util", ODD),
            ("--weights-dtype", &["bf16", "bogus", "", "int4"]),
            ("--kv-budget", SIZES),
            ("--reserve", SIZES),
            ("--gpu", &["h100", "bogus", "", "h100,h100"]),
            ("--cache-dtype", DTYPES),
            ("--k-dtype", DTYPES),
            ("--block-size", ODD),
            ("--shared-prefix", ODD),
            ("--max-batched-tokens", ODD),
            ("--prefill-tflops", ODD),
            (
                "--attention",
                &["mha", "gqa:0", "gqa:3", "mqa", "", "model,model"],
            ),
            ("--format", &["csv", "json", "jsonl", "md", "table", "xml"]),
            ("--max-rows", ODD),
            ("--config", &["/dev/zero", "/no/such/config.json", ""]),
        ],
        "models" => vec![
            ("--filter", &["llama", "", "zzz", "-"]),
            ("--format", &["csv", "json", "jsonl", "md", "table", "xml"]),
        ],
        "run" => vec![
            (
                "--prompt",
                &["1", "8", "0", "8,8", "4294967295", "-1", "", "NaN"],
            ),
            ("--gen", &["1", "4", "0", "4294967295", "", "abc"]),
            ("--batch", &["1", "2", "0", "1,1", "4294967295", ""]),
            ("--block-size", &["1", "4", "0", "4,4", "4294967295", ""]),
            (
                "--strategy",
                &["contiguous", "paged", "contiguous,contiguous", "bogus", ""],
            ),
            ("--cache-dtype", DTYPES),
            ("--shared-prefix", &["0", "4", "9", "4294967295"]),
            ("--window", &["0", "4", "4294967295", "-1"]),
            ("--threads", &["0", "1", "100000", "-1", ""]),
            ("-r", SMALL),
            ("--warmup", SMALL),
            ("--max-rows", &["0", "1", "-1", ""]),
            ("--shard", &["1/2", "2/2", "0/2", "3/2", "1/0", "x"]),
            (
                "--format",
                &["table", "json", "jsonl", "md", "none", "xml", "json,json"],
            ),
        ],
        "compare" => vec![
            ("--threshold", ODD),
            ("--spread-k", ODD),
            (
                "--metric",
                &["tokens_per_s=0.2", "x=1", "tokens_per_s=NaN", "=", ""],
            ),
            ("--timing", &["auto", "ratios", "off", "bogus"]),
        ],
        "report" => vec![("-o", &["rep", "", "rep/sub"])],
        "calibrate" => vec![
            ("--threads", &["0", "1", "100000", ""]),
            ("--buffer-mib", &["0", "1", "99999999999999", "-1", ""]),
            ("--passes", SMALL),
            ("--gemm-n", &["0", "16", "-1", ""]),
            ("--backend", &["cpu", "bogus", ""]),
        ],
        _ => unreachable!(),
    }
}

/// A subcommand with up to four random flags.
fn invocation() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
    const COMMANDS: &[&str] = &["plan", "models", "run", "compare", "report", "calibrate"];
    proptest::sample::select(COMMANDS).prop_flat_map(|command| {
        let chosen = proptest::collection::vec(
            proptest::sample::select(flags(command))
                .prop_flat_map(|(flag, values)| (Just(flag.to_string()), pick(values))),
            0..4,
        );
        (Just(command.to_string()), chosen)
    })
}

/// Every CSV under `dir` is whole (parses, has a header) and no temporary file is left.
fn no_half_written_file(dir: &Path) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with(".kvbench-") || name.ends_with(".partial") {
            return Err(format!("temporary left behind: {}", path.display()));
        }
        if path.is_dir() {
            no_half_written_file(&path)?;
        } else if name.ends_with(".csv") {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut r = csv::Reader::from_reader(text.as_bytes());
            let width = r.headers().map_err(|e| format!("{name}: {e}"))?.len();
            if width == 0 {
                return Err(format!("{name} has no header"));
            }
            for row in r.records() {
                let row = row.map_err(|e| format!("{name}: {e}"))?;
                if row.len() != width {
                    return Err(format!("{name}: a short row"));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_arguments_never_panic_hang_or_half_write((command, chosen) in invocation()) {
        let dir = tempfile::tempdir().unwrap();
        let cal = calibration(dir.path());
        let mut cmd = kvbench();
        cmd.current_dir(dir.path()).timeout(Duration::from_secs(60)).arg(&command);
        match command.as_str() {
            // Tiny shapes, a known calibration and a file in the temporary folder.
            "run" => {
                cmd.args(["--workload", "attention", "--q-heads", "4", "--kv-heads", "2"])
                    .args(["--head-dim", "16", "--hidden", "64", "-o", "out.csv"])
                    .arg("--calibration").arg(&cal);
            }
            "compare" => {
                cmd.args([BASELINE, BASELINE]);
            }
            "report" => {
                cmd.arg(BASELINE);
            }
            "calibrate" => {
                cmd.args(["--short", "-o", "cal-out.json"]);
            }
            _ => {}
        }
        for (flag, value) in &chosen {
            cmd.arg(flag).arg(value);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let what = format!("{command} {chosen:?}: {err}");
        prop_assert!(!err.contains("panicked"), "panic: {}", what);
        match out.status.code() {
            Some(0) => {}
            // One line saying what is wrong (notes may come before it).
            Some(1) => {
                let errors = err.lines().filter(|l| l.starts_with("error")).count();
                let last = err.trim_end().lines().last().unwrap_or_default();
                prop_assert!(errors == 1 && last.starts_with("error: "), "not one line: {}", what);
            }
            // clap's usage errors: an `error:` line, then usage.
            Some(2) => prop_assert!(err.starts_with("error: "), "usage: {}", what),
            other => prop_assert!(false, "exit {:?} (hung or crashed): {}", other, what),
        }
        let whole = no_half_written_file(dir.path());
        prop_assert!(whole.is_ok(), "{:?}: {}", whole, what);
    }
}
