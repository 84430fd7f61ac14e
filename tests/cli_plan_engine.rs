//! `kvbench plan` against what serving engines report: weights from the checkpoint, fp8 at
//! 8.00 bits, the engine's reserve, and `--vllm-log` on the shipped log excerpts
//! (tests/fixtures/vllm-logs/README.md cites each).

use assert_cmd::Command;
use predicates::prelude::*;

fn kvbench() -> Command {
    Command::cargo_bin("kvbench").unwrap()
}

const LOGS: &str = "tests/fixtures/vllm-logs";

fn json_rows(args: &[&str]) -> Vec<serde_json::Value> {
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

#[test]
fn fp8_cache_is_one_byte_per_element() {
    // Llama-3.1-8B: 32 layers x 8 KV heads x 128 x 2 (K, V) x 1 B = 64 KiB per token, half
    // of f16's 128 KiB — what vLLM allocates for kv_cache_dtype=fp8.
    let r = json_rows(&[
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
    let r = json_rows(&["--config", dir.path().to_str().unwrap(), "--gpu", "h100"]);
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
    let r = json_rows(&["--config", dir.path().to_str().unwrap(), "--gpu", "h100"]);
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
