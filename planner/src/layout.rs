//! Bytes a cache layout allocates and uses (contiguous, paged, windows, prefix sharing).
//!
//! Implements docs/storage-contract.md to the byte: the layouts in `workloads` assert that
//! their allocated bytes equal [`allocated_bytes`] for the same query.

use serde::{Deserialize, Serialize};

use crate::dtype::{residual_split, CacheDtype, GroupAxis};
use crate::error::PlanError;
use crate::shape::{AttentionKind, ModelShape};
use crate::span::Span;

/// How a cache is laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutKind {
    /// Nothing kept between steps (recompute): 0 cache bytes.
    None,
    /// Grows by reallocating to exactly the tokens held.
    Concat,
    /// Preallocated to the maximum length (sliding layers: ring buffers of the window).
    Contiguous,
    /// Fixed blocks of `block_size` tokens per layer, with optional prefix sharing.
    Paged { block_size: u32 },
}

/// One sizing question: a shape, its K/V dtypes, a layout, and a batch reaching `max_len`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayoutQuery<'a> {
    pub shape: &'a ModelShape,
    pub k: CacheDtype,
    pub v: CacheDtype,
    pub kind: LayoutKind,
    /// Sequences in the batch.
    pub batch: u32,
    /// Tokens each sequence reaches.
    pub max_len: u32,
    /// Leading tokens shared by the whole batch (paged layouts only; others ignore it).
    pub shared_prefix: u32,
    /// Sliding window for every non-MLA layer, replacing the shape's own layer kinds;
    /// `None` follows the shape.
    pub window: Option<u32>,
}

/// What one layer stores per token: `heads` vectors of `dim` elements, for K and V or,
/// for an MLA latent, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LayerStore {
    heads: u64,
    dim: u32,
    /// MLA: one latent (stored in the K dtype) instead of a K and a V.
    latent: bool,
    /// The positions the layer keeps (all, a window, or the newest token's chunk).
    span: Span,
}

impl LayerStore {
    fn sides<'d>(&self, k: &'d CacheDtype, v: &'d CacheDtype) -> Vec<&'d CacheDtype> {
        if self.latent {
            vec![k]
        } else {
            vec![k, v]
        }
    }
}

/// The per-layer stores of a query, after the window override.
fn layer_stores(q: &LayoutQuery) -> Vec<LayerStore> {
    q.shape
        .layer_kinds
        .iter()
        .map(|kind| match (kind, q.window) {
            (
                AttentionKind::Mla {
                    kv_lora_rank,
                    rope_dim,
                },
                _,
            ) => LayerStore {
                heads: 1,
                dim: kv_lora_rank.saturating_add(*rope_dim),
                latent: true,
                span: Span::All,
            },
            // A layer without attention, or reading another layer's KV, caches nothing.
            (AttentionKind::NoAttention | AttentionKind::SharedKv { .. }, _) => LayerStore {
                heads: 0,
                dim: q.shape.head_dim,
                latent: false,
                span: Span::All,
            },
            (_, Some(w)) => LayerStore {
                heads: q.shape.kv_heads as u64,
                dim: q.shape.head_dim,
                latent: false,
                span: Span::Window(w as u64),
            },
            (kind, None) => LayerStore {
                heads: q.shape.kv_heads as u64,
                dim: q.shape.head_dim,
                latent: false,
                span: Span::of(*kind).unwrap_or(Span::All),
            },
        })
        .collect()
}

/// Bytes one head allocates for a store holding at most `cap` tokens (residual rule of the
/// contract: quantized part of `cap` plus an f16 residual of `min(cap, residual)`).
fn side_allocated(d: &CacheDtype, cap: u64, dim: u32) -> u64 {
    if d.residual > 0 && !d.kind.is_float() {
        let (quantized, _) = residual_split(d, cap, dim);
        d.quantized_bytes(quantized, dim)
            + CacheDtype::residual_bytes(cap.min(d.residual as u64), dim)
    } else {
        d.quantized_bytes(cap, dim)
    }
}

/// Bytes one head's `len` stored tokens occupy (quantized part plus residual part).
fn side_used(d: &CacheDtype, len: u64, dim: u32) -> u64 {
    let (quantized, residual) = residual_split(d, len, dim);
    d.quantized_bytes(quantized, dim) + CacheDtype::residual_bytes(residual, dim)
}

fn invalid(what: &str, value: u32, fix: &str) -> PlanError {
    PlanError::InvalidValue {
        what: what.to_string(),
        value: value.to_string(),
        fix: fix.to_string(),
    }
}

/// Checks the sizes every layout needs.
fn validate(q: &LayoutQuery) -> Result<(), PlanError> {
    if q.batch == 0 {
        return Err(invalid("batch", 0, "give at least 1 sequence"));
    }
    if q.max_len == 0 {
        return Err(invalid("sequence length", 0, "give at least 1 token"));
    }
    if q.shared_prefix > q.max_len {
        return Err(invalid(
            "shared prefix",
            q.shared_prefix,
            &format!("it cannot exceed the sequence length {}", q.max_len),
        ));
    }
    if q.window == Some(0) {
        return Err(invalid("window", 0, "give at least 1 token, or no window"));
    }
    if q.shape.layer_kinds.is_empty() || q.shape.kv_heads == 0 || q.shape.head_dim == 0 {
        return Err(PlanError::Layout(format!(
            "model '{}' has no layers, KV heads or head_dim to cache",
            q.shape.name
        )));
    }
    Ok(())
}

/// Checks that a paged layout can hold the dtypes with blocks of `block` tokens.
fn validate_paged(q: &LayoutQuery, block: u32) -> Result<(), PlanError> {
    if block == 0 {
        return Err(invalid(
            "block size",
            0,
            "give at least 1 token per block (vLLM uses 16)",
        ));
    }
    for (side, d) in [("keys", &q.k), ("values", &q.v)] {
        if d.residual > 0 && !d.kind.is_float() {
            return Err(PlanError::Layout(format!(
                "{side} dtype {d} keeps an f16 residual, which a paged layout cannot hold; use a contiguous or concat layout, or a dtype without residual"
            )));
        }
        if d.axis == GroupAxis::Channel && !d.kind.is_float() {
            let g = d.group_len(q.shape.head_dim);
            if !block.is_multiple_of(g) {
                return Err(PlanError::Layout(format!(
                    "{side} dtype {d} groups {g} tokens per channel, which does not divide the block size {block}; pick a block size that is a multiple of {g}"
                )));
            }
        }
    }
    Ok(())
}

/// Pool blocks a batch of `batch` sequences growing to `len` tokens holds in a layer keeping
/// `span`, the blocks lying wholly inside the first `prefix` tokens held once for the batch.
/// A chunked layer is counted at its widest moment: the end of a chunk, or `len`.
fn paged_blocks(span: Span, len: u64, block: u64, prefix: u64, batch: u128) -> u128 {
    let at = |t: u64| {
        let held = span.blocks_at(t, block);
        let shared_full = prefix.min(t) / block;
        let shared = shared_full.saturating_sub(span.first(t) / block).min(held);
        shared as u128 + batch * (held - shared) as u128
    };
    match span {
        Span::Chunk(c) if len > c => span
            .chunk_ends_from(len, block, prefix.div_ceil(c))
            .map(at)
            .max()
            .unwrap_or(0),
        _ => at(len),
    }
}

/// Bytes the layout holds for the query (what a cache of that layout allocates).
pub fn allocated_bytes(q: &LayoutQuery) -> Result<u64, PlanError> {
    validate(q)?;
    let b = q.batch as u128;
    let len = q.max_len as u64;
    let stores = layer_stores(q);
    let total: u128 = match q.kind {
        LayoutKind::None => 0,
        LayoutKind::Concat | LayoutKind::Contiguous => stores
            .iter()
            .map(|s| {
                let cap = s.span.peak(len);
                let per_head: u128 = s
                    .sides(&q.k, &q.v)
                    .iter()
                    .map(|d| side_allocated(d, cap, s.dim) as u128)
                    .sum();
                b * s.heads as u128 * per_head
            })
            .sum(),
        LayoutKind::Paged { block_size } => {
            validate_paged(q, block_size)?;
            let block = block_size as u64;
            stores
                .iter()
                .map(|s| {
                    let block_bytes: u128 = s.heads as u128
                        * s.sides(&q.k, &q.v)
                            .iter()
                            .map(|d| d.quantized_bytes(block, s.dim) as u128)
                            .sum::<u128>();
                    paged_blocks(s.span, len, block, q.shared_prefix as u64, b) * block_bytes
                })
                .sum()
        }
    };
    fits_u64(total)
}

/// Converts a byte total computed wide back to u64, refusing sizes past 16 EiB.
fn fits_u64(total: u128) -> Result<u64, PlanError> {
    u64::try_from(total).map_err(|_| PlanError::TooLarge { bytes: total })
}

/// Bytes of the tokens actually stored (shared prefix counted once for paged layouts);
/// `allocated_bytes - used_bytes` is the layout's waste.
pub fn used_bytes(q: &LayoutQuery) -> Result<u64, PlanError> {
    validate(q)?;
    let b = q.batch as u64;
    let len = q.max_len as u64;
    let stores = layer_stores(q);
    let total: u128 = match q.kind {
        LayoutKind::None => 0,
        LayoutKind::Concat | LayoutKind::Contiguous => stores
            .iter()
            .map(|s| {
                let held = s.span.held(len);
                let per_head: u128 = s
                    .sides(&q.k, &q.v)
                    .iter()
                    .map(|d| side_used(d, held, s.dim) as u128)
                    .sum();
                b as u128 * s.heads as u128 * per_head
            })
            .sum(),
        LayoutKind::Paged { block_size } => {
            validate_paged(q, block_size)?;
            let prefix = q.shared_prefix as u64;
            stores
                .iter()
                .map(|s| {
                    let held = s.span.held(len);
                    let start = s.span.first(len);
                    let shared = prefix.saturating_sub(start).min(held);
                    let tokens = shared + b * (held - shared);
                    s.heads as u128
                        * s.sides(&q.k, &q.v)
                            .iter()
                            .map(|d| d.quantized_bytes(tokens, s.dim) as u128)
                            .sum::<u128>()
                })
                .sum()
        }
    };
    fits_u64(total)
}

/// Bytes one token adds to each layer's cache (all KV heads, K and V, scales included,
/// residual excluded), in layer order.
pub fn bytes_per_token_per_layer(shape: &ModelShape, k: &CacheDtype, v: &CacheDtype) -> Vec<f64> {
    let q = LayoutQuery {
        shape,
        k: *k,
        v: *v,
        kind: LayoutKind::Contiguous,
        batch: 1,
        max_len: 1,
        shared_prefix: 0,
        window: None,
    };
    layer_stores(&q)
        .iter()
        .map(|s| {
            let bits: f64 = s
                .sides(k, v)
                .iter()
                .map(|d| d.bits_per_element(s.dim))
                .sum();
            s.heads as f64 * s.dim as f64 * bits / 8.0
        })
        .collect()
}

/// Bytes one token adds to the whole model's cache (sum over layers).
pub fn bytes_per_token(shape: &ModelShape, k: &CacheDtype, v: &CacheDtype) -> f64 {
    bytes_per_token_per_layer(shape, k, v).iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::{parse_kv_dtypes, DtypeKind};

    const F16: CacheDtype = CacheDtype {
        kind: DtypeKind::F16,
        group_size: None,
        scale_bytes: 0,
        zero_point: false,
        axis: GroupAxis::Token,
        residual: 0,
    };

    fn query(shape: &ModelShape, kind: LayoutKind, batch: u32, max_len: u32) -> LayoutQuery<'_> {
        LayoutQuery {
            shape,
            k: F16,
            v: F16,
            kind,
            batch,
            max_len,
            shared_prefix: 0,
            window: None,
        }
    }

    fn llama2_7b() -> ModelShape {
        ModelShape::uniform("Llama-2-7B", 32, 32, 32, 128, 4096, 11008)
    }

    #[test]
    fn worked_example_is_512_mib() {
        // REFERENCE.md: 32 layers x 1024 tokens x 2 x 32 heads x 128 x 2 bytes = 512 MiB.
        let s = llama2_7b();
        let q = query(&s, LayoutKind::Contiguous, 1, 1024);
        assert_eq!(allocated_bytes(&q).unwrap(), 536_870_912);
        assert_eq!(used_bytes(&q).unwrap(), 512 << 20);
        assert_eq!(bytes_per_token(&s, &F16, &F16), 524_288.0);
    }

    #[test]
    fn llama3_70b_at_4096_tokens_is_1_25_gib() {
        let s = ModelShape::uniform("Llama-3-70B", 80, 64, 8, 128, 8192, 28672);
        let q = query(&s, LayoutKind::Contiguous, 1, 4096);
        assert_eq!(allocated_bytes(&q).unwrap(), 1_342_177_280);
        assert_eq!(bytes_per_token(&s, &F16, &F16), 327_680.0);
        let concat = query(&s, LayoutKind::Concat, 1, 4096);
        assert_eq!(allocated_bytes(&concat).unwrap(), 1_342_177_280);
        assert_eq!(
            allocated_bytes(&query(&s, LayoutKind::None, 1, 4096)).unwrap(),
            0
        );
    }

    #[test]
    fn mla_latent_is_one_vector_per_layer() {
        let mut s = ModelShape::uniform("DeepSeek-V3", 61, 128, 128, 192, 7168, 18432);
        s.layer_kinds = vec![
            AttentionKind::Mla {
                kv_lora_rank: 512,
                rope_dim: 64
            };
            61
        ];
        assert_eq!(bytes_per_token(&s, &F16, &F16), 70_272.0);
        let q = query(&s, LayoutKind::Contiguous, 2, 100);
        assert_eq!(allocated_bytes(&q).unwrap(), 2 * 100 * 70_272);
        // 100 tokens in blocks of 64: 2 blocks per sequence per layer.
        let p = query(&s, LayoutKind::Paged { block_size: 64 }, 2, 100);
        assert_eq!(allocated_bytes(&p).unwrap(), 2 * 2 * 64 * 70_272);
    }

    #[test]
    fn paged_rounds_up_to_whole_blocks() {
        let s = llama2_7b();
        let q = query(&s, LayoutKind::Paged { block_size: 16 }, 3, 17);
        // 17 tokens take 2 blocks of 16: 32 token slots per sequence.
        assert_eq!(allocated_bytes(&q).unwrap(), 3 * 32 * 524_288);
        assert_eq!(used_bytes(&q).unwrap(), 3 * 17 * 524_288);
    }

    #[test]
    fn prefix_sharing_holds_full_prefix_blocks_once() {
        let s = llama2_7b();
        let mut q = query(&s, LayoutKind::Paged { block_size: 16 }, 4, 40);
        q.shared_prefix = 33;
        // 3 blocks per sequence; the 2 full prefix blocks once, the 3rd (partial prefix,
        // copy-on-write) per sequence: 2 + 4 x 1 = 6 blocks per layer.
        assert_eq!(allocated_bytes(&q).unwrap(), 6 * 16 * 524_288);
        // 33 shared tokens once + 4 x 7 own tokens.
        assert_eq!(used_bytes(&q).unwrap(), (33 + 4 * 7) * 524_288);
    }

    #[test]
    fn sliding_layers_hold_only_window_blocks() {
        let s = ModelShape::uniform("one", 1, 1, 1, 64, 64, 64);
        let mut q = query(&s, LayoutKind::Paged { block_size: 16 }, 1, 1000);
        q.window = Some(100);
        let block = 16 * 2 * 64 * 2;
        // Positions 900..999 overlap blocks 56..=62: 7 blocks.
        assert_eq!(allocated_bytes(&q).unwrap(), 7 * block);
        assert_eq!(used_bytes(&q).unwrap(), 100 * 2 * 64 * 2);
        q.kind = LayoutKind::Contiguous;
        assert_eq!(allocated_bytes(&q).unwrap(), 100 * 2 * 64 * 2);
        // Aligned window: 4096 positions from 5904 = 369 x 16 are exactly 256 blocks.
        q.kind = LayoutKind::Paged { block_size: 16 };
        q.window = Some(4096);
        q.max_len = 10_000;
        assert_eq!(allocated_bytes(&q).unwrap(), 256 * block);
    }

    #[test]
    fn model_sliding_layers_mix_with_full_layers() {
        let mut s = ModelShape::uniform("hybrid", 2, 8, 4, 128, 1024, 4096);
        s.layer_kinds[0] = AttentionKind::Sliding { window: 512 };
        let q = query(&s, LayoutKind::Contiguous, 1, 2048);
        let per_token_layer = 2 * 4 * 128 * 2;
        assert_eq!(allocated_bytes(&q).unwrap(), (512 + 2048) * per_token_layer);
    }

    #[test]
    fn kivi_contiguous_counts_quantized_groups_and_residual() {
        let s = ModelShape::uniform("one", 1, 1, 1, 128, 128, 128);
        let pair = parse_kv_dtypes("kivi2/r128").unwrap();
        let q = LayoutQuery {
            k: pair.k,
            v: pair.v,
            ..query(&s, LayoutKind::Contiguous, 1, 1000)
        };
        // K: 896 quantized tokens (whole groups of 32) = 896*128*2/8 + 3584 groups * 4 B,
        //    plus a 128-token f16 residual. V: 872 quantized tokens per token, same residual.
        let k = 28_672 + 14_336 + 32_768;
        let v = 27_904 + 13_952 + 32_768;
        assert_eq!(allocated_bytes(&q).unwrap(), k + v);
        let paged = LayoutQuery {
            kind: LayoutKind::Paged { block_size: 16 },
            ..q
        };
        let err = allocated_bytes(&paged).unwrap_err().to_string();
        assert!(err.contains("residual"), "{err}");
    }

    #[test]
    fn bad_sizes_are_errors_naming_the_value() {
        let s = llama2_7b();
        let e = allocated_bytes(&query(&s, LayoutKind::Contiguous, 0, 10)).unwrap_err();
        assert!(e.to_string().contains("batch = 0"), "{e}");
        let e =
            allocated_bytes(&query(&s, LayoutKind::Paged { block_size: 0 }, 1, 10)).unwrap_err();
        assert!(e.to_string().contains("block size = 0"), "{e}");
        let mut q = query(&s, LayoutKind::Paged { block_size: 16 }, 1, 10);
        q.shared_prefix = 11;
        assert!(allocated_bytes(&q)
            .unwrap_err()
            .to_string()
            .contains("shared prefix = 11"));
    }
}
