//! The paged cache: per layer, each sequence's block table points into one [`BlockPool`].
//! A block holds `block_size` tokens of every KV head of one layer (K heads, then V heads).
//! Sliding-window layers free blocks as they slide out; the full blocks of a shared prompt
//! prefix are held once for the batch; `fork` shares every block and copies on write.

use super::pool::{BlockId, BlockPool};
use super::{append_each, CacheError, CacheGeometry, HeadView, KvCache, Segment};
use crate::codec::Codec;
use crate::workload::MemoryUse;
use rayon::prelude::*;
use std::collections::HashSet;

#[derive(Debug, Clone, Default)]
struct Table {
    /// Logical block `i` holds positions `i·B .. (i+1)·B`; `None` once freed (slid out).
    blocks: Vec<Option<BlockId>>,
    len: usize,
}

/// A paged KV cache.
pub struct PagedCache {
    geom: CacheGeometry,
    kc: Codec,
    vc: Codec,
    pool: BlockPool,
    /// Bytes of one head's K (V) rows in a block.
    k_head_bytes: usize,
    v_head_bytes: usize,
    /// `tables[seq][layer]`; sequences beyond the batch come from `fork`.
    tables: Vec<Vec<Table>>,
}

impl PagedCache {
    /// An empty paged cache for `geom.batch` sequences.
    pub fn new(geom: &CacheGeometry) -> Result<Self, CacheError> {
        if geom.has_residual() {
            return Err(CacheError::Unsupported(
                "paged layouts cannot hold an f16 residual (KIVI); use contiguous or concat, or --residual 0".into(),
            ));
        }
        if geom.block_size == 0 {
            return Err(CacheError::Unsupported(
                "--block-size 0 holds no tokens; use 16 (vLLM's default) or another positive size"
                    .into(),
            ));
        }
        let kc = Codec::new(geom.k_dtype, geom.head_dim as u32)?;
        let vc = Codec::new(geom.v_dtype, geom.head_dim as u32)?;
        let b = geom.block_size;
        let (kb, vb) = (kc.bytes_for(b), vc.bytes_for(b));
        Ok(PagedCache {
            geom: geom.clone(),
            kc,
            vc,
            pool: BlockPool::new(geom.kv_heads * (kb + vb)),
            k_head_bytes: kb,
            v_head_bytes: vb,
            tables: vec![vec![Table::default(); geom.layers]; geom.batch],
        })
    }

    /// The block pool (for offload tiers: read, evict and restore blocks).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// The block pool, mutably.
    pub fn pool_mut(&mut self) -> &mut BlockPool {
        &mut self.pool
    }

    /// Live blocks of (seq, layer), oldest first, with their logical index.
    pub fn blocks(&self, seq: usize, layer: usize) -> impl Iterator<Item = (usize, BlockId)> + '_ {
        self.tables[seq][layer]
            .blocks
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.map(|b| (i, b)))
    }

    /// Sequences (the batch plus forks).
    pub fn sequences(&self) -> usize {
        self.tables.len()
    }

    /// A new sequence sharing every block of `seq` (parallel sampling, beam search);
    /// a write to a shared block copies it first. Returns the new sequence's index.
    pub fn fork(&mut self, seq: usize) -> Result<usize, CacheError> {
        let tables = self.tables[seq].clone();
        for id in tables.iter().flat_map(|t| t.blocks.iter().flatten()) {
            self.pool.retain(*id)?;
        }
        self.tables.push(tables);
        Ok(self.tables.len() - 1)
    }

    /// Release every block of `seq` and empty it.
    pub fn free_sequence(&mut self, seq: usize) -> Result<(), CacheError> {
        for t in self.tables[seq].iter_mut() {
            for id in t.blocks.drain(..).flatten() {
                self.pool.release(id)?;
            }
            t.len = 0;
        }
        Ok(())
    }

    /// Full blocks of the shared prefix held once for the batch.
    fn shared_end(&self) -> usize {
        self.geom.shared_prefix / self.geom.block_size * self.geom.block_size
    }

    /// The view of (layer, seq, head), or why it cannot be read (an evicted block).
    pub fn try_view(
        &self,
        layer: usize,
        seq: usize,
        head: usize,
    ) -> Result<HeadView<'_>, CacheError> {
        let t = &self.tables[seq][layer];
        let b = self.geom.block_size;
        let len = t.len;
        let mut view = HeadView::default();
        if len == 0 {
            return Ok(view);
        }
        let start = self.geom.windows[layer].map_or(0, |w| len.saturating_sub(w));
        let kb = self.geom.kv_heads * self.k_head_bytes;
        let blocks = start / b..=(len - 1) / b;
        view.k.reserve(blocks.clone().count());
        view.v.reserve(blocks.clone().count());
        for bi in blocks {
            let id = t.blocks[bi].expect("blocks in the window are held");
            let bytes = self.pool.bytes(id)?;
            let row0 = start.saturating_sub(bi * b);
            let rows = (len - bi * b).min(b) - row0;
            let k = &bytes[head * self.k_head_bytes..(head + 1) * self.k_head_bytes];
            let v = &bytes[kb + head * self.v_head_bytes..kb + (head + 1) * self.v_head_bytes];
            view.k.push(Segment {
                codec: &self.kc,
                bytes: k,
                row0,
                rows,
            });
            view.v.push(Segment {
                codec: &self.vc,
                bytes: v,
                row0,
                rows,
            });
        }
        Ok(view)
    }
}

impl PagedCache {
    /// The block and row the next token of (layer, seq) goes to, with the block table and
    /// length updated for it: `None` when the token lies in a shared prefix block another
    /// sequence holds (nothing to write). The caller writes the row, then frees what falls
    /// out of a window ([`PagedCache::free_outside_window`]).
    fn place(&mut self, layer: usize, seq: usize) -> Result<Option<(BlockId, usize)>, CacheError> {
        let b = self.geom.block_size;
        let pos = self.tables[seq][layer].len;
        if pos >= self.geom.max_len {
            return Err(CacheError::Full {
                layer,
                seq,
                max_len: self.geom.max_len,
            });
        }
        let bi = pos / b;
        if self.tables[seq][layer].blocks.len() <= bi {
            self.tables[seq][layer].blocks.resize(bi + 1, None);
        }
        // The shared prefix's full blocks: reference sequence 0's instead of writing a copy
        // (the workloads give every sequence the same prefix tokens).
        if seq != 0 && pos < self.shared_end() {
            let first = &self.tables[0][layer];
            let owner = first.blocks.get(bi).copied().flatten();
            let mine = self.tables[seq][layer].blocks[bi];
            if let Some(id) = owner.filter(|_| first.len > pos) {
                if mine.is_none() {
                    self.pool.retain(id)?;
                    self.tables[seq][layer].blocks[bi] = Some(id);
                }
                if self.tables[seq][layer].blocks[bi] == Some(id) {
                    self.tables[seq][layer].len += 1;
                    return Ok(None);
                }
            }
        }
        let id = match self.tables[seq][layer].blocks[bi] {
            None => self.pool.allocate(),
            // Sequence 0 fills the shared prefix blocks the others already reference.
            Some(id) if self.pool.refs(id) > 1 && !(seq == 0 && pos < self.shared_end()) => {
                // Copy on write: this sequence gets its own copy, the others keep the original.
                let copy = self.pool.copy_of(id)?;
                self.pool.release(id)?;
                copy
            }
            Some(id) => id,
        };
        self.tables[seq][layer].blocks[bi] = Some(id);
        self.tables[seq][layer].len += 1;
        Ok(Some((id, pos % b)))
    }

    /// Where a block's codes go, beside the pool that holds the blocks (to write into).
    fn layout_and_pool(&mut self) -> (BlockLayout<'_>, &mut BlockPool) {
        let layout = BlockLayout {
            kc: &self.kc,
            vc: &self.vc,
            heads: self.geom.kv_heads,
            head_dim: self.geom.head_dim,
            k_head_bytes: self.k_head_bytes,
            v_head_bytes: self.v_head_bytes,
        };
        (layout, &mut self.pool)
    }

    /// Free the blocks of (layer, seq) entirely before its window `[len − w, len)`.
    fn free_outside_window(&mut self, layer: usize, seq: usize) -> Result<(), CacheError> {
        let Some(w) = self.geom.windows[layer] else {
            return Ok(());
        };
        let t = &mut self.tables[seq][layer];
        let first_needed = t.len.saturating_sub(w) / self.geom.block_size;
        for slot in t.blocks[..first_needed].iter_mut() {
            if let Some(id) = slot.take() {
                self.pool.release(id)?;
            }
        }
        Ok(())
    }
}

/// Where a paged cache's codes go: its codecs and the byte layout of a block.
struct BlockLayout<'a> {
    kc: &'a Codec,
    vc: &'a Codec,
    heads: usize,
    head_dim: usize,
    k_head_bytes: usize,
    v_head_bytes: usize,
}

impl BlockLayout<'_> {
    /// Encode one token's K and V (`heads × head_dim` each) into row `row` of a block.
    fn write(&self, bytes: &mut [u8], row: usize, k: &[f32], v: &[f32]) {
        let (hd, heads) = (self.head_dim, self.heads);
        let (ku, vu) = (self.kc.unit_bytes, self.vc.unit_bytes);
        for h in 0..heads {
            let ko = h * self.k_head_bytes + row * ku;
            self.kc
                .encode_unit(&k[h * hd..(h + 1) * hd], &mut bytes[ko..ko + ku]);
            let vo = heads * self.k_head_bytes + h * self.v_head_bytes + row * vu;
            self.vc
                .encode_unit(&v[h * hd..(h + 1) * hd], &mut bytes[vo..vo + vu]);
        }
    }
}

impl KvCache for PagedCache {
    fn append(&mut self, layer: usize, seq: usize, k: &[f32], v: &[f32]) -> Result<(), CacheError> {
        let Some((id, row)) = self.place(layer, seq)? else {
            return Ok(());
        };
        let (layout, pool) = self.layout_and_pool();
        layout.write(pool.bytes_mut(id)?, row, k, v);
        self.free_outside_window(layer, seq)
    }

    fn append_tokens(
        &mut self,
        layer: usize,
        seq: usize,
        tokens: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), CacheError> {
        // A window frees blocks as tokens arrive (a later token's block may be an earlier
        // one's, reused), and a token that does not fit is refused on its own: one by one.
        let len = self.tables[seq][layer].len;
        if self.geom.windows[layer].is_some() || len + tokens > self.geom.max_len {
            return append_each(self, layer, seq, tokens, k, v);
        }
        // Blocks and rows first, in token order, as `append` places them; then the codes,
        // each block's rows by one task.
        let mut runs: Vec<(BlockId, Vec<(usize, usize)>)> = Vec::new();
        for t in 0..tokens {
            if let Some((id, row)) = self.place(layer, seq)? {
                match runs.last_mut() {
                    Some((last, rows)) if *last == id => rows.push((row, t)),
                    _ => runs.push((id, vec![(row, t)])),
                }
            }
        }
        let ids: Vec<BlockId> = runs.iter().map(|(id, _)| *id).collect();
        let per = k.len() / tokens.max(1);
        let (layout, pool) = self.layout_and_pool();
        pool.blocks_mut(&ids)?
            .into_par_iter()
            .zip(&runs)
            .for_each(|(bytes, (_, rows))| {
                for &(row, t) in rows {
                    layout.write(bytes, row, &k[t * per..][..per], &v[t * per..][..per]);
                }
            });
        Ok(())
    }

    fn len(&self, layer: usize, seq: usize) -> usize {
        self.tables[seq][layer].len
    }

    fn view(&self, layer: usize, seq: usize, head: usize) -> HeadView<'_> {
        self.try_view(layer, seq, head)
            .expect("attention reads resident blocks only; restore evicted blocks first")
    }

    fn heads_share_blocks(&self) -> bool {
        true
    }

    fn resident_bytes(&self) -> u64 {
        (self.pool.resident_blocks() * self.pool.block_bytes()) as u64
    }

    fn memory(&self) -> MemoryUse {
        let b = self.geom.block_size;
        let mut tokens = 0u64;
        for layer in 0..self.geom.layers {
            let mut seen = HashSet::new();
            for t in self.tables.iter().map(|s| &s[layer]) {
                let start = self.geom.windows[layer].map_or(0, |w| t.len.saturating_sub(w));
                for (bi, id) in t.blocks.iter().enumerate() {
                    let Some(id) = id else { continue };
                    if !seen.insert(*id) {
                        continue;
                    }
                    let lo = (bi * b).max(start);
                    let hi = ((bi + 1) * b).min(t.len);
                    tokens += hi.saturating_sub(lo) as u64;
                }
            }
        }
        MemoryUse {
            kv_bytes_used: tokens * self.geom.token_bytes(),
            kv_bytes_allocated: (self.pool.resident_blocks() * self.pool.block_bytes()) as u64,
        }
    }

    fn reset(&mut self) {
        self.tables.truncate(self.geom.batch);
        for seq in 0..self.tables.len() {
            self.free_sequence(seq).expect("tables hold live blocks");
        }
    }
}
