//! The host tier: a fixed pool of block slots in RAM, allocated once, with a free list.

use super::{BlockKey, BlockOut, TierError, TierStore};
use crate::spec::Tier;
use std::collections::HashMap;

/// Blocks in one preallocated RAM pool.
pub struct HostStore {
    block_bytes: usize,
    pool: Vec<u8>,
    free: Vec<usize>,
    /// key → (slot, stored hash, length).
    index: HashMap<BlockKey, (usize, u64, usize)>,
}

impl HostStore {
    /// A pool of `capacity` slots of `block_bytes` each, touched once so the pages are
    /// resident before anything is timed.
    pub fn new(block_bytes: usize, capacity: usize) -> HostStore {
        HostStore {
            block_bytes,
            pool: vec![0xA5; block_bytes * capacity],
            free: (0..capacity).rev().collect(),
            index: HashMap::new(),
        }
    }

    /// Blocks held now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no block is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn slot_mut(&mut self, slot: usize) -> &mut [u8] {
        &mut self.pool[slot * self.block_bytes..(slot + 1) * self.block_bytes]
    }
}

impl TierStore for HostStore {
    fn tier(&self) -> Tier {
        Tier::Host
    }

    fn put(&mut self, blocks: &[BlockOut<'_>]) -> Result<(), TierError> {
        for b in blocks {
            if b.bytes.len() > self.block_bytes {
                return Err(TierError::BlockSize {
                    tier: "host",
                    size: self.block_bytes,
                    got: b.bytes.len(),
                });
            }
            let slot = match self.index.get(&b.key) {
                Some(&(slot, _, _)) => slot,
                None => self.free.pop().ok_or(TierError::Full {
                    tier: "host",
                    capacity: self.pool.len() / self.block_bytes.max(1),
                })?,
            };
            self.slot_mut(slot)[..b.bytes.len()].copy_from_slice(b.bytes);
            self.index.insert(b.key, (slot, b.hash, b.bytes.len()));
        }
        Ok(())
    }

    fn get(
        &mut self,
        keys: &[BlockKey],
        out: &mut [Vec<u8>],
    ) -> Result<Vec<Option<u64>>, TierError> {
        Ok(keys
            .iter()
            .zip(out.iter_mut())
            .map(|(key, buf)| {
                let &(slot, hash, len) = self.index.get(key)?;
                let start = slot * self.block_bytes;
                buf.clear();
                buf.extend_from_slice(&self.pool[start..start + len]);
                Some(hash)
            })
            .collect())
    }

    fn remove(&mut self, keys: &[BlockKey]) -> Result<(), TierError> {
        for key in keys {
            if let Some((slot, _, _)) = self.index.remove(key) {
                self.free.push(slot);
            }
        }
        Ok(())
    }

    fn note(&self) -> String {
        format!(
            "RAM pool of {} blocks (pageable host memory)",
            self.pool.len() / self.block_bytes.max(1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::hash::xxh64;

    fn out(key: u64, bytes: &[u8]) -> BlockOut<'_> {
        BlockOut {
            key: BlockKey([key, 0]),
            hash: xxh64(bytes, 0),
            bytes,
        }
    }

    #[test]
    fn round_trip_reuse_and_capacity() {
        let mut host = HostStore::new(8, 2);
        host.put(&[out(1, b"abcdefgh"), out(2, b"12345678")])
            .unwrap();
        let err = host.put(&[out(3, b"zzzzzzzz")]).unwrap_err();
        assert!(matches!(err, TierError::Full { capacity: 2, .. }), "{err}");
        let mut bufs = vec![Vec::new(), Vec::new(), Vec::new()];
        let keys = [BlockKey([2, 0]), BlockKey([1, 0]), BlockKey([3, 0])];
        let hashes = host.get(&keys, &mut bufs).unwrap();
        assert_eq!(bufs[0], b"12345678");
        assert_eq!(bufs[1], b"abcdefgh");
        assert_eq!(
            hashes,
            vec![
                Some(xxh64(b"12345678", 0)),
                Some(xxh64(b"abcdefgh", 0)),
                None
            ]
        );
        host.remove(&[BlockKey([1, 0])]).unwrap();
        host.put(&[out(3, b"zzzz")]).unwrap();
        host.get(&keys[2..], &mut bufs[..1]).unwrap();
        assert_eq!(
            bufs[0], b"zzzz",
            "a freed slot is reused, short blocks keep their length"
        );
        assert!(matches!(
            host.put(&[out(4, b"too long!")]).unwrap_err(),
            TierError::BlockSize { got: 9, .. }
        ));
    }
}
