//! The config.json reader: family quirks, errors that name the field, and no panics on any input.

use kvbench_planner::config::parse_config;
use kvbench_planner::AttentionKind;
use proptest::prelude::*;

#[test]
fn missing_required_field_is_named() {
    let err = parse_config(r#"{"num_attention_heads": 32, "hidden_size": 4096}"#, "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_hidden_layers"), "{err}");
    let err = parse_config(r#"{"num_hidden_layers": 2, "hidden_size": 4096}"#, "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_attention_heads"), "{err}");
}

#[test]
fn not_json_and_bad_values_are_errors() {
    assert!(parse_config("not json", "x")
        .unwrap_err()
        .to_string()
        .contains("not valid JSON"));
    assert!(parse_config("[1, 2]", "x")
        .unwrap_err()
        .to_string()
        .contains("not a JSON object"));
    let err = parse_config(
        r#"{"num_hidden_layers": -3, "num_attention_heads": 4, "hidden_size": 64}"#,
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("num_hidden_layers") && err.contains("-3"),
        "{err}"
    );
    let err = parse_config(
        r#"{"num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 4, "hidden_size": 384}"#,
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("num_key_value_heads"), "{err}");
    let err = parse_config(
        r#"{"num_hidden_layers": 2, "num_attention_heads": 3, "hidden_size": 100}"#,
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("head_dim"), "{err}");
}

#[test]
fn head_dim_field_wins_over_hidden_over_heads() {
    // Qwen3-4B: hidden 2560 / 32 heads = 80, but head_dim is 128.
    let m = parse_config(
        r#"{"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
            "hidden_size": 2560, "head_dim": 128, "unknown_field": {"deep": [1, 2]}}"#,
        "qwen3-4b",
    )
    .unwrap();
    assert_eq!(m.shape.head_dim, 128);
    assert_eq!(m.shape.kv_heads, 8);
}

#[test]
fn sliding_window_rules() {
    let base = r#""num_hidden_layers": 4, "num_attention_heads": 4, "hidden_size": 256"#;
    let kinds = |extra: &str| {
        parse_config(&format!("{{{base}, {extra}}}"), "x")
            .unwrap()
            .shape
            .layer_kinds
    };
    let full = AttentionKind::Full;
    let s = |window| AttentionKind::Sliding { window };
    // Qwen2: sliding_window present but switched off.
    assert_eq!(
        kinds(r#""sliding_window": 4096, "use_sliding_window": false"#),
        vec![full; 4]
    );
    // Qwen2 with sliding on: layers from max_window_layers up slide.
    assert_eq!(
        kinds(r#""sliding_window": 512, "use_sliding_window": true, "max_window_layers": 2"#),
        vec![full, full, s(512), s(512)]
    );
    // Mistral-7B-v0.1: every layer slides.
    assert_eq!(kinds(r#""sliding_window": 4096"#), vec![s(4096); 4]);
    assert_eq!(kinds(r#""sliding_window": null"#), vec![full; 4]);
    // Gemma-2: alternating, local first.
    assert_eq!(
        kinds(r#""model_type": "gemma2", "sliding_window": 4096"#),
        vec![s(4096), full, s(4096), full]
    );
    // Gemma-3 pattern 2 here: every 2nd layer global.
    assert_eq!(
        kinds(r#""sliding_window": 1024, "sliding_window_pattern": 2"#),
        vec![s(1024), full, s(1024), full]
    );
    // Explicit layer_types win.
    assert_eq!(
        kinds(
            r#""sliding_window": 128, "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]"#
        ),
        vec![full, s(128), s(128), full]
    );
}

#[test]
fn layer_types_must_match_layer_count() {
    let err = parse_config(
        r#"{"num_hidden_layers": 3, "num_attention_heads": 4, "hidden_size": 256,
            "sliding_window": 8, "layer_types": ["full_attention"]}"#,
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("layer_types") && err.contains("3 layers"),
        "{err}"
    );
    let err = parse_config(
        r#"{"num_hidden_layers": 1, "num_attention_heads": 4, "hidden_size": 256,
            "layer_types": ["sliding_attention"]}"#,
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sliding_window"), "{err}");
}

#[test]
fn nested_text_config_and_gpt2_names() {
    let m = parse_config(
        r#"{"model_type": "llava", "text_config": {"num_hidden_layers": 2,
            "num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 512},
            "vision_config": {"num_hidden_layers": 24}}"#,
        "x",
    )
    .unwrap();
    assert_eq!(
        (m.shape.layers, m.shape.kv_heads, m.shape.head_dim),
        (2, 2, 64)
    );
    let g = parse_config(r#"{"n_layer": 12, "n_head": 12, "n_embd": 768}"#, "gpt2").unwrap();
    assert_eq!(
        (g.shape.layers, g.shape.kv_heads, g.shape.head_dim),
        (12, 12, 64)
    );
    let f = parse_config(
        r#"{"num_hidden_layers": 32, "num_attention_heads": 71, "hidden_size": 4544, "multi_query": true}"#,
        "falcon",
    )
    .unwrap();
    assert_eq!(f.shape.kv_heads, 1);
}

#[test]
fn kv_heads_follow_vllms_rule_for_every_family() {
    // (config, KV heads, KV bytes per token at f16): published per-token figures, e.g.
    // ChatGLM3-6B 28 layers × 2 groups × 128 × 2 × 2 B = 28 KiB, DBRX 40 × 8 × 128 × 2 × 2 B
    // = 160 KiB, Falcon-7B 32 × 1 × 64 × 2 × 2 B = 8 KiB.
    let cases: &[(&str, u32, u64)] = &[
        // ChatGLM3-6B: two KV groups, no num_key_value_heads.
        (
            r#"{"model_type": "chatglm", "num_layers": 28, "hidden_size": 4096,
                "num_attention_heads": 32, "multi_query_attention": true,
                "multi_query_group_num": 2, "kv_channels": 128}"#,
            2,
            28 * 2 * 2 * 128 * 2,
        ),
        // MPT-7B: its own field names, no kv_n_heads: one KV head per query head.
        (
            r#"{"model_type": "mpt", "n_layers": 32, "n_heads": 32, "d_model": 4096,
                "attn_config": {"attn_type": "multihead_attention", "alibi": true}}"#,
            32,
            32 * 32 * 128 * 2 * 2,
        ),
        // DBRX: kv_n_heads inside attn_config.
        (
            r#"{"model_type": "dbrx", "n_layers": 40, "n_heads": 48, "d_model": 6144,
                "attn_config": {"kv_n_heads": 8, "rope_theta": 500000}}"#,
            8,
            40 * 8 * 128 * 2 * 2,
        ),
        // Falcon-7B: multi_query.
        (
            r#"{"model_type": "falcon", "num_hidden_layers": 32, "hidden_size": 4544,
                "num_attention_heads": 71, "multi_query": true}"#,
            1,
            32 * 64 * 2 * 2,
        ),
        // Falcon-40B: the new decoder architecture ignores multi_query.
        (
            r#"{"model_type": "falcon", "num_hidden_layers": 60, "hidden_size": 8192,
                "num_attention_heads": 128, "num_kv_heads": 8, "multi_query": true,
                "new_decoder_architecture": true}"#,
            8,
            60 * 8 * 64 * 2 * 2,
        ),
    ];
    for &(text, kv, bytes) in cases {
        let m = parse_config(text, "x").unwrap();
        assert_eq!(m.shape.kv_heads, kv, "{text}");
        let per_token = 2 * m.shape.layers as u64 * kv as u64 * m.shape.head_dim as u64 * 2;
        assert_eq!(per_token, bytes, "{text}");
    }
}

#[test]
fn a_model_without_attention_is_refused_with_why() {
    for text in [
        r#"{"model_type": "mamba", "n_layer": 64, "d_model": 2560, "vocab_size": 50280}"#,
        r#"{"model_type": "rwkv", "num_hidden_layers": 32, "hidden_size": 4096}"#,
    ] {
        let err = parse_config(text, "x").unwrap_err().to_string();
        assert!(
            err.contains("no attention layers") && err.contains("no KV cache"),
            "{err}"
        );
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_config(&text, "fuzz");
    }

    #[test]
    fn arbitrary_json_objects_never_panic(
        kv_small in 1i64..16,
        layers in prop_oneof![any::<i64>(), 1i64..200], heads in any::<i64>(), kv in any::<i64>(),
        hidden in prop_oneof![any::<i64>(), 1i64..10_000], head_dim in proptest::option::of(any::<i64>()),
        window in proptest::option::of(any::<i64>()), pattern in proptest::option::of(0i64..8),
    ) {
        let mut obj = serde_json::json!({
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": if kv % 2 == 0 { kv } else { kv_small }, "hidden_size": hidden,
        });
        if let Some(d) = head_dim { obj["head_dim"] = d.into(); }
        if let Some(w) = window { obj["sliding_window"] = w.into(); }
        if let Some(p) = pattern { obj["sliding_window_pattern"] = p.into(); }
        if let Ok(m) = parse_config(&obj.to_string(), "fuzz") {
            // Whatever parses must be sizeable without panicking.
            let f16 = kvbench_planner::CacheDtype::new(kvbench_planner::DtypeKind::F16);
            let _ = kvbench_planner::layout::bytes_per_token(&m.shape, &f16, &f16);
        }
    }
}

/// The layer kinds of Llama-4 (48 layers, chunks of 8192, every 4th layer NoPE and full).
fn llama4_kinds() -> Vec<AttentionKind> {
    (0..48)
        .map(|i| match (i + 1) % 4 {
            0 => AttentionKind::Full,
            _ => AttentionKind::Chunked { chunk: 8192 },
        })
        .collect()
}

#[test]
fn llama4_chunked_layers_from_no_rope_layers_or_the_default_interval() {
    let fixture = |key: &str| {
        let path = format!("{}/tests/fixtures/{key}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    };
    // Scout's fixture lists no_rope_layers (1 = RoPE, chunked; 0 = NoPE, full); Maverick's
    // is empty, which transformers' Llama4TextConfig fills with every 4th layer NoPE.
    for key in ["llama4-scout", "llama4-maverick"] {
        let m = parse_config(&fixture(key), key).unwrap();
        assert_eq!(m.shape.layer_kinds, llama4_kinds(), "{key}");
        // f16 per token: 48 layers x 2 x 8 heads x 128 x 2 B = 192 KiB, all layers alike.
        let kv = kvbench_planner::parse_kv_dtypes("f16").unwrap();
        assert_eq!(
            kvbench_planner::layout::bytes_per_token(&m.shape, &kv.k, &kv.v),
            196_608.0
        );
    }
    // Maverick: experts on every 2nd layer (interleave_moe_layer_step 2).
    let m = parse_config(&fixture("llama4-maverick"), "m").unwrap();
    assert_eq!(m.moe.map(|e| (e.experts, e.layers)), Some((128, 24)));
    // A config without the list and with its own interval.
    let text = r#"{"model_type": "llama4_text", "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_size": 256, "attention_chunk_size": 64,
        "no_rope_layer_interval": 2}"#;
    let chunked = AttentionKind::Chunked { chunk: 64 };
    let kinds = parse_config(text, "x").unwrap().shape.layer_kinds;
    assert_eq!(
        kinds,
        vec![chunked, AttentionKind::Full, chunked, AttentionKind::Full]
    );
    // layer_types as newer transformers write them.
    let text = r#"{"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256,
        "attention_chunk_size": 64, "layer_types": ["chunked_attention", "full_attention"]}"#;
    let kinds = parse_config(text, "x").unwrap().shape.layer_kinds;
    assert_eq!(kinds, vec![chunked, AttentionKind::Full]);
}

#[test]
fn chunked_configs_that_cannot_be_read_name_the_field() {
    let err = |text: &str| parse_config(text, "x").unwrap_err().to_string();
    let base = r#""num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256"#;
    // chunked_attention layers without a chunk size.
    let e = err(&format!(
        r#"{{{base}, "layer_types": ["chunked_attention", "full_attention"]}}"#
    ));
    assert!(e.contains("attention_chunk_size"), "{e}");
    // A chunk size with no rule for which layers it applies to.
    let e = err(&format!(
        r#"{{{base}, "model_type": "other", "attention_chunk_size": 64}}"#
    ));
    assert!(e.contains("no_rope_layers") && e.contains("other"), "{e}");
    // A list of the wrong length, or with something other than 0/1.
    let e = err(&format!(
        r#"{{{base}, "attention_chunk_size": 64, "no_rope_layers": [1, 0, 1]}}"#
    ));
    assert!(
        e.contains("no_rope_layers") && e.contains("2 layers"),
        "{e}"
    );
    let e = err(&format!(
        r#"{{{base}, "attention_chunk_size": 64, "no_rope_layers": [1, 2]}}"#
    ));
    assert!(e.contains("no_rope_layers") && e.contains('2'), "{e}");
    let e = err(&format!(
        r#"{{{base}, "attention_chunk_size": 0, "no_rope_layers": [1, 0]}}"#
    ));
    assert!(e.contains("attention_chunk_size"), "{e}");
}

#[test]
fn bamba_attention_layers_are_listed_by_index() {
    // ibm-ai-platform/Bamba-9B: attention on layers 9, 18 and 27 of 32, Mamba-2 elsewhere
    // (transformers' BambaConfig.layers_block_type); mamba_d_head "auto" is
    // mamba_expand x hidden / heads = 2 x 4096 / 128 = 64.
    let text = r#"{"model_type": "bamba", "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "hidden_size": 4096, "attn_layer_indices": [9, 18, 27],
        "mamba_n_heads": 128, "mamba_d_head": "auto", "mamba_n_groups": 1,
        "mamba_d_state": 128, "mamba_d_conv": 4, "mamba_expand": 2}"#;
    let m = parse_config(text, "bamba").unwrap();
    let full: Vec<usize> = (0..32)
        .filter(|&i| m.shape.layer_kinds[i] == AttentionKind::Full)
        .collect();
    assert_eq!(full, [9, 18, 27]);
    let st = m.shape.state.unwrap();
    assert_eq!(st.layers.len(), 29);
    assert_eq!(
        st.mixer,
        kvbench_planner::state::StateMixer::Mamba2 {
            intermediate: 8192,
            n_groups: 1,
            heads: 128,
            head_dim: 64,
            state_size: 128,
            conv_kernel: 4
        }
    );
    for bad in ["[9, 40]", "[9, 9]", "\"9\"", "[-1]"] {
        let text = text.replace("[9, 18, 27]", bad);
        let err = parse_config(&text, "x").unwrap_err().to_string();
        assert!(err.contains("attn_layer_indices"), "{bad}: {err}");
    }
}

#[test]
fn minimax_lightning_layers_keep_a_state_per_head() {
    // MiniMax-Text-01 (transformers' test copy of its config): 80 layers, softmax attention
    // on every 8th (attn_type_list 1), lightning elsewhere; 64 heads of 128. A lightning
    // layer keeps one 128 x 128 state per head in the model dtype: 64 x 128 x 128 x 2 B =
    // 2 MiB a layer, 70 layers = 140 MiB a sequence (vLLM's linear_attention_state_shape).
    let types: Vec<String> = (0..80)
        .map(|i| u32::from((i + 1) % 8 == 0).to_string())
        .collect();
    let text = format!(
        r#"{{"model_type": "minimax_text_01", "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "head_dim": 128, "hidden_size": 6144, "intermediate_size": 9216,
        "num_local_experts": 32, "num_experts_per_tok": 2, "vocab_size": 200064,
        "torch_dtype": "bfloat16", "attn_type_list": [{}]}}"#,
        types.join(",")
    );
    let m = parse_config(&text, "minimax").unwrap();
    assert_eq!(m.shape.kv_layers(), 10);
    let st = m.shape.state.clone().unwrap();
    assert_eq!(st.layers.len(), 70);
    let bytes = kvbench_planner::state::sequence_state_bytes(&st, 1, 70).unwrap();
    assert_eq!((bytes.conv, bytes.ssm), (0, 146_800_640));
    // At tp 8 each rank keeps 8 of the 64 heads.
    let bytes = kvbench_planner::state::sequence_state_bytes(&st, 8, 70).unwrap();
    assert_eq!(bytes.ssm, 146_800_640 / 8);
    // transformers' MiniMaxConfig spells the same as layer_types.
    let layer_types: Vec<&str> = (0..80)
        .map(|i| match (i + 1) % 8 {
            0 => "\"full_attention\"",
            _ => "\"linear_attention\"",
        })
        .collect();
    let text = format!(
        r#"{{"model_type": "minimax", "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "head_dim": 128, "hidden_size": 6144,
        "layer_types": [{}]}}"#,
        layer_types.join(",")
    );
    let again = parse_config(&text, "minimax").unwrap();
    assert_eq!(again.shape.state.unwrap().mixer, st.mixer);
    // A list of the wrong length, or a code other than 0/1.
    let short = text.replace("\"num_hidden_layers\": 80", "\"num_hidden_layers\": 81");
    assert!(parse_config(&short, "x").is_err());
    let err = parse_config(
        r#"{"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256,
            "attn_type_list": [0, 2]}"#,
        "x",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("attn_type_list"), "{err}");
}

#[test]
fn fields_that_would_size_nothing_or_the_wrong_bytes_are_refused() {
    let base = r#""num_hidden_layers": 4, "num_attention_heads": 4, "hidden_size": 256"#;
    let err = |extra: &str| {
        parse_config(&format!("{{{base}, {extra}}}"), "x")
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string())
    };
    // A dtype that is none: it used to be sized silently at 16 bits.
    for dtype in [
        r#""torch_dtype": "float99""#,
        r#""torch_dtype": 5"#,
        r#""dtype": "int3""#,
    ] {
        let e = err(dtype);
        assert!(
            e.contains("dtype") && e.contains("bfloat16"),
            "{dtype}: {e}"
        );
    }
    assert_eq!(err(r#""torch_dtype": "bfloat16""#), "");
    // text_config that is not an object used to be ignored.
    let e = err(r#""text_config": "foo""#);
    assert!(e.contains("text_config"), "{e}");
    // An interval past the last layer leaves no attention (it used to plan 0 KV layers).
    let e = err(
        r#""model_type": "qwen3_next", "full_attention_interval": 1000000,
           "linear_num_key_heads": 2, "linear_num_value_heads": 2, "linear_key_head_dim": 64,
           "linear_value_head_dim": 64, "linear_conv_kernel_dim": 4"#,
    );
    assert!(e.contains("full_attention_interval"), "{e}");
    // 0-bit GPTQ weights used to be sized at 0.012 bits a weight.
    let text = format!(
        "{{{base}, \"vocab_size\": 1000, \"quantization_config\": {{\"quant_method\": \"gptq\", \"bits\": 0}}}}"
    );
    let e = kvbench_planner::weights::from_config(&text, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bits = 0"), "{e}");
}
