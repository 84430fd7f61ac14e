//! The planner's one prefill cost model: FLOPs linear in the tokens (2 per weight a token
//! passes) plus causal attention (each query attends to the keys before it, or to its window).
//! `plan --gpu` (the TTFT bound), `plan --tiers` (reload versus recompute) use it alike.
//!
//! Attention of one (query, key) pair per layer: QKᵀ over the QK head size and PV over the
//! value head size, 2 FLOPs per multiply-add: 2 · q_heads · (d_qk + d_v). DeepSeek's MLA
//! prefill runs in this (non-absorbed) form with d_qk = 192 and d_v = v_head_dim = 128.
//! Layers without attention (Mamba, gated delta-net) add no pairs: their mixer's FLOPs are
//! linear in the tokens and counted with the weights.

use crate::registry::ModelInfo;
use crate::shape::{AttentionKind, ModelShape};
use crate::span::Span;

/// FLOPs of one prefill, split into the part linear in the tokens and causal attention.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefillCost {
    /// FLOPs per token of the projections and MLP (2 × non-embedding weights).
    pub linear_flops_per_token: f64,
    /// Per attending layer: FLOPs per (query, key) pair, and the keys a query sees (all
    /// earlier ones, a window, or its own chunk).
    pub attention: Vec<(f64, Span)>,
}

/// FLOPs per (query, key) pair of every layer of `shape` that attends.
fn attention_terms(shape: &ModelShape) -> Vec<(f64, Span)> {
    let q = shape.q_heads as f64;
    let d_qk = shape.head_dim as f64;
    let d_v = shape.v_head_dim.unwrap_or(shape.head_dim) as f64;
    let per_pair = 2.0 * q * (d_qk + d_v);
    shape
        .layer_kinds
        .iter()
        .filter_map(|kind| {
            // A KV-sharing layer reads the KV of `source` and attends as that layer does.
            let attends = match *kind {
                AttentionKind::SharedKv { source } => shape
                    .layer_kinds
                    .get(source as usize)
                    .copied()
                    .unwrap_or(AttentionKind::Full),
                other => other,
            };
            match attends {
                AttentionKind::NoAttention => None,
                other => Some((per_pair, Span::of(other).unwrap_or(Span::All))),
            }
        })
        .collect()
}

impl PrefillCost {
    /// Dense decoder cost of `shape` alone: per attending layer Q, K, V, O projections, and
    /// a gated MLP (three `hidden × intermediate` matrices) on every layer. For a model with
    /// a published parameter count use [`PrefillCost::of_model`].
    pub fn of(shape: &ModelShape) -> PrefillCost {
        let (h, d) = (shape.hidden as f64, shape.head_dim as f64);
        let (q, kv) = (shape.q_heads as f64, shape.kv_heads as f64);
        let attending = shape
            .layer_kinds
            .iter()
            .filter(|k| **k != AttentionKind::NoAttention)
            .count() as f64;
        let mlp = 3.0 * h * shape.intermediate as f64;
        let projections = h * d * (2.0 * q + 2.0 * kv);
        PrefillCost {
            linear_flops_per_token: 2.0 * (attending * projections + shape.layers as f64 * mlp),
            attention: attention_terms(shape),
        }
    }

    /// Cost of a model with its parameter counts: 2 FLOPs per parameter a token uses, less
    /// the embedding table and LM head (a lookup, and logits only for the last token), i.e.
    /// 2 × (active − 2 · vocab · hidden); attention as [`PrefillCost::of`].
    pub fn of_model(model: &ModelInfo) -> PrefillCost {
        let shape = &model.shape;
        if model.active_params <= 0.0 {
            return PrefillCost::of(shape);
        }
        let embeddings = 2.0 * model.vocab as f64 * shape.hidden as f64;
        PrefillCost {
            linear_flops_per_token: 2.0 * (model.active_params - embeddings).max(0.0),
            attention: attention_terms(shape),
        }
    }

    /// FLOPs to prefill `n` tokens: token `i` (1-based) attends to `i` keys, `min(i, window)`
    /// in a window, those of its own chunk in a chunked layer.
    pub fn flops(&self, n: u64) -> f64 {
        let attention: f64 = self
            .attention
            .iter()
            .map(|&(per_pair, span)| per_pair * causal_pairs(n, span))
            .sum();
        self.linear_flops_per_token * n as f64 + attention
    }

    /// Seconds to prefill `n` tokens at `flops_per_s` effective FLOP/s.
    pub fn seconds(&self, n: u64, flops_per_s: f64) -> f64 {
        self.flops(n) / flops_per_s
    }

    /// Effective FLOP/s of a deployment measured at `tokens_per_s` prefilling `n`-token prompts.
    pub fn rate_from_throughput(&self, n: u64, tokens_per_s: f64) -> f64 {
        self.flops(n) * tokens_per_s / n as f64
    }
}

/// (query, key) pairs of causal attention over `n` tokens: Σᵢ of the keys token i sees.
pub fn causal_pairs(n: u64, span: Span) -> f64 {
    let triangle = |t: f64| t * (t + 1.0) / 2.0;
    match span {
        Span::Window(w) if w < n => triangle(w as f64) + (n - w) as f64 * w as f64,
        // Every whole chunk is a triangle of its own, the last partial one a smaller one.
        Span::Chunk(c) if c > 0 && c < n => {
            (n / c) as f64 * triangle(c as f64) + triangle((n % c) as f64)
        }
        _ => triangle(n as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn deepseek_attention_uses_qk_192_and_v_128() {
        // 61 MLA layers, 128 heads: 2 x 128 x (192 + 128) = 81,920 FLOPs a pair (not
        // 4 x 128 x 192 = 98,304); 1000 tokens: 500,500 pairs a layer.
        let m = registry::find("deepseek-v3").unwrap();
        let c = PrefillCost::of_model(&m);
        assert_eq!(c.attention.len(), 61);
        assert_eq!(c.attention[0], (81_920.0, Span::All));
        let linear = 2.0 * (37e9 - 2.0 * 129_280.0 * 7168.0);
        let expect = linear * 1000.0 + 61.0 * 81_920.0 * 500_500.0;
        assert!((c.flops(1000) / expect - 1.0).abs() < 1e-12);
    }

    #[test]
    fn state_layers_add_no_attention_pairs() {
        // Qwen3-Next: 12 of 48 layers attend: 2 x 16 x (256 + 256) = 16,384 a pair.
        let m = registry::find("qwen3-next-80b-a3b").unwrap();
        let c = PrefillCost::of_model(&m);
        assert_eq!(c.attention, vec![(16_384.0, Span::All); 12]);
    }
}
