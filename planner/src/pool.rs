//! vLLM's (v1) KV block pool for the layers on one GPU: how layers are grouped, how many
//! blocks a budget holds, and how many blocks a request takes.
//!
//! Layers of one attention kind (full, or sliding with one window) form groups of
//! `group_size` layers; a pool block is `group_size` pages (a page: `block_size` tokens of one
//! layer) and each group keeps its own block table. A model with one kind has one group of all
//! its layers; a hybrid model (e.g. Gemma-3's 52 sliding + 10 full layers) has group size
//! min(count) — or max(count) when max < 1.5 x min — and ceil(count / group_size) groups per
//! kind, padding included. The "GPU KV cache size" vLLM logs is blocks // groups x block_size.
//!
//! State layers (Mamba, gated delta-net) are one more kind: their page is one sequence's
//! state, the attention block grows until its page holds that state, and the state page is
//! padded to the attention page ([`HYBRID_RULE`]); a request takes one block per state group.

use crate::dtype::KvDtypes;
use crate::error::PlanError;
use crate::layout::{allocated_bytes, bytes_per_token_per_layer, LayoutKind, LayoutQuery};
use crate::shape::{AttentionKind, ModelShape};
use crate::span::Span;

/// Token alignment of an attention block when vLLM grows it to hold a state page (the
/// FlashAttention backend's kernel block alignment).
pub const KERNEL_BLOCK_ALIGNMENT: u32 = 16;

/// The rule the hybrid figures follow, for output.
pub const HYBRID_RULE: &str = "vLLM v0.11 hybrid allocator (HybridAttentionMambaModelConfig): attention block grown to a multiple of 16 tokens whose page holds one layer's state, state pages padded to it, one block per state layer per request";

/// The block pool of one GPU for a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Tokens per attention block (the asked block size, or larger for state layers).
    pub block_size: u32,
    /// Layers per group (pages per pool block).
    pub group_size: u64,
    /// One (kind, block table) group after another.
    pub groups: u64,
    /// Groups of state layers among them.
    pub state_groups: u64,
    /// Bytes of one page: `block_size` tokens of one layer (or one layer's padded state).
    pub page_bytes: u64,
    /// Bytes of one layer's state before padding (0 without state layers).
    pub state_page_bytes: u64,
    /// Bytes of one pool block: `group_size` pages.
    pub block_bytes: u64,
    /// Pool blocks the budget holds.
    pub blocks: u64,
    /// Tokens as vLLM reports them: blocks // groups x block_size.
    pub token_capacity: u64,
}

/// One layer of vLLM's KV cache config: an attention layer of some kind, or a state layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    Attention(AttentionKind),
    State,
}

/// The cache layers of a shape: its KV-storing layers, then one per state layer (Falcon-H1
/// layers count twice: attention and state side by side). Layers without attention and
/// layers reading another's KV have no spec.
fn specs(shape: &ModelShape) -> Vec<Spec> {
    let mut out: Vec<Spec> = shape
        .layer_kinds
        .iter()
        .filter(|k| k.stores_kv())
        .map(|k| Spec::Attention(*k))
        .collect();
    out.extend(std::iter::repeat_n(
        Spec::State,
        shape.state_layers() as usize,
    ));
    out
}

/// Layer count of each distinct spec, in first-seen order.
fn kinds_with_counts(specs: &[Spec]) -> Vec<(Spec, u64)> {
    let mut counts: Vec<(Spec, u64)> = Vec::new();
    for spec in specs {
        match counts.iter_mut().find(|(k, _)| k == spec) {
            Some((_, n)) => *n += 1,
            None => counts.push((*spec, 1)),
        }
    }
    counts
}

/// (group size, groups per spec) for the layers, as vLLM groups them.
fn grouping(specs: &[Spec]) -> (u64, Vec<(Spec, u64)>) {
    let counts = kinds_with_counts(specs);
    if counts.len() <= 1 {
        return (
            specs.len() as u64,
            counts.iter().map(|(k, _)| (*k, 1)).collect(),
        );
    }
    let min = counts.iter().map(|c| c.1).min().unwrap_or(1);
    let max = counts.iter().map(|c| c.1).max().unwrap_or(1);
    let group_size = if (max as f64) < 1.5 * min as f64 {
        max
    } else {
        min
    };
    let groups = counts
        .iter()
        .map(|(k, n)| (*k, n.div_ceil(group_size)))
        .collect();
    (group_size, groups)
}

/// Bytes of one page (`block` tokens) of one layer of `kind`.
fn page_bytes(
    shape: &ModelShape,
    kind: AttentionKind,
    kv: &KvDtypes,
    block: u32,
) -> Result<u64, PlanError> {
    let mut one = shape.clone();
    one.layers = 1;
    one.state = None;
    // A page is the same whatever the window or chunk: they only decide how many are held.
    one.layer_kinds = vec![match kind {
        AttentionKind::Sliding { .. } | AttentionKind::Chunked { .. } => AttentionKind::Full,
        other => other,
    }];
    allocated_bytes(&LayoutQuery {
        shape: &one,
        k: kv.k,
        v: kv.v,
        kind: LayoutKind::Paged { block_size: block },
        batch: 1,
        max_len: block,
        shared_prefix: 0,
        window: None,
    })
}

/// The attention block size vLLM settles on when state layers share the pool: the smallest
/// multiple of [`KERNEL_BLOCK_ALIGNMENT`] tokens whose page (`attn_token_bytes` a token) holds
/// `state_page` bytes, or the asked `block` when that is larger.
pub fn hybrid_block_size(attn_token_bytes: u64, state_page: u64, block: u32) -> u32 {
    if attn_token_bytes == 0 || state_page == 0 {
        return block;
    }
    let align = KERNEL_BLOCK_ALIGNMENT as u64;
    let aligned = align * state_page.div_ceil(align * attn_token_bytes);
    block.max(aligned.min(u32::MAX as u64) as u32)
}

/// The block size the pool uses for `shape` with `state_page` bytes per state layer.
pub fn effective_block_size(shape: &ModelShape, kv: &KvDtypes, block: u32, state_page: u64) -> u32 {
    if shape.state_layers() == 0 {
        return block;
    }
    // Bytes one token adds to one attention layer (the largest, should kinds differ).
    let per_token = bytes_per_token_per_layer(shape, &kv.k, &kv.v)
        .into_iter()
        .fold(0.0, f64::max)
        .ceil() as u64;
    hybrid_block_size(per_token, state_page, block)
}

/// The pool a per-GPU `budget` holds for `shape` (the layers on one GPU), attention only.
pub fn pool(shape: &ModelShape, kv: &KvDtypes, block: u32, budget: u64) -> Result<Pool, PlanError> {
    pool_with_state(shape, kv, block, budget, 0)
}

/// The pool a per-GPU `budget` holds for `shape`, whose state layers each take `state_page`
/// bytes per sequence on this GPU (see [`crate::state`]).
pub fn pool_with_state(
    shape: &ModelShape,
    kv: &KvDtypes,
    block: u32,
    budget: u64,
    state_page: u64,
) -> Result<Pool, PlanError> {
    let state_page = if shape.state_layers() == 0 {
        0
    } else {
        state_page
    };
    let block = effective_block_size(shape, kv, block, state_page);
    let all = specs(shape);
    let (group_size, groups) = grouping(&all);
    let mut pages = Vec::new();
    for (spec, _) in kinds_with_counts(&all) {
        pages.push(match spec {
            Spec::Attention(k) => page_bytes(shape, k, kv, block)?,
            Spec::State => state_page,
        });
    }
    let n_groups: u64 = groups.iter().map(|g| g.1).sum();
    let state_groups: u64 = groups
        .iter()
        .filter(|g| g.0 == Spec::State)
        .map(|g| g.1)
        .sum();
    let (page, block_bytes) = if n_groups == 1 {
        // One group: each layer keeps its own page size (vLLM's uniform-type case).
        let mut total = 0u64;
        for spec in &all {
            total += match spec {
                Spec::Attention(k) => page_bytes(shape, *k, kv, block)?,
                Spec::State => state_page,
            };
        }
        (pages.first().copied().unwrap_or(0), total)
    } else {
        // Hybrid: one page size for every kind, state pages padded up to the attention page.
        let page = pages.iter().copied().max().unwrap_or(0);
        (page, page * group_size)
    };
    if block_bytes == 0 {
        return Err(PlanError::Layout(format!(
            "model '{}' has nothing to cache",
            shape.name
        )));
    }
    let blocks = budget / block_bytes;
    Ok(Pool {
        block_size: block,
        group_size,
        groups: n_groups,
        state_groups,
        page_bytes: page,
        state_page_bytes: state_page,
        block_bytes,
        blocks,
        token_capacity: blocks / n_groups * block as u64,
    })
}

/// Pool blocks one request growing to `len` tokens holds at its widest: per group, whole
/// blocks of its positions (all of them for full attention, the most its window overlapped
/// for sliding layers, the widest chunk so far for chunked layers, one for a state group
/// whatever the length).
/// `block` is the pool's block size.
pub fn blocks_per_request(shape: &ModelShape, block: u32, len: u64) -> u64 {
    let (_, groups) = grouping(&specs(shape));
    let b = block as u64;
    groups
        .iter()
        .map(|(spec, n)| {
            let per_group = match spec {
                Spec::State => 1,
                Spec::Attention(kind) => Span::of(*kind).unwrap_or(Span::All).blocks(len, b),
            };
            n * per_group
        })
        .sum()
}

/// Pool blocks a request's first `prefix` tokens fill completely in full-attention groups:
/// with prefix caching these are held once for all requests sharing the prefix.
pub fn shared_prefix_blocks(shape: &ModelShape, block: u32, prefix: u64) -> u64 {
    let (_, groups) = grouping(&specs(shape));
    groups
        .iter()
        .map(|(spec, n)| match spec {
            Spec::Attention(AttentionKind::Full | AttentionKind::Mla { .. }) => {
                n * (prefix / block as u64)
            }
            _ => 0,
        })
        .sum()
}

/// Pool blocks vLLM counts for one request of `max_model_len` tokens when it logs its
/// "Maximum concurrency" (`kv_cache_utils.py` `get_max_concurrency_for_kv_cache_config`):
/// per group, `max_memory_usage_bytes / page_size_bytes` of its spec — cdiv(len, block) for
/// full attention and MLA, cdiv(min(window - 1 + max_num_batched_tokens, len), block) + 1
/// for a sliding window (`kv_cache_interface.py` SlidingWindowSpec), cdiv(min(chunk +
/// max_num_batched_tokens, len), block) for chunked local attention
/// (ChunkedLocalAttentionSpec), one page for a state layer (MambaSpec) — summed over groups.
pub fn vllm_blocks_per_request(
    shape: &ModelShape,
    block: u32,
    max_model_len: u64,
    max_num_batched_tokens: u32,
) -> u64 {
    let (_, groups) = grouping(&specs(shape));
    let b = block as u64;
    groups
        .iter()
        .map(|(spec, n)| {
            let per_group = match spec {
                Spec::State => 1,
                Spec::Attention(AttentionKind::Sliding { window }) => {
                    let tokens = (*window as u64)
                        .saturating_sub(1)
                        .saturating_add(max_num_batched_tokens as u64)
                        .min(max_model_len);
                    tokens.div_ceil(b) + 1
                }
                Spec::Attention(AttentionKind::Chunked { chunk }) => (*chunk as u64)
                    .saturating_add(max_num_batched_tokens as u64)
                    .min(max_model_len)
                    .div_ceil(b),
                Spec::Attention(_) => max_model_len.div_ceil(b),
            };
            n * per_group
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::parse_kv_dtypes;
    use crate::registry;

    fn f16() -> KvDtypes {
        parse_kv_dtypes("f16").unwrap()
    }

    #[test]
    fn uniform_model_is_one_group_of_all_layers() {
        // Llama-3-8B: a block is 16 tokens x 32 layers x 128 KiB/32 = 2 MiB.
        let s = registry::find("llama3-8b").unwrap().shape;
        let p = pool(&s, &f16(), 16, 10 << 30).unwrap();
        assert_eq!((p.group_size, p.groups), (32, 1));
        assert_eq!(p.block_bytes, 2 << 20);
        assert_eq!(p.blocks, 5120);
        assert_eq!(p.token_capacity, 5120 * 16);
        assert_eq!(blocks_per_request(&s, 16, 1000), 63);
    }

    #[test]
    fn gemma3_groups_by_the_one_in_five_to_one() {
        // 52 sliding + 10 full layers: groups of 10, 6 sliding groups (2 layers of padding)
        // + 1 full group = 7. Page: 16 tokens x 2 x 16 heads x 128 x 2 B = 131,072 B.
        let s = registry::find("gemma3-27b").unwrap().shape;
        let budget = 10 << 30;
        let p = pool(&s, &f16(), 16, budget).unwrap();
        assert_eq!((p.group_size, p.groups), (10, 7));
        assert_eq!(p.page_bytes, 131_072);
        assert_eq!(p.block_bytes, 1_310_720);
        assert_eq!(p.blocks, budget / 1_310_720);
        assert_eq!(p.token_capacity, budget / 1_310_720 / 7 * 16);
        // 32,768 tokens: the full group holds 2048 blocks, each sliding group at most 65: its
        // last 1024 positions touch 64 blocks at an aligned length (31,744 = 1984 x 16) but
        // 65 at 32,760 (from 31,736, mid-block), which a request growing to 32,768 passed.
        assert_eq!(blocks_per_request(&s, 16, 32_768), 2048 + 6 * 65);
        assert_eq!(blocks_per_request(&s, 16, 32_760), 2048 + 6 * 65);
        // Within the first window it holds what it has: 1000 tokens, 63 blocks a group.
        assert_eq!(blocks_per_request(&s, 16, 1000), 7 * 63);
    }

    #[test]
    fn vllm_counts_window_plus_batch_for_sliding_groups() {
        // Gemma-3-27B at 32,768 tokens, mnbt 8192, block 16: full group 2048 blocks; each of
        // the 6 sliding groups cdiv(1023 + 8192, 16) + 1 = 576 + 1 = 577.
        let s = registry::find("gemma3-27b").unwrap().shape;
        assert_eq!(
            vllm_blocks_per_request(&s, 16, 32_768, 8192),
            2048 + 6 * 577
        );
        // A full-attention model: cdiv(len, block).
        let s = registry::find("llama3-8b").unwrap().shape;
        assert_eq!(vllm_blocks_per_request(&s, 16, 1000, 8192), 63);
    }

    #[test]
    fn near_equal_counts_use_the_larger_as_group_size() {
        // gpt-oss-20b: 12 sliding + 12 full -> group size 12, 2 groups.
        let s = registry::find("gpt-oss-20b").unwrap().shape;
        let p = pool(&s, &f16(), 16, 1 << 30).unwrap();
        assert_eq!((p.group_size, p.groups), (12, 2));
        let mut odd = s.clone();
        odd.layer_kinds.push(AttentionKind::Full);
        odd.layers += 1;
        // 12 sliding + 13 full: 13 < 1.5 x 12, so groups of 13 (one padding layer).
        let p = pool(&odd, &f16(), 16, 1 << 30).unwrap();
        assert_eq!((p.group_size, p.groups), (13, 2));
    }
}
