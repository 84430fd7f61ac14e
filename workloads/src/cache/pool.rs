//! The paged cache's block pool: fixed-size blocks handed out by O(1) free lists, with
//! reference counts for sharing, and eviction/restoration of a block's bytes for offload tiers.
//!
//! A [`BlockId`] is a handle that stays valid while referenced; its bytes live in a *slot*
//! when resident. `evict` moves the bytes out (the slot returns to the pool) and `restore`
//! brings them back into any free slot, so block tables never change across an offload.
//!
//! Slots are carved out of large chunks, side by side, as an engine's KV tensor holds its
//! blocks: a fresh pool hands them out in address order (as vLLM's free-block queue does at
//! start-up), so the blocks a sequence fills one after another are neighbours in memory, not
//! scattered allocations of their own. Chunks start on a cache line.

/// A block handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// Misuse of the pool: a bug in the caller, reported instead of corrupting memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("block {0:?} is not allocated (freed twice, or never allocated)")]
    NotLive(BlockId),
    #[error("block {0:?} is evicted; restore it before reading or writing it")]
    Evicted(BlockId),
    #[error("block {0:?} was asked for twice in one write")]
    Twice(BlockId),
    #[error("block {0:?} is already resident")]
    Resident(BlockId),
    #[error("restoring block {id:?} needs {want} bytes, got {got}")]
    WrongSize {
        id: BlockId,
        want: usize,
        got: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Handle {
    refs: u32,
    slot: Option<u32>,
}

/// Bytes of the largest chunk of slots allocated at once.
const MAX_CHUNK_BYTES: usize = 256 << 20;

/// Consecutive slots in one allocation, the first on a 64-byte boundary. Zeroed memory: the
/// pages of slots not yet written cost nothing.
#[derive(Debug)]
struct Chunk {
    bytes: Vec<u8>,
    start: usize,
    /// The pool's index of this chunk's first slot.
    first: usize,
}

/// A pool of equally sized blocks.
#[derive(Debug)]
pub struct BlockPool {
    block_bytes: usize,
    chunks: Vec<Chunk>,
    /// Where each slot lies: (chunk, byte offset from the chunk's start).
    slots: Vec<(u32, usize)>,
    /// Slots the chunks hold, created or not.
    room: usize,
    free_slots: Vec<u32>,
    handles: Vec<Handle>,
    free_handles: Vec<u32>,
}

impl BlockPool {
    /// An empty pool of `block_bytes`-sized blocks; slots are created on demand and reused.
    pub fn new(block_bytes: usize) -> Self {
        BlockPool {
            block_bytes,
            chunks: Vec::new(),
            slots: Vec::new(),
            room: 0,
            free_slots: Vec::new(),
            handles: Vec::new(),
            free_handles: Vec::new(),
        }
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    fn take_slot(&mut self) -> u32 {
        if let Some(slot) = self.free_slots.pop() {
            return slot;
        }
        if self.slots.len() == self.room {
            // Each chunk as large as all before it (16 slots at first), so a long sequence
            // crosses few chunk boundaries.
            let blocks = self
                .room
                .max(16)
                .min((MAX_CHUNK_BYTES / self.block_bytes.max(1)).max(1));
            let bytes = vec![0u8; blocks * self.block_bytes + 63];
            let start = bytes.as_ptr().align_offset(64).min(63);
            let first = self.room;
            self.chunks.push(Chunk {
                bytes,
                start,
                first,
            });
            self.room += blocks;
        }
        let chunk = self.chunks.len() - 1;
        let at = (self.slots.len() - self.chunks[chunk].first) * self.block_bytes;
        self.slots.push((chunk as u32, at));
        (self.slots.len() - 1) as u32
    }

    fn slot(&self, slot: u32) -> &[u8] {
        let (c, at) = self.slots[slot as usize];
        let ch = &self.chunks[c as usize];
        &ch.bytes[ch.start + at..ch.start + at + self.block_bytes]
    }

    fn slot_mut(&mut self, slot: u32) -> &mut [u8] {
        let (c, at) = self.slots[slot as usize];
        let ch = &mut self.chunks[c as usize];
        &mut ch.bytes[ch.start + at..ch.start + at + self.block_bytes]
    }

    /// A fresh resident block with one reference (O(1)).
    pub fn allocate(&mut self) -> BlockId {
        let slot = Some(self.take_slot());
        let h = Handle { refs: 1, slot };
        match self.free_handles.pop() {
            Some(i) => {
                self.handles[i as usize] = h;
                BlockId(i)
            }
            None => {
                self.handles.push(h);
                BlockId((self.handles.len() - 1) as u32)
            }
        }
    }

    fn live(&self, id: BlockId) -> Result<&Handle, PoolError> {
        self.handles
            .get(id.0 as usize)
            .filter(|h| h.refs > 0)
            .ok_or(PoolError::NotLive(id))
    }

    /// References held on `id` (0 when free).
    pub fn refs(&self, id: BlockId) -> u32 {
        self.live(id).map_or(0, |h| h.refs)
    }

    /// Add a reference (sharing the block with another sequence).
    pub fn retain(&mut self, id: BlockId) -> Result<(), PoolError> {
        self.live(id)?;
        self.handles[id.0 as usize].refs += 1;
        Ok(())
    }

    /// Drop a reference; the block (and its slot) returns to the pool at zero.
    /// Returns whether it was freed.
    pub fn release(&mut self, id: BlockId) -> Result<bool, PoolError> {
        self.live(id)?;
        let h = &mut self.handles[id.0 as usize];
        h.refs -= 1;
        if h.refs > 0 {
            return Ok(false);
        }
        if let Some(slot) = h.slot.take() {
            self.free_slots.push(slot);
        }
        self.free_handles.push(id.0);
        Ok(true)
    }

    /// The bytes of a resident block.
    pub fn bytes(&self, id: BlockId) -> Result<&[u8], PoolError> {
        let slot = self.live(id)?.slot.ok_or(PoolError::Evicted(id))?;
        Ok(self.slot(slot))
    }

    /// The bytes of a resident block, for writing.
    pub fn bytes_mut(&mut self, id: BlockId) -> Result<&mut [u8], PoolError> {
        let slot = self.live(id)?.slot.ok_or(PoolError::Evicted(id))?;
        Ok(self.slot_mut(slot))
    }

    /// The bytes of distinct resident blocks, in the order of `ids`, for writing them at
    /// once (in parallel).
    pub fn blocks_mut(&mut self, ids: &[BlockId]) -> Result<Vec<&mut [u8]>, PoolError> {
        let slots = ids
            .iter()
            .map(|&id| self.live(id)?.slot.ok_or(PoolError::Evicted(id)))
            .collect::<Result<Vec<u32>, PoolError>>()?;
        let bb = self.block_bytes;
        let room = self.room;
        let firsts: Vec<usize> = self.chunks.iter().map(|c| c.first).collect();
        let mut all: Vec<Option<&mut [u8]>> = Vec::with_capacity(room);
        for (i, ch) in self.chunks.iter_mut().enumerate() {
            let blocks = firsts.get(i + 1).unwrap_or(&room) - ch.first;
            let pieces = ch.bytes[ch.start..]
                .chunks_exact_mut(bb.max(1))
                .take(blocks);
            all.extend(pieces.map(Some));
        }
        ids.iter()
            .zip(slots)
            .map(|(&id, s)| all[s as usize].take().ok_or(PoolError::Twice(id)))
            .collect()
    }

    /// A new block holding a copy of `id`'s bytes (copy-on-write); `id` keeps its references.
    pub fn copy_of(&mut self, id: BlockId) -> Result<BlockId, PoolError> {
        let src = self.live(id)?.slot.ok_or(PoolError::Evicted(id))?;
        let new = self.allocate();
        let dst = self.handles[new.0 as usize].slot.expect("just allocated");
        // Through a copy: the two slots may share a chunk.
        let from = self.slot(src).to_vec();
        self.slot_mut(dst).copy_from_slice(&from);
        Ok(new)
    }

    /// Move a block's bytes out of memory (for an offload tier); its slot returns to the pool.
    pub fn evict(&mut self, id: BlockId) -> Result<Vec<u8>, PoolError> {
        let slot = self.live(id)?.slot.ok_or(PoolError::Evicted(id))?;
        let bytes = self.slot(slot).to_vec();
        self.handles[id.0 as usize].slot = None;
        self.free_slots.push(slot);
        Ok(bytes)
    }

    /// [`BlockPool::evict`] for a block whose bytes are kept elsewhere already (a tier's
    /// still-valid copy): they leave memory without being copied out.
    pub fn discard(&mut self, id: BlockId) -> Result<(), PoolError> {
        let slot = self.live(id)?.slot.ok_or(PoolError::Evicted(id))?;
        self.handles[id.0 as usize].slot = None;
        self.free_slots.push(slot);
        Ok(())
    }

    /// Bring an evicted block's bytes back into a free slot.
    pub fn restore(&mut self, id: BlockId, bytes: &[u8]) -> Result<(), PoolError> {
        if self.live(id)?.slot.is_some() {
            return Err(PoolError::Resident(id));
        }
        if bytes.len() != self.block_bytes {
            return Err(PoolError::WrongSize {
                id,
                want: self.block_bytes,
                got: bytes.len(),
            });
        }
        let slot = self.take_slot();
        self.slot_mut(slot).copy_from_slice(bytes);
        self.handles[id.0 as usize].slot = Some(slot);
        Ok(())
    }

    /// Whether a live block's bytes are in memory.
    pub fn is_resident(&self, id: BlockId) -> bool {
        self.live(id).is_ok_and(|h| h.slot.is_some())
    }

    /// Live blocks (resident or evicted).
    pub fn live_blocks(&self) -> usize {
        self.handles.len() - self.free_handles.len()
    }

    /// Live blocks whose bytes are in memory.
    pub fn resident_blocks(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    /// Slots handed out so far (the pool's footprint, free ones included; the untouched
    /// rest of the last chunk is not counted: its pages are never written).
    pub fn capacity_blocks(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_handed_out_in_turn_are_neighbours_from_a_cache_line_on() {
        // 40 blocks of 100 bytes: chunks of 16, 16 and 32 slots; within a chunk each block
        // starts where the one before ends, and every chunk starts on a 64-byte boundary.
        let mut p = BlockPool::new(100);
        let ids: Vec<BlockId> = (0..40).map(|_| p.allocate()).collect();
        let at = |id: BlockId, p: &BlockPool| p.bytes(id).unwrap().as_ptr() as usize;
        for (i, w) in ids.windows(2).enumerate() {
            if i + 1 == 16 || i + 1 == 32 {
                assert_eq!(
                    at(w[1], &p) % 64,
                    0,
                    "chunk {} starts on a line",
                    (i + 1) / 16
                );
            } else {
                assert_eq!(
                    at(w[1], &p),
                    at(w[0], &p) + 100,
                    "block {} follows {i}",
                    i + 1
                );
            }
        }
        assert_eq!(at(ids[0], &p) % 64, 0);
        assert_eq!(
            p.capacity_blocks(),
            40,
            "slots handed out, not the chunks' room"
        );
        // Writing one block leaves its neighbours alone.
        p.bytes_mut(ids[5]).unwrap().fill(7);
        assert!(p.bytes(ids[4]).unwrap().iter().all(|&b| b == 0));
        assert!(p.bytes(ids[6]).unwrap().iter().all(|&b| b == 0));
        let copy = p.copy_of(ids[5]).unwrap();
        assert!(p.bytes(copy).unwrap().iter().all(|&b| b == 7));
    }

    #[test]
    fn refcounts_free_at_zero_and_reuse_slots() {
        let mut p = BlockPool::new(8);
        let a = p.allocate();
        p.retain(a).unwrap();
        assert_eq!(p.refs(a), 2);
        assert!(!p.release(a).unwrap());
        assert!(p.release(a).unwrap());
        assert_eq!(p.refs(a), 0);
        assert_eq!(
            p.release(a),
            Err(PoolError::NotLive(a)),
            "double free is refused"
        );
        let b = p.allocate();
        assert_eq!(p.capacity_blocks(), 1, "the freed slot is reused");
        assert_eq!(p.live_blocks(), 1);
        p.release(b).unwrap();
    }

    #[test]
    fn a_discarded_block_frees_its_slot_and_comes_back_from_a_copy() {
        let mut p = BlockPool::new(4);
        let a = p.allocate();
        p.bytes_mut(a).unwrap().copy_from_slice(&[5, 6, 7, 8]);
        let copy = p.bytes(a).unwrap().to_vec();
        p.discard(a).unwrap();
        assert_eq!(p.bytes(a), Err(PoolError::Evicted(a)));
        assert_eq!(p.discard(a), Err(PoolError::Evicted(a)));
        assert_eq!((p.resident_blocks(), p.live_blocks()), (0, 1));
        let b = p.allocate();
        assert_eq!(p.capacity_blocks(), 1, "the slot is reused");
        p.bytes_mut(b).unwrap().fill(1);
        p.restore(a, &copy).unwrap();
        assert_eq!(p.bytes(a).unwrap(), &[5, 6, 7, 8]);
        assert_eq!(p.bytes(b).unwrap(), &[1, 1, 1, 1]);
    }

    #[test]
    fn evict_and_restore_keep_the_bytes() {
        let mut p = BlockPool::new(4);
        let a = p.allocate();
        p.bytes_mut(a).unwrap().copy_from_slice(&[1, 2, 3, 4]);
        let out = p.evict(a).unwrap();
        assert!(!p.is_resident(a));
        assert_eq!(out, vec![1, 2, 3, 4]);
        assert_eq!(p.bytes(a), Err(PoolError::Evicted(a)));
        assert_eq!(p.resident_blocks(), 0);
        assert_eq!(p.live_blocks(), 1);
        // Another block may take the slot meanwhile.
        let b = p.allocate();
        p.bytes_mut(b).unwrap().fill(9);
        assert_eq!(
            p.restore(a, &[1, 2]),
            Err(PoolError::WrongSize {
                id: a,
                want: 4,
                got: 2
            })
        );
        p.restore(a, &out).unwrap();
        assert_eq!(p.bytes(a).unwrap(), &[1, 2, 3, 4]);
        assert_eq!(p.bytes(b).unwrap(), &[9, 9, 9, 9]);
        assert_eq!(p.restore(a, &out), Err(PoolError::Resident(a)));
    }

    #[test]
    fn copy_of_is_independent() {
        let mut p = BlockPool::new(2);
        let a = p.allocate();
        p.bytes_mut(a).unwrap().copy_from_slice(&[5, 6]);
        let b = p.copy_of(a).unwrap();
        p.bytes_mut(b).unwrap()[0] = 7;
        assert_eq!(p.bytes(a).unwrap(), &[5, 6]);
        assert_eq!(p.bytes(b).unwrap(), &[7, 6]);
    }
}
