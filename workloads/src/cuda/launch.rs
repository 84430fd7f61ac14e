//! Launch configurations: grids, split-K, query-head chunks. Pure functions, tested on the CPU.

/// Threads per decode block (DECODE_THREADS in decode_attention.cu).
pub const DECODE_THREADS: u32 = 128;
/// Threads per prefill block (PREFILL_THREADS in prefill_attention.cu).
pub const PREFILL_THREADS: u32 = 128;
/// Query rows (position × head) per prefill block (PREFILL_ROWS).
pub const PREFILL_ROWS: u32 = 16;
/// Rows (one warp each) per cache-write block (ROWS_PER_BLOCK in cache_write.cu).
pub const CACHE_WRITE_ROWS: u32 = 4;
/// Query heads one decode block serves at most (decode_attention_g1/g2/g4).
pub const MAX_HEADS_PER_BLOCK: u32 = 4;
/// A split holds at least this many tokens, so its fixed cost (partials written, merged)
/// stays small; 128 still lets a single 4K sequence of 8 KV heads fill 256 blocks.
pub const MIN_TOKENS_PER_SPLIT: u32 = 128;
/// Blocks per SM the split-K heuristic aims for (enough loads in flight to fill HBM).
pub const TARGET_BLOCKS_PER_SM: u32 = 4;

/// A grid and block shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
}

impl Launch {
    /// As cudarc's launch configuration (no dynamic shared memory: the kernels use static).
    pub fn config(&self) -> cudarc::driver::LaunchConfig {
        cudarc::driver::LaunchConfig {
            grid_dim: self.grid,
            block_dim: self.block,
            shared_mem_bytes: 0,
        }
    }
}

/// Query heads per decode block for a GQA group: the largest of 4, 2, 1 dividing it. Every
/// KV byte is read once per chunk, so groups of up to 4 read it exactly once.
pub fn heads_per_block(group: u32) -> u32 {
    [4, 2, 1]
        .into_iter()
        .find(|g| group.is_multiple_of(*g))
        .expect("1 divides every group")
}

/// The decode kernel's entry point for `heads_per_block`.
pub fn decode_function(heads_per_block: u32) -> &'static str {
    match heads_per_block {
        4 => "decode_attention_g4",
        2 => "decode_attention_g2",
        _ => "decode_attention_g1",
    }
}

/// How decode attention splits a context of `max_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeSplit {
    pub splits: u32,
    pub tokens_per_split: u32,
}

/// Split-K: enough splits that the grid fills the GPU (`TARGET_BLOCKS_PER_SM` × SMs), none
/// shorter than `MIN_TOKENS_PER_SPLIT`, none empty.
pub fn decode_split(base_blocks: u32, max_len: u32, sm_count: u32) -> DecodeSplit {
    let max_len = max_len.max(1);
    let want = (TARGET_BLOCKS_PER_SM * sm_count.max(1)).div_ceil(base_blocks.max(1));
    let cap = max_len.div_ceil(MIN_TOKENS_PER_SPLIT);
    let splits = want.clamp(1, cap.max(1));
    let tokens_per_split = max_len.div_ceil(splits);
    DecodeSplit {
        splits: max_len.div_ceil(tokens_per_split),
        tokens_per_split,
    }
}

/// The decode attention grid: (KV heads × head chunks, batch, splits).
pub fn decode_launch(kv_heads: u32, group: u32, batch: u32, splits: u32) -> Launch {
    Launch {
        grid: (kv_heads * (group / heads_per_block(group)), batch, splits),
        block: (DECODE_THREADS, 1, 1),
    }
}

/// The split merge grid: (query heads, batch), one thread per channel.
pub fn merge_launch(q_heads: u32, batch: u32, head_dim: u32) -> Launch {
    Launch {
        grid: (q_heads, batch, 1),
        block: (head_dim, 1, 1),
    }
}

/// The prefill grid for `n_q` query positions: (row blocks, KV heads, batch).
pub fn prefill_launch(n_q: u32, group: u32, kv_heads: u32, batch: u32) -> Launch {
    Launch {
        grid: ((n_q * group).div_ceil(PREFILL_ROWS), kv_heads, batch),
        block: (PREFILL_THREADS, 1, 1),
    }
}

/// The cache-write grid for at most `max_rows` positions per sequence.
pub fn cache_write_launch(max_rows: u32, kv_heads: u32, batch: u32) -> Launch {
    Launch {
        grid: (max_rows.div_ceil(CACHE_WRITE_ROWS).max(1), kv_heads, batch),
        block: (32 * CACHE_WRITE_ROWS, 1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_chunks_cover_common_groups() {
        // Llama-3-8B: 32 query heads over 8 KV heads = group 4, one chunk.
        assert_eq!(heads_per_block(4), 4);
        assert_eq!(heads_per_block(8), 4); // two chunks of 4
        assert_eq!(heads_per_block(6), 2);
        assert_eq!(heads_per_block(7), 1);
        assert_eq!(heads_per_block(1), 1); // MHA
        assert_eq!(decode_function(heads_per_block(8)), "decode_attention_g4");
    }

    #[test]
    fn split_k_fills_an_h100_at_batch_one() {
        // 132 SMs × 4 = 528 target blocks; 8 base blocks → 66 splits of 497 tokens.
        let s = decode_split(8, 32768, 132);
        assert_eq!(
            s,
            DecodeSplit {
                splits: 66,
                tokens_per_split: 497
            }
        );
        assert!(s.splits * s.tokens_per_split >= 32768);
        assert!(
            (s.splits - 1) * s.tokens_per_split < 32768,
            "no empty split"
        );
    }

    #[test]
    fn split_k_is_bounded_by_the_minimum_split_length() {
        // 4096 tokens allow at most 32 splits of 128.
        assert_eq!(decode_split(8, 4096, 132).splits, 32);
        // Short contexts are never split.
        assert_eq!(
            decode_split(8, 100, 132),
            DecodeSplit {
                splits: 1,
                tokens_per_split: 100
            }
        );
        assert_eq!(decode_split(8, 0, 132).splits, 1);
    }

    #[test]
    fn split_k_stays_low_when_the_batch_fills_the_gpu() {
        // Batch 32 × 8 KV heads = 256 blocks; ceil(528 / 256) = 3 splits.
        let s = decode_split(256, 32768, 132);
        assert_eq!(s.splits, 3);
        assert_eq!(s.tokens_per_split, 10923);
    }

    #[test]
    fn grids_have_the_documented_shapes() {
        assert_eq!(decode_launch(8, 4, 32, 3).grid, (8, 32, 3));
        assert_eq!(decode_launch(8, 8, 1, 66).grid, (16, 1, 66));
        assert_eq!(merge_launch(32, 2, 128).block, (128, 1, 1));
        // 64 queries × group 4 = 256 rows = 16 blocks of 16 rows.
        assert_eq!(prefill_launch(64, 4, 8, 2).grid, (16, 8, 2));
        assert_eq!(prefill_launch(1, 4, 8, 2).grid, (1, 8, 2));
        assert_eq!(cache_write_launch(4097, 8, 1).grid, (1025, 8, 1));
        assert_eq!(cache_write_launch(0, 8, 1).grid.0, 1);
    }
}

/// The most splits `decode_split` returns for any context up to `max_len`: what the
/// partial-result buffers are sized for.
pub fn max_splits(base_blocks: u32, max_len: u32, sm_count: u32) -> u32 {
    let want = (TARGET_BLOCKS_PER_SM * sm_count.max(1)).div_ceil(base_blocks.max(1));
    want.clamp(1, max_len.max(1).div_ceil(MIN_TOKENS_PER_SPLIT).max(1))
}

#[cfg(test)]
mod max_split_tests {
    use super::*;

    #[test]
    fn no_context_length_needs_more_splits_than_the_buffers_hold() {
        for (base, sms) in [(8, 132), (256, 132), (1, 108), (64, 16)] {
            let cap = max_splits(base, 40_000, sms);
            for len in (0..=40_000).step_by(37) {
                assert!(
                    decode_split(base, len, sms).splits <= cap,
                    "base {base} len {len}"
                );
            }
        }
    }
}
