//! Block tables on the host: which pool block holds each block of each sequence, packed as
//! the kernels read them (i32 [batch][table_stride], −1 where nothing is allocated).

/// Block tables of a batch, grown as sequences grow. A contiguous cache is the special case
/// of one block of `max_len` slots per sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTables {
    batch: u32,
    block_size: u32,
    table_stride: u32,
    /// Full blocks of the shared prefix, held once for the whole batch.
    shared_blocks: u32,
    /// Next never-used block of the pool (a bump allocator: blocks are freed only by reset).
    next_free: u32,
    /// Contiguous: blocks are fixed for the life of the cache, reset keeps them.
    preallocated: bool,
    tables: Vec<Vec<i32>>,
}

impl BlockTables {
    /// Paged tables for `batch` sequences of up to `max_len` tokens, the first
    /// `floor(shared_prefix / block_size)` blocks shared by every sequence.
    pub fn paged(batch: u32, block_size: u32, max_len: u32, shared_prefix: u32) -> Self {
        let shared = if batch > 1 {
            shared_prefix / block_size
        } else {
            0
        };
        BlockTables {
            batch,
            block_size,
            table_stride: max_len.div_ceil(block_size).max(1),
            shared_blocks: shared,
            next_free: 0,
            preallocated: false,
            tables: vec![Vec::new(); batch as usize],
        }
    }

    /// One block of `max_len` slots per sequence, preallocated: sequence b holds block b.
    pub fn contiguous(batch: u32, max_len: u32) -> Self {
        BlockTables {
            batch,
            block_size: max_len.max(1),
            table_stride: 1,
            shared_blocks: 0,
            next_free: batch,
            preallocated: true,
            tables: (0..batch as i32).map(|b| vec![b]).collect(),
        }
    }

    /// Blocks the pool must have for every sequence to reach `max_len`.
    pub fn pool_blocks_needed(
        batch: u32,
        block_size: u32,
        max_len: u32,
        shared_prefix: u32,
    ) -> u32 {
        let per_seq = max_len.div_ceil(block_size);
        let shared = if batch > 1 {
            (shared_prefix / block_size).min(per_seq)
        } else {
            0
        };
        shared + batch * (per_seq - shared)
    }

    /// Tokens per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Entries per sequence in the packed table.
    pub fn table_stride(&self) -> u32 {
        self.table_stride
    }

    /// Make every sequence hold the blocks covering `len` tokens. Returns true if any block
    /// was added (the packed table must be uploaded again).
    pub fn grow_to(&mut self, len: u32) -> bool {
        let need = len.div_ceil(self.block_size).min(self.table_stride) as usize;
        let mut grew = false;
        // Block by block across the batch, as sequences decoding in lockstep allocate.
        for j in 0..need {
            if self.tables[0].len() > j {
                continue;
            }
            if (j as u32) < self.shared_blocks {
                let id = self.next_free as i32;
                self.next_free += 1;
                self.tables.iter_mut().for_each(|t| t.push(id));
            } else {
                for t in &mut self.tables {
                    t.push(self.next_free as i32);
                    self.next_free += 1;
                }
            }
            grew = true;
        }
        grew
    }

    /// Drop every block (paged) — contiguous tables keep their preallocated blocks.
    pub fn reset(&mut self) {
        if self.preallocated {
            return;
        }
        self.next_free = 0;
        self.tables.iter_mut().for_each(Vec::clear);
    }

    /// Distinct blocks held by the batch.
    pub fn blocks_held(&self) -> u32 {
        self.next_free
    }

    /// Positions below this are stored once for the whole batch.
    pub fn shared_tokens(&self) -> u32 {
        self.shared_blocks * self.block_size
    }

    /// The packed table: i32 [batch][table_stride], −1 where unallocated.
    pub fn packed(&self) -> Vec<i32> {
        let mut out = vec![-1; (self.batch * self.table_stride) as usize];
        for (b, t) in self.tables.iter().enumerate() {
            let row = b * self.table_stride as usize;
            out[row..row + t.len()].copy_from_slice(t);
        }
        out
    }

    /// Pool block and slot of token `pos` of sequence `b` (what `cache_row` computes).
    pub fn locate(&self, b: u32, pos: u32) -> Option<(u32, u32)> {
        let id = *self.tables[b as usize].get((pos / self.block_size) as usize)?;
        Some((id as u32, pos % self.block_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn paged_blocks_follow_ceil_len_over_block() {
        // vLLM's rule: L tokens take ceil(L / 16) blocks.
        let mut t = BlockTables::paged(3, 16, 100, 0);
        t.grow_to(33);
        assert_eq!(t.blocks_held(), 3 * 3);
        assert!(!t.grow_to(48), "48 tokens still fit in 3 blocks");
        assert!(t.grow_to(49));
        assert_eq!(t.blocks_held(), 3 * 4);
        assert_eq!(BlockTables::pool_blocks_needed(3, 16, 100, 0), 3 * 7);
    }

    #[test]
    fn no_block_is_given_to_two_sequences_unless_shared() {
        let mut t = BlockTables::paged(4, 16, 200, 40);
        t.grow_to(200);
        let mut owners: HashMap<i32, Vec<usize>> = HashMap::new();
        let packed = t.packed();
        for b in 0..4 {
            for j in 0..t.table_stride() as usize {
                owners.entry(packed[b * 13 + j]).or_default().push(b);
            }
        }
        // floor(40 / 16) = 2 shared blocks, held by all four sequences; all others by one.
        let shared: Vec<_> = owners.iter().filter(|(_, o)| o.len() > 1).collect();
        assert_eq!(shared.len(), 2);
        assert!(shared.iter().all(|(_, o)| o.len() == 4));
        assert_eq!(t.blocks_held(), 2 + 4 * (13 - 2));
        assert_eq!(
            t.blocks_held(),
            BlockTables::pool_blocks_needed(4, 16, 200, 40)
        );
        assert_eq!(t.shared_tokens(), 32);
    }

    #[test]
    fn packed_tables_mark_unallocated_entries() {
        let mut t = BlockTables::paged(2, 4, 16, 0);
        t.grow_to(5);
        // Lockstep allocation: block 0 of seq 0, block 0 of seq 1, then block 1 of each.
        assert_eq!(t.packed(), vec![0, 2, -1, -1, 1, 3, -1, -1]);
        assert_eq!(t.locate(1, 6), Some((3, 2)));
        assert_eq!(t.locate(1, 9), None);
    }

    #[test]
    fn contiguous_is_one_preallocated_block_per_sequence() {
        let mut t = BlockTables::contiguous(3, 4096);
        assert_eq!(t.packed(), vec![0, 1, 2]);
        assert_eq!(t.blocks_held(), 3);
        assert!(!t.grow_to(4096));
        t.reset();
        assert_eq!(t.packed(), vec![0, 1, 2]);
        assert_eq!(t.locate(2, 4095), Some((2, 4095)));
    }

    #[test]
    fn reset_frees_every_paged_block() {
        let mut t = BlockTables::paged(2, 16, 64, 0);
        t.grow_to(64);
        t.reset();
        assert_eq!(t.blocks_held(), 0);
        assert!(t.packed().iter().all(|&x| x == -1));
        t.grow_to(1);
        assert_eq!(t.packed()[0], 0);
    }

    #[test]
    fn a_paged_table_of_one_block_still_resets() {
        let mut t = BlockTables::paged(2, 16, 16, 0);
        t.grow_to(16);
        t.reset();
        assert_eq!(t.blocks_held(), 0);
    }

    #[test]
    fn a_single_sequence_shares_nothing() {
        let mut t = BlockTables::paged(1, 16, 64, 64);
        t.grow_to(64);
        assert_eq!(t.shared_tokens(), 0);
        assert_eq!(t.blocks_held(), 4);
    }
}
