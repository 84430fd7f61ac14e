//! Models whose layers are not all "K and V for every token": recurrent-state layers
//! (Mamba-1/2, gated delta-net), layers without attention and layers sharing another's KV.
//! Each family is read from its real config.json (tests/fixtures, sources in SOURCES.md) and
//! checked against a hand calculation.
//!
//! State formulas: vLLM vllm/model_executor/layers/mamba/mamba_utils.py,
//! MambaStateShapeCalculator (per layer, tp = 1):
//!   mamba1:          conv (d_inner, k-1)                  ssm (d_inner, d_state)
//!   mamba2:          conv (k-1, d_inner + 2 g d_state)    ssm (heads, head_dim, d_state)
//!   gated delta-net: conv (2 k_heads k_dim + v_heads v_dim, k-1)   ssm (v_heads, v_dim, k_dim)
//! in the model dtype (bf16 here) unless mamba_ssm_cache_dtype (`state_dtype`) says otherwise.

use kvbench_planner::deploy::{capacity, Deployment, WeightDtype, WindowRule};
use kvbench_planner::layout::bytes_per_token;
use kvbench_planner::parallel::{param_split, weights_per_gpu};
use kvbench_planner::plan::{longest_seq, plan, PlanRequest};
use kvbench_planner::state::{sequence_state_bytes, StateDtype};
use kvbench_planner::{find_model, parse_config, parse_kv_dtypes, AttentionKind, ModelInfo};

const GIB: u64 = 1 << 30;

fn fixture(key: &str) -> String {
    let path = format!("{}/tests/fixtures/{key}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn parsed(key: &str) -> ModelInfo {
    parse_config(&fixture(key), key).unwrap()
}

fn f16_bytes_per_token(m: &ModelInfo) -> f64 {
    let f16 = parse_kv_dtypes("f16").unwrap();
    bytes_per_token(&m.shape, &f16.k, &f16.v)
}

fn state_bytes(m: &ModelInfo) -> u64 {
    let st = m.shape.state.as_ref().expect("a state model");
    sequence_state_bytes(st, 1, st.layers.len() as u64)
        .unwrap()
        .total()
}

fn budget_deployment(budget: u64, tp: u32) -> Deployment {
    Deployment {
        gpu: None,
        gpus: tp,
        tp,
        pp: 1,
        weights: "bf16".parse::<WeightDtype>().unwrap(),
        mem_util: 0.9,
        reserve: None,
        kv_budget: Some(budget),
        block_size: 16,
        max_batched_tokens: 8192,
        window_rule: WindowRule::Window,
        dp_attention: 1,
        ep: 1,
        engine: Default::default(),
        weights_detail: None,
    }
}

fn request(model: ModelInfo, seq: u32, batch: u32, dep: Option<Deployment>) -> PlanRequest {
    PlanRequest {
        model,
        kv: parse_kv_dtypes("f16").unwrap(),
        attention: None,
        seq,
        batch,
        block_size: 16,
        shared_prefix: 0,
        window_rule: WindowRule::Window,
        max_batched_tokens: 8192,
        deployment: dep,
        state_dtype: None,
    }
}

#[test]
fn qwen3_next_keeps_kv_in_12_of_48_layers_and_a_delta_net_state_in_36() {
    let m = parsed("qwen3-next-80b-a3b");
    // full_attention_interval 4 without layer_types: transformers' Qwen3NextConfig rule,
    // layer i full when (i + 1) % 4 == 0.
    assert_eq!(m.shape.kv_layers(), 12);
    assert_eq!(m.shape.layer_kinds[3], AttentionKind::Full);
    assert_eq!(m.shape.layer_kinds[0], AttentionKind::NoAttention);
    assert_eq!(m.shape.state_layers(), 36);
    // KV: 12 layers x K+V x 2 heads x 256 x 2 B = 24 KiB a token (not 96 KiB for 48).
    assert_eq!(f16_bytes_per_token(&m), 24_576.0);
    // State: conv (2x16x128 + 32x128 = 8192) x 3 = 24,576 + ssm 32x128x128 = 524,288
    // elements, bf16: 1,097,728 B a layer, x 36.
    assert_eq!(state_bytes(&m), 36 * 1_097_728);
}

#[test]
fn qwen3_5_nested_text_config_follows_the_same_rule() {
    let m = parsed("qwen3.5-35b-a3b");
    assert_eq!((m.shape.kv_layers(), m.shape.state_layers()), (10, 30));
    // 10 x 2 x 2 x 256 x 2 B. Its config's mamba_ssm_dtype float32 is the SSM dtype (vLLM's
    // Qwen3_5ForConditionalGenerationConfig): 24,576 x 2 + 524,288 x 4 = 2,146,304 B a layer.
    assert_eq!(f16_bytes_per_token(&m), 20_480.0);
    assert_eq!(m.shape.state.as_ref().unwrap().ssm_dtype, StateDtype::F32);
    assert_eq!(state_bytes(&m), 30 * 2_146_304);
}

#[test]
fn nemotron_h_pattern_gives_4_attention_24_mamba2_and_24_mlp_layers() {
    let m = parsed("nemotron-h-8b");
    assert_eq!((m.shape.kv_layers(), m.shape.state_layers()), (4, 24));
    // 4 x 2 x 8 heads x 128 x 2 B.
    assert_eq!(f16_bytes_per_token(&m), 16_384.0);
    // Mamba-2: conv (3, 8192 + 2x8x128) = 30,720; ssm 128x64x128 = 1,048,576; bf16, x 24.
    assert_eq!(state_bytes(&m), 24 * (30_720 + 1_048_576) * 2);
}

#[test]
fn jamba_attends_every_8th_layer_from_4_and_keeps_mamba1_state_elsewhere() {
    let m = parsed("jamba-1.5-mini");
    let attn: Vec<usize> = (0..32)
        .filter(|i| m.shape.layer_kinds[*i] == AttentionKind::Full)
        .collect();
    assert_eq!(attn, vec![4, 12, 20, 28]);
    assert_eq!(f16_bytes_per_token(&m), 4.0 * 2.0 * 8.0 * 128.0 * 2.0);
    // Mamba-1: d_inner = 2 x 4096: conv 8192 x 3 + ssm 8192 x 16, bf16: 311,296 B, x 28.
    assert_eq!(state_bytes(&m), 28 * 311_296);
    // With an f32 SSM state (mamba_ssm_cache_dtype float32): 49,152 + 524,288 a layer.
    let mut st = m.shape.state.clone().unwrap();
    st.ssm_dtype = StateDtype::F32;
    assert_eq!(sequence_state_bytes(&st, 1, 1).unwrap().total(), 573_440);
}

#[test]
fn falcon_h1_runs_attention_and_mamba2_in_every_layer() {
    let m = parsed("falcon-h1-7b");
    assert_eq!((m.shape.kv_layers(), m.shape.state_layers()), (44, 44));
    // 44 x 2 x 2 x 128 x 2 B.
    assert_eq!(f16_bytes_per_token(&m), 45_056.0);
    // conv (3, 3072 + 2x1x256 = 3584) = 10,752; ssm 24x128x256 = 786,432; bf16, x 44.
    assert_eq!(state_bytes(&m), 44 * (10_752 + 786_432) * 2);
}

#[test]
fn gemma3n_counts_only_the_20_layers_that_store_kv() {
    let m = parsed("gemma3n-e4b");
    assert_eq!(m.shape.kv_layers(), 20);
    // The last 15 layers read the KV of the last earlier layer of their kind: 19 (full)
    // or 18 (sliding).
    assert_eq!(
        m.shape.layer_kinds[24],
        AttentionKind::SharedKv { source: 19 }
    );
    assert_eq!(
        m.shape.layer_kinds[20],
        AttentionKind::SharedKv { source: 18 }
    );
    assert!(m.shape.state.is_none());
    // 32,768 tokens, f16, 2048 B a token a layer: 4 full layers hold every token, 16
    // sliding layers their 512-token window.
    let p = plan(&request(m, 32_768, 1, None)).unwrap();
    assert_eq!(p.seq_bytes, 4 * 32_768 * 2048 + 16 * 512 * 2048);
    assert_eq!(p.bytes_per_token, 20.0 * 2048.0);
}

#[test]
fn hybrid_pool_grows_the_block_to_hold_a_state_page() {
    // Qwen3-Next, tp 1, f16, a 10 GiB budget. One token of one attention layer is 2048 B; a
    // state page 1,097,728 B: block = 16 x ceil(1,097,728 / (16 x 2048)) = 16 x 34 = 544
    // tokens, page 544 x 2048 = 1,114,112 B. 12 full + 36 state layers: groups of 12, one
    // full and three state groups; a pool block is 12 pages = 13,369,344 B.
    let m = find_model("qwen3-next-80b-a3b").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    let c = capacity(&m, &kv, &budget_deployment(10 * GIB, 1), 8192, 1).unwrap();
    assert_eq!(c.block_size, 544);
    assert_eq!((c.kv_cache_groups, c.layers_per_group), (4, 12));
    assert_eq!(c.block_bytes, 13_369_344);
    assert_eq!(c.blocks, 10 * GIB / 13_369_344);
    assert_eq!(c.blocks, 803);
    // vLLM's log: 803 // 4 groups x 544 = 108,800 tokens.
    assert_eq!(c.token_capacity, 108_800);
    // A request of 8192 tokens: ceil(8192 / 544) = 16 full-attention blocks + one block per
    // state group = 19; 803 / 19 = 42 sequences.
    assert_eq!(c.max_seqs, 42);
    assert_eq!(c.state_bytes_per_seq_per_gpu, 36 * 1_097_728);
    assert!(c.allocator_rule.contains("vLLM"), "{}", c.allocator_rule);
    // The plan sums KV and state at the asked context.
    let p = plan(&request(m, 8192, 1, None)).unwrap();
    assert_eq!(p.seq_total_bytes, 8192 * 24_576 + 36 * 1_097_728);
}

#[test]
fn state_dtype_override_changes_state_and_block() {
    // float32 SSM state: 24,576 x 2 + 524,288 x 4 = 2,146,304 B a layer; block =
    // 16 x ceil(2,146,304 / 32,768) = 16 x 66 = 1056 tokens.
    let m = find_model("qwen3-next-80b-a3b").unwrap();
    let mut req = request(m, 8192, 1, Some(budget_deployment(10 * GIB, 1)));
    req.state_dtype = Some(StateDtype::F32);
    let p = plan(&req).unwrap();
    assert_eq!(p.state_bytes_per_seq, 36 * 2_146_304);
    assert_eq!(p.capacity.unwrap().block_size, 1056);
}

#[test]
fn what_fits_when_the_asked_batch_does_not() {
    let m = find_model("qwen3-next-80b-a3b").unwrap();
    let req = request(m.clone(), 8192, 100, Some(budget_deployment(10 * GIB, 1)));
    let p = plan(&req).unwrap();
    let c = p.capacity.unwrap();
    assert!(!c.batch_fits);
    assert_eq!(c.max_seqs, 42);
    // 100 sequences in 803 blocks: 8 each, 3 of them state: 5 x 544 = 2720 tokens.
    assert_eq!(c.max_context_at_batch, Some(2720));
    // --seq max at that batch gives the same longest context.
    assert_eq!(longest_seq(&req).unwrap(), 2720);
    // A context that fits no sequence: the error says what does fit.
    let err = plan(&request(
        m,
        10_000_000,
        1,
        Some(budget_deployment(10 * GIB, 1)),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("fits 0 sequences") && err.contains("longest context that fits"),
        "{err}"
    );
}

#[test]
fn a_shared_prefix_is_held_once_and_more_sequences_fit() {
    // Llama-3-8B, 10 GiB: blocks of 16 x 32 layers x 128 KiB/32 = 2 MiB; 5120 blocks. At
    // 4096 tokens a sequence takes 256 blocks: 20 sequences. Sharing the first 2048 tokens
    // (128 blocks held once): (5120 - 128) / 128 = 39.
    let m = find_model("llama3-8b").unwrap();
    let mut req = request(m, 4096, 1, Some(budget_deployment(10 * GIB, 1)));
    req.shared_prefix = 2048;
    let p = plan(&req).unwrap();
    assert_eq!(p.capacity.as_ref().unwrap().max_seqs, 20);
    let f = p.shared_prefix_fit.unwrap();
    assert_eq!((f.shared_blocks, f.own_blocks, f.max_seqs), (128, 128, 39));
}

#[test]
fn dp_attention_multiplies_the_sequences_a_deployment_holds() {
    // DeepSeek-V3 on a 40 GiB KV budget per GPU, tp 8, f16 latent: 61 x 576 x 2 B =
    // 70,272 B a token, blocks of 16 = 1,124,352 B: 38,199 blocks. At 4096 tokens a
    // sequence takes 256: 149 per GPU group. Without DP attention every rank holds every
    // latent (149 for the deployment); with 8 attention groups each holds its own (1192).
    let m = find_model("deepseek-v3").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    let mut dep = budget_deployment(40 * GIB, 8);
    let tp_only = capacity(&m, &kv, &dep, 4096, 1).unwrap();
    assert_eq!((tp_only.blocks, tp_only.max_seqs), (38_199, 149));
    assert_eq!(tp_only.max_seqs_per_deployment, 149);
    dep.dp_attention = 8;
    let dp = capacity(&m, &kv, &dep, 4096, 1).unwrap();
    assert_eq!(dp.max_seqs, 149);
    assert_eq!(dp.max_seqs_per_deployment, 8 * 149);
    assert_eq!(dp.attention_groups, 8);
    // GQA too: Llama-3-70B at tp 8 holds 1 KV head per GPU; with 2 attention groups of tp 4,
    // 2 heads per GPU, each group its own requests.
    let l = find_model("llama3-70b").unwrap();
    dep.dp_attention = 2;
    let g = capacity(&l, &kv, &dep, 4096, 1).unwrap();
    assert_eq!(g.kv_heads_per_gpu, 2);
}

#[test]
fn expert_parallel_splits_routed_experts_and_keeps_the_rest_by_tp() {
    // DeepSeek-V3, fp8 weights, 8 GPUs as tp 2 x 4 replicas with ep 8: routed experts
    // (58 x 256 x 3 x 7168 x 2048) / 8 ranks at 1 B each; the rest / tp 2.
    let m = find_model("deepseek-v3").unwrap();
    let mut dep = budget_deployment(40 * GIB, 2);
    dep.gpus = 8;
    dep.ep = 8;
    dep.weights = "fp8".parse().unwrap();
    let w = weights_per_gpu(&m, &dep);
    let routed: f64 = 58.0 * 256.0 * 3.0 * 7168.0 * 2048.0;
    assert_eq!(w.experts, (routed / 8.0).round() as u64);
    let s = param_split(&m);
    assert_eq!(w.other, ((s.attention + s.rest) / 2.0).round() as u64);
}

#[test]
fn bad_parallel_flags_name_the_flag() {
    let m = find_model("deepseek-v3").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    let mut dep = budget_deployment(40 * GIB, 8);
    dep.ep = 7;
    let e = capacity(&m, &kv, &dep, 4096, 1).unwrap_err().to_string();
    assert!(
        e.contains("ep = 7") && e.contains("256 routed experts"),
        "{e}"
    );
    dep.ep = 1;
    dep.dp_attention = 3;
    let e = capacity(&m, &kv, &dep, 4096, 1).unwrap_err().to_string();
    assert!(
        e.contains("dp-attention = 3") && e.contains("divide tp = 8"),
        "{e}"
    );
    let dense = find_model("llama3-8b").unwrap();
    let mut d = budget_deployment(40 * GIB, 1);
    d.ep = 2;
    d.gpus = 2;
    let e = capacity(&dense, &kv, &d, 4096, 1).unwrap_err().to_string();
    assert!(e.contains("no routed experts"), "{e}");
}

#[test]
fn undecidable_or_incomplete_configs_are_refused_by_key() {
    let base = r#""num_hidden_layers": 4, "num_attention_heads": 4, "hidden_size": 256"#;
    let err = |extra: &str| {
        parse_config(&format!("{{{base}, {extra}}}"), "x")
            .unwrap_err()
            .to_string()
    };
    // An interval with no types, in a family that documents no rule for it.
    let e = err(r#""model_type": "newarch", "full_attention_interval": 2"#);
    assert!(e.contains("'layer_types'"), "{e}");
    // Linear-attention dimensions with no word on which layers are linear.
    let e = err(r#""linear_num_key_heads": 2"#);
    assert!(e.contains("'layer_types'"), "{e}");
    // An unknown layer kind.
    let e = err(r#""layer_types": ["full_attention", "conv", "full_attention", "full_attention"]"#);
    assert!(e.contains("layer_types") && e.contains("\"conv\""), "{e}");
    // A missing state dimension.
    let e = err(
        r#""model_type": "qwen3_next", "full_attention_interval": 2, "linear_num_key_heads": 2,
        "linear_num_value_heads": 2, "linear_key_head_dim": 8, "linear_value_head_dim": 8"#,
    );
    assert!(e.contains("'linear_conv_kernel_dim'"), "{e}");
    let e = err(r#""hybrid_override_pattern": "M*-X""#);
    assert!(
        e.contains("hybrid_override_pattern") && e.contains("'X'"),
        "{e}"
    );
    let e = err(r#""model_type": "jamba", "attn_layer_period": 2"#);
    assert!(e.contains("'attn_layer_offset'"), "{e}");
    let e = err(r#""hybrid_override_pattern": "M*-""#);
    assert!(e.contains("4 layers"), "{e}");
}

#[test]
fn granite4_layer_types_name_mamba_layers() {
    // Granite-4 (granitemoehybrid) lists "mamba" and "attention" layers; the Mamba-2 width is
    // mamba_expand x hidden_size (vLLM granitemoehybrid.py).
    let m = parse_config(
        r#"{"model_type": "granitemoehybrid", "num_hidden_layers": 4, "num_attention_heads": 8,
            "num_key_value_heads": 2, "hidden_size": 512, "mamba_expand": 2, "mamba_n_heads": 16,
            "mamba_d_head": 64, "mamba_n_groups": 1, "mamba_d_state": 128, "mamba_d_conv": 4,
            "layer_types": ["mamba", "mamba", "mamba", "attention"]}"#,
        "granite",
    )
    .unwrap();
    assert_eq!((m.shape.kv_layers(), m.shape.state_layers()), (1, 3));
    // conv (3, 1024 + 2 x 128) = 3840; ssm 16 x 64 x 128 = 131,072; bf16, x 3.
    assert_eq!(state_bytes(&m), 3 * (3840 + 131_072) * 2);
}
