//! The offload workload (`Strategy::Offload(tier)`): attention over a paged cache whose
//! working pool is bounded, least recently used blocks evicted to the tier and restored,
//! verified, when a layer needs them. Every step checks that offloading changed nothing:
//! outputs are compared bit for bit with a resident run, and with the f64 reference.

use super::attention::{attend, attend_f64, attend_rows};
use super::offload_cache::{OffloadCache, OffloadCounters};
use super::synth::Synth;
use super::{open, xxh64, TierStats, VerifiedTier};
use crate::cache::CacheGeometry;
use crate::spec::{Strategy, WorkloadSpec};
use crate::workload::{MemoryUse, Verification, Workload};
use crate::WorkloadError;
use kvbench_planner::DtypeKind;

/// Bound on ‖out − ref‖/‖ref‖ against the unquantized f64 reference, per stored dtype
/// (attention averages rows, so its error is well under one quantization step).
pub fn error_bound(kind: DtypeKind) -> f64 {
    match kind {
        DtypeKind::F32 => 1e-5,
        DtypeKind::F16 => 2e-3,
        DtypeKind::Bf16 => 1e-2,
        DtypeKind::Int8 => 2e-2,
        DtypeKind::Fp8E4m3 | DtypeKind::Fp8E5m2 => 0.1,
        DtypeKind::Int4 | DtypeKind::Nf4 => 0.2,
        DtypeKind::Int2 => 0.6,
    }
}

/// Attention over an offloading paged cache.
pub struct OffloadWorkload {
    spec: WorkloadSpec,
    geom: CacheGeometry,
    cache: OffloadCache,
    /// Attention outputs of the newest token: `[seq][layer][q_head × head_dim]`.
    last: Vec<Vec<Vec<f32>>>,
    bytes_read_last_step: u64,
}

/// The working-pool size used when `pool_blocks` is 0: half of every block the run makes
/// (so decode steps page blocks through the tier), and at least one layer of one sequence
/// (attention needs a whole layer resident).
pub fn auto_pool_blocks(spec: &WorkloadSpec) -> usize {
    let per_layer = (spec.max_len() as usize).div_ceil(spec.block_size.max(1) as usize);
    let all = per_layer * spec.shape.layers as usize * spec.batch as usize;
    all.div_ceil(2).max(per_layer)
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
            last: vec![vec![Vec::new(); geom.layers]; geom.batch],
            spec: spec.clone(),
            geom,
            cache,
            bytes_read_last_step: 0,
        })
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

    /// The offloading cache (for scenarios that move blocks themselves).
    pub fn cache_mut(&mut self) -> &mut OffloadCache {
        &mut self.cache
    }

    /// Attention outputs of each sequence's newest token, every layer and query head.
    pub fn last_outputs(&self) -> &[Vec<Vec<f32>>] {
        &self.last
    }

    /// Append the token at `pos` of `seq` to `layer` and attend from it over the cache (the
    /// decode path: rows decoded from their stored dtype).
    fn step_layer(&mut self, layer: usize, seq: usize, pos: usize) -> Result<u64, WorkloadError> {
        let (kvh, d) = (self.geom.kv_heads, self.geom.head_dim);
        let qh = self.spec.shape.q_heads as usize;
        let (mut k, mut v, mut q) = (vec![0f32; kvh * d], vec![0f32; kvh * d], vec![0f32; qh * d]);
        self.cache.synth().kv(layer, seq, pos, &mut k, &mut v);
        self.cache.synth().q(layer, seq, pos, &mut q);
        self.cache.append(layer, seq, &k, &v)?;
        let group = qh / kvh;
        let mut out = vec![0f32; qh * d];
        let mut read = 0;
        for (h, (qs, outs)) in q
            .chunks(group * d)
            .zip(out.chunks_mut(group * d))
            .enumerate()
        {
            let view = self.cache.view(layer, seq, h)?;
            read += view.bytes_read();
            let queries: Vec<&[f32]> = qs.chunks(d).collect();
            let mut outs: Vec<&mut [f32]> = outs.chunks_mut(d).collect();
            attend(&queries, &view, &mut outs);
        }
        self.last[seq][layer] = out;
        Ok(read)
    }

    /// Process tokens `from..to` of every sequence one at a time over the cache, layer by
    /// layer (a suffix after a loaded prefix, or decode steps).
    pub fn run_tokens(&mut self, from: usize, to: usize) -> Result<(), WorkloadError> {
        for layer in 0..self.geom.layers {
            for seq in 0..self.geom.batch {
                for pos in from..to {
                    self.step_layer(layer, seq, pos)?;
                }
            }
        }
        Ok(())
    }

    /// A prefill from scratch of tokens `0..to`: per layer, K/V written to the cache and
    /// causal attention of every token over the fresh f32 K/V (as prefill kernels do).
    pub fn prefill_fresh(&mut self, to: usize) -> Result<(), WorkloadError> {
        let (kvh, d) = (self.geom.kv_heads, self.geom.head_dim);
        let qh = self.spec.shape.q_heads as usize;
        let group = qh / kvh;
        let (mut k, mut v, mut q) = (vec![0f32; kvh * d], vec![0f32; kvh * d], vec![0f32; qh * d]);
        for layer in 0..self.geom.layers {
            let window = self.geom.windows[layer];
            for seq in 0..self.geom.batch {
                // Rows per KV head, and queries per query head, token-major.
                let mut keys = vec![vec![0f32; to * d]; kvh];
                let mut values = vec![vec![0f32; to * d]; kvh];
                let mut queries = vec![vec![0f32; to * d]; qh];
                for pos in 0..to {
                    self.cache.synth().kv(layer, seq, pos, &mut k, &mut v);
                    self.cache.synth().q(layer, seq, pos, &mut q);
                    self.cache.append(layer, seq, &k, &v)?;
                    for h in 0..kvh {
                        keys[h][pos * d..(pos + 1) * d].copy_from_slice(&k[h * d..(h + 1) * d]);
                        values[h][pos * d..(pos + 1) * d].copy_from_slice(&v[h * d..(h + 1) * d]);
                    }
                    for h in 0..qh {
                        queries[h][pos * d..(pos + 1) * d].copy_from_slice(&q[h * d..(h + 1) * d]);
                    }
                }
                let mut last = vec![0f32; qh * d];
                let mut out = vec![0f32; d];
                for (h, qs) in queries.iter().enumerate() {
                    let (ks, vs) = (&keys[h / group], &values[h / group]);
                    for pos in 0..to {
                        let start = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                        let rows = start * d..(pos + 1) * d;
                        let qrow = &qs[pos * d..(pos + 1) * d];
                        attend_rows(qrow, &ks[rows.clone()], &vs[rows], &mut out);
                    }
                    // Only the newest token's output leaves the prefill (it makes the first
                    // token); the others feed later layers in a full model.
                    last[h * d..(h + 1) * d].copy_from_slice(&out);
                }
                self.last[seq][layer] = last;
            }
        }
        Ok(())
    }

    /// The f64 reference of the newest token's outputs, from the unquantized vectors.
    fn reference(&self, seq: usize, layer: usize, pos: usize) -> Vec<f64> {
        let (kvh, d) = (self.geom.kv_heads, self.geom.head_dim);
        let qh = self.spec.shape.q_heads as usize;
        let synth = self.cache.synth();
        let start = self.geom.windows[layer].map_or(0, |w| (pos + 1).saturating_sub(w));
        let (mut k, mut v) = (vec![0f32; kvh * d], vec![0f32; kvh * d]);
        let mut keys = vec![Vec::new(); kvh];
        let mut values = vec![Vec::new(); kvh];
        for p in start..=pos {
            synth.kv(layer, seq, p, &mut k, &mut v);
            for h in 0..kvh {
                keys[h].push(k[h * d..(h + 1) * d].to_vec());
                values[h].push(v[h * d..(h + 1) * d].to_vec());
            }
        }
        let mut q = vec![0f32; qh * d];
        synth.q(layer, seq, pos, &mut q);
        let group = qh / kvh;
        (0..qh)
            .flat_map(|h| attend_f64(&q[h * d..(h + 1) * d], &keys[h / group], &values[h / group]))
            .collect()
    }

    /// ‖out − ref‖/‖ref‖ of every sequence's newest-token outputs (all layers) against the
    /// f64 reference from the unquantized vectors.
    pub fn last_rel_error(&self) -> f64 {
        let (mut err, mut norm) = (0f64, 0f64);
        for seq in 0..self.geom.batch {
            for layer in 0..self.geom.layers {
                let pos = self.cache.len(layer, seq) - 1;
                for (o, r) in self.last[seq][layer]
                    .iter()
                    .zip(self.reference(seq, layer, pos))
                {
                    err += (*o as f64 - r) * (*o as f64 - r);
                    norm += r * r;
                }
            }
        }
        (err / norm).sqrt()
    }

    /// Run prefill and every decode step, collecting outputs and comparing each with the
    /// f64 reference; returns (outputs, Σ‖out−ref‖², Σ‖ref‖², Σ out·ref, Σ‖out‖²).
    fn run_all(&mut self, with_reference: bool) -> Result<(Vec<f32>, [f64; 4]), WorkloadError> {
        self.reset()?;
        let mut all = Vec::new();
        let mut sums = [0f64; 4];
        let prompt = self.spec.prompt as usize;
        for step in 0..=self.spec.gen as usize {
            if step == 0 {
                self.prefill()?;
            } else {
                self.decode_step()?;
            }
            let pos = prompt + step - 1;
            for seq in 0..self.geom.batch {
                for layer in 0..self.geom.layers {
                    let out = &self.last[seq][layer];
                    all.extend_from_slice(out);
                    if with_reference {
                        for (o, r) in out.iter().zip(self.reference(seq, layer, pos)) {
                            let o = *o as f64;
                            sums[0] += (o - r) * (o - r);
                            sums[1] += r * r;
                            sums[2] += o * r;
                            sums[3] += o * o;
                        }
                    }
                }
            }
        }
        Ok((all, sums))
    }
}

impl Workload for OffloadWorkload {
    fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    fn verify(&mut self) -> Result<Verification, WorkloadError> {
        let (offloaded, sums) = self.run_all(true)?;
        let mut resident = OffloadWorkload::new(&self.spec, false)?;
        let (twin, _) = resident.run_all(false)?;
        let rel_error = (sums[0] / sums[1]).sqrt();
        let cosine = sums[2] / (sums[1].sqrt() * sums[3].sqrt());
        let bound = error_bound(self.spec.k_dtype.kind).max(error_bound(self.spec.v_dtype.kind));
        let stats = self.tier_stats();
        let identical = offloaded.len() == twin.len()
            && offloaded
                .iter()
                .zip(&twin)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        let mut problems = Vec::new();
        if !identical {
            problems.push("outputs differ from the resident run: offloading changed data".into());
        }
        if rel_error.is_nan() || rel_error > bound {
            problems.push(format!(
                "rel_error {rel_error:.3e} above the {bound:.0e} bound"
            ));
        }
        if stats.blocks_read == 0 && self.counters().fallbacks == 0 {
            problems.push(
                "no block went through the tier: the working pool holds the whole cache; \
                 use more layers or a larger batch"
                    .into(),
            );
        }
        Ok(Verification {
            passed: problems.is_empty(),
            rel_error,
            cosine,
            bound,
            detail: problems.join("; "),
        })
    }

    fn reset(&mut self) -> Result<(), WorkloadError> {
        self.cache.reset()?;
        for seq in &mut self.last {
            seq.iter_mut().for_each(Vec::clear);
        }
        Ok(())
    }

    fn prefill(&mut self) -> Result<(), WorkloadError> {
        self.prefill_fresh(self.spec.prompt as usize)
    }

    fn decode_step(&mut self) -> Result<(), WorkloadError> {
        let pos = self.cache.len(0, 0);
        let mut read = 0;
        for seq in 0..self.geom.batch {
            for layer in 0..self.geom.layers {
                read += self.step_layer(layer, seq, pos)?;
            }
        }
        self.bytes_read_last_step = read;
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
        // QKᵀ and PV: 4·d FLOPs per (query head, visible key); token i sees min(i, window).
        let n = self.spec.prompt as f64;
        let per_pair = 4.0 * self.spec.shape.q_heads as f64 * self.geom.head_dim as f64;
        let pairs: f64 = self
            .geom
            .windows
            .iter()
            .map(|w| match w {
                Some(w) if (*w as f64) < n => {
                    let w = *w as f64;
                    w * (w + 1.0) / 2.0 + (n - w) * w
                }
                _ => n * (n + 1.0) / 2.0,
            })
            .sum();
        per_pair * pairs * self.geom.batch as f64
    }
}
