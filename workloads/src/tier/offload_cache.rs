//! A paged cache whose working pool holds at most `limit` blocks: the least recently used
//! blocks are evicted to a tier (in their stored dtype) and restored, verified, when a layer
//! needs them. When the tier fails (write error, server gone, corrupted block) the cache
//! stops offloading and recomputes what was lost, and counts it: never a wrong result.
//!
//! It is a [`KvCache`] like every other layout: `prepare` makes a layer of a sequence
//! resident, then the decode kernels read it through `view`, as they read a paged cache.

use super::lru::Lru;
use super::synth::Synth;
use super::{tier_name, BlockKey, TierError, TierStats, VerifiedTier};
use crate::cache::{BlockId, CacheError, CacheGeometry, HeadView, KvCache, PagedCache};
use crate::workload::MemoryUse;
use crate::WorkloadError;
use std::collections::{HashMap, HashSet};

/// What offloading did, for the CSV.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OffloadCounters {
    /// Blocks moved out of the working pool.
    pub evictions: u64,
    /// Blocks loaded back, each verified bit-exact.
    pub restores: u64,
    /// Blocks recomputed because the tier could not give them back.
    pub recomputed_blocks: u64,
    /// Tier faults that switched the run to recomputing.
    pub fallbacks: u64,
    /// The first tier error, as a user would read it.
    pub first_error: Option<String>,
}

/// A paged cache with a bounded working pool and an offload tier.
pub struct OffloadCache {
    geom: CacheGeometry,
    cache: PagedCache,
    synth: Synth,
    tier: Option<VerifiedTier>,
    /// Resident blocks allowed (usize::MAX: never evict).
    limit: usize,
    /// Mixed into every block key: what besides the tokens shapes the bytes.
    namespace: u64,
    lru: Lru,
    /// Where each resident block sits: (seq, layer, logical block).
    owner: HashMap<BlockId, (usize, usize, usize)>,
    /// Evicted blocks and the key they were stored under.
    evicted: HashMap<BlockId, BlockKey>,
    /// Restored blocks whose tier copy is still valid while their key is unchanged: evicting
    /// them again needs no write (write-back caching).
    clean: HashMap<BlockId, BlockKey>,
    counters: OffloadCounters,
    /// Tier stats from before the tier was dropped after a fault.
    stats_at_fault: Option<TierStats>,
}

/// A tier error the run cannot recover from, with the tier's message.
fn tier_err(e: TierError) -> CacheError {
    CacheError::Tier(e.to_string())
}

impl OffloadCache {
    /// A cache for `geom` whose pool holds at most `limit` blocks, offloading to `tier`.
    pub fn new(
        geom: &CacheGeometry,
        synth: Synth,
        tier: Option<VerifiedTier>,
        limit: usize,
        namespace: u64,
    ) -> Result<OffloadCache, WorkloadError> {
        let need = min_pool_blocks(geom);
        if tier.is_some() && limit < need {
            return Err(WorkloadError::Invalid(format!(
                "--pool-blocks {limit} cannot hold one layer of every sequence ({} × {} blocks of {} tokens; a layer is decoded for the whole batch at once): raise it to {need} or more, or 0 for automatic",
                geom.batch,
                geom.max_len.div_ceil(geom.block_size),
                geom.block_size
            )));
        }
        Ok(OffloadCache {
            geom: geom.clone(),
            cache: PagedCache::new(geom).map_err(|e| WorkloadError::Invalid(e.to_string()))?,
            synth,
            limit: if tier.is_some() { limit } else { usize::MAX },
            tier,
            namespace,
            lru: Lru::default(),
            owner: HashMap::new(),
            evicted: HashMap::new(),
            clean: HashMap::new(),
            counters: OffloadCounters::default(),
            stats_at_fault: None,
        })
    }

    /// The token and vector source.
    pub fn synth(&self) -> &Synth {
        &self.synth
    }

    /// What offloading did so far.
    pub fn counters(&self) -> &OffloadCounters {
        &self.counters
    }

    /// Transfers through the tier so far (kept after a fault dropped it).
    pub fn tier_stats(&self) -> TierStats {
        self.tier
            .as_ref()
            .map(VerifiedTier::stats)
            .or(self.stats_at_fault)
            .unwrap_or_default()
    }

    /// How the tier stores blocks, if one is in use.
    pub fn tier_note(&self) -> Option<String> {
        self.tier.as_ref().map(VerifiedTier::note)
    }

    /// Bytes of one block (every KV head of one layer, K and V).
    pub fn block_bytes(&self) -> usize {
        self.cache.pool().block_bytes()
    }

    fn layer_blocks(&self, seq: usize, layer: usize) -> Vec<(usize, BlockId)> {
        self.cache.blocks(seq, layer).collect()
    }

    fn key_of(&self, id: BlockId) -> BlockKey {
        let (seq, layer, bi) = self.owner[&id];
        let len = self.cache.len(layer, seq);
        let last = ((bi + 1) * self.geom.block_size).min(len) - 1;
        self.synth.block_key(self.namespace, seq, layer, last)
    }

    /// Make every block of (seq, layer) resident: load evicted ones from the tier (verified),
    /// evicting least recently used blocks of other layers to stay within the limit.
    fn ensure_layer(&mut self, seq: usize, layer: usize) -> Result<(), CacheError> {
        let blocks = self.layer_blocks(seq, layer);
        let missing: Vec<BlockId> = blocks
            .iter()
            .map(|&(_, id)| id)
            .filter(|id| !self.cache.pool().is_resident(*id))
            .collect();
        for &(bi, id) in &blocks {
            self.owner.insert(id, (seq, layer, bi));
            self.lru.touch(id);
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.make_room(missing.len(), layer)?;
        if self.tier.is_none() {
            // Evicting failed and the cache was rebuilt, resident, by recomputing.
            return Ok(());
        }
        let keys: Vec<BlockKey> = missing.iter().map(|id| self.evicted[id]).collect();
        let mut bufs = vec![Vec::with_capacity(self.block_bytes()); keys.len()];
        let tier = self
            .tier
            .as_mut()
            .expect("blocks are evicted only while a tier is in use");
        match tier.load(&keys, &mut bufs) {
            Ok(found) if found.iter().all(|&f| f) => {
                for (id, bytes) in missing.iter().zip(&bufs) {
                    self.cache.pool_mut().restore(*id, bytes)?;
                    let key = self.evicted.remove(id).expect("missing blocks are evicted");
                    self.clean.insert(*id, key);
                }
                self.counters.restores += missing.len() as u64;
                Ok(())
            }
            Ok(found) => {
                let lost = keys.iter().zip(found).find(|(_, f)| !f).map(|(k, _)| *k);
                let name = tier_name(tier.tier());
                self.fall_back(format!(
                    "block {} was no longer in the {name} tier (expired or evicted there)",
                    lost.expect("one block is missing")
                ))
            }
            Err(e) => self.fault(e),
        }
    }

    /// Evict least recently used blocks until `extra` more fit, never one of `layer` (of any
    /// sequence: the layer is decoded for the whole batch at once).
    fn make_room(&mut self, extra: usize, layer: usize) -> Result<(), CacheError> {
        let resident = self.cache.pool().resident_blocks();
        let over = (resident + extra).saturating_sub(self.limit);
        if over == 0 || self.tier.is_none() {
            return Ok(());
        }
        let pinned: HashSet<BlockId> = (0..self.geom.batch)
            .flat_map(|seq| self.cache.blocks(seq, layer).map(|(_, id)| id))
            .collect();
        let pool = self.cache.pool();
        let victims = self.lru.victims(over, &pinned, |id| {
            pool.refs(id) > 0 && pool.is_resident(id)
        });
        self.evict(&victims)
    }

    /// Move `victims` to the tier; blocks whose tier copy is still valid are only dropped
    /// from the pool. If the tier refuses a write, the blocks go back into the pool.
    fn evict(&mut self, victims: &[BlockId]) -> Result<(), CacheError> {
        if victims.is_empty() {
            return Ok(());
        }
        let keys: Vec<BlockKey> = victims.iter().map(|&id| self.key_of(id)).collect();
        let mut stale = Vec::new();
        let mut writes = Vec::new();
        for (&id, &key) in victims.iter().zip(&keys) {
            match self.clean.remove(&id) {
                // The tier's copy is this block: drop it from the pool, copying nothing.
                Some(old) if old == key => self.cache.pool_mut().discard(id)?,
                Some(old) => {
                    stale.push(old);
                    writes.push((id, key, self.cache.pool_mut().evict(id)?));
                }
                None => writes.push((id, key, self.cache.pool_mut().evict(id)?)),
            }
        }
        let batch: Vec<(BlockKey, &[u8])> =
            writes.iter().map(|(_, k, b)| (*k, b.as_slice())).collect();
        let tier = self.tier.as_mut().expect("evicting needs a tier");
        // A local tier frees the copy of a block that changed since it was loaded (before
        // storing the new one, so a full tier has room); Redis keeps it under its own (older
        // prefix) key for other runs until its TTL.
        let forget = if tier.tier() == crate::spec::Tier::Redis {
            Ok(())
        } else {
            tier.forget(&stale)
        };
        let stored = forget.and_then(|()| tier.store(&batch));
        match stored {
            Ok(()) => {
                for (&id, key) in victims.iter().zip(keys) {
                    self.lru.forget(id);
                    self.evicted.insert(id, key);
                }
                self.counters.evictions += victims.len() as u64;
                Ok(())
            }
            Err(e) => {
                for (id, _, bytes) in &writes {
                    self.cache.pool_mut().restore(*id, bytes)?;
                }
                // Clean blocks were dropped from the pool without a write: their tier copy
                // is what the fallback would need, so treat them as lost too.
                for (&id, key) in victims.iter().zip(keys) {
                    if !writes.iter().any(|(w, _, _)| *w == id) {
                        self.evicted.insert(id, key);
                    }
                }
                self.fault(e)
            }
        }
    }

    /// Move every resident block to the tier (a prefix computed once and stored).
    pub fn evict_all(&mut self) -> Result<(), CacheError> {
        let pool = self.cache.pool();
        let all = self.lru.victims(usize::MAX, &HashSet::new(), |id| {
            pool.refs(id) > 0 && pool.is_resident(id)
        });
        self.evict(&all)
    }

    /// A tier error: misconfiguration stops the run; lost or unreachable data falls back.
    fn fault(&mut self, e: TierError) -> Result<(), CacheError> {
        if !e.is_recoverable() {
            return Err(tier_err(e));
        }
        self.fall_back(e.to_string())
    }

    /// Stop offloading and recompute every evicted block from the token sequence.
    fn fall_back(&mut self, why: String) -> Result<(), CacheError> {
        self.stop_offloading(why);
        self.counters.recomputed_blocks += self.evicted.len() as u64;
        let lens: Vec<Vec<usize>> = (0..self.geom.batch)
            .map(|seq| {
                (0..self.geom.layers)
                    .map(|l| self.cache.len(l, seq))
                    .collect()
            })
            .collect();
        self.clear();
        let hd = self.geom.kv_heads * self.geom.head_dim;
        let (mut k, mut v) = (vec![0f32; hd], vec![0f32; hd]);
        for (seq, layer_lens) in lens.iter().enumerate() {
            for (layer, &len) in layer_lens.iter().enumerate() {
                for pos in 0..len {
                    self.synth.kv(layer, seq, pos, &mut k, &mut v);
                    self.cache.append(layer, seq, &k, &v)?;
                }
            }
        }
        Ok(())
    }

    /// Drop the tier (its stats kept) and the limit, counting the fault that made us.
    fn stop_offloading(&mut self, why: String) {
        self.counters.fallbacks += 1;
        self.counters.first_error.get_or_insert(why);
        self.stats_at_fault = self.tier.as_ref().map(VerifiedTier::stats);
        self.tier = None;
        self.limit = usize::MAX;
    }

    fn clear(&mut self) {
        self.cache.reset();
        self.lru.clear();
        self.owner.clear();
        self.evicted.clear();
        self.clean.clear();
    }

    /// Empty the cache for another run; blocks this run left in a local tier are dropped
    /// (Redis keeps them until their TTL: other runs may share them).
    pub fn reset_run(&mut self) -> Result<(), CacheError> {
        let keys: Vec<BlockKey> = self
            .evicted
            .values()
            .chain(self.clean.values())
            .copied()
            .collect();
        if let Some(tier) = self.tier.as_mut() {
            if tier.tier() != crate::spec::Tier::Redis {
                tier.forget(&keys).map_err(tier_err)?;
            }
        }
        self.clear();
        Ok(())
    }
}

/// The fewest blocks a working pool must hold: one layer of every sequence, all tokens.
pub fn min_pool_blocks(geom: &CacheGeometry) -> usize {
    geom.batch * geom.max_len.div_ceil(geom.block_size)
}

impl KvCache for OffloadCache {
    /// Loads the layer first if part of it is in the tier, then evicts other layers' blocks
    /// beyond the limit.
    fn append(&mut self, layer: usize, seq: usize, k: &[f32], v: &[f32]) -> Result<(), CacheError> {
        // A resident layer is not touched block by block here: `prepare` marks it used
        // before it is read, and doing it per token would cost more than the decode.
        let pool = self.cache.pool();
        if !self
            .cache
            .blocks(seq, layer)
            .all(|(_, id)| pool.is_resident(id))
        {
            self.ensure_layer(seq, layer)?;
        }
        self.cache.append(layer, seq, k, v)?;
        if let Some((bi, id)) = self.cache.blocks(seq, layer).last() {
            self.owner.insert(id, (seq, layer, bi));
            self.lru.touch(id);
        }
        self.make_room(0, layer)
    }

    /// Every block of (layer, seq) resident: evicted ones loaded back from the tier and
    /// verified, least recently used blocks of other layers evicted to stay within the limit.
    fn prepare(&mut self, layer: usize, seq: usize) -> Result<(), CacheError> {
        self.ensure_layer(seq, layer)
    }

    fn len(&self, layer: usize, seq: usize) -> usize {
        self.cache.len(layer, seq)
    }

    fn view(&self, layer: usize, seq: usize, head: usize) -> HeadView<'_> {
        self.cache.view(layer, seq, head)
    }

    fn heads_share_blocks(&self) -> bool {
        self.cache.heads_share_blocks()
    }

    fn resident_bytes(&self) -> u64 {
        self.cache.resident_bytes()
    }

    /// Memory of the working pool (evicted blocks are not in it).
    fn memory(&self) -> MemoryUse {
        self.cache.memory()
    }

    /// [`OffloadCache::reset_run`]; a tier that cannot forget the run's blocks is a tier
    /// fault like any other: offloading stops, counted (nothing is lost, every row is
    /// dropped anyway).
    fn reset(&mut self) {
        if let Err(e) = self.reset_run() {
            self.stop_offloading(e.to_string());
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::decode::decode_layer;
    use crate::cpu::Isa;
    use crate::spec::Tier;
    use crate::tier::{BlockOut, HostStore, TierStore};
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};

    const LEN: usize = 100;

    /// 3 layers, 4 query heads over 2 KV heads of 32, 2 sequences of 100 tokens sharing 16,
    /// blocks of 16 tokens: 7 blocks per layer of a sequence, the first one shared by both,
    /// so 13 distinct blocks per layer, 39 in all.
    fn geometry(dtype: DtypeKind) -> CacheGeometry {
        let d = CacheDtype::new(dtype);
        let shape = ModelShape::uniform("t", 3, 4, 2, 32, 128, 256);
        CacheGeometry::new(&shape, None, d, d, 2, LEN as u32, 16, 16).unwrap()
    }

    fn synth() -> Synth {
        Synth::new(7, 2, LEN, 16)
    }

    fn block_bytes(geom: &CacheGeometry) -> usize {
        PagedCache::new(geom).unwrap().pool().block_bytes()
    }

    fn offload(geom: &CacheGeometry, store: Box<dyn TierStore>, limit: usize) -> OffloadCache {
        OffloadCache::new(geom, synth(), Some(VerifiedTier::new(store)), limit, 1).unwrap()
    }

    /// Write every token of every (layer, sequence), as a prefill does, then decode each
    /// layer for the whole batch through the shared decode path: every output's bits.
    fn fill_and_decode(cache: &mut dyn KvCache, geom: &CacheGeometry) -> Vec<u32> {
        let s = synth();
        let (kvh, d) = (geom.kv_heads, geom.head_dim);
        let (mut k, mut v) = (vec![0f32; kvh * d], vec![0f32; kvh * d]);
        for layer in 0..geom.layers {
            for seq in 0..geom.batch {
                for pos in 0..LEN {
                    s.kv(layer, seq, pos, &mut k, &mut v);
                    cache.append(layer, seq, &k, &v).unwrap();
                }
            }
        }
        let qh = 4;
        let mut bits = Vec::new();
        for layer in 0..geom.layers {
            let mut q = vec![0f32; geom.batch * qh * d];
            for (seq, qs) in q.chunks_mut(qh * d).enumerate() {
                s.q(layer, seq, LEN - 1, qs);
                qs.iter_mut().for_each(|x| *x /= (d as f32).sqrt());
            }
            let mut out = vec![0f32; q.len()];
            let isa = Isa::detect();
            decode_layer(
                cache,
                layer,
                geom.batch,
                kvh,
                qh / kvh,
                &q,
                &mut out,
                crate::cpu::decode::Walk::CALIBRATED,
                isa,
            )
            .unwrap();
            assert!(out.iter().all(|x| x.is_finite() && *x != 0.0));
            bits.extend(out.iter().map(|x| x.to_bits()));
        }
        bits
    }

    #[test]
    fn a_pool_that_holds_everything_decodes_bit_identical_to_paged() {
        for dtype in [DtypeKind::F16, DtypeKind::Int8, DtypeKind::Int4] {
            let g = geometry(dtype);
            let paged = fill_and_decode(&mut PagedCache::new(&g).unwrap(), &g);
            let store = Box::new(HostStore::new(block_bytes(&g), 64));
            let mut cache = offload(&g, store, 39);
            assert_eq!(fill_and_decode(&mut cache, &g), paged, "{dtype:?}");
            assert_eq!(cache.counters(), &OffloadCounters::default());
            assert_eq!(cache.tier_stats().blocks_written, 0);
        }
    }

    #[test]
    fn blocks_evicted_and_restored_by_prepare_decode_bit_identical_to_paged() {
        for dtype in [DtypeKind::F16, DtypeKind::Int8, DtypeKind::Int4] {
            let g = geometry(dtype);
            let paged = fill_and_decode(&mut PagedCache::new(&g).unwrap(), &g);
            let store = Box::new(HostStore::new(block_bytes(&g), 64));
            // One layer of both sequences (2 × 7 blocks) resident at a time.
            let limit = min_pool_blocks(&g);
            assert_eq!(limit, 14);
            let mut cache = offload(&g, store, limit);
            assert_eq!(fill_and_decode(&mut cache, &g), paged, "{dtype:?}");
            let (c, stats) = (cache.counters(), cache.tier_stats());
            // Each layer's prepare evicts the least recently used blocks, the other layers',
            // so every layer's 13 blocks come back once: 3 × 13.
            assert_eq!(c.restores, 39, "{dtype:?}");
            assert_eq!(stats.blocks_read, 39);
            // Filling leaves 39 − 14 in the tier; each of the 39 restores evicts one more.
            assert_eq!(c.evictions, 25 + 39, "{c:?}");
            assert_eq!((c.fallbacks, stats.hash_failures), (0, 0));
            assert!(cache.memory().kv_bytes_allocated <= (limit * block_bytes(&g)) as u64);
        }
    }

    /// A host store whose loads fail once `ok_loads` loads went well, as a disk would.
    struct FailingLoads {
        inner: HostStore,
        ok_loads: usize,
    }

    impl TierStore for FailingLoads {
        fn tier(&self) -> Tier {
            self.inner.tier()
        }
        fn put(&mut self, blocks: &[BlockOut<'_>]) -> Result<(), TierError> {
            self.inner.put(blocks)
        }
        fn get(
            &mut self,
            keys: &[BlockKey],
            out: &mut [Vec<u8>],
        ) -> Result<Vec<Option<u64>>, TierError> {
            if self.ok_loads == 0 {
                return Err(TierError::Read {
                    path: "/injected/blocks".into(),
                    cause: std::io::Error::other("injected read fault"),
                });
            }
            self.ok_loads -= 1;
            self.inner.get(keys, out)
        }
        fn remove(&mut self, keys: &[BlockKey]) -> Result<(), TierError> {
            self.inner.remove(keys)
        }
        fn note(&self) -> String {
            "fails loads on purpose".into()
        }
    }

    #[test]
    fn a_tier_fault_in_prepare_falls_back_counted_and_still_matches_paged() {
        let g = geometry(DtypeKind::F16);
        let paged = fill_and_decode(&mut PagedCache::new(&g).unwrap(), &g);
        // Layer 0 of the first sequence loads; its second sequence's load fails.
        let store = Box::new(FailingLoads {
            inner: HostStore::new(block_bytes(&g), 64),
            ok_loads: 1,
        });
        let mut cache = offload(&g, store, min_pool_blocks(&g));
        assert_eq!(
            fill_and_decode(&mut cache, &g),
            paged,
            "never a wrong result"
        );
        let c = cache.counters();
        assert_eq!((c.fallbacks, c.restores), (1, 7), "{c:?}");
        // Making room for the second sequence's 6 blocks of layer 0 left 14 − 6 resident:
        // the other 39 − 8 were in the tier.
        assert_eq!(c.recomputed_blocks, 31, "{c:?}");
        let why = c.first_error.as_deref().unwrap();
        assert!(why.contains("/injected/blocks") && why.contains("injected read fault"));
        // The stats of the dropped tier are kept for the CSV.
        assert_eq!(cache.tier_stats().blocks_read, 7);
    }
}
