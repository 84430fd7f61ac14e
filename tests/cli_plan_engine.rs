//! `kvbench plan` against what serving engines report: weights from the checkpoint, fp8 at
//! 8.00 bits, the engine's reserve, and `--vllm-log` on the shipped log excerpts
//! (tests/fixtures/vllm-logs/README.md cites each).

mod common;

use common::{kvbench, plan_json};
use predicates::prelude::*;

const LOGS: &str = "tests/fixtures/vllm-logs";

#[test]
fn fp8_cache_is_one_byte_per_element() {
    // Llama-3.1-8B: 32 layers x 8 KV heads x 128 x 2 (K, V) x 1 B = 64 KiB per token, half
    // of f16's 128 KiB — what vLLM allocates for kv_cache_dtype=fp8.
    let r = plan_json(&[
        "--model",
        "llama3.1-8b",
        "--cache-dtype",
        "fp8,fp8-e4m3/token",
    ]);
    assert_eq!(r[0]["kv_bytes_per_token"].as_f64(), Some(65_536.0));
    // /token: + one f32 per head vector: 32 x 8 x 2 x 4 B = 2 KiB more.
    assert_eq!(r[1]["kv_bytes_per_token"].as_f64(), Some(65_536.0 + 2048.0));
}

#[test]
fn logged_kv_memory_gives_the_logged_token_count() {
    // LMCache issue #1739: Qwen3-14B, "Available KV cache memory: 6.51 GiB" and
    // "GPU KV cache size: 42,656 tokens". By hand: 40 layers x 8 heads x 128 x 2 x 2 B =
    // 160 KiB per token; floor(6.51 GiB / (16 x 160 KiB)) = 2666 blocks = 42,656 tokens.
    let out = kvbench()
        .args(["plan", "--vllm-log"])
        .arg(format!("{LOGS}/qwen3-14b-lmcache-1739.log"))
        .arg("--config")
        .arg(format!("{LOGS}/qwen3-14b-config.json"))
        .args(["--gpu", "h100", "--format", "csv"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.contains("from the logged KV memory"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains(",42656,42656,0"), "{row}");
}

#[test]
fn logs_of_other_engines_or_nothing_say_so_in_one_line() {
    for (file, says) in [
        ("sglang-qwen3-235b-fp8-tp4-vllm-21348.log", "SGLang log"),
        ("llama3.1-70b-w8a8-early-v1-vllm-12569.log", "before 0.7.3"),
        ("not-a-log.txt", "no vLLM startup line"),
    ] {
        kvbench()
            .args(["plan", "--gpu", "h100", "--vllm-log"])
            .arg(format!("{LOGS}/{file}"))
            .assert()
            .failure()
            .stderr(predicate::str::contains(says))
            .stderr(predicate::str::contains("panicked").not());
    }
    // A log without a model line says which line is missing and how to proceed.
    kvbench()
        .args(["plan", "--gpu", "h100", "--vllm-log"])
        .arg(format!("{LOGS}/tp4-no-model-club3090-127.log"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("does not name its model"));
}

#[test]
fn unreadable_log_figures_and_settings_are_one_line_errors() {
    // Each was read as another figure or setting (exit 0) before.
    let dir = tempfile::tempdir().unwrap();
    let model = "INFO non-default args: {'model': 'Qwen/Qwen3-8B'}\n";
    for (line, says) in [
        (
            "INFO GPU KV cache size: 99999999999999999999999 tokens",
            "'GPU KV cache size' line: '99999999999999999999999' does not fit",
        ),
        (
            "INFO Available KV cache memory: 6.51 ZiB",
            "has unit 'ZiB', not GiB",
        ),
        (
            "INFO Maximum concurrency for 32,768 tokens per request: 1e308x",
            "'1e308x' is not a decimal number",
        ),
        (
            "$ vllm serve Qwen/Qwen3-8B --tensor-parallel-size 0",
            "--tensor-parallel-size = '0' in the log's `vllm serve` line",
        ),
        (
            "INFO non-default args: {'max_model_len': 0}",
            "max_model_len = '0' in the log's non-default args",
        ),
        (
            "INFO non-default args: {'kv_cache_dtype': 'foo'}",
            "kv_cache_dtype = 'foo'",
        ),
    ] {
        let path = dir.path().join("vllm.log");
        std::fs::write(&path, format!("{model}{line}\n")).unwrap();
        let out = kvbench()
            .args(["plan", "--gpu", "h100", "--vllm-log"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{line}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{line}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{line}: {err}"
        );
    }
}

#[test]
fn reserve_components_are_listed_and_overridable() {
    let out = kvbench()
        .args(["plan", "--model", "llama3.1-8b", "--gpu", "h100"])
        .args(["--reserve-activation", "2GiB", "--enforce-eager"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("reserve: peak activation"), "{text}");
    assert!(text.contains("given (--reserve-activation)"), "{text}");
    assert!(text.contains("none (--enforce-eager)"), "{text}");
    assert!(text.contains("vLLM 0.21"), "{text}");
    // A component takes sizes as --reserve does (a unit is needed: a bare 3 used to mean 3
    // bytes), and zero, a component the deployment does not hold ("0B" used to be refused).
    let reserve = |value: &str| {
        kvbench()
            .args(["plan", "--model", "llama3.1-8b", "--gpu", "h100"])
            .arg(format!("--reserve-cuda-graph={value}"))
            .output()
            .unwrap()
    };
    let bare = reserve("3");
    assert_eq!(bare.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("add a unit"));
    for zero in ["0", "0B", "0GiB"] {
        let out = reserve(zero);
        assert!(
            out.status.success(),
            "{zero}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A safetensors shard: 8-byte length, JSON header, then `data` bytes of zeros.
fn shard(path: &std::path::Path, json: &str, data: usize) {
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data));
    std::fs::write(path, b).unwrap();
}

#[test]
fn weights_come_from_the_safetensors_headers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        format!("{LOGS}/qwen3-14b-config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    // Two tensors totalling 3 GiB (data offsets say so; the file holds only a few bytes of
    // it, which a header reader never needs).
    let g = 1u64 << 30;
    shard(
        &dir.path().join("model.safetensors"),
        &format!(
            r#"{{"model.embed_tokens.weight":{{"dtype":"BF16","shape":[1],"data_offsets":[0,{g}]}},
            "model.layers.0.mlp.up_proj.weight":{{"dtype":"BF16","shape":[1],"data_offsets":[{g},{}]}}}}"#,
            3 * g
        ),
        16,
    );
    let r = plan_json(&["--config", dir.path().to_str().unwrap(), "--gpu", "h100"]);
    assert_eq!(r[0]["weights_bytes_per_gpu"].as_u64(), Some(3 * g));
    // A corrupt header is one clear error.
    std::fs::write(dir.path().join("model.safetensors"), [255u8; 8]).unwrap();
    kvbench()
        .args(["plan", "--gpu", "h100", "--config"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("exceeds"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn awq_config_is_sized_at_four_bits() {
    // Llama-3.1-70B with AWQ w4 g128: 39.77 GB by hand (planner weights tests) — not the
    // 141 GB of bf16.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"hidden_size":8192,"num_hidden_layers":80,"num_attention_heads":64,
        "num_key_value_heads":8,"intermediate_size":28672,"vocab_size":128256,
        "tie_word_embeddings":false,"torch_dtype":"float16","model_type":"llama",
        "max_position_embeddings":131072,
        "quantization_config":{"quant_method":"awq","bits":4,"group_size":128,"zero_point":true}}"#,
    )
    .unwrap();
    let r = plan_json(&["--config", dir.path().to_str().unwrap(), "--gpu", "h100"]);
    let gb = r[0]["weights_bytes_per_gpu"].as_f64().unwrap() / 1e9;
    assert!((gb - 39.77).abs() < 0.05, "{gb}");
    // An unknown method refuses, naming it and the override.
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"hidden_size":8192,"num_hidden_layers":80,"num_attention_heads":64,"vocab_size":1000,
        "quantization_config":{"quant_method":"hqq"}}"#,
    )
    .unwrap();
    kvbench()
        .args(["plan", "--gpu", "h100", "--config"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("'hqq'"))
        .stderr(predicate::str::contains("--weights-dtype"));
}

/// The rows of `plan --vllm-log FILE` with `flags` (JSON), as (figure, logged, kvbench, diff).
fn log_rows(file: &str, flags: &[&str]) -> Vec<(String, String, String, Option<f64>)> {
    let log = format!("{LOGS}/{file}");
    let mut args = vec!["--vllm-log", log.as_str()];
    args.extend(flags);
    let rows = plan_json(&args);
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("figure"), s("logged"), s("kvbench"), r["diff"].as_f64())
        })
        .collect()
}

#[test]
fn pipeline_stages_each_size_their_own_cache() {
    // vLLM PR #20665: DeepSeek-V2-Lite (MLA, 27 layers), tp 2 x pp 2 on L4. The log's own
    // figures: stage 0 (ranks 0, 1) 12.13 GiB, stage 1 (ranks 2, 3) 11.33 GiB, 807,792
    // tokens at max_model_len 1,024 (788.86x).
    let rows = log_rows(
        "deepseek-v2-lite-tp2-pp2-l4-vllm-20665.log",
        &["--gpu", "l4"],
    );
    let get = |f: &str| {
        rows.iter()
            .find(|r| r.0 == f)
            .unwrap_or_else(|| panic!("{rows:?}"))
    };
    assert_eq!(get("Available KV cache memory").1, "11.33 GiB");
    assert_eq!(get("GPU KV cache size (tokens)").1, "807792");
    assert_eq!(get("Maximum concurrency").1, "788.86x at 1024 tokens");
    // By hand: 576 x 2 B = 1,152 B per layer and token; vLLM splits 27 layers [14, 13]
    // (get_pp_indices); stage 0 binds: floor(12.13 GiB / (16 x 14 x 1,152 B)) = 50,473 blocks
    // = 807,568 tokens, -0.03% (the log's GiB has 2 decimals).
    let given = get("GPU KV cache size, from the logged KV memory");
    assert_eq!(given.2, "807568");
    assert!(given.3.unwrap().abs() < 0.005, "{given:?}");
}

#[test]
fn banner_lines_give_version_and_model() {
    // myoceane.fr (vLLM 0.19.0 on A100): the version and model come from the ASCII banner,
    // the budget from the lines the post quotes; the log has no token line.
    let rows = log_rows(
        "gpt-oss-20b-a100-myoceane.log",
        &["--gpu", "a100-80gb", "--weights-dtype", "mxfp4"],
    );
    let get = |f: &str| {
        rows.iter()
            .find(|r| r.0 == f)
            .unwrap_or_else(|| panic!("{rows:?}"))
    };
    assert_eq!(get("weights per GPU (Model loading took)").1, "13.72 GiB");
    assert_eq!(get("Available KV cache memory").1, "36.56 GiB");
    assert!(rows.iter().all(|r| !r.0.starts_with("GPU KV cache size")));
    kvbench()
        .args([
            "plan",
            "--gpu",
            "a100-80gb",
            "--weights-dtype",
            "mxfp4",
            "--vllm-log",
        ])
        .arg(format!("{LOGS}/gpt-oss-20b-a100-myoceane.log"))
        .assert()
        .success()
        .stdout(predicate::str::contains("gpt-oss-20b"))
        .stdout(predicate::str::contains(
            "log of vLLM 0.19.0; rules follow vLLM 0.19",
        ));
}

#[test]
fn registry_models_published_quantized_are_sized_as_stored() {
    // gpt-oss model card (OpenAI, arXiv 2508.10925), table 1: the 120b checkpoint is
    // 60.8 GiB (MXFP4 experts, the rest bf16), not 116.8B parameters x 2 B = 217.6 GiB.
    let gib = |r: &serde_json::Value| r["weights_bytes_per_gpu"].as_f64().unwrap() / 1073741824.0;
    let r = plan_json(&["--model", "gpt-oss-120b", "--gpu", "h200"]);
    assert!((gib(&r[0]) - 60.8).abs() / 60.8 < 0.01, "{}", gib(&r[0]));
    let source = r[0]["weights_source"].as_str().unwrap();
    assert!(source.starts_with("quantization_config: MXFP4"), "{source}");
    // --weights-dtype stays an explicit override: parameters x that dtype (on 4 GPUs, as
    // 217.6 GiB fits no single one).
    let r = plan_json(&[
        "--model",
        "gpt-oss-120b",
        "--gpu",
        "h200",
        "--tp",
        "4",
        "--weights-dtype",
        "bf16",
    ]);
    assert!(
        (4.0 * gib(&r[0]) - 116.8e9 * 2.0 / 1073741824.0).abs() < 2.0,
        "{}",
        gib(&r[0])
    );
    // The table splits the weights into experts and the rest, each as stored (the experts
    // were once sized at bf16 beside the MXFP4 total, and the rest underflowed).
    for source in [
        vec!["--model", "gpt-oss-120b"],
        vec!["--config", "planner/tests/fixtures/gpt-oss-120b.json"],
    ] {
        kvbench()
            .arg("plan")
            .args(&source)
            .args(["--gpu", "h200"])
            .assert()
            .success()
            .stdout(predicate::str::contains(
                "(routed experts 56.7 GiB + the rest 3.96 GiB)",
            ));
    }
    // A model published in bf16 keeps parameters x bf16.
    let r = plan_json(&["--model", "llama3-8b", "--gpu", "h100"]);
    assert!(r[0]["weights_source"]
        .as_str()
        .unwrap()
        .starts_with("parameters x bf16"));
}

#[test]
fn chunked_layers_follow_the_flags_and_the_engine_version() {
    // Llama-4-Scout at tp 8 with 40 GiB of KV per GPU: grouped, 4 groups of 12 layers
    // (blocks of 16 x 512 B x 12); cached as full attention, 1 group of 48.
    let base = [
        "--model",
        "llama4-scout",
        "--tp",
        "8",
        "--gpus",
        "8",
        "--kv-budget",
        "40GiB",
        "--seq",
        "32768",
    ];
    let groups = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let r = plan_json(&args);
        (
            r[0]["kv_cache_groups"].as_u64().unwrap(),
            r[0]["max_seqs"].as_u64().unwrap(),
        )
    };
    let blocks_grouped = 40 * (1u64 << 30) / 98_304;
    let blocks_full = 40 * (1u64 << 30) / 393_216;
    let grouped = (4, blocks_grouped / (2048 + 3 * 512));
    let full = (1, blocks_full / 2048);
    assert_eq!(groups(&[]), grouped);
    assert_eq!(groups(&["--engine-version", "0.13"]), full);
    assert_eq!(groups(&["--engine-version", "0.14"]), grouped);
    assert_eq!(groups(&["--chunked-kv", "full"]), full);
    assert_eq!(
        groups(&["--engine-version", "0.12", "--chunked-kv", "grouped"]),
        grouped
    );
    assert_eq!(groups(&["--disable-hybrid-kv-cache-manager"]), full);
}
