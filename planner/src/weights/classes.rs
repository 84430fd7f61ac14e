//! Tensor classes of a checkpoint and their parameter counts, from config.json.
//!
//! Each class is stored at its own precision (a 4-bit AWQ model keeps embeddings, norms and
//! lm_head in 16 bits), so weights are counted class by class.

use serde::Serialize;
use serde_json::{Map, Value};

/// What a group of tensors is, as far as quantization treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TensorClass {
    Embedding,
    LmHead,
    Attention,
    DenseMlp,
    RoutedExperts,
    SharedExperts,
    Router,
    Norms,
    Vision,
    Audio,
    /// Tensors a header names that fit no other class (e.g. MTP layers, biases).
    Other,
}

impl TensorClass {
    pub fn name(self) -> &'static str {
        match self {
            TensorClass::Embedding => "embeddings",
            TensorClass::LmHead => "lm_head",
            TensorClass::Attention => "attention",
            TensorClass::DenseMlp => "dense MLP",
            TensorClass::RoutedExperts => "routed experts",
            TensorClass::SharedExperts => "shared experts",
            TensorClass::Router => "router",
            TensorClass::Norms => "norms",
            TensorClass::Vision => "vision tower",
            TensorClass::Audio => "audio tower",
            TensorClass::Other => "other",
        }
    }

    /// Whether the class lives inside the decoder layers (split by pipeline stages).
    pub fn in_layers(self) -> bool {
        matches!(
            self,
            TensorClass::Attention
                | TensorClass::DenseMlp
                | TensorClass::RoutedExperts
                | TensorClass::SharedExperts
                | TensorClass::Router
                | TensorClass::Norms
        )
    }

    /// A module name of this class as Hugging Face checkpoints spell it, for matching
    /// `ignore` / `modules_to_not_convert` lists.
    pub fn sample_names(self) -> &'static [&'static str] {
        match self {
            TensorClass::Embedding => &["model.embed_tokens"],
            TensorClass::LmHead => &["lm_head"],
            TensorClass::Attention => &[
                "model.layers.0.self_attn.q_proj",
                "model.layers.0.self_attn.o_proj",
            ],
            TensorClass::DenseMlp => &[
                "model.layers.0.mlp.gate_proj",
                "model.layers.0.mlp.down_proj",
            ],
            TensorClass::RoutedExperts => &[
                "model.layers.0.mlp.experts.0.gate_proj",
                "model.layers.0.mlp.experts.0.down_proj",
                "model.layers.0.block_sparse_moe.experts.0.w1",
            ],
            TensorClass::SharedExperts => &[
                "model.layers.0.mlp.shared_experts.gate_proj",
                "model.layers.0.mlp.shared_expert.gate_proj",
            ],
            TensorClass::Router => &["model.layers.0.mlp.gate", "model.layers.0.mlp.router"],
            TensorClass::Norms => &["model.layers.0.input_layernorm", "model.norm"],
            TensorClass::Vision => &[
                "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj",
                "model.vision_tower.encoder.layers.0.self_attn.q_proj",
                "visual.blocks.0.attn.qkv",
                "model.visual.blocks.0.attn.qkv",
                "multi_modal_projector.linear_1",
            ],
            TensorClass::Audio => &[
                "audio_tower.layers.0.self_attn.q_proj",
                "model.audio_tower.layers.0.self_attn.q_proj",
            ],
            TensorClass::Other => &[],
        }
    }
}

type Object = Map<String, Value>;

fn num(obj: &Object, names: &[&str]) -> Option<f64> {
    names
        .iter()
        .find_map(|n| obj.get(*n).and_then(Value::as_f64))
        .filter(|v| *v > 0.0)
}

/// The language model's fields: `text_config` (or `llm_config`) merged over the root.
pub fn text_object(root: &Object) -> Object {
    let mut merged = root.clone();
    for key in ["text_config", "llm_config"] {
        if let Some(text) = root.get(key).and_then(Value::as_object) {
            merged.remove(key);
            for (k, v) in text {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    merged
}

/// Parameters of a transformer encoder tower (vision or audio) from its config: attention
/// (4 h²) and MLP (2 or 3 h x inner) per layer, the patch embedding, and the projector into
/// the text model's width.
fn tower_params(cfg: &Object, text_hidden: f64) -> Option<f64> {
    let h = num(cfg, &["hidden_size", "embed_dim", "d_model", "width"])?;
    let layers = num(
        cfg,
        &["num_hidden_layers", "depth", "encoder_layers", "num_layers"],
    )?;
    let inner = num(cfg, &["intermediate_size", "encoder_ffn_dim", "mlp_dim"])
        .or_else(|| num(cfg, &["mlp_ratio"]).map(|r| r * h))
        .unwrap_or(4.0 * h);
    let gated = cfg
        .get("hidden_act")
        .and_then(Value::as_str)
        .is_some_and(|a| a == "silu");
    let mlp = if gated { 3.0 } else { 2.0 } * h * inner;
    let patch = num(cfg, &["patch_size"]).unwrap_or(0.0);
    let channels = num(cfg, &["num_channels", "in_chans", "in_channels"]).unwrap_or(3.0);
    let temporal = num(cfg, &["temporal_patch_size"]).unwrap_or(1.0);
    let image = num(cfg, &["image_size"]).unwrap_or(0.0);
    let positions = if patch > 0.0 && image > 0.0 {
        (image / patch).powi(2) * h
    } else {
        0.0
    };
    let embed = channels * patch * patch * temporal * h + positions;
    let out = num(cfg, &["out_hidden_size", "projection_dim"]).unwrap_or(text_hidden);
    let projector = match num(cfg, &["spatial_merge_size"]) {
        // Qwen2-VL-style merger: an MLP over merge² concatenated patches.
        Some(m) => (m * m * h).powi(2) + m * m * h * out,
        None => h * out,
    };
    Some(layers * (4.0 * h * h + mlp) + embed + projector)
}

/// Parameter count of each class, from a config.json object (multimodal configs included).
/// Classes with no parameters are left out.
pub fn class_params(root: &Object) -> Vec<(TensorClass, f64)> {
    let obj = text_object(root);
    let h = num(&obj, &["hidden_size", "n_embd", "d_model"]).unwrap_or(0.0);
    let layers = num(
        &obj,
        &["num_hidden_layers", "n_layer", "num_layers", "n_layers"],
    )
    .unwrap_or(0.0);
    let vocab = num(&obj, &["vocab_size"]).unwrap_or(0.0);
    let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("");
    let q = num(
        &obj,
        &["num_attention_heads", "n_head", "num_heads", "n_heads"],
    )
    .unwrap_or(1.0);
    // The KV heads as the cache counts them (vLLM's rule: ChatGLM's groups, MPT's kv_n_heads).
    let kv = match crate::config::kv_heads(&obj, q as u32) {
        Ok(kv) if q >= 1.0 => kv as f64,
        _ => q,
    };
    let head_dim = num(&obj, &["head_dim"]).unwrap_or(if q > 0.0 { h / q } else { 0.0 });
    let tied_default = matches!(
        model_type,
        "gpt2" | "opt" | "falcon" | "gemma" | "gemma2" | "gemma3" | "gemma3_text"
    );
    let tied = obj
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .or_else(|| root.get("tie_word_embeddings").and_then(Value::as_bool))
        .unwrap_or(tied_default);
    let mut out = vec![(TensorClass::Embedding, vocab * h)];
    if !tied {
        out.push((TensorClass::LmHead, vocab * h));
    }
    // Attention: MLA (DeepSeek) or q/k/v/o projections.
    let attn = match num(&obj, &["kv_lora_rank"]) {
        Some(rank) => {
            let rope = num(&obj, &["qk_rope_head_dim"]).unwrap_or(64.0);
            let nope = num(&obj, &["qk_nope_head_dim"]).unwrap_or(128.0);
            let v = num(&obj, &["v_head_dim"]).unwrap_or(128.0);
            let q_proj = match num(&obj, &["q_lora_rank"]) {
                Some(qr) => h * qr + qr * q * (nope + rope),
                None => h * q * (nope + rope),
            };
            q_proj + h * (rank + rope) + rank * q * (nope + v) + q * v * h
        }
        None => h * head_dim * (2.0 * q + 2.0 * kv),
    };
    out.push((TensorClass::Attention, layers * attn));
    let mats = if matches!(model_type, "gpt2" | "opt" | "falcon" | "gpt_neox") {
        2.0
    } else {
        3.0
    };
    let experts = num(
        &obj,
        &["n_routed_experts", "num_local_experts", "num_experts"],
    )
    .filter(|n| *n > 1.0);
    match experts {
        Some(n) => {
            // Mixtral / gpt-oss name the expert width intermediate_size; DeepSeek and Qwen-MoE
            // use moe_intermediate_size and keep intermediate_size for dense layers.
            let moe_inter = num(&obj, &["moe_intermediate_size"])
                .or_else(|| num(&obj, &["intermediate_size"]))
                .unwrap_or(4.0 * h);
            let dense_inter = num(&obj, &["intermediate_size"]).unwrap_or(moe_inter);
            let dense_layers = num(&obj, &["first_k_dense_replace"])
                .unwrap_or(0.0)
                .min(layers);
            let moe_layers = layers - dense_layers;
            if dense_layers > 0.0 {
                out.push((TensorClass::DenseMlp, dense_layers * mats * h * dense_inter));
            }
            out.push((
                TensorClass::RoutedExperts,
                moe_layers * n * mats * h * moe_inter,
            ));
            let shared = match num(&obj, &["shared_expert_intermediate_size"]) {
                Some(w) => mats * h * w,
                None => num(&obj, &["n_shared_experts"]).unwrap_or(0.0) * mats * h * moe_inter,
            };
            if shared > 0.0 {
                out.push((TensorClass::SharedExperts, moe_layers * shared));
            }
            out.push((TensorClass::Router, moe_layers * h * n));
        }
        None => {
            let inter = num(&obj, &["intermediate_size", "ffn_dim", "n_inner"]).unwrap_or(4.0 * h);
            out.push((TensorClass::DenseMlp, layers * mats * h * inter));
        }
    }
    out.push((TensorClass::Norms, layers * 2.0 * h + h));
    for (key, class) in [
        ("vision_config", TensorClass::Vision),
        ("audio_config", TensorClass::Audio),
    ] {
        if let Some(p) = root
            .get(key)
            .and_then(Value::as_object)
            .and_then(|c| tower_params(c, h))
        {
            out.push((class, p));
        }
    }
    out.retain(|(_, p)| *p > 0.0);
    out
}

/// The class a checkpoint tensor belongs to, from its name.
pub fn classify(name: &str) -> TensorClass {
    let n = name.to_ascii_lowercase();
    let has = |s: &str| n.contains(s);
    if has("vision")
        || has("visual")
        || has("multi_modal_projector")
        || has("mm_projector")
        || has("image_")
    {
        return TensorClass::Vision;
    }
    if has("audio") {
        return TensorClass::Audio;
    }
    if has("lm_head") || n == "output.weight" {
        return TensorClass::LmHead;
    }
    if has("embed_tokens") || has("wte") || has("word_embeddings") || has("tok_embeddings") {
        return TensorClass::Embedding;
    }
    if has("shared_expert") {
        return TensorClass::SharedExperts;
    }
    if has("experts") {
        return TensorClass::RoutedExperts;
    }
    if has("norm") || has("ln_") {
        return TensorClass::Norms;
    }
    if n.ends_with("mlp.gate.weight") || has("router") || has("gate.e_score_correction_bias") {
        return TensorClass::Router;
    }
    if has("attn") || has("attention") {
        return TensorClass::Attention;
    }
    if has("mlp") || has("feed_forward") || has("ffn") {
        return TensorClass::DenseMlp;
    }
    TensorClass::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object {
        serde_json::from_str::<Value>(text)
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn llama3_8b_classes_add_up_to_its_published_count() {
        // meta-llama/Llama-3.1-8B config: 8.03 B parameters (model card).
        let c = obj(
            r#"{"hidden_size":4096,"num_hidden_layers":32,"num_attention_heads":32,
            "num_key_value_heads":8,"intermediate_size":14336,"vocab_size":128256,
            "tie_word_embeddings":false,"model_type":"llama"}"#,
        );
        let total: f64 = class_params(&c).iter().map(|c| c.1).sum();
        assert!((total / 1e9 - 8.03).abs() < 0.01, "{total}");
    }

    #[test]
    fn names_fall_into_their_classes() {
        assert_eq!(
            classify("model.layers.3.self_attn.q_proj.qweight"),
            TensorClass::Attention
        );
        assert_eq!(
            classify("model.layers.3.mlp.experts.7.down_proj.weight"),
            TensorClass::RoutedExperts
        );
        assert_eq!(
            classify("model.layers.3.mlp.shared_experts.up_proj.weight"),
            TensorClass::SharedExperts
        );
        assert_eq!(
            classify("model.layers.3.mlp.gate.weight"),
            TensorClass::Router
        );
        assert_eq!(classify("lm_head.weight"), TensorClass::LmHead);
        assert_eq!(
            classify("model.embed_tokens.weight"),
            TensorClass::Embedding
        );
        assert_eq!(
            classify("vision_tower.encoder.layers.0.mlp.fc1.weight"),
            TensorClass::Vision
        );
        assert_eq!(
            classify("model.layers.0.post_attention_layernorm.weight"),
            TensorClass::Norms
        );
    }
}
