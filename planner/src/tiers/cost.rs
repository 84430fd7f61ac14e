//! What a cached prefix weighs (bytes per token, layer by layer); what recomputing it costs is
//! the planner's one prefill model, [`crate::prefill::PrefillCost`].

pub use crate::prefill::PrefillCost;

use crate::span::Span;
use crate::{AttentionKind, CacheDtype, ModelShape};

/// KV bytes one token adds to one layer, and how many tokens that layer keeps at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerBytes {
    /// Bytes per token of this layer, K and V of every KV head (or the MLA latent).
    pub bytes_per_token: f64,
    /// The positions the layer keeps (all, the last `window`, or the newest token's chunk).
    pub span: Span,
}

/// The KV footprint of a model: one entry per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct KvFootprint {
    pub layers: Vec<LayerBytes>,
}

/// Bytes per element-run of `elems` elements per token in `dtype`, averaged over one group of
/// tokens so channel-grouped keys (KIVI) come out exact.
fn per_token(dtype: &CacheDtype, elems: u32) -> f64 {
    let tokens = match dtype.axis {
        crate::GroupAxis::Channel => dtype.group_len(elems) as u64,
        crate::GroupAxis::Token => 1,
    };
    dtype.quantized_bytes(tokens, elems) as f64 / tokens as f64
}

impl KvFootprint {
    /// Footprint of `shape` stored as `k`/`v` (quantized codes plus scales; a residual is not
    /// offloaded, so it is not counted). MLA layers hold one latent per token in the K dtype.
    pub fn of(shape: &ModelShape, k: &CacheDtype, v: &CacheDtype) -> KvFootprint {
        let layers = shape
            .layer_kinds
            .iter()
            .map(|kind| {
                let heads = shape.kv_heads as f64;
                let kv = heads * (per_token(k, shape.head_dim) + per_token(v, shape.head_dim));
                match *kind {
                    AttentionKind::Mla {
                        kv_lora_rank,
                        rope_dim,
                    } => LayerBytes {
                        bytes_per_token: per_token(k, kv_lora_rank + rope_dim),
                        span: Span::All,
                    },
                    // Nothing of its own per token (state layers keep a fixed state instead).
                    AttentionKind::NoAttention | AttentionKind::SharedKv { .. } => LayerBytes {
                        bytes_per_token: 0.0,
                        span: Span::All,
                    },
                    other => LayerBytes {
                        bytes_per_token: kv,
                        span: Span::of(other).unwrap_or(Span::All),
                    },
                }
            })
            .collect();
        KvFootprint { layers }
    }

    /// Bytes every token costs when all layers keep it (windows ignored).
    pub fn bytes_per_token(&self) -> f64 {
        self.layers.iter().map(|l| l.bytes_per_token).sum()
    }

    /// Bytes one sequence of `len` tokens keeps (sliding layers keep only their window,
    /// chunked layers the newest token's chunk).
    pub fn sequence_bytes(&self, len: u64) -> f64 {
        self.layers
            .iter()
            .map(|l| l.bytes_per_token * l.span.held(len) as f64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefill::causal_pairs;
    use crate::DtypeKind;

    fn f16() -> CacheDtype {
        CacheDtype::new(DtypeKind::F16)
    }

    #[test]
    fn reference_bytes_per_token() {
        // REFERENCE.md: Llama-3-70B 327,680 bytes/token; 4096 tokens = 1.25 GiB.
        let llama70 = ModelShape::uniform("Llama-3-70B", 80, 64, 8, 128, 8192, 28672);
        let fp = KvFootprint::of(&llama70, &f16(), &f16());
        assert_eq!(fp.bytes_per_token(), 327_680.0);
        assert_eq!(fp.sequence_bytes(4096), 1.25 * (1u64 << 30) as f64);
        // OPT-13B: 819,200 bytes/token (vLLM paper).
        let opt = ModelShape::uniform("OPT-13B", 40, 40, 40, 128, 5120, 20480);
        assert_eq!(
            KvFootprint::of(&opt, &f16(), &f16()).bytes_per_token(),
            819_200.0
        );
        // DeepSeek-V3 MLA: 61 × (512 + 64) × 2 = 70,272.
        let mut ds = ModelShape::uniform("DeepSeek-V3", 61, 128, 128, 128, 7168, 2048);
        ds.layer_kinds = vec![
            AttentionKind::Mla {
                kv_lora_rank: 512,
                rope_dim: 64
            };
            61
        ];
        assert_eq!(
            KvFootprint::of(&ds, &f16(), &f16()).bytes_per_token(),
            70_272.0
        );
    }

    #[test]
    fn quantized_and_kivi_footprints() {
        let shape = ModelShape::uniform("t", 1, 1, 1, 128, 128, 128);
        // q4_0: 18 bytes per 32 values → 128 channels = 72 bytes, K and V = 144.
        let q4 = CacheDtype::q4_0();
        assert_eq!(KvFootprint::of(&shape, &q4, &q4).bytes_per_token(), 144.0);
        // KIVI int2 keys per channel over 32 tokens: 32×128×2 bits = 1024 B + 128 groups × 4 B
        // = 1536 B per 32 tokens = 48 B/token; values per token: 32 B codes + 4 groups × 4 B = 48.
        let (k, v) = CacheDtype::kivi(DtypeKind::Int2, 128);
        assert_eq!(KvFootprint::of(&shape, &k, &v).bytes_per_token(), 96.0);
    }

    #[test]
    fn sliding_layers_keep_only_their_window() {
        let mut shape = ModelShape::uniform("t", 2, 1, 1, 64, 64, 64);
        shape.layer_kinds[1] = AttentionKind::Sliding { window: 100 };
        let fp = KvFootprint::of(&shape, &f16(), &f16());
        // 256 B/token per layer: 1000 tokens = 256 000 + 100 × 256.
        assert_eq!(fp.sequence_bytes(1000), 256_000.0 + 25_600.0);
        assert_eq!(fp.sequence_bytes(50), 2.0 * 50.0 * 256.0);
    }

    #[test]
    fn linear_flops_are_twice_the_non_embedding_weights() {
        // Llama-3.1-8B: 8.03 B parameters less 2 × 128256 × 4096 embedding/head
        // = 6.98 B in the layers; 2 FLOPs each per token.
        let llama8 = ModelShape::uniform("Llama-3.1-8B", 32, 32, 8, 128, 4096, 14336);
        let cost = PrefillCost::of(&llama8);
        assert_eq!(cost.linear_flops_per_token, 13_958_643_712.0);
        let embedding = 2.0 * 128_256.0 * 4096.0;
        let params = cost.linear_flops_per_token / 2.0 + embedding;
        assert!((params / 8.03e9 - 1.0).abs() < 0.01, "{params}");
    }

    #[test]
    fn attention_is_quadratic_and_windows_make_it_linear() {
        let shape = ModelShape::uniform("t", 1, 2, 1, 4, 8, 8);
        let cost = PrefillCost {
            linear_flops_per_token: 0.0,
            ..PrefillCost::of(&shape)
        };
        // 4 × 2 heads × 4 dims = 32 FLOPs per pair; 3 tokens → 1 + 2 + 3 = 6 pairs.
        assert_eq!(cost.flops(3), 192.0);
        assert_eq!(
            cost.flops(2000) / cost.flops(1000),
            2001.0 * 2000.0 / (1001.0 * 1000.0)
        );
        // Window 2 over 5 tokens: 1 + 2 + 2 + 2 + 2 = 9 pairs.
        assert_eq!(causal_pairs(5, Span::Window(2)), 9.0);
        assert_eq!(causal_pairs(5, Span::Window(10)), 15.0);
        // Chunks of 2 over 5 tokens: 1+2, 1+2, 1 = 7 pairs.
        assert_eq!(causal_pairs(5, Span::Chunk(2)), 7.0);
        assert_eq!(causal_pairs(5, Span::Chunk(8)), 15.0);
    }

    #[test]
    fn rate_from_throughput_inverts_seconds() {
        let cost = PrefillCost::of(&ModelShape::uniform("t", 2, 4, 2, 16, 64, 128));
        let rate = cost.rate_from_throughput(512, 10_000.0);
        assert!((cost.seconds(512, rate) - 512.0 / 10_000.0).abs() < 1e-12);
    }
}
