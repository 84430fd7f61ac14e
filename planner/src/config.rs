//! Reading a Hugging Face config.json into a ModelShape.
//!
//! Field names differ between families (GPT-2's `n_layer`, Falcon's `multi_query`, DeepSeek's
//! MLA fields, Gemma-3's nested `text_config`); unknown fields are ignored and a missing field
//! the cache size depends on is an error naming it.

use serde_json::{Map, Value};

use crate::error::PlanError;
use crate::registry::ModelInfo;
use crate::shape::{AttentionKind, ModelShape};

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
fn layer_kinds(obj: &Object, layers: u32) -> Result<Vec<AttentionKind>, PlanError> {
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
                Some("full_attention") | Some("global_attention") => Ok(AttentionKind::Full),
                Some("sliding_attention") | Some("local_attention") => {
                    sliding(window, "layer_types lists sliding_attention layers")
                }
                _ => Err(bad(
                    "layer_types",
                    t,
                    "expected full_attention or sliding_attention",
                )),
            })
            .collect();
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

/// Parameters of the model, estimated from its shape (embeddings, attention, MLP or experts);
/// returns (total, active per token).
fn estimate_params(obj: &Object, shape: &ModelShape, vocab: u32) -> Result<(f64, f64), PlanError> {
    let h = shape.hidden as f64;
    let layers = shape.layers as f64;
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
    let mats = if matches!(model_type, "gpt2" | "opt" | "falcon" | "gpt_neox") {
        2.0
    } else {
        3.0
    };
    let dense_inter =
        opt_u32(obj, &["intermediate_size", "ffn_dim", "n_inner"])?.map_or(4.0 * h, f64::from);
    let experts = opt_u32(
        obj,
        &["n_routed_experts", "num_local_experts", "num_experts"],
    )?;
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
            let shared = opt_u32(obj, &["n_shared_experts"])?.unwrap_or(0) as f64;
            let expert = mats * h * shape.intermediate as f64;
            let dense_layers = opt_u32(obj, &["first_k_dense_replace"])?
                .unwrap_or(0)
                .min(shape.layers) as f64;
            let moe_layers = layers - dense_layers;
            let dense = dense_layers * mats * h * dense_inter;
            (
                dense + moe_layers * expert * (n as f64 + shared),
                dense + moe_layers * expert * (per_tok + shared),
            )
        }
        _ => {
            let m = layers * mats * h * shape.intermediate as f64;
            (m, m)
        }
    };
    let base = embed + layers * attn;
    Ok((base + mlp_total, base + mlp_active))
}

/// Reads a Hugging Face config.json (as text) into a [`ModelInfo`] named `name`; parameter
/// counts are estimated from the shape.
pub fn parse_config(text: &str, name: &str) -> Result<ModelInfo, PlanError> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| PlanError::ConfigJson(e.to_string()))?;
    let root = root
        .as_object()
        .ok_or_else(|| PlanError::ConfigJson("the top level is not a JSON object".to_string()))?;
    let obj = language_model(root);
    let layers = req_u32(
        &obj,
        &["num_hidden_layers", "n_layer", "num_layers"],
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
        &["num_attention_heads", "n_head", "num_heads"],
        "the query heads set head_dim and the GQA group",
    )?;
    let hidden = req_u32(
        &obj,
        &["hidden_size", "n_embd", "d_model"],
        "the model width",
    )?;
    let kv_heads = match opt_u32(&obj, &["num_key_value_heads", "num_kv_heads", "n_head_kv"])? {
        Some(kv) => kv,
        None if opt_bool(&obj, "multi_query") == Some(true) => 1,
        None => q_heads,
    };
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
    shape.layer_kinds = layer_kinds(&obj, layers)?;
    let vocab = opt_u32(&obj, &["vocab_size"])?.unwrap_or(0);
    let (params, active_params) = estimate_params(&obj, &shape, vocab)?;
    let max_context = opt_u32(
        &obj,
        &["max_position_embeddings", "n_positions", "seq_length"],
    )?
    .unwrap_or(0);
    Ok(ModelInfo {
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
