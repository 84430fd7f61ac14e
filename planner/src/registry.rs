//! Built-in model registry (each entry cites its source).
//!
//! Shapes are transcribed from each model's published Hugging Face `config.json`; the test
//! suite re-reads those configs (planner/tests/fixtures/) and checks every entry against them.

use serde::Serialize;

use crate::error::PlanError;
use crate::shape::{AttentionKind, ModelShape};
use crate::state::{RecurrentState, StateDtype, StateMixer};

/// A registry model: its cache shape plus what sizing weights and bounds needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Short canonical name, e.g. `llama3-70b`.
    pub key: String,
    /// The Hugging Face repository the numbers come from.
    pub hf_id: String,
    /// Other accepted names.
    pub aliases: Vec<String>,
    pub shape: ModelShape,
    /// Total parameters (all experts for MoE).
    pub params: f64,
    /// Parameters used per token (equals `params` for dense models).
    pub active_params: f64,
    pub vocab: u32,
    /// Longest context the config allows (`max_position_embeddings`).
    pub max_context: u32,
    /// Where the shape and parameter count come from.
    pub source: String,
    /// Routed experts, for a mixture of experts (None for dense models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeShape>,
}

/// The routed experts of a mixture-of-experts model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MoeShape {
    /// Routed experts per MoE layer.
    pub experts: u32,
    /// Experts each token is routed to.
    pub per_token: u32,
    /// Layers with routed experts.
    pub layers: u32,
    /// Parameters of one routed expert (3 x hidden x expert width for a gated MLP).
    pub expert_params: f64,
}

impl MoeShape {
    /// Parameters of all routed experts of all MoE layers.
    pub fn routed_params(&self) -> f64 {
        self.experts as f64 * self.layers as f64 * self.expert_params
    }
}

/// Routed experts of the registry's MoE entries: (key, experts, per token, MoE layers), as
/// their config.json states them (checked against the fixtures); every one has a gated
/// three-matrix expert of the entry's intermediate width.
const MOE: &[(&str, u32, u32, u32)] = &[
    ("mixtral-8x7b", 8, 2, 32),
    ("qwen3-30b-a3b", 128, 8, 48),
    ("qwen3-235b-a22b", 128, 8, 94),
    ("deepseek-v2", 160, 6, 59),
    ("deepseek-v2-lite", 64, 6, 26),
    ("deepseek-v3", 256, 8, 58),
    ("gpt-oss-20b", 32, 4, 24),
    ("gpt-oss-120b", 128, 4, 36),
    ("qwen3-next-80b-a3b", 512, 10, 48),
    ("qwen3.5-35b-a3b", 256, 8, 40),
    ("jamba-1.5-mini", 16, 2, 16),
    ("llama4-scout", 16, 1, 48),
    ("llama4-maverick", 128, 1, 24),
];

impl ModelInfo {
    /// Whether the model is a mixture of experts.
    pub fn is_moe(&self) -> bool {
        self.active_params < self.params
    }
}

/// How the layers of an entry attend.
#[derive(Debug, Clone, Copy)]
enum Layers {
    Full,
    /// Every layer sliding with this window.
    AllSliding(u32),
    /// Layer `i` is global (full) when `i % period == global_at`, else sliding.
    Hybrid {
        window: u32,
        period: u32,
        global_at: u32,
    },
    /// Multi-head latent attention on every layer.
    Mla {
        kv_lora_rank: u32,
        rope_dim: u32,
    },
    /// Full attention on layer i when (i + 1) % every == 0, a state layer elsewhere
    /// (Qwen3-Next / Qwen3.5 `full_attention_interval`).
    Interval {
        every: u32,
        mixer: StateMixer,
    },
    /// Full attention on layer i when i % period == offset, a state layer elsewhere (Jamba).
    Period {
        period: u32,
        offset: u32,
        mixer: StateMixer,
    },
    /// Chunked local attention with a full (NoPE) layer where (i + 1) % every == 0
    /// (Llama-4 `attention_chunk_size`, `no_rope_layers`).
    Chunked {
        chunk: u32,
        every: u32,
    },
    /// Nemotron-H `hybrid_override_pattern`: `*` attention, `M` state, `-`/`E` neither.
    Pattern(&'static str, StateMixer),
    /// Attention and a state mixer side by side in every layer (Falcon-H1).
    Parallel(StateMixer),
    /// Sliding layers with a full one every `period` (at `global_at`), the last `shared`
    /// layers reading the KV of the last earlier layer of their kind (Gemma-3n).
    SharedKv {
        window: u32,
        period: u32,
        global_at: u32,
        shared: u32,
    },
}

/// One registry row before expansion into a [`ModelInfo`].
struct Entry {
    key: &'static str,
    name: &'static str,
    hf_id: &'static str,
    aliases: &'static [&'static str],
    /// layers, q_heads, kv_heads, head_dim, hidden, intermediate (per expert for MoE).
    dims: [u32; 6],
    layers: Layers,
    /// Total and active parameters, in billions.
    params_b: (f64, f64),
    vocab: u32,
    max_context: u32,
}

impl Entry {
    /// The kind of every layer and the state layers, expanded from [`Layers`].
    fn layer_kinds(&self) -> (Vec<AttentionKind>, Option<RecurrentState>) {
        let layers = self.dims[0];
        let sliding = |window| AttentionKind::Sliding { window };
        let with_state = |kinds: Vec<AttentionKind>, mixer: StateMixer, all: bool| {
            let layers: Vec<u32> = (0..kinds.len() as u32)
                .filter(|i| all || kinds[*i as usize] == AttentionKind::NoAttention)
                .collect();
            let state = RecurrentState {
                mixer,
                layers,
                conv_dtype: StateDtype::Bf16,
                ssm_dtype: StateDtype::Bf16,
            };
            (kinds, Some(state))
        };
        let by = |f: &dyn Fn(u32) -> AttentionKind| (0..layers).map(f).collect::<Vec<_>>();
        match self.layers {
            Layers::Full => (vec![AttentionKind::Full; layers as usize], None),
            Layers::AllSliding(window) => (vec![sliding(window); layers as usize], None),
            Layers::Hybrid {
                window,
                period,
                global_at,
            } => (
                by(&|i| {
                    if i % period == global_at {
                        AttentionKind::Full
                    } else {
                        sliding(window)
                    }
                }),
                None,
            ),
            Layers::Mla {
                kv_lora_rank,
                rope_dim,
            } => (
                vec![
                    AttentionKind::Mla {
                        kv_lora_rank,
                        rope_dim
                    };
                    layers as usize
                ],
                None,
            ),
            Layers::Interval { every, mixer } => with_state(
                by(&|i| {
                    if (i + 1) % every == 0 {
                        AttentionKind::Full
                    } else {
                        AttentionKind::NoAttention
                    }
                }),
                mixer,
                false,
            ),
            Layers::Period {
                period,
                offset,
                mixer,
            } => with_state(
                by(&|i| {
                    if i % period == offset {
                        AttentionKind::Full
                    } else {
                        AttentionKind::NoAttention
                    }
                }),
                mixer,
                false,
            ),
            Layers::Chunked { chunk, every } => (
                by(&|i| {
                    if (i + 1) % every == 0 {
                        AttentionKind::Full
                    } else {
                        AttentionKind::Chunked { chunk }
                    }
                }),
                None,
            ),
            Layers::Pattern(pattern, mixer) => {
                let kinds: Vec<AttentionKind> = pattern
                    .chars()
                    .map(|c| {
                        if c == '*' {
                            AttentionKind::Full
                        } else {
                            AttentionKind::NoAttention
                        }
                    })
                    .collect();
                let (kinds, state) = with_state(kinds, mixer, false);
                // Only `M` layers keep a state; `-` and `E` are MLP layers.
                let state = state.map(|mut st| {
                    st.layers
                        .retain(|l| pattern.as_bytes()[*l as usize] == b'M');
                    st
                });
                (kinds, state)
            }
            Layers::Parallel(mixer) => {
                with_state(vec![AttentionKind::Full; layers as usize], mixer, true)
            }
            Layers::SharedKv {
                window,
                period,
                global_at,
                shared,
            } => {
                let own = |i: u32| i % period == global_at;
                let first = layers - shared;
                let kinds = by(&|i| {
                    if i < first {
                        if own(i) {
                            AttentionKind::Full
                        } else {
                            sliding(window)
                        }
                    } else {
                        // The last earlier layer of the same kind stored the KV.
                        let source = (0..first).rev().find(|j| own(*j) == own(i)).unwrap_or(0);
                        AttentionKind::SharedKv { source }
                    }
                });
                (kinds, None)
            }
        }
    }

    fn info(&self) -> ModelInfo {
        let [layers, q, kv, head_dim, hidden, inter] = self.dims;
        let mut shape = ModelShape::uniform(self.name, layers, q, kv, head_dim, hidden, inter);
        let (kinds, state) = self.layer_kinds();
        shape.layer_kinds = kinds;
        shape.state = state;
        // Qwen3.5's config sets mamba_ssm_dtype float32, which vLLM takes as the SSM dtype.
        if self.key.starts_with("qwen3.5") {
            if let Some(st) = shape.state.as_mut() {
                st.ssm_dtype = StateDtype::F32;
            }
        }
        // Every MLA entry (DeepSeek-V2, -V2-Lite, -V3) has v_head_dim 128 beside QK 192.
        if matches!(self.layers, Layers::Mla { .. }) {
            shape.v_head_dim = Some(128);
        }
        ModelInfo {
            key: self.key.to_string(),
            hf_id: self.hf_id.to_string(),
            aliases: self.aliases.iter().map(|a| a.to_string()).collect(),
            shape,
            params: self.params_b.0 * 1e9,
            active_params: self.params_b.1 * 1e9,
            vocab: self.vocab,
            max_context: self.max_context,
            source: format!(
                "https://huggingface.co/{}/blob/main/config.json; parameters from the model card",
                self.hf_id
            ),
            moe: MOE
                .iter()
                .find(|m| m.0 == self.key)
                .map(|&(_, experts, per_token, layers)| MoeShape {
                    experts,
                    per_token,
                    layers,
                    expert_params: 3.0 * hidden as f64 * inter as f64,
                }),
        }
    }
}

const GEMMA2: fn(u32) -> Layers = |window| Layers::Hybrid {
    window,
    period: 2,
    global_at: 1,
};

/// Gated delta-net of Qwen3-Next and Qwen3.5-35B-A3B: 16 key heads, 32 value heads of 128.
const QWEN_GDN: StateMixer = StateMixer::GatedDeltaNet {
    key_heads: 16,
    value_heads: 32,
    key_head_dim: 128,
    value_head_dim: 128,
    conv_kernel: 4,
};

/// The registry rows. Keep `key` unique; the fixture for each is tests/fixtures/<key>.json.
fn entries() -> Vec<Entry> {
    use Layers::*;
    let e = |key, name, hf_id, aliases, dims, layers, params_b, vocab, max_context| Entry {
        key,
        name,
        hf_id,
        aliases,
        dims,
        layers,
        params_b,
        vocab,
        max_context,
    };
    let mla = Mla {
        kv_lora_rank: 512,
        rope_dim: 64,
    };
    vec![
        e(
            "gpt2",
            "GPT-2",
            "openai-community/gpt2",
            &["gpt2-small", "gpt-2"],
            [12, 12, 12, 64, 768, 3072],
            Full,
            (0.124, 0.124),
            50257,
            1024,
        ),
        e(
            "opt-13b",
            "OPT-13B",
            "facebook/opt-13b",
            &[],
            [40, 40, 40, 128, 5120, 20480],
            Full,
            (12.85, 12.85),
            50272,
            2048,
        ),
        e(
            "llama2-7b",
            "Llama-2-7B",
            "meta-llama/Llama-2-7b-hf",
            &[],
            [32, 32, 32, 128, 4096, 11008],
            Full,
            (6.74, 6.74),
            32000,
            4096,
        ),
        e(
            "llama2-13b",
            "Llama-2-13B",
            "meta-llama/Llama-2-13b-hf",
            &[],
            [40, 40, 40, 128, 5120, 13824],
            Full,
            (13.02, 13.02),
            32000,
            4096,
        ),
        e(
            "llama2-70b",
            "Llama-2-70B",
            "meta-llama/Llama-2-70b-hf",
            &[],
            [80, 64, 8, 128, 8192, 28672],
            Full,
            (68.98, 68.98),
            32000,
            4096,
        ),
        e(
            "llama3-8b",
            "Llama-3-8B",
            "meta-llama/Meta-Llama-3-8B",
            &[],
            [32, 32, 8, 128, 4096, 14336],
            Full,
            (8.03, 8.03),
            128256,
            8192,
        ),
        e(
            "llama3-70b",
            "Llama-3-70B",
            "meta-llama/Meta-Llama-3-70B",
            &[],
            [80, 64, 8, 128, 8192, 28672],
            Full,
            (70.55, 70.55),
            128256,
            8192,
        ),
        e(
            "llama3.1-8b",
            "Llama-3.1-8B",
            "meta-llama/Llama-3.1-8B",
            &["meta-llama/Meta-Llama-3.1-8B"],
            [32, 32, 8, 128, 4096, 14336],
            Full,
            (8.03, 8.03),
            128256,
            131072,
        ),
        e(
            "llama3.1-70b",
            "Llama-3.1-70B",
            "meta-llama/Llama-3.1-70B",
            &[
                "meta-llama/Meta-Llama-3.1-70B",
                "llama3.3-70b",
                "meta-llama/Llama-3.3-70B-Instruct",
            ],
            [80, 64, 8, 128, 8192, 28672],
            Full,
            (70.55, 70.55),
            128256,
            131072,
        ),
        e(
            "llama3.1-405b",
            "Llama-3.1-405B",
            "meta-llama/Llama-3.1-405B",
            &["meta-llama/Meta-Llama-3.1-405B", "llama3-405b"],
            [126, 128, 8, 128, 16384, 53248],
            Full,
            (405.85, 405.85),
            128256,
            131072,
        ),
        e(
            "llama3.2-1b",
            "Llama-3.2-1B",
            "meta-llama/Llama-3.2-1B",
            &[],
            [16, 32, 8, 64, 2048, 8192],
            Full,
            (1.24, 1.24),
            128256,
            131072,
        ),
        e(
            "llama3.2-3b",
            "Llama-3.2-3B",
            "meta-llama/Llama-3.2-3B",
            &[],
            [28, 24, 8, 128, 3072, 8192],
            Full,
            (3.21, 3.21),
            128256,
            131072,
        ),
        e(
            "mistral-7b-v0.1",
            "Mistral-7B-v0.1",
            "mistralai/Mistral-7B-v0.1",
            &["mistral-7b"],
            [32, 32, 8, 128, 4096, 14336],
            AllSliding(4096),
            (7.24, 7.24),
            32000,
            32768,
        ),
        e(
            "mistral-7b-v0.3",
            "Mistral-7B-v0.3",
            "mistralai/Mistral-7B-v0.3",
            &[],
            [32, 32, 8, 128, 4096, 14336],
            Full,
            (7.25, 7.25),
            32768,
            32768,
        ),
        e(
            "mixtral-8x7b",
            "Mixtral-8x7B",
            "mistralai/Mixtral-8x7B-v0.1",
            &["mixtral"],
            [32, 32, 8, 128, 4096, 14336],
            Full,
            (46.7, 12.9),
            32000,
            32768,
        ),
        e(
            "qwen2.5-7b",
            "Qwen2.5-7B",
            "Qwen/Qwen2.5-7B",
            &[],
            [28, 28, 4, 128, 3584, 18944],
            Full,
            (7.61, 7.61),
            152064,
            131072,
        ),
        e(
            "qwen2.5-72b",
            "Qwen2.5-72B",
            "Qwen/Qwen2.5-72B",
            &[],
            [80, 64, 8, 128, 8192, 29568],
            Full,
            (72.7, 72.7),
            152064,
            131072,
        ),
        e(
            "qwen3-0.6b",
            "Qwen3-0.6B",
            "Qwen/Qwen3-0.6B",
            &[],
            [28, 16, 8, 128, 1024, 3072],
            Full,
            (0.6, 0.6),
            151936,
            40960,
        ),
        e(
            "qwen3-4b",
            "Qwen3-4B",
            "Qwen/Qwen3-4B",
            &[],
            [36, 32, 8, 128, 2560, 9728],
            Full,
            (4.0, 4.0),
            151936,
            40960,
        ),
        e(
            "qwen3-8b",
            "Qwen3-8B",
            "Qwen/Qwen3-8B",
            &[],
            [36, 32, 8, 128, 4096, 12288],
            Full,
            (8.2, 8.2),
            151936,
            40960,
        ),
        e(
            "qwen3-32b",
            "Qwen3-32B",
            "Qwen/Qwen3-32B",
            &[],
            [64, 64, 8, 128, 5120, 25600],
            Full,
            (32.8, 32.8),
            151936,
            40960,
        ),
        e(
            "qwen3-30b-a3b",
            "Qwen3-30B-A3B",
            "Qwen/Qwen3-30B-A3B",
            &["qwen3-30b"],
            [48, 32, 4, 128, 2048, 768],
            Full,
            (30.5, 3.3),
            151936,
            40960,
        ),
        e(
            "qwen3-235b-a22b",
            "Qwen3-235B-A22B",
            "Qwen/Qwen3-235B-A22B",
            &["qwen3-235b"],
            [94, 64, 4, 128, 4096, 1536],
            Full,
            (235.0, 22.0),
            151936,
            40960,
        ),
        e(
            "falcon-7b",
            "Falcon-7B",
            "tiiuae/falcon-7b",
            &[],
            [32, 71, 1, 64, 4544, 18176],
            Full,
            // The card says "7B"; 6.92B loaded (Hugging Face lists 7.22B because the
            // checkpoint also stores the tied lm_head).
            (6.92, 6.92),
            65024,
            2048,
        ),
        e(
            "deepseek-v2",
            "DeepSeek-V2",
            "deepseek-ai/DeepSeek-V2",
            &[],
            [60, 128, 128, 192, 5120, 1536],
            mla,
            (236.0, 21.0),
            102400,
            163840,
        ),
        e(
            "deepseek-v2-lite",
            "DeepSeek-V2-Lite",
            "deepseek-ai/DeepSeek-V2-Lite",
            &[],
            [27, 16, 16, 192, 2048, 1408],
            mla,
            (15.7, 2.4),
            102400,
            163840,
        ),
        e(
            "deepseek-v3",
            "DeepSeek-V3",
            "deepseek-ai/DeepSeek-V3",
            &["deepseek-r1", "deepseek-ai/DeepSeek-R1"],
            [61, 128, 128, 192, 7168, 2048],
            mla,
            (671.0, 37.0),
            129280,
            163840,
        ),
        e(
            "gemma2-2b",
            "Gemma-2-2B",
            "google/gemma-2-2b",
            &[],
            [26, 8, 4, 256, 2304, 9216],
            GEMMA2(4096),
            (2.61, 2.61),
            256000,
            8192,
        ),
        e(
            "gemma2-9b",
            "Gemma-2-9B",
            "google/gemma-2-9b",
            &[],
            [42, 16, 8, 256, 3584, 14336],
            GEMMA2(4096),
            (9.24, 9.24),
            256000,
            8192,
        ),
        e(
            "gemma2-27b",
            "Gemma-2-27B",
            "google/gemma-2-27b",
            &[],
            [46, 32, 16, 128, 4608, 36864],
            GEMMA2(4096),
            (27.2, 27.2),
            256000,
            8192,
        ),
        e(
            "gemma3-12b",
            "Gemma-3-12B",
            "google/gemma-3-12b-it",
            &[],
            [48, 16, 8, 256, 3840, 15360],
            Hybrid {
                window: 1024,
                period: 6,
                global_at: 5,
            },
            (12.2, 12.2),
            262208,
            131072,
        ),
        e(
            "gemma3-27b",
            "Gemma-3-27B",
            "google/gemma-3-27b-it",
            &[],
            [62, 32, 16, 128, 5376, 21504],
            Hybrid {
                window: 1024,
                period: 6,
                global_at: 5,
            },
            (27.4, 27.4),
            262208,
            131072,
        ),
        e(
            "gpt-oss-20b",
            "gpt-oss-20b",
            "openai/gpt-oss-20b",
            &[],
            [24, 64, 8, 64, 2880, 2880],
            GEMMA2(128),
            (20.9, 3.6),
            201088,
            131072,
        ),
        e(
            "gpt-oss-120b",
            "gpt-oss-120b",
            "openai/gpt-oss-120b",
            &[],
            [36, 64, 8, 64, 2880, 2880],
            GEMMA2(128),
            (116.8, 5.1),
            201088,
            131072,
        ),
        e(
            "llama4-scout",
            "Llama-4-Scout-17B-16E",
            "meta-llama/Llama-4-Scout-17B-16E-Instruct",
            &["llama-4-scout", "llama4-scout-17b-16e"],
            [48, 40, 8, 128, 5120, 8192],
            Chunked {
                chunk: 8192,
                every: 4,
            },
            (109.0, 17.0),
            202048,
            10485760,
        ),
        e(
            "llama4-maverick",
            "Llama-4-Maverick-17B-128E",
            "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
            &["llama-4-maverick", "llama4-maverick-17b-128e"],
            [48, 40, 8, 128, 5120, 8192],
            Chunked {
                chunk: 8192,
                every: 4,
            },
            (400.0, 17.0),
            202048,
            1048576,
        ),
        e(
            "phi3-mini",
            "Phi-3-mini-4k",
            "microsoft/Phi-3-mini-4k-instruct",
            &["phi-3-mini"],
            [32, 32, 32, 96, 3072, 8192],
            AllSliding(2047),
            (3.82, 3.82),
            32064,
            4096,
        ),
        e(
            "qwen3-next-80b-a3b",
            "Qwen3-Next-80B-A3B",
            "Qwen/Qwen3-Next-80B-A3B-Instruct",
            &["qwen3-next", "qwen3-next-80b"],
            [48, 16, 2, 256, 2048, 512],
            Interval {
                every: 4,
                mixer: QWEN_GDN,
            },
            (80.0, 3.0),
            151936,
            262144,
        ),
        e(
            "qwen3.5-35b-a3b",
            "Qwen3.5-35B-A3B",
            "Qwen/Qwen3.5-35B-A3B",
            &["qwen3.5-35b"],
            [40, 16, 2, 256, 2048, 512],
            Interval {
                every: 4,
                mixer: QWEN_GDN,
            },
            (35.0, 3.0),
            248320,
            262144,
        ),
        e(
            "nemotron-h-8b",
            "Nemotron-H-8B-Base-8K",
            "nvidia/Nemotron-H-8B-Base-8K",
            &["nemotron-h"],
            [52, 32, 8, 128, 4096, 21504],
            Pattern(
                "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
                StateMixer::Mamba2 {
                    intermediate: 128 * 64,
                    n_groups: 8,
                    heads: 128,
                    head_dim: 64,
                    state_size: 128,
                    conv_kernel: 4,
                },
            ),
            (8.1, 8.1),
            131072,
            8192,
        ),
        e(
            "jamba-1.5-mini",
            "Jamba-1.5-Mini",
            "ai21labs/AI21-Jamba-1.5-Mini",
            &["jamba-mini", "jamba1.5-mini"],
            [32, 32, 8, 128, 4096, 14336],
            Period {
                period: 8,
                offset: 4,
                mixer: StateMixer::Mamba1 {
                    intermediate: 2 * 4096,
                    state_size: 16,
                    conv_kernel: 4,
                },
            },
            (51.6, 12.0),
            65536,
            262144,
        ),
        e(
            "falcon-h1-7b",
            "Falcon-H1-7B",
            "tiiuae/Falcon-H1-7B-Instruct",
            &["falcon-h1"],
            [44, 12, 2, 128, 3072, 12288],
            Parallel(StateMixer::Mamba2 {
                intermediate: 3072,
                n_groups: 1,
                heads: 24,
                head_dim: 128,
                state_size: 256,
                conv_kernel: 4,
            }),
            (7.59, 7.59),
            130048,
            262144,
        ),
        e(
            "gemma3n-e4b",
            "Gemma-3n-E4B",
            "google/gemma-3n-E4B-it",
            &["gemma-3n-e4b"],
            [35, 8, 2, 256, 2048, 16384],
            SharedKv {
                window: 512,
                period: 5,
                global_at: 4,
                shared: 15,
            },
            (7.85, 7.85),
            262400,
            32768,
        ),
        e(
            "phi3-medium",
            "Phi-3-medium-4k",
            "microsoft/Phi-3-medium-4k-instruct",
            &["phi-3-medium"],
            [40, 40, 10, 128, 5120, 17920],
            AllSliding(2047),
            (14.0, 14.0),
            32064,
            4096,
        ),
    ]
}

/// Every registry model, in registry order.
pub fn all() -> Vec<ModelInfo> {
    entries().iter().map(Entry::info).collect()
}

/// Folds a user-typed model name to a comparable form: lower case, no organisation prefix,
/// no `meta-` / `-hf` / `-instruct` / `-chat` / `-it` / `-base` decorations, no punctuation.
pub fn normalize(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let mut s = lower.rsplit('/').next().unwrap_or("").to_string();
    if let Some(rest) = s.strip_prefix("meta-") {
        s = rest.to_string();
    }
    loop {
        let stripped = ["-hf", "-instruct", "-chat", "-it", "-base"]
            .iter()
            .find_map(|suffix| s.strip_suffix(suffix).map(str::to_string));
        match stripped {
            Some(rest) => s = rest,
            None => break,
        }
    }
    s.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

/// Every name a model answers to: key, Hugging Face id, aliases.
fn names_of(info: &ModelInfo) -> Vec<&str> {
    let mut names = vec![info.key.as_str(), info.hf_id.as_str()];
    names.extend(info.aliases.iter().map(String::as_str));
    names
}

/// The registry names closest to `name`, best first.
pub fn suggestions(name: &str, count: usize) -> Vec<String> {
    let wanted = normalize(name);
    let mut scored: Vec<(f64, String)> = all()
        .into_iter()
        .map(|info| {
            let best = names_of(&info)
                .iter()
                .map(|n| strsim::jaro_winkler(&wanted, &normalize(n)))
                .fold(0.0, f64::max);
            (best, info.key.clone())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(count).map(|(_, key)| key).collect()
}

/// The config.json of a registry model whose published checkpoint is stored quantized
/// (its `quantization_config` says how), so that `--model NAME` sizes the weights a loader
/// allocates rather than parameters x bf16. The files are the cited fixtures in
/// planner/tests/fixtures (fixture-sources.md); models published in bf16 have none.
pub fn published_config(key: &str) -> Option<&'static str> {
    match key {
        "gpt-oss-20b" => Some(include_str!("../tests/fixtures/gpt-oss-20b.json")),
        "gpt-oss-120b" => Some(include_str!("../tests/fixtures/gpt-oss-120b.json")),
        "deepseek-v3" => Some(include_str!("../tests/fixtures/deepseek-v3.json")),
        _ => None,
    }
}

/// Finds a registry model by any of its names (`llama3-70b`, `meta-llama/Meta-Llama-3-70B`,
/// `Llama-3-70B-Instruct`, ...); an unknown name is an error listing the nearest names.
pub fn find(name: &str) -> Result<ModelInfo, PlanError> {
    if name.trim().is_empty() {
        return Err(PlanError::InvalidValue {
            what: "model".to_string(),
            value: "(empty)".to_string(),
            fix: "name a model (an empty item in a comma list?); `kvbench models` lists them"
                .to_string(),
        });
    }
    let wanted = normalize(name);
    if !wanted.is_empty() {
        if let Some(info) = all()
            .into_iter()
            .find(|info| names_of(info).iter().any(|n| normalize(n) == wanted))
        {
            return Ok(info);
        }
    }
    Err(PlanError::UnknownModel {
        name: name.to_string(),
        suggestions: suggestions(name, 3).join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgiving_names_find_the_same_model() {
        for name in [
            "llama3-70b",
            "meta-llama/Meta-Llama-3-70B",
            "Llama-3-70B-Instruct",
            "LLAMA_3_70B",
        ] {
            assert_eq!(find(name).unwrap().key, "llama3-70b", "{name}");
        }
        assert_eq!(find("Qwen/Qwen2.5-7B-Instruct").unwrap().key, "qwen2.5-7b");
        assert_eq!(find("google/gemma-2-9b-it").unwrap().key, "gemma2-9b");
        assert_eq!(find("deepseek-ai/DeepSeek-R1").unwrap().key, "deepseek-v3");
        assert_eq!(find("mistral-7b").unwrap().key, "mistral-7b-v0.1");
    }

    #[test]
    fn unknown_names_suggest_the_nearest() {
        let err = find("llama3-7b").unwrap_err().to_string();
        assert!(
            err.contains("'llama3-7b'") && err.contains("llama3-70b"),
            "{err}"
        );
        let err = find("qwen3-8").unwrap_err().to_string();
        assert!(err.contains("qwen3-8b"), "{err}");
        assert!(find("").is_err());
    }

    #[test]
    fn keys_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for info in all() {
            let own: std::collections::HashSet<String> =
                names_of(&info).iter().map(|n| normalize(n)).collect();
            for n in own {
                assert!(seen.insert(n.clone()), "{n} names two models");
            }
            assert_eq!(info.shape.layer_kinds.len(), info.shape.layers as usize);
        }
        assert!(all().len() >= 30);
    }
}
