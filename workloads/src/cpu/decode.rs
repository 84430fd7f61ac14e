//! Decode attention: the query heads of one KV group against every stored row of that head,
//! in tiles with an online softmax, split across threads flash-decoding style (each part
//! keeps its own max, sum and output; parts merge exactly).

use super::Isa;
use crate::cache::{CacheError, HeadView, KvCache, Segment};
use rayon::prelude::*;

/// Rows per tile: the score block (heads × TILE) stays in L1.
const TILE: usize = 64;

/// Online-softmax state of one part of the rows.
#[derive(Debug, Clone)]
pub struct Partial {
    /// Running max of each head's scores.
    pub max: Vec<f32>,
    /// Σ exp(score − max) of each head.
    pub sum: Vec<f32>,
    /// Σ exp(score − max) · v of each head (`heads × head_dim`).
    pub acc: Vec<f32>,
}

impl Partial {
    fn new(heads: usize, d: usize) -> Self {
        Partial {
            max: vec![f32::NEG_INFINITY; heads],
            sum: vec![0.0; heads],
            acc: vec![0.0; heads * d],
        }
    }

    /// Fold `other` into `self` exactly: rescale both to the larger max.
    pub fn merge(&mut self, other: &Partial) {
        let d = self.acc.len() / self.max.len();
        for h in 0..self.max.len() {
            let m = self.max[h].max(other.max[h]);
            if m == f32::NEG_INFINITY {
                continue;
            }
            let (a, b) = ((self.max[h] - m).exp(), (other.max[h] - m).exp());
            self.sum[h] = self.sum[h] * a + other.sum[h] * b;
            for (x, y) in self.acc[h * d..(h + 1) * d]
                .iter_mut()
                .zip(&other.acc[h * d..(h + 1) * d])
            {
                *x = *x * a + y * b;
            }
            self.max[h] = m;
        }
    }

    /// The attention output (`heads × head_dim`).
    pub fn finish(&self, out: &mut [f32]) {
        let d = self.acc.len() / self.max.len();
        for h in 0..self.max.len() {
            let inv = if self.sum[h] > 0.0 {
                1.0 / self.sum[h]
            } else {
                0.0
            };
            for (o, a) in out[h * d..(h + 1) * d]
                .iter_mut()
                .zip(&self.acc[h * d..(h + 1) * d])
            {
                *o = a * inv;
            }
        }
    }
}

/// Prefetch the next `n` rows from row `r` of segment `i` on, crossing into the following
/// segments (paged blocks are shorter than a tile).
#[inline]
fn prefetch_rows(segs: &[Segment], mut i: usize, mut r: usize, mut n: usize) {
    while n > 0 {
        let Some(seg) = segs.get(i) else { return };
        let c = seg.codec;
        let row_bytes = c.unit_bytes / c.unit_tokens;
        let take = n.min((seg.row0 + seg.rows).saturating_sub(r));
        let lo = (r * row_bytes).min(seg.bytes.len());
        let hi = ((r + take) * row_bytes).min(seg.bytes.len());
        #[cfg(target_arch = "x86_64")]
        for off in (lo..hi).step_by(64) {
            // SAFETY: a prefetch of an address inside the slice reads nothing and cannot fault.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(seg.bytes.as_ptr().add(off) as *const i8);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (lo, hi);
        if take == 0 && r < seg.row0 + seg.rows {
            return;
        }
        n -= take;
        i += 1;
        r = segs.get(i).map_or(0, |s| s.row0);
    }
}

/// Where row `r` of a segment list lies: (segment index, row inside it).
fn locate(segs: &[Segment], mut r: usize) -> (usize, usize) {
    for (i, s) in segs.iter().enumerate() {
        if r < s.rows {
            return (i, s.row0 + r);
        }
        r -= s.rows;
    }
    (segs.len(), 0)
}

/// Attend `q` (`heads × d`, already scaled by 1/√d) to rows `begin..end` of `view`.
pub fn attend_rows(
    view: &HeadView,
    q: &[f32],
    heads: usize,
    begin: usize,
    end: usize,
    isa: Isa,
) -> Partial {
    let d = q.len() / heads;
    if let (Some(k), Some(v)) = (view.k.first(), view.v.first()) {
        if isa.wide(heads, k.codec, v.codec)
            && view.k.iter().all(|s| s.codec == k.codec)
            && view.v.iter().all(|s| s.codec == v.codec)
        {
            return attend_rows_wide(view, q, heads, begin, end, isa);
        }
    }
    let mut part = Partial::new(heads, d);
    let mut s = vec![0.0f32; heads * TILE];
    let (mut ki, mut kr) = locate(&view.k, begin);
    let (mut vi, mut vr) = locate(&view.v, begin);
    // A tile gathers up to TILE rows from consecutive segments (paged blocks are short),
    // so the softmax bookkeeping is paid per TILE rows whatever the block size.
    let mut pieces: Vec<(usize, usize, usize, usize, usize, usize)> = Vec::with_capacity(TILE);
    let mut vpieces = Vec::with_capacity(TILE);
    let prefetch = super::tile_prefetch(view.k.len());
    let mut r = begin;
    while r < end {
        pieces.clear();
        let mut filled = 0;
        while filled < TILE && r < end {
            let (ks, vs) = (&view.k[ki], &view.v[vi]);
            let n = (end - r)
                .min(TILE - filled)
                .min(ks.row0 + ks.rows - kr)
                .min(vs.row0 + vs.rows - vr);
            pieces.push((ki, kr, vi, vr, n, filled));
            filled += n;
            r += n;
            kr += n;
            vr += n;
            if kr == ks.row0 + ks.rows {
                ki += 1;
                kr = view.k.get(ki).map_or(0, |s| s.row0);
            }
            if vr == vs.row0 + vs.rows {
                vi += 1;
                vr = view.v.get(vi).map_or(0, |s| s.row0);
            }
        }
        // Ask for the next tile's rows now, so their memory latency overlaps this tile's work.
        if prefetch {
            prefetch_rows(&view.k, ki, kr, TILE);
            prefetch_rows(&view.v, vi, vr, TILE);
        }
        for &(pk, pkr, _, _, n, off) in &pieces {
            isa.scores(&view.k[pk], pkr, n, q, heads, &mut s[off..], TILE);
        }
        let n = filled;
        for h in 0..heads {
            let sh = &mut s[h * TILE..h * TILE + n];
            let correction = isa.softmax_row(sh, &mut part.max[h], &mut part.sum[h]);
            if correction != 1.0 {
                part.acc[h * d..(h + 1) * d]
                    .iter_mut()
                    .for_each(|a| *a *= correction);
            }
        }
        vpieces.clear();
        vpieces.extend(
            pieces
                .iter()
                .map(|&(_, _, pv, pvr, n, _)| (&view.v[pv], pvr, n)),
        );
        isa.accumulate_pieces(&vpieces, &s, heads, TILE, &mut part.acc);
    }
    part
}

/// The rows `begin..end` of `segs` as tile pieces (segment index, first row, rows), at most
/// `TILE` rows from `*at` on; advances `*at`.
fn tile_pieces<'a>(
    segs: &'a [Segment<'a>],
    at: &mut (usize, usize),
    rows: usize,
    out: &mut Vec<(&'a Segment<'a>, usize, usize)>,
) {
    out.clear();
    let mut left = rows;
    while left > 0 {
        let s = &segs[at.0];
        let n = left.min(s.row0 + s.rows - at.1);
        out.push((s, at.1, n));
        left -= n;
        at.1 += n;
        if at.1 == s.row0 + s.rows {
            at.0 += 1;
            at.1 = segs.get(at.0).map_or(0, |s| s.row0);
        }
    }
}

/// [`attend_rows`] for many heads per KV head (large GQA groups, MQA): each tile of K and V
/// is decoded once into f32 scratch, and scores and values are small GEMMs vectorized over
/// the heads (queries held transposed, heads padded to a multiple of 16).
fn attend_rows_wide(
    view: &HeadView,
    q: &[f32],
    heads: usize,
    begin: usize,
    end: usize,
    isa: Isa,
) -> Partial {
    let d = q.len() / heads;
    let hp = heads.next_multiple_of(16);
    let mut qt = vec![0.0f32; d * hp];
    for h in 0..heads {
        for c in 0..d {
            qt[c * hp + h] = q[h * d + c];
        }
    }
    let mut part = Partial::new(heads, d);
    let (mut max, mut sum, mut corr) = (
        vec![f32::NEG_INFINITY; hp],
        vec![0.0f32; hp],
        vec![0.0f32; hp],
    );
    let (mut kt, mut vt) = (vec![0.0f32; TILE * d], vec![0.0f32; TILE * d]);
    let mut st = vec![0.0f32; TILE * hp];
    let (mut ka, mut va) = (locate(&view.k, begin), locate(&view.v, begin));
    let (mut kp, mut vp) = (Vec::with_capacity(TILE), Vec::with_capacity(TILE));
    let prefetch = super::tile_prefetch(view.k.len());
    let mut r = begin;
    while r < end {
        let n = (end - r).min(TILE);
        tile_pieces(&view.k, &mut ka, n, &mut kp);
        tile_pieces(&view.v, &mut va, n, &mut vp);
        if prefetch {
            prefetch_rows(&view.k, ka.0, ka.1, TILE);
            prefetch_rows(&view.v, va.0, va.1, TILE);
        }
        isa.decode_tile(&kp, &mut kt);
        isa.scores_wide(&kt, n, d, &qt, hp, &mut st);
        isa.softmax_wide(&mut st, n, hp, &mut max, &mut sum, &mut corr);
        isa.decode_tile(&vp, &mut vt);
        isa.accumulate_wide(&vt, n, d, &st, hp, heads, &corr, &mut part.acc);
        r += n;
    }
    part.max.copy_from_slice(&max[..heads]);
    part.sum.copy_from_slice(&sum[..heads]);
    part
}

/// One decode-attention job: a KV head's view and the query heads of its group.
pub struct DecodeJob<'a> {
    pub view: HeadView<'a>,
    /// `heads × d`, scaled by 1/√d.
    pub q: &'a [f32],
    /// `heads × d` output.
    pub out: &'a mut [f32],
}

/// Run every job on the current rayon pool, splitting long views into parts so that all
/// threads have work (flash-decoding), then merging each job's parts exactly.
pub fn decode_attention(jobs: &mut [DecodeJob], heads: usize, isa: Isa) {
    let threads = rayon::current_num_threads();
    let total: usize = jobs.iter().map(|j| j.view.rows()).sum();
    // Aim for ~4 parts per thread overall, none shorter than 256 rows.
    let target = (total / (4 * threads)).max(256);
    let parts: Vec<(usize, usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(i, j)| {
            let rows = j.view.rows();
            let n = rows.div_ceil(target).max(1);
            (0..n).map(move |p| (i, rows * p / n, rows * (p + 1) / n))
        })
        .collect();
    let partials: Vec<Partial> = parts
        .par_iter()
        .map(|&(i, b, e)| attend_rows(&jobs[i].view, jobs[i].q, heads, b, e, isa))
        .collect();
    let mut it = parts.iter().zip(partials);
    let mut current: Option<(usize, Partial)> = None;
    loop {
        let next = it.next();
        match (&mut current, next) {
            (Some((i, acc)), Some(((j, _, _), p))) if *i == *j => acc.merge(&p),
            (cur, next) => {
                if let Some((i, acc)) = cur.take() {
                    acc.finish(jobs[i].out);
                }
                match next {
                    Some(((j, _, _), p)) => current = Some((*j, p)),
                    None => break,
                }
            }
        }
    }
}

/// Decode attention of one layer for every sequence, over any cache layout: each
/// sequence's rows made resident ([`KvCache::prepare`]), then every (sequence, KV head)
/// attended in parallel. `q` and `out` are `batch × kv_heads × group × d` (q already scaled
/// by 1/√d). Returns the KV bytes read.
#[allow(clippy::too_many_arguments)]
pub fn decode_layer(
    cache: &mut dyn KvCache,
    layer: usize,
    batch: usize,
    kv_heads: usize,
    group: usize,
    q: &[f32],
    out: &mut [f32],
    isa: Isa,
) -> Result<u64, CacheError> {
    for seq in 0..batch {
        cache.prepare(layer, seq)?;
    }
    let cache = &*cache;
    let per_job = q.len() / (batch * kv_heads);
    let mut jobs: Vec<DecodeJob> = out
        .chunks_mut(per_job)
        .zip(q.chunks(per_job))
        .enumerate()
        .map(|(i, (o, qg))| DecodeJob {
            view: cache.view(layer, i / kv_heads, i % kv_heads),
            q: qg,
            out: o,
        })
        .collect();
    let bytes = jobs.iter().map(|j| j.view.bytes_read()).sum();
    decode_attention(&mut jobs, group, isa);
    Ok(bytes)
}
