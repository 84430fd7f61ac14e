//! The offload workload (`Strategy::Offload(tier)`): attention over a paged cache whose
//! working pool is bounded, least recently used blocks evicted to the tier and restored,
//! verified, when a layer needs them. Every step checks that offloading changed nothing:
//! outputs are compared bit for bit with a resident run, and with the f64 reference.
//!
//! Prefill and decode run the kernels and thread pool every other layout runs
//! ([`prefill_attention`], [`decode_layer`]); the cache's `prepare` is the only addition,
//! so `offload` rows are comparable with `paged` rows. One difference: the walk through the
//! blocks keeps one block a tile, while a `paged` row may have tuned it to 64 rows (its note
//! says so; [`crate::attention::AttentionWorkload`]), because an offload step's tier loads
//! would make the timing of the two tiles noisy.

use super::offload_cache::{OffloadCache, OffloadCounters};
use super::synth::Synth;
use super::{open, xxh64, TierStats, VerifiedTier};
use crate::accuracy::pair_bound;
use crate::attention::verdict;
use crate::cache::{CacheError, CacheGeometry, KvCache};
use crate::cpu::decode::{decode_layer, Walk};
use crate::cpu::prefill::{prefill_attention_isa, prefill_flops, PrefillShape};
use crate::cpu::Isa;
use crate::reference;
use crate::spec::{Strategy, WorkloadSpec};
use crate::workload::{Interrupt, MemoryUse, Verification, Workload};
use crate::WorkloadError;
use rayon::prelude::*;

/// Attention over an offloading paged cache.
pub struct OffloadWorkload {
    spec: WorkloadSpec,
    geom: CacheGeometry,
    cache: OffloadCache,
    isa: Isa,
    /// Attention outputs of each sequence's newest token: `[layer][seq × q_head × head_dim]`.
    last: Vec<Vec<f32>>,
    bytes_read_last_step: u64,
    /// The user's request to stop, checked between the steps of a verification.
    interrupt: Interrupt,
}

/// The working-pool size used when `pool_blocks` is 0: half of every block the run makes
/// (so decode steps page blocks through the tier), and at least one layer of every
/// sequence (a layer is decoded for the whole batch at once).
pub fn auto_pool_blocks(spec: &WorkloadSpec) -> usize {
    let per_layer = (spec.max_len() as usize).div_ceil(spec.block_size.max(1) as usize);
    let layer = per_layer * spec.batch as usize;
    (layer * spec.shape.layers as usize).div_ceil(2).max(layer)
}

/// A cache error as the runner reports it: tier and block-pool faults are the backend's.
fn workload_err(e: CacheError) -> WorkloadError {
    match e {
        CacheError::Tier(_) | CacheError::Pool(_) => WorkloadError::Backend(e.to_string()),
        e => WorkloadError::Invalid(e.to_string()),
    }
}

/// `x` widened exactly to f64.
fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// What besides the tokens shapes the bytes of a block: shape, dtypes, block size, seed.
fn namespace(spec: &WorkloadSpec) -> u64 {
    let text = format!(
        "{}|{}x{}x{}|{:?}|{:?}|{}|{}",
        spec.shape.name,
        spec.shape.layers,
        spec.shape.kv_heads,
        spec.shape.head_dim,
        spec.k_dtype,
        spec.v_dtype,
        spec.block_size,
        spec.seed
    );
    xxh64(text.as_bytes(), 0)
}

impl OffloadWorkload {
    /// Build for `spec` (its strategy must be `Offload`); `offload: false` builds the same
    /// workload fully resident (the twin verification compares against).
    pub fn new(spec: &WorkloadSpec, offload: bool) -> Result<OffloadWorkload, WorkloadError> {
        let Strategy::Offload(tier) = spec.strategy else {
            return Err(WorkloadError::Invalid(format!(
                "the offload workload needs --strategy offload, not {:?}",
                spec.strategy
            )));
        };
        spec.validate()?;
        let geom = CacheGeometry::new(
            &spec.shape,
            spec.window,
            spec.k_dtype,
            spec.v_dtype,
            spec.batch,
            spec.max_len(),
            spec.block_size,
            spec.shared_prefix,
        )
        .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        let synth = Synth::new(
            spec.seed,
            spec.batch as usize,
            spec.max_len() as usize,
            spec.shared_prefix as usize,
        );
        let probe = crate::cache::PagedCache::new(&geom)
            .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        let block_bytes = probe.pool().block_bytes();
        let limit = match spec.offload.pool_blocks {
            0 => auto_pool_blocks(spec),
            n => n as usize,
        };
        // Every block of the run, plus one per (layer, sequence) for a tail block in transit.
        let total_blocks = geom.layers * geom.batch * (geom.max_len.div_ceil(geom.block_size) + 1);
        let tier = if offload {
            let store = open(tier, &spec.offload, block_bytes, total_blocks)
                .map_err(|e| WorkloadError::Backend(e.to_string()))?;
            Some(VerifiedTier::new(store))
        } else {
            None
        };
        let cache = OffloadCache::new(&geom, synth, tier, limit, namespace(spec))?;
        Ok(OffloadWorkload {
            last: vec![Vec::new(); geom.layers],
            spec: spec.clone(),
            geom,
            cache,
            isa: Isa::detect(),
            bytes_read_last_step: 0,
            interrupt: Interrupt::default(),
        })
    }

    /// Use this instruction set instead of the detected one (tests, comparisons).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }

    /// (KV heads, head dim, query heads, sequences).
    fn dims(&self) -> (usize, usize, usize, usize) {
        let g = &self.geom;
        (
            g.kv_heads,
            g.head_dim,
            self.spec.shape.q_heads as usize,
            g.batch,
        )
    }

    /// What offloading did so far.
    pub fn counters(&self) -> &OffloadCounters {
        self.cache.counters()
    }

    /// Transfers through the tier so far.
    pub fn tier_stats(&self) -> TierStats {
        self.cache.tier_stats()
    }

    /// How the tier stores blocks.
    pub fn tier_note(&self) -> Option<String> {
        self.cache.tier_note()
    }

    /// Move every resident block to the tier (a prefix computed once and stored).
    pub fn evict_all(&mut self) -> Result<(), WorkloadError> {
        self.cache.evict_all().map_err(workload_err)
    }

    /// Attention outputs of each sequence's newest token: `[layer][seq × q_head × d]`.
    pub fn last_outputs(&self) -> &[Vec<f32>] {
        &self.last
    }

    /// Process tokens `from..to` of every sequence one at a time over the cache, layer by
    /// layer (a suffix after a loaded prefix, or a decode step): each token's K/V appended,
    /// then the layer decoded for the whole batch by the decode path every layout runs.
    /// Returns the KV bytes read.
    pub fn run_tokens(&mut self, from: usize, to: usize) -> Result<u64, WorkloadError> {
        if from >= to {
            return Ok(0);
        }
        let (kvh, d, qh, b) = self.dims();
        let inv = 1.0 / (d as f32).sqrt();
        let (mut k, mut v) = (vec![0f32; kvh * d], vec![0f32; kvh * d]);
        let mut q = vec![0f32; b * qh * d];
        let mut read = 0;
        for layer in 0..self.geom.layers {
            let mut out = vec![0f32; b * qh * d];
            for pos in from..to {
                for (seq, qs) in q.chunks_mut(qh * d).enumerate() {
                    self.cache.synth().kv(layer, seq, pos, &mut k, &mut v);
                    self.cache.synth().q(layer, seq, pos, qs);
                    qs.iter_mut().for_each(|x| *x *= inv);
                    self.cache
                        .append(layer, seq, &k, &v)
                        .map_err(workload_err)?;
                }
                read += decode_layer(
                    &mut self.cache,
                    layer,
                    b,
                    kvh,
                    qh / kvh,
                    &q,
                    &mut out,
                    Walk::CALIBRATED,
                    self.isa,
                )
                .map_err(workload_err)?;
            }
            self.last[layer] = out;
        }
        Ok(read)
    }

    /// A prefill from scratch of tokens `0..to`: per layer and sequence, K/V written to the
    /// cache and causal attention of every token over the fresh f32 K/V, with the prefill
    /// kernels every workload runs.
    pub fn prefill_fresh(&mut self, to: usize) -> Result<(), WorkloadError> {
        if to == 0 {
            return Ok(());
        }
        let (kvh, d, qh, b) = self.dims();
        let (kv_row, q_row) = (kvh * d, qh * d);
        let (mut k, mut v, mut q) = (
            vec![0f32; to * kv_row],
            vec![0f32; to * kv_row],
            vec![0f32; to * q_row],
        );
        let mut out = vec![0f32; to * q_row];
        for layer in 0..self.geom.layers {
            let shape = PrefillShape {
                q_heads: qh,
                kv_heads: kvh,
                head_dim: d,
                window: self.geom.windows[layer],
            };
            let mut last = vec![0f32; b * q_row];
            for seq in 0..b {
                let synth = self.cache.synth();
                k.par_chunks_mut(kv_row)
                    .zip(v.par_chunks_mut(kv_row))
                    .zip(q.par_chunks_mut(q_row))
                    .enumerate()
                    .for_each(|(pos, ((k, v), q))| {
                        synth.kv(layer, seq, pos, k, v);
                        synth.q(layer, seq, pos, q);
                    });
                for (kr, vr) in k.chunks(kv_row).zip(v.chunks(kv_row)) {
                    self.cache
                        .append(layer, seq, kr, vr)
                        .map_err(workload_err)?;
                }
                prefill_attention_isa(&shape, to, &q, &k, &v, &mut out, self.isa);
                // Only the newest token's output leaves the prefill (it makes the first
                // token); the others feed later layers in a full model.
                last[seq * q_row..(seq + 1) * q_row].copy_from_slice(&out[(to - 1) * q_row..]);
            }
            self.last[layer] = last;
        }
        Ok(())
    }

    /// The f64 reference of the newest token's outputs of (layer, seq) at `pos`
    /// (`q_heads × d`), from the unquantized vectors.
    fn reference(&self, layer: usize, seq: usize, pos: usize) -> Vec<f64> {
        let (kvh, d, qh, _) = self.dims();
        let synth = self.cache.synth();
        let start = self.geom.windows[layer].map_or(0, |w| (pos + 1).saturating_sub(w));
        let (mut k, mut v) = (vec![0f32; kvh * d], vec![0f32; kvh * d]);
        let mut keys = vec![Vec::new(); kvh];
        let mut values = vec![Vec::new(); kvh];
        for p in start..=pos {
            synth.kv(layer, seq, p, &mut k, &mut v);
            for h in 0..kvh {
                keys[h].push(widen(&k[h * d..(h + 1) * d]));
                values[h].push(widen(&v[h * d..(h + 1) * d]));
            }
        }
        let mut q = vec![0f32; qh * d];
        synth.q(layer, seq, pos, &mut q);
        let group = qh / kvh;
        (0..qh)
            .flat_map(|h| {
                let qh = widen(&q[h * d..(h + 1) * d]);
                reference::attend(&qh, &keys[h / group], &values[h / group])
            })
            .collect()
    }

    /// The f64 reference of every layer's and sequence's newest token at `pos`, in the
    /// order of [`Self::last_outputs`], one task per (layer, sequence).
    fn reference_all(&self, pos: usize) -> Vec<f64> {
        let b = self.geom.batch;
        (0..self.geom.layers * b)
            .into_par_iter()
            .map(|t| self.reference(t / b, t % b, pos))
            .collect::<Vec<_>>()
            .concat()
    }

    /// ‖out − ref‖/‖ref‖ of every sequence's newest-token outputs (all layers) against the
    /// f64 reference from the unquantized vectors.
    pub fn last_rel_error(&self) -> f64 {
        let pos = self.cache.len(0, 0) - 1;
        let got: Vec<f64> = self.last.concat().iter().map(|&x| x as f64).collect();
        reference::rel_error(&got, &self.reference_all(pos))
    }

    /// Run prefill and every decode step, collecting outputs and comparing each with the
    /// f64 reference; returns (outputs, Σ‖out−ref‖², Σ‖ref‖², Σ out·ref, Σ‖out‖²).
    fn run_all(&mut self, with_reference: bool) -> Result<(Vec<f32>, [f64; 4]), WorkloadError> {
        self.reset()?;
        let mut all = Vec::new();
        let mut sums = [0f64; 4];
        let prompt = self.spec.prompt as usize;
        for step in 0..=self.spec.gen as usize {
            self.interrupt.check()?;
            if step == 0 {
                self.prefill()?;
            } else {
                self.decode_step()?;
            }
            let out = self.last.concat();
            if with_reference {
                let want = self.reference_all(prompt + step - 1);
                for (o, r) in out.iter().zip(want) {
                    let o = *o as f64;
                    sums[0] += (o - r) * (o - r);
                    sums[1] += r * r;
                    sums[2] += o * r;
                    sums[3] += o * o;
                }
            }
            all.extend(out);
        }
        Ok((all, sums))
    }
}

impl Workload for OffloadWorkload {
    fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    fn watch(&mut self, interrupt: Interrupt) {
        self.interrupt = interrupt;
    }

    fn verify(&mut self) -> Result<Verification, WorkloadError> {
        let (offloaded, sums) = self.run_all(true)?;
        let mut resident = OffloadWorkload::new(&self.spec, false)?.with_isa(self.isa);
        resident.watch(self.interrupt);
        let (twin, _) = resident.run_all(false)?;
        let rel_error = (sums[0] / sums[1]).sqrt();
        let cosine = sums[2] / (sums[1].sqrt() * sums[3].sqrt());
        let bound = pair_bound(&self.spec.k_dtype, &self.spec.v_dtype);
        let mut verification = verdict(rel_error, cosine, bound);
        let mut problems = Vec::new();
        if !verification.passed {
            problems.push(verification.detail.clone());
        }
        let identical = offloaded.len() == twin.len()
            && offloaded
                .iter()
                .zip(&twin)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if !identical {
            problems.push("outputs differ from the resident run: offloading changed data".into());
        }
        if self.tier_stats().blocks_read == 0 && self.counters().fallbacks == 0 {
            problems.push(
                "no block went through the tier: the working pool holds the whole cache; \
                 use 2 or more layers (the automatic pool holds half of the blocks)"
                    .into(),
            );
        }
        verification.passed = problems.is_empty();
        verification.detail = problems.join("; ");
        Ok(verification)
    }

    fn reset(&mut self) -> Result<(), WorkloadError> {
        self.cache.reset_run().map_err(workload_err)?;
        self.last.iter_mut().for_each(Vec::clear);
        self.bytes_read_last_step = 0;
        Ok(())
    }

    fn prefill(&mut self) -> Result<(), WorkloadError> {
        self.prefill_fresh(self.spec.prompt as usize)
    }

    fn decode_step(&mut self) -> Result<(), WorkloadError> {
        let pos = self.cache.len(0, 0);
        self.bytes_read_last_step = self.run_tokens(pos, pos + 1)?;
        Ok(())
    }

    fn memory(&self) -> MemoryUse {
        self.cache.memory()
    }

    fn kv_bytes_read_last_step(&self) -> u64 {
        self.bytes_read_last_step
    }

    fn tier_report(&self) -> Option<super::TierReport> {
        let Strategy::Offload(tier) = self.spec.strategy else {
            return None;
        };
        let stats = self.tier_stats();
        let c = self.counters();
        Some(super::TierReport {
            tier: super::tier_name(tier),
            blocks_stored: stats.blocks_written,
            blocks_loaded: stats.blocks_read,
            bytes_loaded: stats.bytes_read,
            load_gbps: stats.load_gbps(),
            hash_failures: stats.hash_failures,
            fallbacks: c.fallbacks,
            recomputed_blocks: c.recomputed_blocks,
            first_error: c.first_error.clone(),
        })
    }

    fn prefill_flops(&self) -> f64 {
        let (kvh, d, qh, b) = self.dims();
        self.geom
            .windows
            .iter()
            .map(|&window| {
                let s = PrefillShape {
                    q_heads: qh,
                    kv_heads: kvh,
                    head_dim: d,
                    window,
                };
                b as f64 * prefill_flops(&s, self.spec.prompt as usize)
            })
            .sum()
    }
}
