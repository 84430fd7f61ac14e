//! `kvbench models` driven as a user would.

use assert_cmd::Command;
use predicates::prelude::*;

fn kvbench() -> Command {
    Command::cargo_bin("kvbench").unwrap()
}

#[test]
fn lists_every_family_with_shapes() {
    let out = kvbench()
        .args(["models", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows.len() >= 30);
    let get = |key: &str| rows.iter().find(|r| r["model"] == key).unwrap().clone();
    assert_eq!(get("falcon-7b")["attention"], "mqa");
    assert_eq!(get("deepseek-v3")["attention"], "mla");
    assert_eq!(get("deepseek-v3")["kv_bytes_per_token_f16"], 70_272.0);
    assert_eq!(get("opt-13b")["attention"], "mha");
    assert_eq!(
        get("gemma3-27b")["layer_kinds"],
        "52 sliding 1024 / 10 full"
    );
    assert_eq!(get("qwen3-4b")["head_dim"], 128);
}

#[test]
fn table_and_filter() {
    kvbench()
        .args(["models", "--filter", "qwen3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("qwen3-235b-a22b"))
        .stdout(predicate::str::contains("llama").not());
    kvbench()
        .args(["models", "--filter", "nothing-like-this"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no model matches"));
}

#[test]
fn gpu_registry_lists_sources() {
    kvbench()
        .args(["models", "--gpus", "--format", "csv"])
        .assert()
        .success()
        .stdout(predicate::str::contains("h100-sxm"))
        .stdout(predicate::str::contains("mi300x"))
        .stdout(predicate::str::contains("bandwidth_gbps"));
}

#[test]
fn models_list_state_and_shared_kv_layer_kinds() {
    Command::cargo_bin("kvbench")
        .unwrap()
        .args(["models"])
        .assert()
        .success()
        .stdout(predicates::str::contains("12 full / 36 gated-delta-net"))
        .stdout(predicates::str::contains(
            "4 full / 24 mamba2 / 24 mlp-only",
        ))
        .stdout(predicates::str::contains("44 full + 44 mamba2 state"))
        .stdout(predicates::str::contains(
            "4 full / 16 sliding 512 / 15 shared-kv",
        ))
        .stdout(predicates::str::contains("4 full / 28 mamba1"));
}
