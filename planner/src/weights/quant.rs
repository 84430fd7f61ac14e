//! `quantization_config` of a config.json: the stored bits per parameter of each tensor class,
//! scales and zero points included.
//!
//! Layouts (bits per weight of a quantized linear layer, `g` = group size):
//! - AWQ (AutoAWQ GEMM): packed int32 codes, an f16 scale per group and packed `bits`-wide
//!   zero points per group: bits + 16/g + bits/g (4.156 at w4 g128).
//! - GPTQ (AutoGPTQ/GPTQModel): the same codes, scales and packed zeros, plus `g_idx`, one
//!   int32 per input row (32/out_features bits per weight; ~0.008 at width 4096).
//! - compressed-tensors: `config_groups.*.weights` with num_bits, strategy (tensor, channel,
//!   group, block), group_size or block_structure, symmetric; bf16 scales (f32 per block),
//!   zero points of num_bits when asymmetric; nvfp4 (4-bit float, group 16) keeps an fp8 scale
//!   per group. Modules in `ignore` (typically lm_head) stay at the checkpoint dtype.
//! - fp8 (DeepSeek-V3, Qwen3-FP8): e4m3 codes and, with `weight_block_size` [128, 128], one
//!   f32 scale per 128 x 128 block: 8 + 32/16384 bits.
//! - MXFP4 (gpt-oss): routed experts as 4-bit codes with an 8-bit (e8m0) scale per 32:
//!   4.25 bits; every other tensor in the checkpoint dtype.
//! - bitsandbytes: nf4/fp4 with an f32 absmax per 64 (4.5 bits), or with double quantization
//!   an 8-bit absmax per 64 and an f32 per 256 of those (4.127 bits); int8 with an f32 scale
//!   per output row (~8 bits).
//!
//! Linear layers of the decoder (attention, MLP, experts) are quantized; embeddings and norms
//! never are; lm_head, the MoE router and encoder towers only by compressed-tensors (and
//! only where `ignore` does not name them), as the engines' loaders do.

use serde_json::Value;

use super::classes::TensorClass;
use crate::error::PlanError;

/// How a checkpoint stores each class.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantScheme {
    /// The `quant_method`, e.g. `awq`.
    pub method: String,
    /// A short description, e.g. "AWQ w4 g128 (4.156 bits)".
    pub label: String,
    /// Bits per weight of a quantized linear of input width `hidden`.
    pub quantized_bits: f64,
    /// Which classes the scheme quantizes.
    quantizes: Vec<TensorClass>,
    /// Names (or `re:` patterns) the config says to leave unquantized.
    ignore: Vec<String>,
    /// Bits per weight of everything left unquantized (the checkpoint's torch_dtype).
    pub plain_bits: f64,
}

const DECODER_LINEARS: &[TensorClass] = &[
    TensorClass::Attention,
    TensorClass::DenseMlp,
    TensorClass::RoutedExperts,
    TensorClass::SharedExperts,
];

/// A tiny matcher for the `re:` patterns of compressed-tensors ignore lists: `.` any char,
/// `*` repeats the previous item, `^`/`$` anchors, `\.` a literal dot. Unanchored patterns
/// match anywhere, as Python's `re.search` does... except compressed-tensors uses
/// `re.match` (anchored at the start), which is what this does.
fn pattern_matches(pattern: &str, text: &str) -> bool {
    fn items(p: &str) -> Vec<(Option<char>, bool)> {
        // (char or None = any, starred)
        let mut out: Vec<(Option<char>, bool)> = Vec::new();
        let mut chars = p.chars().peekable();
        while let Some(c) = chars.next() {
            let item = match c {
                '.' => None,
                '\\' => chars.next(),
                other => Some(other),
            };
            let star = chars.peek() == Some(&'*');
            if star {
                chars.next();
            }
            out.push((item, star));
        }
        out
    }
    fn go(p: &[(Option<char>, bool)], t: &[char], end: bool) -> bool {
        match p.first() {
            None => !end || t.is_empty(),
            Some(&(c, true)) => {
                let mut i = 0;
                loop {
                    if go(&p[1..], &t[i..], end) {
                        return true;
                    }
                    if i < t.len() && c.is_none_or(|c| c == t[i]) {
                        i += 1;
                    } else {
                        return false;
                    }
                }
            }
            Some(&(c, false)) => {
                !t.is_empty() && c.is_none_or(|c| c == t[0]) && go(&p[1..], &t[1..], end)
            }
        }
    }
    let p = pattern.trim_start_matches('^');
    let (p, end) = match p.strip_suffix('$') {
        Some(s) => (s, true),
        None => (p, false),
    };
    let t: Vec<char> = text.chars().collect();
    go(&items(p), &t, end)
}

/// Whether an ignore entry names `module` (exact, as a dotted suffix, or a `re:` pattern).
fn ignored_by(entry: &str, module: &str) -> bool {
    match entry.strip_prefix("re:") {
        Some(p) => pattern_matches(p, module),
        None => {
            module == entry
                || module.ends_with(&format!(".{entry}"))
                || module.starts_with(&format!("{entry}."))
                || module.contains(&format!(".{entry}."))
        }
    }
}

impl QuantScheme {
    /// Bits per weight of `class`.
    pub fn bits(&self, class: TensorClass) -> f64 {
        let quantized = self.quantizes.contains(&class)
            && !class
                .sample_names()
                .iter()
                .any(|m| self.ignore.iter().any(|e| ignored_by(e, m)));
        if quantized {
            self.quantized_bits
        } else {
            self.plain_bits
        }
    }
}

fn u(cfg: &Value, names: &[&str]) -> Option<f64> {
    names
        .iter()
        .find_map(|n| cfg.get(*n).and_then(Value::as_f64))
}

/// Bits per quantized weight under `names` (`default` when absent), refused outside 1..=16.
fn bits(cfg: &Value, names: &[&str], default: f64) -> Result<f64, PlanError> {
    match u(cfg, names) {
        None => Ok(default),
        Some(b) if b.fract() == 0.0 && (1.0..=16.0).contains(&b) => Ok(b),
        Some(b) => Err(PlanError::Quantization(format!(
            "quantization_config {} = {b}: expected a whole number of bits from 1 to 16 (4 or 8 for AWQ/GPTQ)",
            names[0]
        ))),
    }
}

fn strings(cfg: &Value, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .filter_map(|n| cfg.get(*n).and_then(Value::as_array))
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Bits per element of the config's `torch_dtype` (16 when absent).
pub fn plain_bits(root: &Value) -> f64 {
    let dtype = root
        .get("torch_dtype")
        .or_else(|| root.get("dtype"))
        .or_else(|| root.pointer("/text_config/torch_dtype"))
        .and_then(Value::as_str)
        .unwrap_or("bfloat16");
    if dtype.contains("32") {
        32.0
    } else {
        16.0
    }
}

/// Reads `quantization_config` from a config.json root; None when the model is not quantized.
/// `hidden` is the model width (for per-row scales and GPTQ's g_idx).
pub fn scheme(root: &Value, hidden: f64) -> Result<Option<QuantScheme>, PlanError> {
    let Some(q) = root
        .get("quantization_config")
        .or_else(|| root.pointer("/text_config/quantization_config"))
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    let plain = plain_bits(root);
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or(
            if q.get("load_in_4bit").is_some() || q.get("load_in_8bit").is_some() {
                "bitsandbytes"
            } else {
                ""
            },
        )
        .to_ascii_lowercase();
    let hidden = hidden.max(1.0);
    let group = |g: Option<f64>| match g {
        Some(g) if g > 0.0 => g,
        _ => hidden, // -1: one group per column (per input row of scales)
    };
    let ignore = strings(
        q,
        &[
            "ignore",
            "modules_to_not_convert",
            "ignored_layers",
            "llm_int8_skip_modules",
        ],
    );
    let s = |label: String, bits: f64, quantizes: &[TensorClass]| QuantScheme {
        method: method.clone(),
        label,
        quantized_bits: bits,
        quantizes: quantizes.to_vec(),
        ignore: ignore.clone(),
        plain_bits: plain,
    };
    let scheme = match method.as_str() {
        "awq" => {
            let b = bits(q, &["bits", "w_bit"], 4.0)?;
            let g = group(u(q, &["group_size", "q_group_size"]));
            let zeros = q.get("zero_point").and_then(Value::as_bool).unwrap_or(true);
            let bits = b + 16.0 / g + if zeros { b / g } else { 0.0 };
            s(format!("AWQ w{b} g{g} ({bits:.3} bits)"), bits, DECODER_LINEARS)
        }
        "gptq" => {
            let b = bits(q, &["bits"], 4.0)?;
            let g = group(u(q, &["group_size"]));
            let bits = b + 16.0 / g + b / g + 32.0 / hidden;
            let act = q.get("desc_act").and_then(Value::as_bool).unwrap_or(false);
            s(
                format!(
                    "GPTQ w{b} g{g}{} ({bits:.3} bits with g_idx)",
                    if act { " desc_act" } else { "" }
                ),
                bits,
                DECODER_LINEARS,
            )
        }
        "compressed-tensors" => {
            let groups = q
                .get("config_groups")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    PlanError::Quantization(
                        "compressed-tensors without config_groups; pass --weights-dtype to size the weights"
                            .to_string(),
                    )
                })?;
            // One scheme for the whole model: the first group's weights (the usual case).
            let w = groups
                .values()
                .find_map(|g| g.get("weights").filter(|w| !w.is_null()))
                .ok_or_else(|| {
                    PlanError::Quantization(
                        "compressed-tensors config_groups name no weights scheme; pass --weights-dtype"
                            .to_string(),
                    )
                })?;
            let b = bits(w, &["num_bits"], 8.0)?;
            let float = w.get("type").and_then(Value::as_str) == Some("float");
            let strategy = w.get("strategy").and_then(Value::as_str).unwrap_or("tensor");
            let symmetric = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
            let (scale_bits, per) = match strategy {
                "group" | "tensor_group" => {
                    let g = group(u(w, &["group_size"]));
                    // nvfp4: an fp8 scale per 16; others a bf16 scale per group.
                    (if float && b == 4.0 { 8.0 } else { 16.0 }, g)
                }
                "channel" => (16.0, hidden),
                "block" => {
                    let blk: f64 = w
                        .get("block_structure")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_f64).product())
                        .unwrap_or(128.0 * 128.0);
                    (32.0, blk.max(1.0))
                }
                _ => (0.0, 1.0), // tensor: one scale per tensor
            };
            let zeros = if symmetric || strategy == "tensor" { 0.0 } else { b / per };
            let bits = b + scale_bits / per + zeros;
            let mut quantizes = DECODER_LINEARS.to_vec();
            quantizes.extend([TensorClass::LmHead, TensorClass::Router, TensorClass::Vision, TensorClass::Audio]);
            s(
                format!(
                    "compressed-tensors {}{b} {strategy} ({bits:.3} bits; ignore: {})",
                    if float { "float" } else { "int" },
                    if ignore.is_empty() { "none".to_string() } else { ignore.join(", ") }
                ),
                bits,
                &quantizes,
            )
        }
        "fp8" => {
            let blk: Option<f64> = q
                .get("weight_block_size")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).product());
            let bits = 8.0 + blk.map_or(0.0, |b| 32.0 / b.max(1.0));
            s(
                match blk {
                    Some(b) => format!("fp8 e4m3, f32 scale per {b}-weight block ({bits:.4} bits)"),
                    None => "fp8 e4m3, one scale per tensor (8 bits)".to_string(),
                },
                bits,
                DECODER_LINEARS,
            )
        }
        "mxfp4" => s(
            "MXFP4 experts (4 bits + e8m0 scale per 32 = 4.25), the rest in the checkpoint dtype"
                .to_string(),
            4.25,
            &[TensorClass::RoutedExperts],
        ),
        "bitsandbytes" => {
            if q.get("load_in_4bit").and_then(Value::as_bool) == Some(true) {
                let double = q
                    .get("bnb_4bit_use_double_quant")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let kind = q
                    .get("bnb_4bit_quant_type")
                    .and_then(Value::as_str)
                    .unwrap_or("fp4");
                let bits = if double {
                    4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0)
                } else {
                    4.0 + 32.0 / 64.0
                };
                s(
                    format!("bitsandbytes {kind}{} ({bits:.3} bits)", if double { " double-quant" } else { "" }),
                    bits,
                    DECODER_LINEARS,
                )
            } else {
                let bits = 8.0 + 32.0 / hidden;
                s(format!("bitsandbytes int8 ({bits:.3} bits)"), bits, DECODER_LINEARS)
            }
        }
        other => {
            return Err(PlanError::Quantization(format!(
                "unknown quant_method '{other}'; kvbench reads awq, gptq, compressed-tensors, fp8, mxfp4 and bitsandbytes: pass --weights-dtype (e.g. int4) to size the weights as parameters x that dtype"
            )))
        }
    };
    Ok(Some(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> QuantScheme {
        scheme(&serde_json::from_str(text).unwrap(), 4096.0)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn awq_w4_g128_is_4_156_bits_and_keeps_lm_head_in_16() {
        // 4 + 16/128 (f16 scale) + 4/128 (packed zero) = 4.15625 (AutoAWQ GEMM layout).
        let s = q(
            r#"{"torch_dtype":"float16","quantization_config":{"quant_method":"awq","bits":4,"group_size":128,"zero_point":true,"version":"gemm"}}"#,
        );
        assert_eq!(s.bits(TensorClass::Attention), 4.15625);
        assert_eq!(s.bits(TensorClass::LmHead), 16.0);
        assert_eq!(s.bits(TensorClass::Embedding), 16.0);
    }

    #[test]
    fn compressed_tensors_honours_its_ignore_list() {
        // w4a16 (RedHatAI style): int4 group 128 symmetric, bf16 scales: 4 + 16/128 = 4.125.
        let s = q(
            r#"{"quantization_config":{"quant_method":"compressed-tensors","format":"pack-quantized",
            "config_groups":{"group_0":{"targets":["Linear"],"weights":{"num_bits":4,"type":"int","strategy":"group","group_size":128,"symmetric":true}}},
            "ignore":["lm_head","re:.*mlp.gate$","re:vision_tower.*"]}}"#,
        );
        assert_eq!(s.bits(TensorClass::DenseMlp), 4.125);
        assert_eq!(s.bits(TensorClass::LmHead), 16.0);
        assert_eq!(s.bits(TensorClass::Router), 16.0);
        assert_eq!(s.bits(TensorClass::Vision), 16.0);
        // w8a8 fp8 per channel: 8 + 16/4096.
        let s = q(
            r#"{"quantization_config":{"quant_method":"compressed-tensors",
            "config_groups":{"g":{"weights":{"num_bits":8,"type":"float","strategy":"channel","symmetric":true}}},"ignore":[]}}"#,
        );
        assert_eq!(s.bits(TensorClass::LmHead), 8.0 + 16.0 / 4096.0);
    }

    #[test]
    fn block_fp8_mxfp4_and_nf4_layouts() {
        // DeepSeek-V3: [128, 128] blocks, one f32 each: 8 + 32/16384 = 8.001953125.
        let s = q(
            r#"{"quantization_config":{"quant_method":"fp8","fmt":"e4m3","weight_block_size":[128,128]}}"#,
        );
        assert_eq!(s.bits(TensorClass::RoutedExperts), 8.001953125);
        // gpt-oss: only the experts are MXFP4.
        let s = q(
            r#"{"quantization_config":{"quant_method":"mxfp4","modules_to_not_convert":["model.layers.*.self_attn","model.layers.*.mlp.router","model.embed_tokens","lm_head"]}}"#,
        );
        assert_eq!(s.bits(TensorClass::RoutedExperts), 4.25);
        assert_eq!(s.bits(TensorClass::Attention), 16.0);
        // QLoRA nf4 with double quantization: 4 + 8/64 + 32/16384.
        let s = q(
            r#"{"quantization_config":{"load_in_4bit":true,"bnb_4bit_quant_type":"nf4","bnb_4bit_use_double_quant":true}}"#,
        );
        assert!((s.bits(TensorClass::Attention) - 4.126953125).abs() < 1e-12);
    }

    #[test]
    fn unknown_methods_name_themselves_and_the_override() {
        let e = scheme(
            &serde_json::json!({"quantization_config":{"quant_method":"hqq"}}),
            4096.0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'hqq'") && e.contains("--weights-dtype"), "{e}");
        assert!(scheme(&serde_json::json!({}), 4096.0).unwrap().is_none());
    }

    #[test]
    fn patterns_follow_re_match() {
        assert!(pattern_matches(".*mlp.gate$", "model.layers.0.mlp.gate"));
        assert!(!pattern_matches(
            ".*mlp.gate$",
            "model.layers.0.mlp.gate_proj"
        ));
        assert!(pattern_matches("vision_tower.*", "vision_tower.a.b"));
        assert!(!pattern_matches("vision_tower.*", "model.vision_tower"));
    }
}
