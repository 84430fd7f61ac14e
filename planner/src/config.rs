//! Reading a Hugging Face config.json into a ModelShape.
//!
//! Field names differ between families (GPT-2's `n_layer`, Falcon's `multi_query`, DeepSeek's
//! MLA fields, Gemma-3's nested `text_config`); unknown fields are ignored and a missing field
//! the cache size depends on is an error naming it.

use serde_json::{Map, Value};

use crate::error::PlanError;
use crate::registry::{ModelInfo, MoeShape};
use crate::shape::{AttentionKind, ModelShape};
use crate::state::{RecurrentState, StateDtype, StateMixer};

type Object = Map<String, Value>;

/// Layers beyond any real model (Llama-3.1-405B has 126); refusing them keeps a corrupt
/// config from allocating billions of layer entries.
const MAX_LAYERS: u32 = 100_000;

/// The first present, non-null field among `names`.
fn field<'a>(obj: &'a Object, names: &[&str]) -> Option<(&'a str, &'a Value)> {
    names.iter().find_map(|n| {
        obj.get_key_value(*n)
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.as_str(), v))
    })
}

/// A positive integer field, or `None` when absent or null.
fn opt_u32(obj: &Object, names: &[&str]) -> Result<Option<u32>, PlanError> {
    let Some((name, value)) = field(obj, names) else {
        return Ok(None);
    };
    // Far above any published model (the largest vocabularies and contexts are ~2^24), and
    // low enough that byte arithmetic on it cannot overflow.
    const LIMIT: u64 = 1 << 24;
    match value.as_u64() {
        Some(n) if n > 0 && n <= LIMIT => Ok(Some(n as u32)),
        _ => Err(PlanError::ConfigBadField {
            field: name.to_string(),
            value: value.to_string(),
            why: format!("expected a positive integer up to {LIMIT}"),
        }),
    }
}

/// A required positive integer field; the error names the field and why it matters.
fn req_u32(obj: &Object, names: &[&str], why: &str) -> Result<u32, PlanError> {
    opt_u32(obj, names)?.ok_or_else(|| PlanError::ConfigMissingField {
        field: names.join(" or "),
        why: why.to_string(),
    })
}

fn opt_bool(obj: &Object, name: &str) -> Option<bool> {
    obj.get(name).and_then(Value::as_bool)
}

fn bad(field: &str, value: impl ToString, why: impl ToString) -> PlanError {
    PlanError::ConfigBadField {
        field: field.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// The object that describes the language model: `text_config` when nested (Gemma-3,
/// multimodal configs), with the outer object's fields as fallback.
fn language_model(root: &Object) -> Object {
    match root.get("text_config").and_then(Value::as_object) {
        Some(text) => {
            let mut merged = root.clone();
            merged.remove("text_config");
            for (k, v) in text {
                merged.insert(k.clone(), v.clone());
            }
            merged
        }
        None => root.clone(),
    }
}

/// Attention kind of every layer, from `layer_types`, sliding-window fields or MLA fields.
fn attention_kinds(obj: &Object, layers: u32) -> Result<Vec<AttentionKind>, PlanError> {
    if let Some(rank) = opt_u32(obj, &["kv_lora_rank"])? {
        let rope = req_u32(
            obj,
            &["qk_rope_head_dim"],
            "MLA caches kv_lora_rank + qk_rope_head_dim per token",
        )?;
        return Ok(vec![
            AttentionKind::Mla {
                kv_lora_rank: rank,
                rope_dim: rope
            };
            layers as usize
        ]);
    }
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    let window = opt_u32(obj, &["sliding_window"])?;
    let chunk = opt_u32(obj, &["attention_chunk_size"])?;
    let sliding = |w: Option<u32>, why: &str| {
        w.map(|window| AttentionKind::Sliding { window })
            .ok_or_else(|| PlanError::ConfigMissingField {
                field: "sliding_window".to_string(),
                why: why.to_string(),
            })
    };
    if let Some(types) = obj.get("layer_types").filter(|v| !v.is_null()) {
        let list = types
            .as_array()
            .ok_or_else(|| bad("layer_types", types, "expected a list of layer type names"))?;
        if list.len() != layers as usize {
            return Err(bad(
                "layer_types",
                format!("a list of {}", list.len()),
                format!("it must name one type per layer ({layers} layers)"),
            ));
        }
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") | Some("global_attention") | Some("attention") => {
                    Ok(AttentionKind::Full)
                }
                Some("sliding_attention") | Some("local_attention") => {
                    sliding(window, "layer_types lists sliding_attention layers")
                }
                Some("chunked_attention") => chunk
                    .map(|chunk| AttentionKind::Chunked { chunk })
                    .ok_or_else(|| PlanError::ConfigMissingField {
                        field: "attention_chunk_size".to_string(),
                        why: "layer_types lists chunked_attention layers".to_string(),
                    }),
                // Recurrent-state layers: their state is read by `state_layers`.
                Some("linear_attention") | Some("mamba") => Ok(AttentionKind::NoAttention),
                _ => Err(bad(
                    "layer_types",
                    t,
                    "expected full_attention, sliding_attention, chunked_attention, linear_attention or mamba",
                )),
            })
            .collect();
    }
    if let Some(chunk) = chunk {
        return chunked_layers(obj, layers, chunk, model_type);
    }
    let full = vec![AttentionKind::Full; layers as usize];
    // Qwen2/Qwen3 carry sliding_window but switch it off.
    if opt_bool(obj, "use_sliding_window") == Some(false) {
        return Ok(full);
    }
    let Some(w) = window else {
        return Ok(full);
    };
    let slide = AttentionKind::Sliding { window: w };
    let pattern = opt_u32(obj, &["sliding_window_pattern"])?.or(match model_type {
        "gemma3" | "gemma3_text" => Some(6),
        _ => None,
    });
    if let Some(p) = pattern {
        // Gemma-3: every p-th layer is global, the others local.
        return Ok((0..layers)
            .map(|i| {
                if (i + 1) % p == 0 {
                    AttentionKind::Full
                } else {
                    slide
                }
            })
            .collect());
    }
    if model_type == "gemma2" {
        // Gemma-2 alternates, starting with a local (sliding) layer.
        return Ok((0..layers)
            .map(|i| {
                if i % 2 == 0 {
                    slide
                } else {
                    AttentionKind::Full
                }
            })
            .collect());
    }
    if opt_bool(obj, "use_sliding_window") == Some(true) {
        if let Some(first) = opt_u32(obj, &["max_window_layers"])? {
            // Qwen2 with sliding on: layers from max_window_layers up slide.
            return Ok((0..layers)
                .map(|i| {
                    if i >= first {
                        slide
                    } else {
                        AttentionKind::Full
                    }
                })
                .collect());
        }
    }
    Ok(vec![slide; layers as usize])
}

/// Llama-4 chunked local attention (transformers' Llama4TextConfig, vLLM's Llama4Attention):
/// a layer with RoPE (`no_rope_layers[i] == 1`) attends within chunks of `chunk` tokens, a
/// NoPE layer (`0`) to every earlier token. An absent or empty list is the configuration
/// class's default: every `no_rope_layer_interval`-th layer (4) is NoPE.
fn chunked_layers(
    obj: &Object,
    layers: u32,
    chunk: u32,
    model_type: &str,
) -> Result<Vec<AttentionKind>, PlanError> {
    let chunked = AttentionKind::Chunked { chunk };
    let listed = obj.get("no_rope_layers").filter(|v| !v.is_null());
    let rope: Vec<bool> = match listed {
        Some(v) if v.as_array().is_some_and(|l| !l.is_empty()) => {
            let list = v.as_array().map(Vec::as_slice).unwrap_or_default();
            if list.len() != layers as usize {
                return Err(bad(
                    "no_rope_layers",
                    format!("a list of {}", list.len()),
                    format!("it must give one 0 (NoPE, full attention) or 1 (RoPE, chunked) per layer ({layers} layers)"),
                ));
            }
            list.iter()
                .map(|x| match x.as_u64() {
                    Some(0) => Ok(false),
                    Some(1) => Ok(true),
                    _ => Err(bad(
                        "no_rope_layers",
                        x,
                        "expected 0 (NoPE, full attention) or 1 (RoPE, chunked)",
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        Some(v) if !v.is_array() => {
            return Err(bad("no_rope_layers", v, "expected a list of 0/1 per layer"))
        }
        _ if model_type.starts_with("llama4") => {
            let every = opt_u32(obj, &["no_rope_layer_interval"])?.unwrap_or(4);
            (0..layers).map(|i| (i + 1) % every != 0).collect()
        }
        _ => {
            return Err(PlanError::ConfigMissingField {
                field: "no_rope_layers".to_string(),
                why: format!(
                    "attention_chunk_size is given but model_type '{model_type}' documents no rule for which layers are chunked; list them in no_rope_layers or layer_types"
                ),
            })
        }
    };
    Ok(rope
        .into_iter()
        .map(|r| if r { chunked } else { AttentionKind::Full })
        .collect())
}

/// Families whose config may give `full_attention_interval` without `layer_types`: their
/// configuration class documents the rule (transformers' Qwen3NextConfig / Qwen3_5TextConfig:
/// layer i is full attention when (i + 1) % interval == 0, linear attention otherwise).
const INTERVAL_FAMILIES: &[&str] = &[
    "qwen3_next",
    "qwen3_5",
    "qwen3_5_text",
    "qwen3_5_moe",
    "qwen3_5_moe_text",
];

/// Refuses a `torch_dtype` / `dtype` that names no dtype a checkpoint is stored in: the
/// weights and any recurrent state are sized from it.
fn check_dtype(obj: &Object) -> Result<(), PlanError> {
    // Besides the 16- and 32-bit names StateDtype reads: PyTorch's `float`, fp8 checkpoints'
    // element types, and `auto`.
    const OTHERS: &[&str] = &["float", "auto", "float8_e4m3fn", "float8_e5m2"];
    for key in ["torch_dtype", "dtype"] {
        let Some(v) = obj.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let known = v.as_str().is_some_and(|t| {
            StateDtype::from_config(t).is_some()
                || OTHERS.contains(&t.trim().to_ascii_lowercase().as_str())
        });
        if !known {
            return Err(bad(key, v, "expected bfloat16, float16 or float32"));
        }
    }
    Ok(())
}

/// The model dtype a config states (`torch_dtype`, or `dtype` in newer configs); bf16 if none.
fn model_dtype(obj: &Object) -> StateDtype {
    ["torch_dtype", "dtype"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .and_then(StateDtype::from_config)
        .unwrap_or(StateDtype::Bf16)
}

/// A state dimension the state layers need; its absence is refused by name.
fn state_dim(obj: &Object, names: &[&str], mixer: &str) -> Result<u32, PlanError> {
    req_u32(
        obj,
        names,
        &format!("the {mixer} layers' per-sequence state depends on it"),
    )
}

/// The gated delta-net mixer of Qwen3-Next / Qwen3.5 linear-attention layers.
fn gated_delta_net(obj: &Object) -> Result<StateMixer, PlanError> {
    let m = "linear_attention";
    Ok(StateMixer::GatedDeltaNet {
        key_heads: state_dim(obj, &["linear_num_key_heads"], m)?,
        value_heads: state_dim(obj, &["linear_num_value_heads"], m)?,
        key_head_dim: state_dim(obj, &["linear_key_head_dim"], m)?,
        value_head_dim: state_dim(obj, &["linear_value_head_dim"], m)?,
        conv_kernel: state_dim(obj, &["linear_conv_kernel_dim"], m)?,
    })
}

/// The Mamba-2 mixer, reading the spellings of Nemotron-H (`mamba_num_heads`,
/// `ssm_state_size`, `n_groups`, `conv_kernel`) and of Falcon-H1 / Granite-4 (`mamba_n_heads`,
/// `mamba_d_state`, `mamba_n_groups`, `mamba_d_conv`). The inner width is heads x head_dim
/// (vLLM's nemotron_h.py), or Falcon-H1's `mamba_d_ssm`, or mamba_expand x hidden_size.
fn mamba2(obj: &Object, hidden: u32) -> Result<StateMixer, PlanError> {
    let m = "Mamba-2";
    let heads = state_dim(obj, &["mamba_num_heads", "mamba_n_heads"], m)?;
    // Bamba's and Granite-4's configs may say "auto": mamba_expand x hidden_size / heads.
    let auto = obj.get("mamba_d_head").and_then(Value::as_str) == Some("auto");
    let head_dim = match (auto, opt_u32(obj, &["mamba_expand"])?) {
        (true, Some(e)) => (e.saturating_mul(hidden) / heads).max(1),
        _ => state_dim(obj, &["mamba_head_dim", "mamba_d_head"], m)?,
    };
    let intermediate = match opt_u32(obj, &["mamba_d_ssm"])? {
        Some(d) => d,
        None => match opt_u32(obj, &["mamba_expand"])? {
            Some(e) if obj.get("mamba_num_heads").is_none() => e.saturating_mul(hidden),
            _ => heads.saturating_mul(head_dim),
        },
    };
    Ok(StateMixer::Mamba2 {
        intermediate,
        n_groups: state_dim(obj, &["n_groups", "mamba_n_groups", "mamba_num_groups"], m)?,
        heads,
        head_dim,
        state_size: state_dim(obj, &["ssm_state_size", "mamba_d_state"], m)?,
        conv_kernel: state_dim(obj, &["conv_kernel", "mamba_d_conv"], m)?,
    })
}

/// The Mamba-1 mixer of Jamba: inner width mamba_expand x hidden_size.
fn mamba1(obj: &Object, hidden: u32) -> Result<StateMixer, PlanError> {
    let m = "Mamba";
    Ok(StateMixer::Mamba1 {
        intermediate: state_dim(obj, &["mamba_expand"], m)?.saturating_mul(hidden),
        state_size: state_dim(obj, &["mamba_d_state"], m)?,
        conv_kernel: state_dim(obj, &["mamba_d_conv"], m)?,
    })
}

fn state(obj: &Object, mixer: StateMixer, layers: Vec<u32>) -> Option<RecurrentState> {
    let dtype = model_dtype(obj);
    // vLLM's Qwen3_5ForConditionalGenerationConfig.verify_and_update_config takes the
    // config's `mamba_ssm_dtype` as mamba_ssm_cache_dtype (when left on auto).
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    let ssm = obj
        .get("mamba_ssm_dtype")
        .and_then(Value::as_str)
        .filter(|_| model_type.starts_with("qwen3_5"))
        .and_then(StateDtype::from_config)
        .unwrap_or(dtype);
    (!layers.is_empty()).then_some(RecurrentState {
        mixer,
        layers,
        conv_dtype: dtype,
        ssm_dtype: ssm,
    })
}

/// `kinds` with the state of its layers without attention, whose mixer `mixer` reads from
/// the config only when there are such layers (a config without them need not describe one).
fn with_state(
    obj: &Object,
    kinds: Vec<AttentionKind>,
    mixer: impl FnOnce() -> Result<StateMixer, PlanError>,
) -> Result<Layers, PlanError> {
    let stateful = no_attention(&kinds);
    if stateful.is_empty() {
        return Ok((kinds, None));
    }
    let mixer = mixer()?;
    Ok((kinds, state(obj, mixer, stateful)))
}

/// Indices of the layers of `kinds` that have no attention.
fn no_attention(kinds: &[AttentionKind]) -> Vec<u32> {
    (0..kinds.len() as u32)
        .filter(|i| kinds[*i as usize] == AttentionKind::NoAttention)
        .collect()
}

type Layers = (Vec<AttentionKind>, Option<RecurrentState>);

/// Nemotron-H: one character per layer, `M` Mamba-2, `*` attention, `-` MLP, `E` MoE.
fn nemotron_h(
    obj: &Object,
    pattern: &Value,
    layers: u32,
    hidden: u32,
) -> Result<Layers, PlanError> {
    let text = pattern.as_str().ok_or_else(|| {
        bad(
            "hybrid_override_pattern",
            pattern,
            "expected a string such as \"M-M*-\"",
        )
    })?;
    if text.chars().count() != layers as usize {
        return Err(bad(
            "hybrid_override_pattern",
            format!("of {} characters", text.chars().count()),
            format!("it must name one layer kind per layer ({layers} layers)"),
        ));
    }
    let mut kinds = Vec::with_capacity(layers as usize);
    let mut mamba = Vec::new();
    for (i, c) in text.chars().enumerate() {
        kinds.push(match c {
            '*' => AttentionKind::Full,
            'M' => {
                mamba.push(i as u32);
                AttentionKind::NoAttention
            }
            '-' | 'E' => AttentionKind::NoAttention,
            other => {
                return Err(bad(
                    "hybrid_override_pattern",
                    format!("'{other}' at layer {i}"),
                    "expected M (Mamba-2), * (attention), - (MLP) or E (MoE)",
                ))
            }
        });
    }
    let mixer = if mamba.is_empty() {
        None
    } else {
        Some(mamba2(obj, hidden)?)
    };
    Ok((kinds, mixer.and_then(|m| state(obj, m, mamba))))
}

/// Jamba: `layers_block_type` when given, else attention at i % attn_layer_period ==
/// attn_layer_offset (transformers' JambaConfig), Mamba-1 elsewhere.
fn jamba(obj: &Object, layers: u32, hidden: u32) -> Result<Layers, PlanError> {
    let kinds: Vec<AttentionKind> = match obj.get("layers_block_type").filter(|v| !v.is_null()) {
        Some(list) => {
            let list = list
                .as_array()
                .filter(|l| l.len() == layers as usize)
                .ok_or_else(|| {
                    bad(
                        "layers_block_type",
                        list,
                        format!("expected one of attention/mamba per layer ({layers} layers)"),
                    )
                })?;
            list.iter()
                .map(|t| match t.as_str() {
                    Some("attention") => Ok(AttentionKind::Full),
                    Some("mamba") => Ok(AttentionKind::NoAttention),
                    _ => Err(bad("layers_block_type", t, "expected attention or mamba")),
                })
                .collect::<Result<_, _>>()?
        }
        None => {
            let why =
                "Jamba places attention at layer i when i % attn_layer_period == attn_layer_offset";
            let period = req_u32(obj, &["attn_layer_period"], why)?;
            let offset =
                match field(obj, &["attn_layer_offset"]) {
                    Some((_, v)) => v.as_u64().filter(|o| *o < period as u64).ok_or_else(|| {
                        bad("attn_layer_offset", v, format!("expected 0..{period}"))
                    })? as u32,
                    None => {
                        return Err(PlanError::ConfigMissingField {
                            field: "attn_layer_offset".to_string(),
                            why: why.to_string(),
                        })
                    }
                };
            (0..layers)
                .map(|i| {
                    if i % period == offset {
                        AttentionKind::Full
                    } else {
                        AttentionKind::NoAttention
                    }
                })
                .collect()
        }
    };
    with_state(obj, kinds, || mamba1(obj, hidden))
}

/// Bamba: attention on the layers `attn_layer_indices` lists, Mamba-2 on the others
/// (transformers' BambaConfig.layers_block_type, vLLM's bamba.py).
fn indexed_attention(
    obj: &Object,
    list: &Value,
    layers: u32,
    hidden: u32,
) -> Result<Layers, PlanError> {
    let why = format!("expected a list of distinct layer indices below {layers}");
    let indices = list
        .as_array()
        .ok_or_else(|| bad("attn_layer_indices", list, &why))?;
    let mut kinds = vec![AttentionKind::NoAttention; layers as usize];
    for i in indices {
        let at = i
            .as_u64()
            .filter(|n| *n < layers as u64)
            .ok_or_else(|| bad("attn_layer_indices", i, &why))? as usize;
        if kinds[at] == AttentionKind::Full {
            return Err(bad("attn_layer_indices", i, &why));
        }
        kinds[at] = AttentionKind::Full;
    }
    with_state(obj, kinds, || mamba2(obj, hidden))
}

/// MiniMax-Text-01 / MiniMax-M1 `attn_type_list`: 1 softmax attention, 0 lightning (linear)
/// attention, whose state is a head_dim x head_dim matrix per head in the model dtype
/// (vLLM's minimax_text_01.py, `MambaStateDtypeCalculator.linear_attention_state_dtype`).
fn lightning(obj: &Object, list: &Value, layers: u32, hidden: u32) -> Result<Layers, PlanError> {
    let why =
        format!("expected one 0 (lightning) or 1 (softmax attention) per layer ({layers} layers)");
    let types = list
        .as_array()
        .filter(|l| l.len() == layers as usize)
        .ok_or_else(|| bad("attn_type_list", list, &why))?;
    let kinds = types
        .iter()
        .map(|t| match t.as_u64() {
            Some(1) => Ok(AttentionKind::Full),
            Some(0) => Ok(AttentionKind::NoAttention),
            _ => Err(bad("attn_type_list", t, &why)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    with_state(obj, kinds, || lightning_mixer(obj, hidden))
}

/// The lightning-attention mixer: one state per attention head of `head_dim`.
fn lightning_mixer(obj: &Object, hidden: u32) -> Result<StateMixer, PlanError> {
    let heads = req_u32(
        obj,
        &["num_attention_heads"],
        "the lightning layers keep one state per head",
    )?;
    let head_dim = match opt_u32(obj, &["head_dim"])? {
        Some(d) => d,
        None => hidden / heads.max(1),
    };
    Ok(StateMixer::Lightning { heads, head_dim })
}

/// Gemma-3n `num_kv_shared_layers`: the last N layers reuse the KV of the last earlier
/// layer of their own type (transformers' Gemma3nTextAttention), so they cache nothing.
fn share_kv(obj: &Object, kinds: &mut [AttentionKind]) -> Result<(), PlanError> {
    let Some(shared) = opt_u32(obj, &["num_kv_shared_layers"])? else {
        return Ok(());
    };
    let n = kinds.len() as u32;
    if shared >= n {
        return Err(bad(
            "num_kv_shared_layers",
            shared,
            format!("at least one of the {n} layers must store its own KV"),
        ));
    }
    let first = (n - shared) as usize;
    for i in first..kinds.len() {
        let same =
            |k: &AttentionKind| std::mem::discriminant(k) == std::mem::discriminant(&kinds[i]);
        let source = kinds[..first].iter().rposition(same).ok_or_else(|| {
            bad(
                "num_kv_shared_layers",
                shared,
                format!("layer {i} has no earlier layer of its kind to share KV with"),
            )
        })?;
        kinds[i] = AttentionKind::SharedKv {
            source: source as u32,
        };
    }
    Ok(())
}

/// Attention kind of every layer and the model's state layers, by its family's rule; a
/// config whose layer kinds cannot be decided is refused naming the missing key.
fn layer_kinds(obj: &Object, layers: u32, hidden: u32) -> Result<Layers, PlanError> {
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    let has_types = obj.get("layer_types").is_some_and(|v| !v.is_null());
    if let Some(pattern) = obj.get("hybrid_override_pattern").filter(|v| !v.is_null()) {
        return nemotron_h(obj, pattern, layers, hidden);
    }
    if model_type == "jamba" || obj.contains_key("attn_layer_period") {
        return jamba(obj, layers, hidden);
    }
    if let Some(list) = obj.get("attn_layer_indices").filter(|v| !v.is_null()) {
        return indexed_attention(obj, list, layers, hidden);
    }
    if let Some(list) = obj.get("attn_type_list").filter(|v| !v.is_null()) {
        return lightning(obj, list, layers, hidden);
    }
    if model_type == "falcon_h1" {
        // A parallel hybrid: every layer runs attention and a Mamba-2 mixer side by side.
        let kinds = attention_kinds(obj, layers)?;
        let st = state(obj, mamba2(obj, hidden)?, (0..layers).collect());
        return Ok((kinds, st));
    }
    let interval = opt_u32(obj, &["full_attention_interval"])?;
    let linear_keys = obj.keys().any(|k| k.starts_with("linear_num_"));
    let mut kinds = match interval {
        Some(every) if !has_types && every > layers => {
            return Err(bad(
                "full_attention_interval",
                every,
                format!("it leaves none of the {layers} layers with attention; expected at most {layers}"),
            ))
        }
        Some(every) if !has_types => {
            if !INTERVAL_FAMILIES.contains(&model_type) {
                return Err(PlanError::ConfigMissingField {
                    field: "layer_types".to_string(),
                    why: format!(
                        "full_attention_interval is given but model_type '{model_type}' documents no rule for it; list every layer's type"
                    ),
                });
            }
            (0..layers)
                .map(|i| {
                    if (i + 1) % every == 0 {
                        AttentionKind::Full
                    } else {
                        AttentionKind::NoAttention
                    }
                })
                .collect()
        }
        None if linear_keys && !has_types => {
            return Err(PlanError::ConfigMissingField {
                field: "layer_types".to_string(),
                why: "linear-attention dimensions are given but not which layers are linear; give layer_types or full_attention_interval".to_string(),
            })
        }
        _ => attention_kinds(obj, layers)?,
    };
    share_kv(obj, &mut kinds)?;
    let types = obj.get("layer_types").and_then(Value::as_array);
    let mamba_typed = types.is_some_and(|t| t.iter().any(|x| x.as_str() == Some("mamba")));
    with_state(obj, kinds, || {
        if mamba_typed {
            mamba2(obj, hidden)
        } else if model_type.starts_with("minimax") {
            // transformers' MiniMaxConfig names the lightning layers linear_attention.
            lightning_mixer(obj, hidden)
        } else {
            gated_delta_net(obj)
        }
    })
}

/// Parameters of the model, estimated from its shape (embeddings, attention, MLP or experts);
/// returns (total, active per token).
/// (dense-MLP layers, MoE layers): Nemotron-H's `-` and `E` layers, Jamba's experts every
/// `expert_layer_period` layers, DeepSeek's dense first `first_k_dense_replace` layers.
fn mlp_layers(obj: &Object, shape: &ModelShape) -> Result<(f64, f64), PlanError> {
    let layers = shape.layers;
    if let Some(p) = obj.get("hybrid_override_pattern").and_then(Value::as_str) {
        let count = |c: char| p.chars().filter(|x| *x == c).count() as f64;
        return Ok((count('-'), count('E')));
    }
    let has_experts = opt_u32(
        obj,
        &["n_routed_experts", "num_local_experts", "num_experts"],
    )?
    .is_some_and(|n| n > 1);
    if !has_experts {
        return Ok((layers as f64, 0.0));
    }
    if let Some(step) = opt_u32(obj, &["interleave_moe_layer_step"])? {
        // Llama-4: experts on layer i when (i + 1) % step == 0 (vLLM's Llama4DecoderLayer).
        let moe = (0..layers).filter(|i| (i + 1) % step == 0).count() as f64;
        return Ok((layers as f64 - moe, moe));
    }
    if let Some(period) = opt_u32(obj, &["expert_layer_period"])? {
        let offset = opt_u32(obj, &["expert_layer_offset"])?.unwrap_or(0);
        let moe = (0..layers).filter(|i| i % period == offset).count() as f64;
        return Ok((layers as f64 - moe, moe));
    }
    let dense = opt_u32(obj, &["first_k_dense_replace"])?
        .unwrap_or(0)
        .min(layers) as f64;
    Ok((dense, layers as f64 - dense))
}

/// The routed experts a config describes (None for a dense model).
fn moe_shape(obj: &Object, shape: &ModelShape) -> Result<Option<MoeShape>, PlanError> {
    let experts = opt_u32(
        obj,
        &["n_routed_experts", "num_local_experts", "num_experts"],
    )?;
    let Some(experts) = experts.filter(|n| *n > 1) else {
        return Ok(None);
    };
    let per_token = opt_u32(
        obj,
        &[
            "num_experts_per_tok",
            "experts_per_token",
            "num_experts_per_token",
        ],
    )?
    .unwrap_or(2);
    let (_, moe_layers) = mlp_layers(obj, shape)?;
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    let mats = if model_type == "nemotron_h" { 2.0 } else { 3.0 };
    Ok(Some(MoeShape {
        experts,
        per_token: per_token.min(experts),
        layers: moe_layers as u32,
        expert_params: mats * shape.hidden as f64 * shape.intermediate as f64,
    }))
}

/// Parameters of one state layer's mixer (input and output projections, conv, per-head
/// scalars), for the parameter estimate.
fn mixer_params(obj: &Object, mixer: &StateMixer, h: f64) -> f64 {
    match *mixer {
        StateMixer::GatedDeltaNet {
            key_heads,
            value_heads,
            key_head_dim,
            value_head_dim,
            conv_kernel,
        } => {
            let (nk, nv) = (key_heads as f64, value_heads as f64);
            let (dk, dv) = (key_head_dim as f64, value_head_dim as f64);
            let conv_dim = 2.0 * nk * dk + nv * dv;
            // in_proj_qkvz + in_proj_ba, conv1d, out_proj.
            h * (2.0 * nk * dk + 2.0 * nv * dv + 2.0 * nv)
                + conv_dim * conv_kernel as f64
                + nv * dv * h
        }
        StateMixer::Mamba2 {
            intermediate,
            n_groups,
            heads,
            state_size,
            conv_kernel,
            ..
        } => {
            let d = intermediate as f64;
            let conv_dim = d + 2.0 * n_groups as f64 * state_size as f64;
            // in_proj (z, x, B, C, dt), conv1d, out_proj.
            h * (d + conv_dim + heads as f64) + conv_dim * conv_kernel as f64 + d * h
        }
        StateMixer::Lightning { heads, head_dim } => {
            // qkv, output gate and out projections of heads x head_dim.
            5.0 * h * heads as f64 * head_dim as f64
        }
        StateMixer::Mamba1 {
            intermediate,
            state_size,
            conv_kernel,
        } => {
            let d = intermediate as f64;
            let dt_rank = obj
                .get("mamba_dt_rank")
                .and_then(Value::as_u64)
                .map_or((h / 16.0).ceil(), |r| r as f64);
            // in_proj (x, z), conv1d, x_proj (dt, B, C), dt_proj, A, out_proj.
            h * 2.0 * d
                + d * conv_kernel as f64
                + d * (dt_rank + 2.0 * state_size as f64)
                + dt_rank * d
                + d * state_size as f64
                + d * h
        }
    }
}

fn estimate_params(obj: &Object, shape: &ModelShape, vocab: u32) -> Result<(f64, f64), PlanError> {
    let h = shape.hidden as f64;
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    // transformers' defaults: these families tie input and output embeddings unless told.
    let tied_default = matches!(
        model_type,
        "gpt2" | "opt" | "falcon" | "gemma" | "gemma2" | "gemma3" | "gemma3_text"
    );
    let tied = opt_bool(obj, "tie_word_embeddings").unwrap_or(tied_default);
    let embed = vocab as f64 * h * if tied { 1.0 } else { 2.0 };
    let q_heads = shape.q_heads as f64;
    let attn = match shape.layer_kinds.first() {
        Some(AttentionKind::Mla {
            kv_lora_rank,
            rope_dim,
        }) => {
            let nope = opt_u32(obj, &["qk_nope_head_dim"])?.unwrap_or(128) as f64;
            let v_dim = opt_u32(obj, &["v_head_dim"])?.unwrap_or(128) as f64;
            let rank = *kv_lora_rank as f64;
            let q_proj = match opt_u32(obj, &["q_lora_rank"])? {
                Some(q_rank) => {
                    h * q_rank as f64 + q_rank as f64 * q_heads * (nope + *rope_dim as f64)
                }
                None => h * q_heads * (nope + *rope_dim as f64),
            };
            q_proj
                + h * (rank + *rope_dim as f64)
                + rank * q_heads * (nope + v_dim)
                + q_heads * v_dim * h
        }
        _ => {
            let d = shape.head_dim as f64;
            h * d * (2.0 * q_heads + 2.0 * shape.kv_heads as f64)
        }
    };
    // GPT-2, OPT and Falcon have a plain two-matrix MLP; the others a gated three-matrix one.
    let mats = if matches!(
        model_type,
        "gpt2" | "opt" | "falcon" | "gpt_neox" | "nemotron_h"
    ) {
        2.0
    } else {
        3.0
    };
    // Llama-4 names its dense layers' width intermediate_size_mlp (intermediate_size is
    // the experts').
    let dense_inter = opt_u32(
        obj,
        &[
            "intermediate_size_mlp",
            "intermediate_size",
            "ffn_dim",
            "n_inner",
        ],
    )?
    .map_or(4.0 * h, f64::from);
    let experts = opt_u32(
        obj,
        &["n_routed_experts", "num_local_experts", "num_experts"],
    )?;
    let (dense_mlp_layers, moe_layers) = mlp_layers(obj, shape)?;
    // Qwen-style shared expert of its own width, beside the routed ones.
    let shared_expert =
        opt_u32(obj, &["shared_expert_intermediate_size"])?.map_or(0.0, |w| mats * h * w as f64);
    let (mlp_total, mlp_active) = match experts {
        Some(n) if n > 1 => {
            let per_tok = opt_u32(
                obj,
                &[
                    "num_experts_per_tok",
                    "experts_per_token",
                    "num_experts_per_token",
                ],
            )?
            .unwrap_or(2) as f64;
            // Llama-4's MoE layers run one shared expert of the experts' width.
            let shared = opt_u32(obj, &["n_shared_experts"])?
                .unwrap_or(u32::from(model_type.starts_with("llama4")))
                as f64;
            let expert = mats * h * shape.intermediate as f64;
            let dense = dense_mlp_layers * mats * h * dense_inter;
            (
                dense + moe_layers * (expert * (n as f64 + shared) + shared_expert),
                dense + moe_layers * (expert * (per_tok + shared) + shared_expert),
            )
        }
        _ => {
            let m = (dense_mlp_layers + moe_layers) * mats * h * shape.intermediate as f64;
            (m, m)
        }
    };
    // Attention projections only where a layer attends; state mixers where they run.
    let attn_layers = shape
        .layer_kinds
        .iter()
        .filter(|k| **k != AttentionKind::NoAttention)
        .count() as f64;
    let mixers = shape.state.as_ref().map_or(0.0, |st| {
        st.layers.len() as f64 * mixer_params(obj, &st.mixer, h)
    });
    // Gemma-3n's per-layer embeddings: a vocab_size_per_layer_input x
    // hidden_size_per_layer_input table for every layer.
    let per_layer_embed = match (
        opt_u32(obj, &["vocab_size_per_layer_input"])?,
        opt_u32(obj, &["hidden_size_per_layer_input"])?,
    ) {
        (Some(v), Some(d)) => v as f64 * d as f64 * shape.layers as f64,
        _ => 0.0,
    };
    let base = embed + per_layer_embed + attn_layers * attn + mixers;
    Ok((base + mlp_total, base + mlp_active))
}

/// The model's KV heads as vLLM counts them (`ModelConfig.get_total_num_kv_heads`, the
/// same rule from v0.4 to v0.11): one where `multi_query` is set, except for Falcon's new
/// decoder architecture; MPT's and DBRX's `attn_config.kv_n_heads`; else the first of
/// `n_head_kv`, `num_kv_heads` (Falcon), `num_key_value_heads` (Llama) and
/// `multi_query_group_num` (ChatGLM, GLM-4: two groups, where counting every query head
/// would size the cache 16× too large); else one per query head.
pub(crate) fn kv_heads(obj: &Object, q_heads: u32) -> Result<u32, PlanError> {
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    let falcon = matches!(model_type, "falcon" | "RefinedWeb" | "RefinedWebModel");
    let new_falcon = falcon && opt_bool(obj, "new_decoder_architecture") == Some(true);
    if !new_falcon && opt_bool(obj, "multi_query") == Some(true) {
        return Ok(1);
    }
    if matches!(model_type, "mpt" | "dbrx") {
        let attn = obj.get("attn_config").and_then(Value::as_object);
        if let Some(kv) = attn
            .map(|a| opt_u32(a, &["kv_n_heads"]))
            .transpose()?
            .flatten()
        {
            return Ok(kv);
        }
        return Ok(q_heads);
    }
    let named = &[
        "n_head_kv",
        "num_kv_heads",
        "num_key_value_heads",
        "multi_query_group_num",
    ];
    Ok(opt_u32(obj, named)?.unwrap_or(q_heads))
}

/// Families whose every layer is a recurrence (state-space or linear attention): they keep a
/// fixed-size state per sequence and no KV cache, so there is nothing here to size. Hybrids
/// (Jamba, Nemotron-H, Qwen3-Next) have attention layers and are read as usual.
const ATTENTION_FREE: &[&str] = &[
    "mamba",
    "mamba2",
    "falcon_mamba",
    "rwkv",
    "rwkv5",
    "rwkv6",
    "rwkv7",
    "xlstm",
    "retnet",
];

fn refuse_attention_free(obj: &Object) -> Result<(), PlanError> {
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    match ATTENTION_FREE.contains(&model_type) {
        true => Err(PlanError::NoAttention(model_type.to_string())),
        false => Ok(()),
    }
}

/// Reads a Hugging Face config.json (as text) into a [`ModelInfo`] named `name`; parameter
/// counts are estimated from the shape.
pub fn parse_config(text: &str, name: &str) -> Result<ModelInfo, PlanError> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| PlanError::ConfigJson(e.to_string()))?;
    let root = root
        .as_object()
        .ok_or_else(|| PlanError::ConfigJson("the top level is not a JSON object".to_string()))?;
    if let Some(text) = root
        .get("text_config")
        .filter(|v| !v.is_null() && !v.is_object())
    {
        return Err(bad(
            "text_config",
            text,
            "expected an object holding the language model's fields",
        ));
    }
    let obj = language_model(root);
    refuse_attention_free(&obj)?;
    check_dtype(&obj)?;
    let layers = req_u32(
        &obj,
        &["num_hidden_layers", "n_layer", "num_layers", "n_layers"],
        "every layer holds its own cache",
    )?;
    if layers > MAX_LAYERS {
        return Err(bad(
            "num_hidden_layers",
            layers,
            format!("more than {MAX_LAYERS} layers is not a real model"),
        ));
    }
    let q_heads = req_u32(
        &obj,
        &["num_attention_heads", "n_head", "num_heads", "n_heads"],
        "the query heads set head_dim and the GQA group",
    )?;
    let hidden = req_u32(
        &obj,
        &["hidden_size", "n_embd", "d_model"],
        "the model width",
    )?;
    let kv_heads = kv_heads(&obj, q_heads)?;
    if q_heads % kv_heads != 0 {
        return Err(bad(
            "num_key_value_heads",
            kv_heads,
            format!("it must divide num_attention_heads = {q_heads}"),
        ));
    }
    let mla_q_dim = match (
        opt_u32(&obj, &["qk_nope_head_dim"])?,
        opt_u32(&obj, &["qk_rope_head_dim"])?,
    ) {
        (Some(nope), Some(rope)) => Some(nope.saturating_add(rope)),
        _ => None,
    };
    let head_dim = match opt_u32(&obj, &["head_dim"])?.or(mla_q_dim) {
        Some(d) => d,
        None if hidden % q_heads == 0 => hidden / q_heads,
        None => {
            return Err(PlanError::ConfigMissingField {
                field: "head_dim".to_string(),
                why: format!(
                    "hidden_size {hidden} is not a multiple of num_attention_heads {q_heads}"
                ),
            })
        }
    };
    let intermediate = opt_u32(
        &obj,
        &[
            "moe_intermediate_size",
            "intermediate_size",
            "ffn_dim",
            "n_inner",
            "ffn_hidden_size",
        ],
    )?
    .unwrap_or(hidden.saturating_mul(4));
    let mut shape = ModelShape::uniform(
        name,
        layers,
        q_heads,
        kv_heads,
        head_dim,
        hidden,
        intermediate,
    );
    shape.v_head_dim = opt_u32(&obj, &["v_head_dim"])?.filter(|v| *v != head_dim);
    let (kinds, state) = layer_kinds(&obj, layers, hidden)?;
    shape.layer_kinds = kinds;
    shape.state = state;
    let vocab = opt_u32(&obj, &["vocab_size"])?.unwrap_or(0);
    let (params, active_params) = estimate_params(&obj, &shape, vocab)?;
    let max_context = opt_u32(
        &obj,
        &["max_position_embeddings", "n_positions", "seq_length"],
    )?
    .unwrap_or(0);
    let moe = moe_shape(&obj, &shape)?;
    Ok(ModelInfo {
        moe,
        key: name.to_string(),
        hf_id: name.to_string(),
        aliases: Vec::new(),
        shape,
        params,
        active_params,
        vocab,
        max_context,
        source: format!("config.json '{name}' (parameters estimated from the shape)"),
    })
}
