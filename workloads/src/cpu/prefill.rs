//! Prefill attention: causal (optionally windowed) attention of a whole prompt, tiled with an
//! online softmax so no prompt × prompt matrix is ever formed; the tile products go through
//! the wide decode kernels (AVX-512, AVX2) or `gemm`. Jobs (KV head × query tile) run on the
//! current rayon pool.

use super::exp_inplace;
use super::matmul::{matmul, Mat, Par};
use super::Isa;
use kvbench_planner::span::Span;
use rayon::prelude::*;

const Q_TILE: usize = 64;
const K_TILE: usize = 256;

/// Shapes of a prefill attention call.
#[derive(Debug, Clone, Copy)]
pub struct PrefillShape {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Sliding window (keys within the last `window` positions, the query's own included).
    pub window: Option<usize>,
}

/// Keys position `i` attends to: `lo(i) ..= i`.
fn first_key(i: usize, window: Option<usize>) -> usize {
    window.map_or(0, |w| (i + 1).saturating_sub(w))
}

/// Multiply-adds ×2 of QKᵀ and PV for `t` tokens attending causally from position 0: the
/// planner's prefill model (`kvbench_planner::prefill`), so predictions and runs count alike.
pub fn prefill_flops(s: &PrefillShape, t: usize) -> f64 {
    let pairs = kvbench_planner::prefill::causal_pairs(
        t as u64,
        s.window.map_or(Span::All, |w| Span::Window(w as u64)),
    );
    4.0 * (s.q_heads * s.head_dim) as f64 * pairs
}

/// `out[t][h][c]` for queries `q[t][h][c]` (t tokens at positions 0..t, scaled by 1/√d
/// inside) against keys/values `k`, `v` of the same positions (`t × kv_heads × d`), with
/// the kernels of the detected instruction set.
pub fn prefill_attention(
    s: &PrefillShape,
    t: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    prefill_attention_isa(s, t, q, k, v, out, Isa::detect())
}

/// One (KV head, query tile) job through the wide decode kernels (AVX-512, AVX2): the tile's
/// query rows (token × head of the group) are the "heads" of `scores_wide` / `softmax_wide` /
/// `accumulate_wide`, the key tile is copied contiguous once and shared by all of them.
#[allow(clippy::too_many_arguments)]
fn job_wide(
    s: &PrefillShape,
    h: usize,
    q0: usize,
    t: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    isa: Isa,
) -> Vec<f32> {
    let (hq, hk, d) = (s.q_heads, s.kv_heads, s.head_dim);
    let g = hq / hk;
    let scale = 1.0 / (d as f32).sqrt();
    let tq = (t - q0).min(Q_TILE);
    let rows = tq * g;
    let hp = rows.next_multiple_of(isa.wide_lanes());
    // Queries transposed (d × hp), pre-scaled; padding columns stay 0.
    let mut qt = vec![0.0f32; d * hp];
    for i in 0..tq {
        for j in 0..g {
            let src = &q[((q0 + i) * hq + h * g + j) * d..][..d];
            for (c, x) in src.iter().enumerate() {
                qt[c * hp + i * g + j] = x * scale;
            }
        }
    }
    let mut o = vec![0.0f32; rows * d];
    let (mut max, mut sum, mut corr) = (
        vec![f32::NEG_INFINITY; hp],
        vec![0.0f32; hp],
        vec![0.0f32; hp],
    );
    let (mut kt, mut vt) = (vec![0.0f32; K_TILE * d], vec![0.0f32; K_TILE * d]);
    let mut st = vec![0.0f32; K_TILE * hp];
    let k_lo = first_key(q0, s.window) / K_TILE * K_TILE;
    let mut k0 = k_lo;
    while k0 < q0 + tq {
        let tk = (q0 + tq - k0).min(K_TILE);
        for jj in 0..tk {
            let at = ((k0 + jj) * hk + h) * d;
            kt[jj * d..][..d].copy_from_slice(&k[at..at + d]);
            vt[jj * d..][..d].copy_from_slice(&v[at..at + d]);
        }
        isa.scores_wide(&kt, tk, d, &qt, hp, &mut st);
        // Causal (and window) mask: −inf scores get weight exactly 0 in `softmax_wide`. Key j
        // is hidden from query rows r (token q0 + r/g) with q0 + r/g < j, and, with a window
        // w, from those with q0 + r/g ≥ j + w: two contiguous runs of each key's row.
        for jj in 0..tk {
            let j = k0 + jj;
            let row = &mut st[jj * hp..][..rows];
            let future = (j.saturating_sub(q0) * g).min(rows);
            row[..future].fill(f32::NEG_INFINITY);
            if let Some(w) = s.window {
                let past = ((j + w).saturating_sub(q0) * g).min(rows);
                row[past.max(future)..].fill(f32::NEG_INFINITY);
            }
        }
        isa.softmax_wide(&mut st, tk, hp, &mut max, &mut sum, &mut corr);
        isa.accumulate_wide(&vt, tk, d, &st, hp, rows, &corr, &mut o);
        k0 += tk;
    }
    for r in 0..rows {
        let inv = 1.0 / sum[r];
        o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= inv);
    }
    o
}

/// [`prefill_attention`] on a given instruction set (tests, comparisons).
pub fn prefill_attention_isa(
    s: &PrefillShape,
    t: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    isa: Isa,
) {
    let (hq, hk, d) = (s.q_heads, s.kv_heads, s.head_dim);
    let g = hq / hk;
    let scale = 1.0 / (d as f32).sqrt();
    let jobs: Vec<(usize, usize)> = (0..hk)
        .flat_map(|h| (0..t.div_ceil(Q_TILE)).map(move |b| (h, b * Q_TILE)))
        .collect();
    let results: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|&(h, q0)| {
            // The wide kernels where the ISA has them: on a Zen 3 (AVX2) they took a causal
            // 2048-token prefill at 32 KV heads from 434-452 to 340-344 ms, at 8 from 359-364
            // to 342-351 (docs/performance.md, fifteenth round).
            if matches!(isa, Isa::Avx512 | Isa::Avx2) && d.is_multiple_of(isa.wide_lanes()) {
                return job_wide(s, h, q0, t, q, k, v, isa);
            }
            let tq = (t - q0).min(Q_TILE);
            let rows = tq * g;
            // Query rows (token, head of the group), gathered and pre-scaled.
            let mut qb = vec![0.0f32; rows * d];
            for i in 0..tq {
                for j in 0..g {
                    let src = &q[((q0 + i) * hq + h * g + j) * d..][..d];
                    for (o, x) in qb[(i * g + j) * d..][..d].iter_mut().zip(src) {
                        *o = x * scale;
                    }
                }
            }
            let mut o = vec![0.0f32; rows * d];
            let mut m = vec![f32::NEG_INFINITY; rows];
            let mut l = vec![0.0f32; rows];
            let mut sc = vec![0.0f32; rows * K_TILE];
            let k_lo = first_key(q0, s.window) / K_TILE * K_TILE;
            let mut k0 = k_lo;
            while k0 < q0 + tq {
                let tk = (q0 + tq - k0).min(K_TILE);
                let kh = &k[(k0 * hk + h) * d..];
                let vh = &v[(k0 * hk + h) * d..];
                let kmat = Mat {
                    data: kh,
                    rs: 1,
                    cs: hk * d,
                };
                matmul(
                    rows,
                    tk,
                    d,
                    Mat::rows(&qb, d),
                    kmat,
                    &mut sc,
                    false,
                    Par::Single,
                );
                for r in 0..rows {
                    let i = q0 + r / g;
                    let lo = first_key(i, s.window);
                    let row = &mut sc[r * tk..(r + 1) * tk];
                    for (jj, x) in row.iter_mut().enumerate() {
                        let j = k0 + jj;
                        if j > i || j < lo {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                    let tile_max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let new_m = m[r].max(tile_max);
                    if new_m == f32::NEG_INFINITY {
                        row.fill(0.0);
                        continue;
                    }
                    let corr = (m[r] - new_m).exp();
                    row.iter_mut().for_each(|x| *x -= new_m);
                    exp_inplace(row);
                    // Masked entries were −inf: exp_inplace floors them at 2^-126; zero them.
                    for (jj, x) in row.iter_mut().enumerate() {
                        let j = k0 + jj;
                        if j > i || j < lo {
                            *x = 0.0;
                        }
                    }
                    l[r] = l[r] * corr + row.iter().sum::<f32>();
                    if corr != 1.0 {
                        o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= corr);
                    }
                    m[r] = new_m;
                }
                let vmat = Mat {
                    data: vh,
                    rs: hk * d,
                    cs: 1,
                };
                matmul(
                    rows,
                    d,
                    tk,
                    Mat::rows(&sc, tk),
                    vmat,
                    &mut o,
                    true,
                    Par::Single,
                );
                k0 += tk;
            }
            for r in 0..rows {
                let inv = 1.0 / l[r];
                o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= inv);
            }
            o
        })
        .collect();
    for (&(h, q0), o) in jobs.iter().zip(results) {
        let tq = (t - q0).min(Q_TILE);
        for i in 0..tq {
            for j in 0..g {
                out[((q0 + i) * hq + h * g + j) * d..][..d]
                    .copy_from_slice(&o[(i * g + j) * d..][..d]);
            }
        }
    }
}

#[cfg(test)]
mod flop_tests {
    use super::*;

    #[test]
    fn planner_pair_count_matches_the_keys_the_kernel_visits() {
        // The kernel visits keys first_key(i) ..= i for every query i; count them directly.
        for window in [None, Some(1), Some(7), Some(64)] {
            let s = PrefillShape {
                q_heads: 4,
                kv_heads: 2,
                head_dim: 8,
                window,
            };
            for t in [0, 1, 5, 100] {
                let keys: usize = (0..t).map(|i| i + 1 - first_key(i, window)).sum();
                assert_eq!(
                    prefill_flops(&s, t),
                    4.0 * 32.0 * keys as f64,
                    "{window:?} {t}"
                );
            }
        }
    }
}
