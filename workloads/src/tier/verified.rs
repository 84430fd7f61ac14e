//! A tier store with every loaded block checked bit-exact and every transfer counted.

use super::{hash::xxh64, tier_name, BlockKey, BlockOut, TierError, TierStore};
use crate::spec::Tier;
use std::collections::HashMap;
use std::time::Instant;

/// What went through a tier.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TierStats {
    pub blocks_written: u64,
    pub bytes_written: u64,
    /// Seconds spent in the store's writes.
    pub write_s: f64,
    pub blocks_read: u64,
    pub bytes_read: u64,
    /// Seconds spent in the store's reads (transfer only).
    pub read_s: f64,
    /// Seconds spent hashing loaded blocks.
    pub verify_s: f64,
    /// Loaded blocks whose bytes did not match their hash.
    pub hash_failures: u64,
    /// Blocks asked for that the tier did not hold (expired, evicted, never stored).
    pub misses: u64,
    /// Failed transfers (write or read errors, server gone).
    pub faults: u64,
}

impl TierStats {
    /// Achieved load bandwidth, GB/s (0 before any load).
    pub fn load_gbps(&self) -> f64 {
        if self.read_s > 0.0 {
            self.bytes_read as f64 / self.read_s / 1e9
        } else {
            0.0
        }
    }

    /// Achieved store bandwidth, GB/s (0 before any store).
    pub fn store_gbps(&self) -> f64 {
        if self.write_s > 0.0 {
            self.bytes_written as f64 / self.write_s / 1e9
        } else {
            0.0
        }
    }
}

/// A tier whose loads are verified against the hash each block was stored with.
pub struct VerifiedTier {
    store: Box<dyn TierStore>,
    /// Hash of every block this run stored, so a block replaced behind our back (same key,
    /// other bytes, consistent header) is caught too.
    stored: HashMap<BlockKey, u64>,
    stats: TierStats,
}

impl VerifiedTier {
    /// Wrap `store`.
    pub fn new(store: Box<dyn TierStore>) -> VerifiedTier {
        VerifiedTier {
            store,
            stored: HashMap::new(),
            stats: TierStats::default(),
        }
    }

    /// Which tier this is.
    pub fn tier(&self) -> Tier {
        self.store.tier()
    }

    /// How the store works (direct I/O, TTL, ...).
    pub fn note(&self) -> String {
        self.store.note()
    }

    /// Counters so far.
    pub fn stats(&self) -> TierStats {
        self.stats
    }

    /// Whether this run stored `key` (and has not forgotten it).
    pub fn holds(&self, key: &BlockKey) -> bool {
        self.stored.contains_key(key)
    }

    /// Store blocks, remembering each one's hash.
    pub fn store(&mut self, blocks: &[(BlockKey, &[u8])]) -> Result<(), TierError> {
        let out: Vec<BlockOut<'_>> = blocks
            .iter()
            .map(|&(key, bytes)| BlockOut {
                key,
                hash: xxh64(bytes, 0),
                bytes,
            })
            .collect();
        let start = Instant::now();
        let result = self.store.put(&out);
        self.stats.write_s += start.elapsed().as_secs_f64();
        if let Err(e) = result {
            self.stats.faults += 1;
            return Err(e);
        }
        for b in &out {
            self.stored.insert(b.key, b.hash);
            self.stats.blocks_written += 1;
            self.stats.bytes_written += b.bytes.len() as u64;
        }
        Ok(())
    }

    /// Load blocks into `out`; `false` where the tier does not hold one. A block whose bytes
    /// do not match its hash is an error ([`TierError::Corrupt`]), never data.
    pub fn load(&mut self, keys: &[BlockKey], out: &mut [Vec<u8>]) -> Result<Vec<bool>, TierError> {
        let start = Instant::now();
        let result = self.store.get(keys, out);
        self.stats.read_s += start.elapsed().as_secs_f64();
        let hashes = result.inspect_err(|_| self.stats.faults += 1)?;
        let start = Instant::now();
        let mut found = Vec::with_capacity(keys.len());
        for ((key, bytes), stored) in keys.iter().zip(out.iter()).zip(hashes) {
            let Some(stored) = stored else {
                self.stats.misses += 1;
                found.push(false);
                continue;
            };
            let loaded = xxh64(bytes, 0);
            let expected = self.stored.get(key).copied().unwrap_or(stored);
            if loaded != stored || loaded != expected {
                self.stats.hash_failures += 1;
                self.stats.verify_s += start.elapsed().as_secs_f64();
                return Err(TierError::Corrupt {
                    tier: tier_name(self.tier()),
                    key: *key,
                    stored: expected,
                    loaded,
                });
            }
            self.stats.blocks_read += 1;
            self.stats.bytes_read += bytes.len() as u64;
            found.push(true);
        }
        self.stats.verify_s += start.elapsed().as_secs_f64();
        Ok(found)
    }

    /// Drop blocks from the tier.
    pub fn forget(&mut self, keys: &[BlockKey]) -> Result<(), TierError> {
        for k in keys {
            self.stored.remove(k);
        }
        self.store.remove(keys)
    }
}
