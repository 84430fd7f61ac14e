//! vLLM's (v1) KV block pool for the layers on one GPU: how layers are grouped, how many
//! blocks a budget holds, and how many blocks a request takes.
//!
//! Layers of one attention kind (full, or sliding with one window) form groups of
//! `group_size` layers; a pool block is `group_size` pages (a page: `block_size` tokens of one
//! layer) and each group keeps its own block table. A model with one kind has one group of all
//! its layers; a hybrid model (e.g. Gemma-3's 52 sliding + 10 full layers) has group size
//! min(count) — or max(count) when max < 1.5 x min — and ceil(count / group_size) groups per
//! kind, padding included. The "GPU KV cache size" vLLM logs is blocks // groups x block_size.

use crate::dtype::KvDtypes;
use crate::error::PlanError;
use crate::layout::{allocated_bytes, LayoutKind, LayoutQuery};
use crate::shape::{AttentionKind, ModelShape};

/// The block pool of one GPU for a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// Layers per group (pages per pool block).
    pub group_size: u64,
    /// One (kind, block table) group after another.
    pub groups: u64,
    /// Bytes of one page: `block_size` tokens of one layer.
    pub page_bytes: u64,
    /// Bytes of one pool block: `group_size` pages.
    pub block_bytes: u64,
    /// Pool blocks the budget holds.
    pub blocks: u64,
    /// Tokens as vLLM reports them: blocks // groups x block_size.
    pub token_capacity: u64,
}

/// Layer count of each distinct attention kind, in first-seen order.
fn kinds_with_counts(kinds: &[AttentionKind]) -> Vec<(AttentionKind, u64)> {
    let mut counts: Vec<(AttentionKind, u64)> = Vec::new();
    for kind in kinds {
        match counts.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((*kind, 1)),
        }
    }
    counts
}

/// (group size, groups per kind) for the layers, as vLLM groups them.
fn grouping(kinds: &[AttentionKind]) -> (u64, Vec<(AttentionKind, u64)>) {
    let counts = kinds_with_counts(kinds);
    if counts.len() <= 1 {
        return (
            kinds.len() as u64,
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
    // A page is the same whatever the window: the window only decides how many are held.
    one.layer_kinds = vec![match kind {
        AttentionKind::Sliding { .. } => AttentionKind::Full,
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

/// The pool a per-GPU `budget` holds for `shape` (the layers on one GPU).
pub fn pool(shape: &ModelShape, kv: &KvDtypes, block: u32, budget: u64) -> Result<Pool, PlanError> {
    let (group_size, groups) = grouping(&shape.layer_kinds);
    let pages: Vec<u64> = kinds_with_counts(&shape.layer_kinds)
        .iter()
        .map(|(k, _)| page_bytes(shape, *k, kv, block))
        .collect::<Result<_, _>>()?;
    let n_groups: u64 = groups.iter().map(|g| g.1).sum();
    let (page, block_bytes) = if n_groups == 1 {
        // One group: each layer keeps its own page size (vLLM's uniform-type case).
        let total: u64 = shape
            .layer_kinds
            .iter()
            .map(|k| page_bytes(shape, *k, kv, block))
            .sum::<Result<u64, _>>()?;
        (pages.first().copied().unwrap_or(0), total)
    } else {
        // Hybrid: pages are uniform across kinds (same heads and head_dim everywhere).
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
        group_size,
        groups: n_groups,
        page_bytes: page,
        block_bytes,
        blocks,
        token_capacity: blocks / n_groups * block as u64,
    })
}

/// Pool blocks one request of `len` tokens holds: per group, whole blocks of its positions
/// (all of them for full attention, those overlapping the window for sliding layers).
pub fn blocks_per_request(shape: &ModelShape, block: u32, len: u64) -> u64 {
    let (_, groups) = grouping(&shape.layer_kinds);
    let b = block as u64;
    groups
        .iter()
        .map(|(kind, n)| {
            let per_group = match kind {
                AttentionKind::Sliding { window } if len > 0 => {
                    let first = len.saturating_sub(*window as u64) / b;
                    (len - 1) / b - first + 1
                }
                _ => len.div_ceil(b),
            };
            n * per_group
        })
        .sum()
}

/// Pool blocks vLLM counts for one request of `max_model_len` tokens when it logs its
/// "Maximum concurrency" (`kv_cache_utils.py` `get_max_concurrency_for_kv_cache_config`):
/// per group, `max_memory_usage_bytes / page_size_bytes` of its spec — cdiv(len, block) for
/// full attention and MLA, cdiv(min(window - 1 + max_num_batched_tokens, len), block) + 1
/// for a sliding window (`kv_cache_interface.py` SlidingWindowSpec) — summed over groups.
pub fn vllm_blocks_per_request(
    shape: &ModelShape,
    block: u32,
    max_model_len: u64,
    max_num_batched_tokens: u32,
) -> u64 {
    let (_, groups) = grouping(&shape.layer_kinds);
    let b = block as u64;
    groups
        .iter()
        .map(|(kind, n)| {
            let per_group = match kind {
                AttentionKind::Sliding { window } => {
                    let tokens = (*window as u64)
                        .saturating_sub(1)
                        .saturating_add(max_num_batched_tokens as u64)
                        .min(max_model_len);
                    tokens.div_ceil(b) + 1
                }
                _ => max_model_len.div_ceil(b),
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
        // 32,768 tokens: the full group holds 2048 blocks, each sliding group the 64 blocks
        // of its last 1024 positions (31,744 = 1984 x 16: aligned); at 32,760 tokens the
        // window starts mid-block (31,736) and overlaps 65.
        assert_eq!(blocks_per_request(&s, 16, 32_768), 2048 + 6 * 64);
        assert_eq!(blocks_per_request(&s, 16, 32_760), 2048 + 6 * 65);
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
