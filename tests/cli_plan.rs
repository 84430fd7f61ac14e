//! `kvbench plan` driven as a user would: figures from REFERENCE.md, formats, sweeps, errors.

mod common;

use common::{kvbench, plan_json};
use predicates::prelude::*;

fn fixture(key: &str) -> String {
    format!(
        "{}/planner/tests/fixtures/{key}.json",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn default_table_answers_llama3_70b() {
    kvbench()
        .args(["plan", "--model", "llama3-70b"])
        .assert()
        .success()
        .stdout(predicate::str::contains("320 KiB"))
        .stdout(predicate::str::contains("1.25 GiB (1,342,177,280 B)"));
}

#[test]
fn reference_bytes_per_token_through_the_cli() {
    let r = plan_json(&[
        "--model",
        "opt-13b,llama2-7b,llama3-70b,llama3.1-8b,qwen2.5-7b,deepseek-v3",
    ]);
    let got: Vec<f64> = r
        .iter()
        .map(|row| row["kv_bytes_per_token"].as_f64().unwrap())
        .collect();
    assert_eq!(
        got,
        vec![819_200.0, 524_288.0, 327_680.0, 131_072.0, 57_344.0, 70_272.0]
    );
}

#[test]
fn worked_example_512_mib_and_what_if_attention() {
    let r = plan_json(&["--model", "llama2-7b", "--seq", "1024"]);
    assert_eq!(r[0]["seq_bytes"], 536_870_912u64);
    // Llama-3-70B at 4096 tokens as MHA would need 10 GiB; GQA-8 saves 87.5%.
    let r = plan_json(&["--model", "llama3-70b", "--attention", "mha"]);
    assert_eq!(r[0]["seq_bytes"], 10u64 << 30);
    assert_eq!(r[0]["kv_heads"], 64);
}

#[test]
fn attention_what_ifs_side_by_side() {
    let r = plan_json(&[
        "--model",
        "llama3-70b",
        "--attention",
        "model,mha,gqa:16,mqa",
    ]);
    let saving: Vec<f64> = r
        .iter()
        .map(|x| x["kv_saving_vs_mha"].as_f64().unwrap())
        .collect();
    // REFERENCE.md: 64 -> 8 KV heads saves 87.5%; MQA saves 1 - 1/64.
    assert_eq!(saving, vec![0.875, 0.0, 0.75, 1.0 - 1.0 / 64.0]);
    assert_eq!(r[3]["attention"], "mqa (what-if)");
}

#[test]
fn sweeps_are_cross_products() {
    let r = plan_json(&[
        "--model",
        "llama3-8b,qwen3-8b",
        "--seq",
        "1024,2048",
        "--batch",
        "1,4",
        "--cache-dtype",
        "f16,int8",
    ]);
    assert_eq!(r.len(), 16);
    // Linear in batch: batch 4 holds four times batch 1.
    let find = |model: &str, seq: u64, batch: u64, dtype: &str| {
        r.iter()
            .find(|x| {
                x["model"] == model
                    && x["seq_tokens"] == seq
                    && x["batch"] == batch
                    && x["cache_dtype"] == dtype
            })
            .unwrap()["batch_bytes"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        find("Qwen3-8B", 2048, 4, "f16"),
        4 * find("Qwen3-8B", 2048, 1, "f16")
    );
    // Llama-3-8B, 1024 tokens, f16: 128 KiB x 1024 = 128 MiB.
    assert_eq!(find("Llama-3-8B", 1024, 1, "f16"), 128 << 20);
}

#[test]
fn k_and_v_dtypes_can_differ_and_bits_are_shown() {
    let r = plan_json(&[
        "--model",
        "llama3-8b",
        "--k-dtype",
        "q8_0",
        "--v-dtype",
        "q4_0",
    ]);
    assert_eq!(r[0]["k_bits_per_element"], 8.5);
    assert_eq!(r[0]["v_bits_per_element"], 4.5);
    // (8.5 + 4.5) / 32 of f16's 131,072 B/token.
    assert_eq!(r[0]["kv_bytes_per_token"], 131_072.0 * 13.0 / 32.0);
    let r = plan_json(&["--model", "llama3-8b", "--cache-dtype", "kivi2/r64"]);
    assert_eq!(r[0]["cache_dtype"], "kivi2/r64");
    assert!(r[0]["paged_bytes"].is_null());
}

#[test]
fn kv_budget_capacity_matches_vllm_blocks() {
    let r = plan_json(&[
        "--model",
        "llama3-70b",
        "--kv-budget",
        "58.5GiB",
        "--tp",
        "8",
        "--seq",
        "8192",
    ]);
    assert_eq!(r[0]["token_capacity"], 1_533_536);
    assert_eq!(r[0]["kv_heads_per_gpu"], 1);
    assert_eq!(r[0]["max_seqs"], 187);
}

#[test]
fn gpu_capacity_states_its_reserve_and_bounds() {
    kvbench()
        .args([
            "plan",
            "--model",
            "llama3-70b",
            "--gpu",
            "h100",
            "--gpus",
            "8",
            "--tp",
            "8",
            "--reserve",
            "2GiB",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("given (--reserve)"))
        .stdout(predicate::str::contains("token capacity"))
        .stdout(predicate::str::contains("decode bound"));
    let r = plan_json(&[
        "--model",
        "llama3-70b",
        "--gpu",
        "h100",
        "--tp",
        "8",
        "--reserve",
        "2GiB",
    ]);
    // 79.19 GiB x 0.9 - 2 GiB - 70.55e9 x 2 B / 8, in whole 655,360 B blocks of 16 tokens.
    let available = (79.19f64 * (1u64 << 30) as f64).round() * 0.9;
    let available = available as u64 - (2u64 << 30) - 17_637_500_000;
    assert_eq!(r[0]["token_capacity"], available / 655_360 * 16);
}

#[test]
fn config_json_of_each_family_is_read() {
    for (key, per_token) in [
        ("llama3-70b", 327_680.0),
        ("deepseek-v3", 70_272.0),
        ("gemma3-27b", 2.0 * 16.0 * 128.0 * 2.0 * 62.0),
        ("qwen2.5-7b", 57_344.0),
        ("falcon-7b", 32.0 * 2.0 * 64.0 * 2.0),
    ] {
        let r = plan_json(&["--config", &fixture(key)]);
        assert_eq!(r[0]["kv_bytes_per_token"], per_token, "{key}");
    }
}

#[test]
fn every_fixture_config_sizes_like_its_registry_entry() {
    let dir = format!("{}/planner/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut keys: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    keys.sort();
    assert!(keys.len() >= 30);
    // One sweep over all configs and one over all registry names: same rows, same sizes.
    let mut config_args = Vec::new();
    for key in &keys {
        config_args.push("--config".to_string());
        config_args.push(fixture(key));
    }
    config_args.extend(["--seq", "20000"].map(String::from));
    let from_configs = plan_json(&config_args.iter().map(String::as_str).collect::<Vec<_>>());
    let from_registry = plan_json(&["--model", &keys.join(","), "--seq", "20000"]);
    assert_eq!(from_configs.len(), keys.len());
    for ((c, r), key) in from_configs.iter().zip(&from_registry).zip(&keys) {
        for column in [
            "kv_bytes_per_token",
            "seq_bytes",
            "paged_bytes",
            "sliding_layers",
            "attention",
        ] {
            assert_eq!(c[column], r[column], "{key}: {column}");
        }
    }
}

#[test]
fn config_directory_and_window_rules() {
    // A model directory holding config.json, named after the directory.
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("Mistral-7B-v0.1");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::copy(fixture("mistral-7b-v0.1"), model_dir.join("config.json")).unwrap();
    let path = model_dir.to_str().unwrap();
    let r = plan_json(&["--config", path, "--seq", "32768"]);
    assert_eq!(r[0]["model"], "Mistral-7B-v0.1");
    // Window rule: 4096 tokens per layer; vLLM's: 4096 - 1 + 8192.
    assert_eq!(r[0]["seq_bytes"], 4096u64 * 131_072);
    assert_eq!(r[0]["window_rule"], "window");
    let r = plan_json(&["--config", path, "--seq", "32768", "--window-rule", "vllm"]);
    assert_eq!(r[0]["seq_bytes"], 12_287u64 * 131_072);
    let r = plan_json(&[
        "--config",
        path,
        "--seq",
        "32768",
        "--window-rule",
        "vllm",
        "--max-batched-tokens",
        "2048",
    ]);
    assert_eq!(r[0]["seq_bytes"], 6_143u64 * 131_072);
}

#[test]
fn shared_prefix_and_block_size_show_in_rows() {
    // Llama-3-8B, 8 sequences of 1000 tokens, blocks of 16: 63 blocks each (1008 slots).
    // A 512-token shared prefix is 32 full blocks held once: 32 + 8 x 31 blocks.
    let r = plan_json(&[
        "--model",
        "llama3-8b",
        "--seq",
        "1000",
        "--batch",
        "8",
        "--shared-prefix",
        "512",
    ]);
    let block = 16 * 131_072u64;
    assert_eq!(r[0]["paged_bytes"], 8 * 63 * block);
    assert_eq!(r[0]["paged_waste_bytes"], 8 * 8 * 131_072u64);
    assert_eq!(r[0]["shared_prefix_paged_bytes"], (32 + 8 * 31) * block);
    let r = plan_json(&[
        "--model",
        "llama3-8b",
        "--seq",
        "1000",
        "--block-size",
        "256",
    ]);
    assert_eq!(r[0]["paged_bytes"], 4 * 256 * 131_072u64);
}

#[test]
fn csv_and_markdown_share_the_columns() {
    let out = kvbench()
        .args(["plan", "--model", "llama3-8b", "--format", "csv"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    assert!(header.iter().any(|h| h == "kv_bytes_per_token"));
    assert!(header.iter().any(|h| h == "token_capacity"));
    assert_eq!(reader.records().count(), 1);
    kvbench()
        .args(["plan", "--model", "llama3-8b", "--format", "md"])
        .assert()
        .success()
        .stdout(predicate::str::contains("| kv_bytes_per_token |"));
}

/// Each bad input: one line on stderr naming the value, non-zero exit, no panic.
fn fails_with(args: &[&str], needle: &str) {
    let out = kvbench().arg("plan").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    // The cause said once (an io error in a message and as its source came out twice).
    assert!(err.matches("(os error").count() <= 1, "{args:?}: {err}");
}

#[test]
fn bad_input_is_one_clear_line() {
    fails_with(&["--model", "llama3-7b"], "did you mean llama3-70b");
    fails_with(
        &["--seq", "0"],
        "--seq 0: a sequence holds at least one token",
    );
    fails_with(
        &["--batch", "0"],
        "--batch 0: a batch holds at least one sequence",
    );
    fails_with(
        &["--model", "llama3-70b", "--gpu", "h100", "--tp", "3"],
        "tp = 3 does not divide",
    );
    fails_with(&["--cache-dtype", "int3"], "unknown cache dtype 'int3'");
    fails_with(&["--gpu", "h300"], "unknown GPU 'h300'");
    fails_with(
        &["--kv-budget", "lots"],
        "--kv-budget lots: write a positive number with a unit",
    );
    fails_with(
        &["--model", "llama3-70b", "--kv-budget", "1MiB"],
        "fits 0 sequences",
    );
    fails_with(
        &["--model", "llama3-70b", "--gpu", "l4"],
        "no room for the KV cache",
    );
    fails_with(&["--attention", "gqa:3"], "gqa:3");
    fails_with(
        &["--config", "/nonexistent/config.json"],
        "in --config: cannot read /nonexistent/config.json",
    );
}

#[test]
fn bad_config_files_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("not.json");
    std::fs::write(&not_json, "{ this is not json").unwrap();
    fails_with(&["--config", not_json.to_str().unwrap()], "not valid JSON");
    let missing = dir.path().join("missing.json");
    std::fs::write(
        &missing,
        r#"{"num_attention_heads": 8, "hidden_size": 512}"#,
    )
    .unwrap();
    fails_with(
        &["--config", missing.to_str().unwrap()],
        "num_hidden_layers",
    );
}

#[test]
fn negative_sizes_are_refused_by_the_parser() {
    kvbench()
        .args(["plan", "--seq", "-5"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("-5"));
}

#[test]
fn end_to_end_against_a_vllm_log() {
    // vLLM (v0.6) serving meta-llama/Meta-Llama-3-8B on one A100 40GB at 0.9 logged:
    // total_gpu_memory 39.50 GiB, weights 14.96 GiB, non_torch 0.10 GiB, activation peak
    // 9.37 GiB, KV 11.12 GiB, "# GPU blocks: 5691". Given that reserve (0.10 + 9.37), the
    // planner must land on the same blocks up to the logs' two-decimal rounding (±0.015 GiB,
    // about ±8 blocks of 2 MiB).
    let r = plan_json(&[
        "--model",
        "llama3-8b",
        "--gpu",
        "a100-40gb",
        "--reserve",
        "9.47GiB",
        "--seq",
        "8192",
    ]);
    let weights_gib = r[0]["weights_bytes_per_gpu"].as_f64().unwrap() / (1u64 << 30) as f64;
    assert!((weights_gib - 14.96).abs() < 0.005, "{weights_gib}");
    let blocks = r[0]["blocks_per_gpu"].as_i64().unwrap();
    assert!((blocks - 5691).abs() <= 8, "{blocks}");
}

#[test]
fn hybrid_state_model_shows_kv_state_and_their_sum() {
    // Qwen3-Next-80B-A3B: 12 attention layers x 2 KiB = 24 KiB a token; 36 gated delta-net
    // layers of 1,097,728 B state (vLLM's gated_delta_net_state_shape, bf16).
    let r = plan_json(&[
        "--model",
        "qwen3-next-80b-a3b",
        "--seq",
        "8192",
        "--kv-budget",
        "10GiB",
    ]);
    assert_eq!(r[0]["kv_bytes_per_token"], 24_576.0);
    assert_eq!(r[0]["kv_layers"], 12);
    assert_eq!(r[0]["state_layers"], 36);
    assert_eq!(r[0]["state_bytes_per_seq"], 36 * 1_097_728);
    assert_eq!(r[0]["seq_total_bytes"], 8192 * 24_576 + 36 * 1_097_728);
    // vLLM grows the attention block to 16 x ceil(1,097,728 / (16 x 2048)) = 544 tokens.
    assert_eq!(r[0]["pool_block_size_tokens"], 544);
    assert_eq!(r[0]["max_seqs"], 42);
    kvbench()
        .args([
            "plan",
            "--model",
            "qwen3-next-80b-a3b",
            "--kv-budget",
            "10GiB",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("state per sequence"))
        .stdout(predicate::str::contains("vLLM v0.11 hybrid allocator"))
        .stdout(predicate::str::contains("12 of 48 layers keep KV"));
    // --state-dtype float32: 24,576 x 2 + 524,288 x 4 = 2,146,304 B a layer.
    let f32 = plan_json(&["--model", "qwen3-next-80b-a3b", "--state-dtype", "float32"]);
    assert_eq!(f32[0]["state_bytes_per_seq"], 36 * 2_146_304);
}

#[test]
fn what_fits_is_printed_and_seq_max_asks_for_it() {
    // Llama-3.1-8B on 10 GiB: 5120 blocks of 16 tokens; batch 1 holds 81,920 tokens.
    let r = plan_json(&[
        "--model",
        "llama3.1-8b",
        "--seq",
        "max",
        "--kv-budget",
        "10GiB",
    ]);
    assert_eq!(r[0]["seq_tokens"], 81_920);
    // On an L4 a batch of 8 sequences of 8192 tokens does not fit: the table says so and
    // what does, instead of a decode bound.
    kvbench()
        .args([
            "plan",
            "--model",
            "llama3.1-8b",
            "--seq",
            "8192",
            "--batch",
            "8",
            "--gpu",
            "l4",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("a batch of 8 does not fit"))
        .stdout(predicate::str::contains("what fits at batch 8"));
    // Batch 4 at 32,768 tokens on 10 GiB: each takes 2048 of the 5120 blocks, 2 fit; 4
    // sequences share 1280 blocks each: 20,480 tokens.
    let over = plan_json(&[
        "--model",
        "llama3.1-8b",
        "--seq",
        "32768",
        "--batch",
        "4",
        "--kv-budget",
        "10GiB",
    ]);
    assert_eq!(over[0]["batch_fits"], false);
    assert_eq!(over[0]["max_seqs"], 2);
    assert_eq!(over[0]["max_context_tokens_at_batch"], 20_480);
}

#[test]
fn shared_prefix_raises_concurrency() {
    // 4096-token sequences take 256 of 5120 blocks: 20. Sharing 2048 tokens holds 128
    // blocks once: (5120 - 128) / 128 = 39.
    let r = plan_json(&[
        "--model",
        "llama3-8b",
        "--seq",
        "4096",
        "--kv-budget",
        "10GiB",
        "--shared-prefix",
        "2048",
    ]);
    assert_eq!(r[0]["max_seqs"], 20);
    assert_eq!(r[0]["max_seqs_shared_prefix"], 39);
}

#[test]
fn dp_attention_and_expert_parallel_deployments() {
    // DeepSeek-V3 latent 70,272 B a token; 40 GiB = 38,199 blocks of 16; 149 sequences of
    // 4096 per attention group; 8 groups hold 1192.
    let base = [
        "--model",
        "deepseek-v3",
        "--seq",
        "4096",
        "--kv-budget",
        "40GiB",
        "--tp",
        "8",
    ];
    let tp = plan_json(&base);
    assert_eq!(tp[0]["max_seqs_per_deployment"], 149);
    let mut dp = base.to_vec();
    dp.push("--dp-attention");
    let dp = plan_json(&dp);
    assert_eq!(dp[0]["attention_groups"], 8);
    assert_eq!(dp[0]["max_seqs_per_deployment"], 1192);
    // EP over 8 H200s in fp8: the routed experts' share per GPU is routed / 8.
    let ep = plan_json(&[
        "--model",
        "deepseek-v3",
        "--gpu",
        "h200",
        "--tp",
        "8",
        "--ep",
        "8",
        "--weights-dtype",
        "fp8",
    ]);
    let routed = 58.0 * 256.0 * 3.0 * 7168.0 * 2048.0 / 8.0;
    let got = ep[0]["weights_expert_bytes_per_gpu"].as_f64().unwrap();
    assert!((got - routed).abs() < 1.0, "{got}");
}

#[test]
fn described_gpus_and_node_notes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("gpu.json");
    std::fs::write(
        &spec,
        r#"{"name": "lab-gpu", "memory_bytes": 85899345920, "bandwidth_gbps": 3000,
            "fp16_tflops": 800, "fp8_tflops": null, "interconnect_gbps": 400, "node_gpus": 4}"#,
    )
    .unwrap();
    let r = plan_json(&["--model", "llama3-8b", "--gpu-spec", spec.to_str().unwrap()]);
    assert_eq!(r[0]["gpu"], "lab-gpu");
    assert_eq!(
        r[0]["usable_bytes_per_gpu"],
        (85_899_345_920.0f64 * 0.9) as u64
    );
    let inline = plan_json(&[
        "--model",
        "llama3-8b",
        "--gpu-spec",
        "name=x,memory=48GiB,bandwidth=864,fp16=181,fp8=362,interconnect=64",
    ]);
    assert_eq!(inline[0]["gpu"], "x");
    // tp 2 on a one-GPU node (GH200) is noted.
    kvbench()
        .args([
            "plan",
            "--model",
            "llama3-8b",
            "--gpu",
            "gh200",
            "--tp",
            "2",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("spans more than one node"));
}

#[test]
fn model_names_outside_the_registry_come_from_the_hf_cache() {
    let cache = tempfile::tempdir().unwrap();
    let model = cache.path().join("models--acme--hybrid-1");
    let snap = model.join("snapshots").join("abc123");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(model.join("refs")).unwrap();
    std::fs::write(model.join("refs").join("main"), "abc123").unwrap();
    std::fs::copy(fixture("jamba-1.5-mini"), snap.join("config.json")).unwrap();
    let out = kvbench()
        .env("HF_HUB_CACHE", cache.path())
        .args(["plan", "--model", "acme/hybrid-1", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    // Jamba: 4 attention layers x 2 x 8 x 128 x 2 B.
    assert_eq!(r[0]["kv_bytes_per_token"], 16_384.0);
    // Absent: one line naming where it looked and how to fetch it.
    let out = kvbench()
        .env("HF_HUB_CACHE", cache.path())
        .env_remove("HF_HOME")
        .args(["plan", "--model", "acme/missing"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("models--acme--missing") && err.contains("huggingface-cli download"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn bad_hybrid_and_parallel_input_is_one_line() {
    fails_with(
        &["--model", "llama3-8b", "--gpu-spec", "name=x,memory=80GiB"],
        "'bandwidth_gbps' is missing",
    );
    fails_with(
        &[
            "--model",
            "llama3-8b",
            "--gpu-spec",
            "name=x,memory=80GiB,bandwidth=-5,fp16=1,interconnect=1",
        ],
        "positive",
    );
    fails_with(
        &[
            "--model",
            "deepseek-v3",
            "--kv-budget",
            "40GiB",
            "--tp",
            "8",
            "--ep",
            "7",
        ],
        "ep = 7",
    );
    fails_with(
        &[
            "--model",
            "deepseek-v3",
            "--kv-budget",
            "40GiB",
            "--tp",
            "8",
            "--dp-attention",
            "3",
        ],
        "dp-attention = 3",
    );
    fails_with(&["--seq", "max"], "also give --gpu or --kv-budget");
    fails_with(&["--state-dtype", "int3"], "state dtype = int3");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"model_type": "newarch", "num_hidden_layers": 4, "num_attention_heads": 4,
            "hidden_size": 256, "full_attention_interval": 2}"#,
    )
    .unwrap();
    fails_with(&["--config", cfg.to_str().unwrap()], "'layer_types'");
}
