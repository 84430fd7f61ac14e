//! The attention-only workload: per layer, cache write + attention, with synthetic Q/K/V, so
//! a kernel can be compared with other engines' attention at the same shapes.
//!
//! Prefill is either real causal attention over the prompt ([`PrefillMode::Attention`]: TTFT
//! is the attention time plus the cache writes) or a fill of the cache with the prompt's K/V
//! rows ([`PrefillMode::Fill`]: TTFT is only the cache-write time), which lets long contexts
//! (32K tokens) be reached without minutes of O(S²) prefill.

use crate::accuracy::pair_bound;
use crate::cache::{self, KvCache};
use crate::cpu::decode::{decode_layer, reads_heads_together, Walk, TILE};
use crate::cpu::prefill::{prefill_attention, prefill_flops, PrefillShape};
use crate::cpu::Isa;
use crate::reference;
use crate::synth;
use crate::workload::{Interrupt, MemoryUse, Verification, Workload};
use crate::{WorkloadError, WorkloadSpec};
use kvbench_planner::span::Span;
use rayon::prelude::*;
use std::time::Instant;

const TAG_Q: u64 = 0x51;
const TAG_K: u64 = 0x4b;
const TAG_V: u64 = 0x56;
/// Queries are drawn wider than keys so softmax is far from uniform (a peaked attention
/// pattern, as in trained models, where cache errors show).
const Q_SCALE: f32 = 3.0;
/// Tokens a fill makes and appends at a time (at 32 KV heads × 128 f32, 4 MiB each of K
/// and V: within a last-level cache).
const FILL_TOKENS: usize = 256;

/// What the prefill of an attention workload does (`--prefill compute|fill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefillMode {
    /// Causal attention over the prompt, then its K/V written to the cache.
    Attention,
    /// Only write the prompt's K/V rows to the cache (no attention).
    Fill,
}

/// Attention over a cache, every layer with its own cache.
pub struct AttentionWorkload {
    spec: WorkloadSpec,
    mode: PrefillMode,
    isa: Isa,
    cache: Option<Box<dyn KvCache>>,
    /// Tokens processed per sequence.
    pos: usize,
    /// Last attention outputs: `[layer][batch × q_heads × d]`.
    last: Vec<Vec<f32>>,
    /// Position the last outputs belong to.
    last_pos: Option<usize>,
    bytes_read: u64,
    /// Tokens each sequence held at the last decode step (0: none since the reset); its
    /// FLOPs are counted from it when asked, outside the timed step.
    step_len: usize,
    /// How decode steps walk the rows (the paged walk's tile, the next-tile prefetch), as
    /// [`Workload::tune`] chose it.
    walk: Walk,
    /// A computed prefill's buffers, kept for the next one.
    prefill_buffers: PrefillBuffers,
    /// The user's request to stop, checked between the layers of a prompt and of the
    /// reference and between tuning steps.
    interrupt: Interrupt,
}

/// The queries, keys, values and outputs of a whole prompt, for a computed prefill. Kept
/// from one prefill to the next: made anew, their 80 MiB (2048 tokens × 32 heads × 128)
/// were mapped and faulted in again by every prefill, which took a causal 2048-token GQA-8
/// prefill on a Zen 3 from 322 ms in its kernel to 356 ms in all (docs/performance.md,
/// sixteenth round).
#[derive(Default)]
struct PrefillBuffers {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
}

impl AttentionWorkload {
    /// Build with an empty cache.
    pub fn new(spec: &WorkloadSpec, mode: PrefillMode) -> Result<Self, WorkloadError> {
        let cache = cache::for_spec(spec).map_err(|e| WorkloadError::Invalid(e.to_string()))?;
        Ok(AttentionWorkload {
            spec: spec.clone(),
            mode,
            isa: Isa::detect(),
            cache,
            pos: 0,
            last: vec![Vec::new(); spec.shape.layers as usize],
            last_pos: None,
            bytes_read: 0,
            step_len: 0,
            walk: Walk::CALIBRATED,
            prefill_buffers: PrefillBuffers::default(),
            interrupt: Interrupt::default(),
        })
    }

    /// Use this instruction set instead of the detected one (tests, comparisons).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }

    /// Walk in tiles of `rows` rows (0: one block where a paged cache's heads are read
    /// together, else [`TILE`]) instead of what [`Workload::tune`] would choose
    /// (measurements of one setting).
    pub fn with_walk_rows(mut self, rows: usize) -> Self {
        self.walk.rows = rows;
        self
    }

    /// Choose how decode steps walk the rows by timing this workload's own steps (up to 12
    /// each time, two settings alternating, the first step of each untimed) after the prompt
    /// is filled in, where a step reads past the last-level cache: the tile (with the
    /// calibration's prefetch), then, from the prompt again, the next-tile prefetch (with
    /// that tile). `None` in cache or with fewer than 4 decode steps to time. The cache is
    /// left reset.
    fn tune_steps(&mut self) -> Result<Option<String>, WorkloadError> {
        let steps = (self.spec.gen as usize).min(12);
        if steps < 4 || self.cache.is_none() {
            return Ok(None);
        }
        let prompt = self.spec.prompt as usize;
        self.reset()?;
        self.run_prefill(prompt, PrefillMode::Fill)?;
        let cache = self.cache.as_deref().expect("checked above");
        let together = reads_heads_together(cache);
        if !crate::cpu::reads_past_the_cache(cache.resident_bytes()) {
            self.reset()?;
            return Ok(None);
        }
        let walk = self.tune_walk(steps, together)?;
        self.reset()?;
        self.run_prefill(prompt, PrefillMode::Fill)?;
        let prefetch = self.tune_prefetch(steps)?;
        self.reset()?;
        Ok(Some(format!("{walk}; {prefetch}")))
    }

    /// The fastest decode step of each setting, `steps` steps alternating between them (the
    /// first of each untimed: pages and clocks settle), each applied by `set` before its
    /// step.
    fn time_alternating(
        &mut self,
        steps: usize,
        set: impl Fn(&mut Walk, usize),
    ) -> Result<[f64; 2], WorkloadError> {
        let mut best = [f64::INFINITY; 2];
        for i in 0..steps {
            self.interrupt.check()?;
            set(&mut self.walk, i % 2);
            let t = Instant::now();
            self.step()?;
            if i >= 2 {
                best[i % 2] = best[i % 2].min(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(best)
    }

    /// Whether tiles ask ahead for the next tile's rows, on this workload: with and without
    /// timed in turn over `steps` steps; the faster when at least 3 % faster, else the
    /// calibration's choice for the layout (which a GQA-8 probe makes: on a Zen 3 it said
    /// on, which cost contiguous MHA steps 7-17 %; docs/performance.md, fifteenth round).
    fn tune_prefetch(&mut self, steps: usize) -> Result<String, WorkloadError> {
        let [with, without] = self.time_alternating(steps, |w, i| w.prefetch = Some(i == 0))?;
        self.walk.prefetch = if without < 0.97 * with {
            Some(false)
        } else if with < 0.97 * without {
            Some(true)
        } else {
            None
        };
        let chose = match self.walk.prefetch {
            Some(true) => "on",
            Some(false) => "off",
            None => "as calibrated (neither 3 % faster)",
        };
        Ok(format!(
            "next-tile prefetch {chose} (fastest step with it {with:.2} ms, without \
             {without:.2} ms)"
        ))
    }

    /// The tile, chosen by timing `steps` of this workload's own decode steps with two tile
    /// sizes, alternating: where a paged cache's heads are read together (`together`), one
    /// block against [`TILE`] rows; elsewhere [`TILE`] rows against 16. The second only when
    /// at least 3 % faster. Expects the prompt filled in.
    fn tune_walk(&mut self, steps: usize, together: bool) -> Result<String, WorkloadError> {
        let (choices, names) = match together {
            true => ([0, TILE], ["one block".to_string(), format!("{TILE} rows")]),
            false => ([0, 16], [format!("{TILE} rows"), "16 rows".to_string()]),
        };
        let best = self.time_alternating(steps, |w, i| w.rows = choices[i])?;
        let second_wins = best[1] < 0.97 * best[0];
        self.walk.rows = choices[second_wins as usize];
        Ok(format!(
            "{} in tiles of {} (fastest step with {} {:.2} ms, with {} {:.2} ms)",
            match together {
                true => "paged walk",
                false => "walk",
            },
            names[second_wins as usize],
            names[0],
            best[0],
            names[1],
            best[1]
        ))
    }

    fn dims(&self) -> (usize, usize, usize, usize) {
        let s = &self.spec.shape;
        (
            s.q_heads as usize,
            s.kv_heads as usize,
            s.head_dim as usize,
            self.spec.batch as usize,
        )
    }

    /// FLOPs of one query token's attention over every layer when the sequences hold `len`
    /// tokens: scores and values, 2 · head_dim each per query head and key attended.
    fn attention_flops(&self, len: usize) -> f64 {
        let (hq, _, d, b) = self.dims();
        (0..self.spec.shape.layers as usize)
            .map(|l| {
                let span = self.window(l).map_or(Span::All, |w| Span::Window(w as u64));
                4.0 * (b * hq * d) as f64 * span.held(len as u64) as f64
            })
            .sum()
    }

    fn window(&self, layer: usize) -> Option<usize> {
        cache::CacheGeometry::new(
            &self.spec.shape,
            self.spec.window,
            self.spec.k_dtype,
            self.spec.v_dtype,
            1,
            1,
            1,
            0,
        )
        .map(|g| g.windows[layer])
        .unwrap_or(None)
    }

    /// The sequence whose inputs `seq` uses at `pos` (the shared prefix is sequence 0's).
    fn source(&self, seq: usize, pos: usize) -> u64 {
        if pos < self.spec.shared_prefix as usize {
            0
        } else {
            seq as u64
        }
    }

    /// Rows of `tag` for positions `p0..p1` of (layer, seq): `(p1 − p0) × heads × d`.
    fn rows(
        &self,
        tag: u64,
        layer: usize,
        seq: usize,
        p0: usize,
        p1: usize,
        heads: usize,
    ) -> Vec<f32> {
        let d = self.spec.shape.head_dim as usize;
        let mut out = vec![0.0f32; (p1 - p0) * heads * d];
        self.rows_into(tag, layer, seq, p0, heads, &mut out);
        out
    }

    /// [`Self::rows`] into `out`, from position `p0` on: `out.len() / (heads × d)` rows.
    fn rows_into(
        &self,
        tag: u64,
        layer: usize,
        seq: usize,
        p0: usize,
        heads: usize,
        out: &mut [f32],
    ) {
        let d = self.spec.shape.head_dim as usize;
        let scale = if tag == TAG_Q { Q_SCALE } else { 1.0 };
        out.par_chunks_mut(heads * d)
            .enumerate()
            .for_each(|(i, row)| {
                let p = p0 + i;
                let s = synth::stream(
                    self.spec.seed,
                    tag,
                    layer as u64,
                    self.source(seq, p),
                    p as u64,
                );
                synth::fill(s, scale, row);
            });
    }

    /// Causal attention of positions `0..t` of (layer, seq); returns the last position's output.
    fn full_attention(&mut self, layer: usize, seq: usize, t: usize) -> Vec<f32> {
        let (hq, hk, d, _) = self.dims();
        let mut b = std::mem::take(&mut self.prefill_buffers);
        b.q.resize(t * hq * d, 0.0);
        b.k.resize(t * hk * d, 0.0);
        b.v.resize(t * hk * d, 0.0);
        b.out.resize(t * hq * d, 0.0);
        self.rows_into(TAG_Q, layer, seq, 0, hq, &mut b.q);
        self.rows_into(TAG_K, layer, seq, 0, hk, &mut b.k);
        self.rows_into(TAG_V, layer, seq, 0, hk, &mut b.v);
        let shape = PrefillShape {
            q_heads: hq,
            kv_heads: hk,
            head_dim: d,
            window: self.window(layer),
        };
        prefill_attention(&shape, t, &b.q, &b.k, &b.v, &mut b.out);
        let last = b.out[(t - 1) * hq * d..].to_vec();
        self.prefill_buffers = b;
        last
    }

    fn fill(&mut self, p0: usize, p1: usize) -> Result<(), WorkloadError> {
        let (_, hk, d, b) = self.dims();
        // A few hundred tokens at a time: the rows stay in the cache between being made and
        // being encoded, and the buffers are made once.
        let run = FILL_TOKENS.min(p1.saturating_sub(p0)).max(1);
        let (mut k, mut v) = (vec![0.0f32; run * hk * d], vec![0.0f32; run * hk * d]);
        for layer in 0..self.spec.shape.layers as usize {
            self.interrupt.check()?;
            for seq in 0..b {
                for from in (p0..p1).step_by(run) {
                    let n = run.min(p1 - from);
                    let (kr, vr) = (&mut k[..n * hk * d], &mut v[..n * hk * d]);
                    self.rows_into(TAG_K, layer, seq, from, hk, kr);
                    self.rows_into(TAG_V, layer, seq, from, hk, vr);
                    let cache = self.cache.as_mut().expect("fill needs a cache");
                    cache
                        .append_tokens(layer, seq, n, kr, vr)
                        .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// Run the prompt, with `prompt_len` tokens, in this workload's mode.
    fn run_prefill(&mut self, prompt_len: usize, mode: PrefillMode) -> Result<(), WorkloadError> {
        let (_, _, _, b) = self.dims();
        if self.cache.is_some() {
            self.fill(0, prompt_len)?;
        }
        if mode == PrefillMode::Attention || self.cache.is_none() {
            let layers = self.spec.shape.layers as usize;
            for layer in 0..layers {
                self.interrupt.check()?;
                let outs: Vec<Vec<f32>> = (0..b)
                    .map(|seq| self.full_attention(layer, seq, prompt_len))
                    .collect();
                self.last[layer] = outs.concat();
            }
            self.last_pos = Some(prompt_len - 1);
        }
        self.pos = prompt_len;
        Ok(())
    }

    fn step(&mut self) -> Result<(), WorkloadError> {
        let (hq, hk, d, b) = self.dims();
        let pos = self.pos;
        if pos >= self.spec.max_len() as usize {
            return Err(WorkloadError::Invalid(format!(
                "decode step {} past prompt + gen = {}; call reset() first",
                pos + 1,
                self.spec.max_len()
            )));
        }
        let layers = self.spec.shape.layers as usize;
        let mut bytes = 0;
        if self.cache.is_none() {
            // No cache: recompute K/V of every token so far and attend again (use_cache=False).
            for layer in 0..layers {
                let outs: Vec<Vec<f32>> = (0..b)
                    .map(|seq| self.full_attention(layer, seq, pos + 1))
                    .collect();
                self.last[layer] = outs.concat();
                bytes += (b * (pos + 1) * hk * d * 2 * 4) as u64;
            }
        } else {
            self.fill(pos, pos + 1)?;
            let inv = 1.0 / (d as f32).sqrt();
            for layer in 0..layers {
                let mut q = Vec::with_capacity(b * hq * d);
                for seq in 0..b {
                    q.extend(
                        self.rows(TAG_Q, layer, seq, pos, pos + 1, hq)
                            .iter()
                            .map(|x| x * inv),
                    );
                }
                let mut out = vec![0.0f32; b * hq * d];
                let cache = self.cache.as_deref_mut().expect("checked above");
                let walk = self.walk;
                bytes += decode_layer(cache, layer, b, hk, hq / hk, &q, &mut out, walk, self.isa)
                    .map_err(|e| WorkloadError::Invalid(e.to_string()))?;
                self.last[layer] = out;
            }
        }
        self.bytes_read = bytes;
        self.step_len = pos + 1;
        self.last_pos = Some(pos);
        self.pos += 1;
        Ok(())
    }

    /// f64 attention output of (layer, seq) at `pos` for the query heads of KV head `kh`
    /// (`group × d` values), from the definition: the inputs regenerated from their seeds one
    /// row at a time, never the cache, so memory stays O(group × d).
    fn reference_group(&self, layer: usize, seq: usize, kh: usize, pos: usize) -> Vec<f64> {
        let (hq, hk, d, _) = self.dims();
        let g = hq / hk;
        let lo = self
            .window(layer)
            .map_or(0, |w| (pos + 1).saturating_sub(w));
        let q = self.rows(TAG_Q, layer, seq, pos, pos + 1, hq);
        let queries: Vec<Vec<f64>> = q[kh * g * d..(kh + 1) * g * d]
            .chunks(d)
            .map(|r| r.iter().map(|&x| x as f64).collect())
            .collect();
        let mut row = vec![0f32; d];
        let mut head = |tag: u64, p: usize, out: &mut [f64]| {
            let s = synth::stream(
                self.spec.seed,
                tag,
                layer as u64,
                self.source(seq, p),
                p as u64,
            );
            // The same f32 values `rows` makes for this head, then widened exactly.
            synth::fill_range(s, (kh * d) as u64, 1.0, &mut row);
            for (o, &x) in out.iter_mut().zip(&row) {
                *o = x as f64;
            }
        };
        reference::attend_streaming(&queries, lo..pos + 1, |p, k, v| {
            head(TAG_K, p, k);
            head(TAG_V, p, v);
        })
        .concat()
    }

    /// The f64 reference of every layer, sequence and head at `pos`, in the order of
    /// `self.last` (`[layer][seq][head][d]`), computed in parallel, one task per (layer,
    /// sequence, KV head).
    fn reference_all(&self, pos: usize) -> Result<Vec<f64>, WorkloadError> {
        let (_, hk, _, b) = self.dims();
        let layers = self.spec.shape.layers as usize;
        let groups = (0..layers * b * hk)
            .into_par_iter()
            .map(|t| {
                self.interrupt.check()?;
                Ok(self.reference_group(t / (b * hk), t / hk % b, t % hk, pos))
            })
            .collect::<Result<Vec<_>, WorkloadError>>()?;
        Ok(groups.concat())
    }
}

impl Workload for AttentionWorkload {
    fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    fn watch(&mut self, interrupt: Interrupt) {
        self.interrupt = interrupt;
    }

    fn verify(&mut self) -> Result<Verification, WorkloadError> {
        self.reset()?;
        let prompt = self.spec.prompt as usize;
        let gen = self.spec.gen as usize;
        if self.cache.is_some() && (self.mode == PrefillMode::Fill || gen > 0) {
            // What is checked is the last position's output of every layer, over the cache
            // at its longest. A decode step appends its K/V through the same `append` as a
            // fill, so fill every earlier position and decode the last one: the same check
            // at the cost of one decode step instead of `gen`.
            self.run_prefill(prompt + gen - 1, PrefillMode::Fill)?;
            self.step()?;
        } else {
            // Without a cache (or a computed prefill with no decode steps) the output is the
            // prefill's or every step's recomputation: run it as it is timed.
            self.run_prefill(prompt, self.mode)?;
            for _ in 0..gen {
                self.interrupt.check()?;
                self.step()?;
            }
        }
        let pos = self.last_pos.expect("at least one output");
        let (hq, _, d, b) = self.dims();
        // Every layer's output is checked, not a sample.
        let mut got = Vec::new();
        for layer in 0..self.spec.shape.layers as usize {
            got.extend(self.last[layer][..b * hq * d].iter().map(|&x| x as f64));
        }
        let want = self.reference_all(pos)?;
        self.reset()?;
        let rel_error = reference::rel_error(&got, &want);
        let cosine = reference::cosine(&got, &want);
        let bound = pair_bound(&self.spec.k_dtype, &self.spec.v_dtype);
        Ok(verdict(rel_error, cosine, bound))
    }

    fn reset(&mut self) -> Result<(), WorkloadError> {
        if let Some(c) = self.cache.as_mut() {
            c.reset();
        }
        self.pos = 0;
        self.last_pos = None;
        self.bytes_read = 0;
        self.step_len = 0;
        Ok(())
    }

    fn prefill(&mut self) -> Result<(), WorkloadError> {
        if self.pos != 0 {
            return Err(WorkloadError::Invalid(
                "prefill after decoding; call reset() first".into(),
            ));
        }
        self.run_prefill(self.spec.prompt as usize, self.mode)
    }

    fn decode_step(&mut self) -> Result<(), WorkloadError> {
        self.step()
    }

    fn tune(&mut self) -> Result<Option<String>, WorkloadError> {
        self.tune_steps()
    }

    fn memory(&self) -> MemoryUse {
        self.cache
            .as_ref()
            .map_or(MemoryUse::default(), |c| c.memory())
    }

    fn kv_bytes_read_last_step(&self) -> u64 {
        self.bytes_read
    }

    fn prefill_fills(&self) -> bool {
        self.mode == PrefillMode::Fill && self.cache.is_some()
    }

    fn decode_flops_last_step(&self) -> f64 {
        match self.step_len {
            0 => 0.0,
            len => self.attention_flops(len),
        }
    }

    fn prefill_flops(&self) -> f64 {
        if self.prefill_fills() {
            return 0.0;
        }
        let (hq, hk, d, b) = self.dims();
        (0..self.spec.shape.layers as usize)
            .map(|l| {
                let s = PrefillShape {
                    q_heads: hq,
                    kv_heads: hk,
                    head_dim: d,
                    window: self.window(l),
                };
                b as f64 * prefill_flops(&s, self.spec.prompt as usize)
            })
            .sum()
    }
}

/// A verification result against `bound` (and the cosine floor that goes with it).
pub(crate) fn verdict(rel_error: f64, cosine: f64, bound: f64) -> Verification {
    let floor = crate::accuracy::cosine_floor(bound);
    let passed = rel_error <= bound && cosine >= floor && rel_error.is_finite();
    let detail = if passed {
        String::new()
    } else {
        format!(
            "rel_error {rel_error:.3e} (bound {bound:.1e}), cosine {cosine:.6} (floor {floor:.6})"
        )
    };
    Verification {
        passed,
        rel_error,
        cosine,
        bound,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, OffloadConfig, Strategy, WorkloadKind};
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};

    fn tuning_spec(strategy: Strategy, gen: u32) -> WorkloadSpec {
        WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cpu,
            shape: ModelShape::uniform("t", 2, 8, 4, 64, 512, 0),
            strategy,
            k_dtype: CacheDtype::new(DtypeKind::Int8),
            v_dtype: CacheDtype::new(DtypeKind::Int8),
            batch: 1,
            prompt: 700,
            gen,
            block_size: 16,
            shared_prefix: 0,
            window: None,
            mlp: false,
            seed: 3,
            offload: OffloadConfig::default(),
        }
    }

    #[test]
    fn an_interrupt_stops_the_prompt_tuning_and_verification_and_clearing_it_does_not() {
        static FLAG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        use std::sync::atomic::Ordering;
        let mut w =
            AttentionWorkload::new(&tuning_spec(Strategy::Paged, 6), PrefillMode::Fill).unwrap();
        w.watch(Interrupt::new(&FLAG));
        FLAG.store(true, Ordering::SeqCst);
        let interrupted =
            |r: Result<(), WorkloadError>| matches!(r, Err(WorkloadError::Interrupted));
        assert!(interrupted(w.verify().map(|_| ())));
        assert!(interrupted(w.tune().map(|_| ())));
        w.reset().unwrap();
        assert!(interrupted(w.prefill()));
        // Unset, the same workload runs every phase to its end.
        FLAG.store(false, Ordering::SeqCst);
        w.reset().unwrap();
        assert!(w.verify().unwrap().passed);
        w.prefill().unwrap();
        w.decode_step().unwrap();
    }

    #[test]
    fn a_paged_workload_tunes_its_walk_and_still_verifies() {
        // The kernels assume no cache size in tests, so a paged cache's heads are read
        // together: the two tiles are timed and the faster kept, only by 3 % or more.
        let mut w =
            AttentionWorkload::new(&tuning_spec(Strategy::Paged, 6), PrefillMode::Fill).unwrap();
        let said = w.tune().unwrap().expect("a choice to make");
        // The walk first, then the prefetch.
        let ms = figures(said.split("; ").next().unwrap());
        assert_eq!(ms.len(), 2, "{said}");
        assert!(ms.iter().all(|&t| t > 0.0), "{said}");
        let want = if ms[1] < 0.97 * ms[0] { TILE } else { 0 };
        assert_eq!(w.walk.rows, want, "{said}");
        assert!(said.starts_with(match want {
            0 => "paged walk in tiles of one block",
            _ => "paged walk in tiles of 64 rows",
        }));
        // Left reset, and what it will time is what it verifies.
        assert_eq!((w.pos, w.last_pos), (0, None));
        assert!(w.verify().unwrap().passed);
        for rows in [0, TILE] {
            let mut fixed =
                AttentionWorkload::new(&tuning_spec(Strategy::Paged, 6), PrefillMode::Fill)
                    .unwrap()
                    .with_walk_rows(rows);
            assert!(fixed.verify().unwrap().passed, "rows {rows}");
        }
    }

    /// The figures in a tuning note, in order.
    fn figures(said: &str) -> Vec<f64> {
        said.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|x| x.contains('.'))
            .map(|x| x.parse().unwrap())
            .collect()
    }

    #[test]
    fn a_workload_past_the_cache_tunes_its_prefetch_and_still_verifies() {
        // The kernels assume no cache size in tests, so every step reads past it: the tile
        // is chosen first (a contiguous cache's between 64 and 16 rows), then the prefetch.
        for strategy in [Strategy::Contiguous, Strategy::Paged] {
            let mut w =
                AttentionWorkload::new(&tuning_spec(strategy, 6), PrefillMode::Fill).unwrap();
            let said = w.tune().unwrap().expect("a choice to make");
            let parts: Vec<&str> = said.split("; ").collect();
            assert_eq!(parts.len(), 2, "{said}");
            if strategy == Strategy::Contiguous {
                let ms = figures(parts[0]);
                let want = if ms[1] < 0.97 * ms[0] { 16 } else { 0 };
                assert_eq!(w.walk.rows, want, "{said}");
                assert!(parts[0].starts_with(match want {
                    0 => "walk in tiles of 64 rows",
                    _ => "walk in tiles of 16 rows",
                }));
            }
            let prefetch = parts[1];
            let ms = figures(prefetch);
            assert_eq!(ms.len(), 2, "{said}");
            let want = if ms[1] < 0.97 * ms[0] {
                Some(false)
            } else if ms[0] < 0.97 * ms[1] {
                Some(true)
            } else {
                None
            };
            assert_eq!(w.walk.prefetch, want, "{said}");
            assert!(prefetch.starts_with("next-tile prefetch"), "{said}");
            assert_eq!((w.pos, w.last_pos), (0, None));
            assert!(w.verify().unwrap().passed, "{said}");
        }
    }

    #[test]
    fn there_is_nothing_to_tune_without_steps_to_time() {
        for strategy in [Strategy::Contiguous, Strategy::Paged] {
            let mut w =
                AttentionWorkload::new(&tuning_spec(strategy, 3), PrefillMode::Fill).unwrap();
            assert_eq!(w.tune().unwrap(), None, "{strategy:?}");
            assert_eq!(w.walk, Walk::CALIBRATED);
        }
    }

    /// 2 layers, 4 query heads on 2 KV heads of 8, batch 2, a 20-token prompt and 3 steps.
    fn small_spec(window: Option<u32>) -> WorkloadSpec {
        WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cpu,
            shape: ModelShape::uniform("t", 2, 4, 2, 8, 32, 64),
            strategy: Strategy::Contiguous,
            k_dtype: CacheDtype::new(DtypeKind::F32),
            v_dtype: CacheDtype::new(DtypeKind::F32),
            batch: 2,
            prompt: 20,
            gen: 3,
            block_size: 16,
            shared_prefix: 4,
            window,
            mlp: false,
            seed: 5,
            offload: OffloadConfig::default(),
        }
    }

    #[test]
    fn a_decode_step_counts_the_flops_of_the_keys_it_attended() {
        // By hand: 2 layers × 2 sequences × 4 query heads × 4 · 8 FLOPs = 512 a key.
        for (window, keys) in [(None, [21.0, 22.0]), (Some(9), [9.0, 9.0])] {
            let mut w = AttentionWorkload::new(&small_spec(window), PrefillMode::Fill).unwrap();
            w.prefill().unwrap();
            assert_eq!(w.decode_flops_last_step(), 0.0, "no step yet");
            for k in keys {
                w.decode_step().unwrap();
                assert_eq!(w.decode_flops_last_step(), 512.0 * k, "{window:?}");
            }
            w.reset().unwrap();
            assert_eq!(w.decode_flops_last_step(), 0.0);
        }
    }

    #[test]
    fn streamed_reference_equals_the_definition_over_the_rows() {
        let spec = small_spec(Some(9));
        let w = AttentionWorkload::new(&spec, PrefillMode::Fill).unwrap();
        let (hq, hk, d, pos) = (4, 2, 8, 22);
        let lo = pos + 1 - 9;
        let to64 = |x: Vec<f32>| -> Vec<Vec<f64>> {
            x.chunks(d)
                .map(|r| r.iter().map(|&v| v as f64).collect())
                .collect()
        };
        // The two-pass definition over whole regenerated rows, head by head.
        let mut want = Vec::new();
        for layer in 0..2 {
            for seq in 0..2 {
                let q = to64(w.rows(TAG_Q, layer, seq, pos, pos + 1, hq));
                let k = to64(w.rows(TAG_K, layer, seq, lo, pos + 1, hk));
                let v = to64(w.rows(TAG_V, layer, seq, lo, pos + 1, hk));
                for (h, qh) in q.iter().enumerate() {
                    let kh = h / (hq / hk);
                    let keys: Vec<_> = k.iter().skip(kh).step_by(hk).cloned().collect();
                    let vals: Vec<_> = v.iter().skip(kh).step_by(hk).cloned().collect();
                    want.extend(reference::attend(qh, &keys, &vals));
                }
            }
        }
        let got = w.reference_all(pos).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(reference::rel_error(&got, &want) < 1e-13);
    }
}
