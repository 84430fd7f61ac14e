//! The paged cache's block pool: fixed-size blocks handed out by O(1) free lists, with
//! reference counts for sharing, and eviction/restoration of a block's bytes for offload tiers.
//!
//! A [`BlockId`] is a handle that stays valid while referenced; its bytes live in a *slot*
//! when resident. `evict` moves the bytes out (the slot returns to the pool) and `restore`
//! brings them back into any free slot, so block tables never change across an offload.

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

/// A pool of equally sized blocks.
#[derive(Debug)]
pub struct BlockPool {
    block_bytes: usize,
    slots: Vec<Box<[u8]>>,
    free_slots: Vec<u32>,
    handles: Vec<Handle>,
    free_handles: Vec<u32>,
}

impl BlockPool {
    /// An empty pool of `block_bytes`-sized blocks; slots are created on demand and reused.
    pub fn new(block_bytes: usize) -> Self {
        BlockPool {
            block_bytes,
            slots: Vec::new(),
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
        self.free_slots.pop().unwrap_or_else(|| {
            self.slots
                .push(vec![0u8; self.block_bytes].into_boxed_slice());
            (self.slots.len() - 1) as u32
        })
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
        Ok(&self.slots[slot as usize])
    }

    /// The bytes of a resident block, for writing.
    pub fn bytes_mut(&mut self, id: BlockId) -> Result<&mut [u8], PoolError> {
        let slot = self.live(id)?.slot.ok_or(PoolError::Evicted(id))?;
        Ok(&mut self.slots[slot as usize])
    }

    /// A new block holding a copy of `id`'s bytes (copy-on-write); `id` keeps its references.
    pub fn copy_of(&mut self, id: BlockId) -> Result<BlockId, PoolError> {
        let src = self.live(id)?.slot.ok_or(PoolError::Evicted(id))?;
        let new = self.allocate();
        let dst = self.handles[new.0 as usize].slot.expect("just allocated") as usize;
        let (a, b) = (src as usize, dst);
        let (lo, hi) = self.slots.split_at_mut(a.max(b));
        let (from, to) = if a < b {
            (&lo[a], &mut hi[0])
        } else {
            (&hi[0], &mut lo[b])
        };
        to.copy_from_slice(from);
        Ok(new)
    }

    /// Move a block's bytes out of memory (for an offload tier); its slot returns to the pool.
    pub fn evict(&mut self, id: BlockId) -> Result<Vec<u8>, PoolError> {
        let slot = self.live(id)?.slot.ok_or(PoolError::Evicted(id))?;
        let bytes = self.slots[slot as usize].to_vec();
        self.handles[id.0 as usize].slot = None;
        self.free_slots.push(slot);
        Ok(bytes)
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
        self.slots[slot as usize].copy_from_slice(bytes);
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

    /// Slots created so far (the pool's footprint, free ones included).
    pub fn capacity_blocks(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn evict_and_restore_keep_the_bytes() {
        let mut p = BlockPool::new(4);
        let a = p.allocate();
        p.bytes_mut(a).unwrap().copy_from_slice(&[1, 2, 3, 4]);
        let out = p.evict(a).unwrap();
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
