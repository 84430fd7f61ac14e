//! Weights as the checkpoint stores them: per tensor class, at each class's own precision,
//! from the best source at hand — the safetensors headers (exact bytes), else the
//! `quantization_config` of config.json, else parameters x one dtype.

pub mod classes;
pub mod quant;

use serde::Serialize;
use serde_json::Value;

pub use classes::TensorClass;

use crate::error::PlanError;
use crate::safetensors::Header;

/// Where a weight figure comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightSource {
    /// Summed byte ranges of this many safetensors shard headers.
    SafetensorsHeaders { shards: usize },
    /// config.json's quantization_config (the label says which scheme).
    QuantizationConfig { label: String },
    /// Parameters (counted or estimated) x one dtype.
    ParamsTimesDtype { dtype: String },
}

impl WeightSource {
    pub fn describe(&self) -> String {
        match self {
            WeightSource::SafetensorsHeaders { shards } => {
                format!("safetensors header sum ({shards} shard(s))")
            }
            WeightSource::QuantizationConfig { label } => format!("quantization_config: {label}"),
            WeightSource::ParamsTimesDtype { dtype } => format!("parameters x {dtype}"),
        }
    }
}

/// One class of tensors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassWeights {
    pub class: TensorClass,
    /// Parameters (0 when only bytes are known, as from a header of packed codes).
    pub params: f64,
    pub bytes: f64,
    /// How it is stored, e.g. "4.156 bits" or "BF16 + F32".
    pub precision: String,
}

/// The weights of a whole model (all GPUs together).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Weights {
    pub classes: Vec<ClassWeights>,
    pub source: WeightSource,
}

impl Weights {
    pub fn total_bytes(&self) -> f64 {
        self.classes.iter().map(|c| c.bytes).sum()
    }

    /// Bytes on the most loaded GPU: tensor parallelism splits every class (vocab-parallel
    /// embeddings and lm_head, sharded towers, as vLLM loads them); pipeline stages split the
    /// decoder layers, the first stage adding embeddings and towers and the last lm_head.
    pub fn per_gpu_bytes(&self, tp: u32, pp: u32) -> u64 {
        let sum = |f: &dyn Fn(TensorClass) -> bool| -> f64 {
            self.classes
                .iter()
                .filter(|c| f(c.class))
                .map(|c| c.bytes)
                .sum()
        };
        let layers = sum(&|c: TensorClass| c.in_layers() || c == TensorClass::Other);
        let first = sum(&|c| {
            matches!(
                c,
                TensorClass::Embedding | TensorClass::Vision | TensorClass::Audio
            )
        });
        let last = sum(&|c| c == TensorClass::LmHead);
        let pp = pp.max(1) as f64;
        let edges = if pp > 1.0 {
            first.max(last)
        } else {
            first + last
        };
        ((layers / pp + edges) / tp.max(1) as f64).round() as u64
    }
}

/// Weights from the class parameter counts of a config.json, each class at the bits the
/// `quantization_config` gives it (or all at `dtype_bits` when there is none or the user
/// overrides it). Returns an error for a quantization method kvbench cannot size.
pub fn from_config(
    config_text: &str,
    override_dtype: Option<(&str, f64)>,
) -> Result<Weights, PlanError> {
    let root: Value =
        serde_json::from_str(config_text).map_err(|e| PlanError::ConfigJson(e.to_string()))?;
    let obj = root
        .as_object()
        .ok_or_else(|| PlanError::ConfigJson("the top level is not a JSON object".to_string()))?;
    let params = classes::class_params(obj);
    let text = classes::text_object(obj);
    let hidden = text
        .get("hidden_size")
        .and_then(Value::as_f64)
        .unwrap_or(4096.0);
    let scheme = match override_dtype {
        Some(_) => None,
        None => quant::scheme(&root, hidden)?,
    };
    let (bits_of, source): (Box<dyn Fn(TensorClass) -> f64>, WeightSource) =
        match (override_dtype, scheme) {
            (Some((name, bits)), _) => (
                Box::new(move |_| bits),
                WeightSource::ParamsTimesDtype {
                    dtype: format!("{name} (--weights-dtype)"),
                },
            ),
            (None, Some(s)) => {
                let label = s.label.clone();
                (
                    Box::new(move |c| s.bits(c)),
                    WeightSource::QuantizationConfig { label },
                )
            }
            (None, None) => {
                let bits = quant::plain_bits(&root);
                (
                    Box::new(move |_| bits),
                    WeightSource::ParamsTimesDtype {
                        dtype: format!("{bits} bits (config torch_dtype)"),
                    },
                )
            }
        };
    let classes = params
        .into_iter()
        .map(|(class, p)| {
            let bits = bits_of(class);
            ClassWeights {
                class,
                params: p,
                bytes: p * bits / 8.0,
                precision: format!("{bits:.3} bits"),
            }
        })
        .collect();
    Ok(Weights { classes, source })
}

/// Weights from safetensors shard headers: exact bytes per class, with the dtypes each class
/// is stored in.
pub fn from_headers(headers: &[Header]) -> Weights {
    let mut classes: Vec<ClassWeights> = Vec::new();
    let mut dtypes: Vec<(TensorClass, Vec<String>)> = Vec::new();
    for t in headers.iter().flat_map(|h| &h.tensors) {
        let class = classes::classify(&t.name);
        match classes.iter_mut().find(|c| c.class == class) {
            Some(c) => c.bytes += t.bytes as f64,
            None => classes.push(ClassWeights {
                class,
                params: 0.0,
                bytes: t.bytes as f64,
                precision: String::new(),
            }),
        }
        match dtypes.iter_mut().find(|d| d.0 == class) {
            Some((_, list)) if !list.contains(&t.dtype) => list.push(t.dtype.clone()),
            Some(_) => {}
            None => dtypes.push((class, vec![t.dtype.clone()])),
        }
    }
    for c in &mut classes {
        if let Some((_, list)) = dtypes.iter().find(|d| d.0 == c.class) {
            c.precision = list.join(" + ");
        }
    }
    Weights {
        classes,
        source: WeightSource::SafetensorsHeaders {
            shards: headers.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors::TensorEntry;

    #[test]
    fn awq_llama_70b_is_sized_at_its_stored_precision() {
        // Llama-3.1-70B with AWQ w4 g128, by hand: embeddings and lm_head 2 x 128,256 x 8192
        // = 2.10 B params in f16 (4.20 GB); attention 80 x 8192 x 128 x 144 = 12.08 B and
        // MLP 80 x 3 x 8192 x 28,672 = 56.37 B params at 4 + 16/128 + 4/128 = 4.156 bits
        // (35.56 GB); total 39.77 GB.
        let cfg = r#"{"hidden_size":8192,"num_hidden_layers":80,"num_attention_heads":64,
            "num_key_value_heads":8,"intermediate_size":28672,"vocab_size":128256,
            "tie_word_embeddings":false,"torch_dtype":"float16","model_type":"llama",
            "quantization_config":{"quant_method":"awq","bits":4,"group_size":128,"zero_point":true,"version":"gemm"}}"#;
        let w = from_config(cfg, None).unwrap();
        let gb = w.total_bytes() / 1e9;
        assert!((gb - 39.77).abs() / 39.77 < 0.01, "{gb}");
        assert!(matches!(w.source, WeightSource::QuantizationConfig { .. }));
        // The same config with --weights-dtype bf16 is the old params x dtype figure.
        let w = from_config(cfg, Some(("bf16", 16.0))).unwrap();
        assert!((w.total_bytes() / 1e9 - 141.1).abs() < 0.5);
    }

    #[test]
    fn gemma3_counts_its_vision_tower() {
        // Gemma 3 technical report (arXiv 2503.19786), table 1, 27B: vision encoder 417M,
        // embedding 1,416M, non-embedding 25,600M parameters.
        let w = from_config(include_str!("../../tests/fixtures/gemma3-27b.json"), None).unwrap();
        let p = |c: TensorClass| {
            w.classes
                .iter()
                .filter(|x| x.class == c)
                .map(|x| x.params)
                .sum::<f64>()
                / 1e6
        };
        let vision = p(TensorClass::Vision);
        assert!((vision - 417.0).abs() / 417.0 < 0.02, "{vision}");
        assert!((p(TensorClass::Embedding) - 1416.0).abs() / 1416.0 < 0.01);
        let body: f64 = [
            TensorClass::Attention,
            TensorClass::DenseMlp,
            TensorClass::Norms,
        ]
        .iter()
        .map(|c| p(*c))
        .sum();
        assert!((body - 25_600.0).abs() / 25_600.0 < 0.01, "{body}");
        // Gemma ties lm_head to the embeddings: no separate class.
        assert_eq!(p(TensorClass::LmHead), 0.0);
    }

    #[test]
    fn gpt_oss_keeps_all_but_its_experts_in_bf16() {
        // gpt-oss model card (OpenAI, arXiv 2508.10925), table 1: the 120b checkpoint is
        // 60.8 GiB: MXFP4 experts (4.25 bits) and bf16 attention, router, embeddings, lm_head.
        let w = from_config(include_str!("../../tests/fixtures/gpt-oss-120b.json"), None).unwrap();
        let gib = w.total_bytes() / (1u64 << 30) as f64;
        assert!((gib - 60.8).abs() / 60.8 < 0.01, "{gib}");
        let experts = w
            .classes
            .iter()
            .find(|c| c.class == TensorClass::RoutedExperts)
            .unwrap();
        assert_eq!(experts.precision, "4.250 bits");
    }

    #[test]
    fn headers_sum_exactly_and_split_by_stage() {
        let t = |name: &str, bytes: u64| TensorEntry {
            name: name.into(),
            dtype: "BF16".into(),
            shape: vec![],
            bytes,
        };
        let h = Header {
            tensors: vec![
                t("model.embed_tokens.weight", 1000),
                t("lm_head.weight", 1000),
                t("model.layers.0.self_attn.q_proj.weight", 4000),
                t("model.layers.0.mlp.up_proj.weight", 4000),
            ],
        };
        let w = from_headers(&[h]);
        assert_eq!(w.total_bytes(), 10_000.0);
        assert_eq!(w.per_gpu_bytes(1, 1), 10_000);
        assert_eq!(w.per_gpu_bytes(2, 1), 5_000);
        // pp 2: 8000 / 2 layer bytes + the larger edge (1000).
        assert_eq!(w.per_gpu_bytes(1, 2), 5_000);
    }
}
