//! Model shapes: what the KV cache of a model looks like, layer by layer.

use serde::{Deserialize, Serialize};

use crate::state::RecurrentState;

/// The attention of one layer, as far as the KV cache is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKind {
    /// Every earlier token is attended to and cached.
    Full,
    /// Only the last `window` tokens are attended to; a cache need hold no more.
    Sliding { window: u32 },
    /// Chunked local attention (Llama-4 `attention_chunk_size`): the token at position p
    /// attends to the positions of its own chunk, `chunk * (p / chunk)` to p, so the cache
    /// need hold no more than the chunk of the newest token.
    Chunked { chunk: u32 },
    /// Multi-head latent attention (DeepSeek-V2/V3): one latent of
    /// `kv_lora_rank + rope_dim` elements per token, shared by all heads.
    Mla { kv_lora_rank: u32, rope_dim: u32 },
    /// No attention: a recurrent-state layer (Mamba, gated delta-net; see
    /// [`ModelShape::state`]) or an MLP-only layer. Nothing is cached per token.
    NoAttention,
    /// Attends with the K and V an earlier layer `source` stored (Gemma-3n
    /// `num_kv_shared_layers`): nothing of its own is cached.
    SharedKv { source: u32 },
}

impl AttentionKind {
    /// Whether the layer stores K and V (or a latent) for every token.
    pub fn stores_kv(&self) -> bool {
        matches!(
            self,
            AttentionKind::Full
                | AttentionKind::Sliding { .. }
                | AttentionKind::Chunked { .. }
                | AttentionKind::Mla { .. }
        )
    }
}

/// The shape of a decoder-only transformer as the KV cache sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Display name, e.g. "Llama-3-70B".
    pub name: String,
    pub layers: u32,
    pub q_heads: u32,
    /// KV heads; GQA when < q_heads, MQA when 1.
    pub kv_heads: u32,
    pub head_dim: u32,
    pub hidden: u32,
    /// MLP inner width (per expert for MoE).
    pub intermediate: u32,
    /// Attention kind of each layer; `layer_kinds.len() == layers`.
    pub layer_kinds: Vec<AttentionKind>,
    /// Value head size where it differs from the query/key head size `head_dim` (DeepSeek
    /// MLA: QK over 192 = nope 128 + rope 64, values over 128); None when equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v_head_dim: Option<u32>,
    /// Per-sequence recurrent state (Mamba / gated delta-net layers); None for attention-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RecurrentState>,
}

impl ModelShape {
    /// A uniform full-attention shape (handy for tests and explicit `--q-heads/...` runs).
    pub fn uniform(
        name: &str,
        layers: u32,
        q_heads: u32,
        kv_heads: u32,
        head_dim: u32,
        hidden: u32,
        intermediate: u32,
    ) -> Self {
        ModelShape {
            name: name.to_string(),
            layers,
            q_heads,
            kv_heads,
            head_dim,
            hidden,
            intermediate,
            layer_kinds: vec![AttentionKind::Full; layers as usize],
            v_head_dim: None,
            state: None,
        }
    }

    /// Layers that store K and V (or a latent) per token.
    pub fn kv_layers(&self) -> u32 {
        self.layer_kinds.iter().filter(|k| k.stores_kv()).count() as u32
    }

    /// Layers that keep a recurrent state per sequence.
    pub fn state_layers(&self) -> u32 {
        self.state.as_ref().map_or(0, |s| s.layers.len() as u32)
    }

    /// Query heads sharing one KV head.
    pub fn group_size(&self) -> u32 {
        self.q_heads / self.kv_heads
    }
}
