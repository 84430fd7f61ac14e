//! AVX2 wide kernels (many query heads per KV head, MQA): a tile of K or V is dequantized
//! once into f32 rows, then scored and summed as small GEMMs over the heads, 8 heads a
//! vector. The fused kernels of `mod.rs` convert each row once per pair of heads (scores) or
//! per four heads (values), so at 32 heads a KV head they convert it 16 times; here once.
//! Twins of the scalar `decode_tile`, `scores_wide`, `softmax_wide` and `accumulate_wide`,
//! and of `softmax_row` for the fused path.

use super::{
    check_pieces, hsum, in_channel_order, row_ptr, Bf16, Codes, Format, Fp8Fmt, Int, IntLayout,
    Nf4, Piece, F16, F32, PAIR,
};
use crate::codec::fp8::Fp8;
use crate::codec::Quant;
use std::arch::x86_64::*;

/// AVX2 twin of [`crate::cpu::scalar::decode_tile`]: the rows of `pieces`, dequantized, into
/// `out` (`rows × d`, row-major).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C, [`super::supports`] must hold for the pieces'
/// format, and every piece has the first one's format.
pub unsafe fn decode_tile(pieces: &[Piece], out: &mut [f32]) {
    match pieces[0].0.codec.quant {
        Quant::F32 => decode_floats::<F32>(pieces, out),
        Quant::F16 => decode_floats::<F16>(pieces, out),
        Quant::Bf16 => decode_floats::<Bf16>(pieces, out),
        Quant::Int { bits: 8, .. } => decode_codes::<Int<8>>(pieces, out),
        Quant::Int { bits: 4, .. } => decode_codes::<Int<4>>(pieces, out),
        Quant::Int { .. } => decode_codes::<Int<2>>(pieces, out),
        Quant::Nf4 => decode_codes::<Nf4>(pieces, out),
        Quant::Fp8(Fp8::E4m3) => decode_codes::<Fp8Fmt<false>>(pieces, out),
        Quant::Fp8(Fp8::E5m2) => decode_codes::<Fp8Fmt<true>>(pieces, out),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_floats<F: Format>(pieces: &[Piece], out: &mut [f32]) {
    let d = pieces[0].0.codec.head_dim;
    let n = check_pieces(pieces);
    assert!(out.len() >= n * d);
    let mut o = out.as_mut_ptr();
    for &(seg, r0, m) in pieces {
        for r in r0..r0 + m {
            let row = F::row(seg, r);
            for j in 0..d / 8 {
                _mm256_storeu_ps(o.add(8 * j), F::load(&row, j));
            }
            o = o.add(d);
        }
    }
}

/// Codes to values a group at a time: `code × scale + bias` as [`IntLayout::param`] reads
/// them, split pairs put back in channel order.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_codes<C: Codes>(pieces: &[Piece], out: &mut [f32]) {
    let c = pieces[0].0.codec;
    let (d, ppg) = (c.head_dim, c.group / PAIR);
    let n = check_pieces(pieces);
    assert!(out.len() >= n * d);
    let lay = IntLayout::new::<C>(pieces[0].0.codec);
    let mut o = out.as_mut_ptr();
    for &(seg, r0, m) in pieces {
        for r in r0..r0 + m {
            let codes = row_ptr(seg, r);
            for g in 0..d / c.group {
                let (s, b) = lay.param::<C>(codes, g);
                let (s, b) = (_mm256_set1_ps(s), _mm256_set1_ps(b));
                for p in g * ppg..(g + 1) * ppg {
                    let [x0, x1] = C::pair(codes, p);
                    let [y0, y1] = in_channel_order::<C>([
                        _mm256_fmadd_ps(x0, s, b),
                        _mm256_fmadd_ps(x1, s, b),
                    ]);
                    _mm256_storeu_ps(o.add(PAIR * p), y0);
                    _mm256_storeu_ps(o.add(PAIR * p + 8), y1);
                }
            }
            o = o.add(d);
        }
    }
}

/// `R` rows × `HV` vectors of 8 heads of scores: `st[i·hp + h] = Σ_c k[i·d + c] · qt[c·hp + h]`.
#[inline(always)]
unsafe fn scores_wide_block<const R: usize, const HV: usize>(
    k: *const f32,
    d: usize,
    qt: *const f32,
    hp: usize,
    st: *mut f32,
) {
    let mut acc = [[_mm256_setzero_ps(); HV]; R];
    for c in 0..d {
        let mut qv = [_mm256_setzero_ps(); HV];
        for (v, q) in qv.iter_mut().enumerate() {
            *q = _mm256_loadu_ps(qt.add(c * hp + 8 * v));
        }
        for (i, ai) in acc.iter_mut().enumerate() {
            let kv = _mm256_broadcast_ss(&*k.add(i * d + c));
            for v in 0..HV {
                ai[v] = _mm256_fmadd_ps(kv, qv[v], ai[v]);
            }
        }
    }
    for (i, ai) in acc.iter().enumerate() {
        for (v, a) in ai.iter().enumerate() {
            _mm256_storeu_ps(st.add(i * hp + 8 * v), *a);
        }
    }
}

/// AVX2 twin of [`crate::cpu::scalar::scores_wide`]: scores of `n` f32 rows `k` (`n × d`)
/// against the transposed, head-padded queries `qt` (`d × hp`, `hp` a multiple of 8), into
/// `st` (`n × hp`).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scores_wide(k: &[f32], n: usize, d: usize, qt: &[f32], hp: usize, st: &mut [f32]) {
    assert!(hp.is_multiple_of(8) && k.len() >= n * d && qt.len() >= d * hp);
    assert!(st.len() >= n * hp);
    let (kp, qp, sp) = (k.as_ptr(), qt.as_ptr(), st.as_mut_ptr());
    let mut v = 0;
    while v < hp / 8 {
        // 6 rows × 2 vectors: 12 accumulators, 2 query vectors and a broadcast (15 of the 16
        // registers). Two FMA pipes of 4 cycles' latency keep 8 chains busy only when
        // nothing else delays them; 12 leave slack (4 × 2 ran at 85 ns a row, 32 heads, one
        // Zen 3 core). A tile's last 4 rows (64 and 16 are 6k + 4) take 4 × 2; none is left
        // to a one-row block (whose two FMA chains wait on their latency).
        let two = hp / 8 - v >= 2;
        let (qv, sv) = (qp.add(8 * v), sp.add(8 * v));
        let mut i = 0;
        while i < n {
            let left = n - i;
            let (ki, si) = (kp.add(i * d), sv.add(i * hp));
            i += match (two, left) {
                (true, 6..) => {
                    scores_wide_block::<6, 2>(ki, d, qv, hp, si);
                    6
                }
                (true, 4..) => {
                    scores_wide_block::<4, 2>(ki, d, qv, hp, si);
                    4
                }
                (false, 8..) => {
                    scores_wide_block::<8, 1>(ki, d, qv, hp, si);
                    8
                }
                (true, _) => {
                    scores_wide_block::<1, 2>(ki, d, qv, hp, si);
                    1
                }
                (false, _) => {
                    scores_wide_block::<1, 1>(ki, d, qv, hp, si);
                    1
                }
            };
        }
        v += if two { 2 } else { 1 };
    }
}

/// `exp(x)` on 8 lanes for x ≤ 0: the polynomial of [`crate::cpu::exp_inplace`] (its twin).
#[inline(always)]
unsafe fn exp8(x: __m256) -> __m256 {
    let y = _mm256_max_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _mm256_set1_ps(-126.0),
    );
    let magic = _mm256_set1_ps(12_582_912.0);
    let n = _mm256_sub_ps(_mm256_add_ps(y, magic), magic);
    let f = _mm256_sub_ps(y, n);
    let mut p = _mm256_set1_ps(crate::cpu::EXP2_POLY[0]);
    for &c in &crate::cpu::EXP2_POLY[1..] {
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
    }
    let bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    );
    _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
}

/// AVX2 twin of [`crate::cpu::scalar::softmax_wide`]: one tile of the online softmax over
/// `st` (`n × hp`), vectorized over heads; −inf scores (masked) weigh exactly 0. Replaces
/// scores by exp(score − new max), updates `max` and `sum` (`hp` each) and writes each
/// head's rescale factor into `corr`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn softmax_wide(
    st: &mut [f32],
    n: usize,
    hp: usize,
    max: &mut [f32],
    sum: &mut [f32],
    corr: &mut [f32],
) {
    assert!(hp.is_multiple_of(8) && st.len() >= n * hp);
    assert!(max.len() >= hp && sum.len() >= hp && corr.len() >= hp);
    let sp = st.as_mut_ptr();
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    for v in 0..hp / 8 {
        let o = 8 * v;
        let old = _mm256_loadu_ps(max.as_ptr().add(o));
        let mut m = old;
        for i in 0..n {
            m = _mm256_max_ps(m, _mm256_loadu_ps(sp.add(i * hp + o)));
        }
        // An unchanged max rescales by exactly 1 (also when both are −inf: no NaN).
        let same = _mm256_cmp_ps::<_CMP_EQ_OQ>(old, m);
        let c = _mm256_blendv_ps(exp8(_mm256_sub_ps(old, m)), _mm256_set1_ps(1.0), same);
        let mut s = _mm256_setzero_ps();
        for i in 0..n {
            let at = sp.add(i * hp + o);
            let x = _mm256_loadu_ps(at);
            let live = _mm256_cmp_ps::<_CMP_NEQ_OQ>(x, ninf);
            let e = _mm256_and_ps(live, exp8(_mm256_sub_ps(x, m)));
            _mm256_storeu_ps(at, e);
            s = _mm256_add_ps(s, e);
        }
        let sum0 = _mm256_loadu_ps(sum.as_ptr().add(o));
        _mm256_storeu_ps(sum.as_mut_ptr().add(o), _mm256_fmadd_ps(sum0, c, s));
        _mm256_storeu_ps(max.as_mut_ptr().add(o), m);
        _mm256_storeu_ps(corr.as_mut_ptr().add(o), c);
    }
}

/// `HB` heads × `J` chunks of `acc[h·d + c] = acc · corr[h] + Σ_i p[i·hp + h] · v[i·d + c]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_wide_block<const HB: usize, const J: usize>(
    v: *const f32,
    n: usize,
    d: usize,
    p: *const f32,
    hp: usize,
    corr: *const f32,
    acc: *mut f32,
    j0: usize,
) {
    let mut a = [[_mm256_setzero_ps(); J]; HB];
    for (h, ah) in a.iter_mut().enumerate() {
        let c = _mm256_set1_ps(*corr.add(h));
        for (jj, x) in ah.iter_mut().enumerate() {
            *x = _mm256_mul_ps(_mm256_loadu_ps(acc.add(h * d + 8 * (j0 + jj))), c);
        }
    }
    for i in 0..n {
        let mut vv = [_mm256_setzero_ps(); J];
        for (jj, x) in vv.iter_mut().enumerate() {
            *x = _mm256_loadu_ps(v.add(i * d + 8 * (j0 + jj)));
        }
        for (h, ah) in a.iter_mut().enumerate() {
            let w = _mm256_broadcast_ss(&*p.add(i * hp + h));
            for jj in 0..J {
                ah[jj] = _mm256_fmadd_ps(w, vv[jj], ah[jj]);
            }
        }
    }
    for (h, ah) in a.iter().enumerate() {
        for (jj, x) in ah.iter().enumerate() {
            _mm256_storeu_ps(acc.add(h * d + 8 * (j0 + jj)), *x);
        }
    }
}

/// AVX2 twin of [`crate::cpu::scalar::accumulate_wide`]: `acc (heads × d) ← acc · corr +
/// pᵀ v` for weights `p` (`n × hp`) and f32 rows `v` (`n × d`).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `d` is a multiple of 8.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn accumulate_wide(
    v: &[f32],
    n: usize,
    d: usize,
    p: &[f32],
    hp: usize,
    heads: usize,
    corr: &[f32],
    acc: &mut [f32],
) {
    assert!(d.is_multiple_of(8) && heads <= hp && v.len() >= n * d && p.len() >= n * hp);
    assert!(corr.len() >= heads && acc.len() >= heads * d);
    let chunks = d / 8;
    let (vp, pp, cp, ap) = (v.as_ptr(), p.as_ptr(), corr.as_ptr(), acc.as_mut_ptr());
    let mut h = 0;
    while h < heads {
        // 6 heads × 2 chunks: 12 accumulators, 2 value vectors and a broadcast (15 of the 16
        // registers; with 3 chunks of 4 heads one accumulator went through the stack every
        // row). 8 chains (4 × 2) ran at 97 ns a row, 32 heads, one Zen 3 core: two FMA
        // pipes of 4 cycles' latency need all 8 in flight every cycle.
        let hb = match heads - h {
            6.. => 6,
            4..=5 => 4,
            2..=3 => 2,
            _ => 1,
        };
        let (ph, ch, ah) = (pp.add(h), cp.add(h), ap.add(h * d));
        let mut j = 0;
        while j < chunks {
            let left = chunks - j;
            j += match (hb, left) {
                (6, 2..) => {
                    accumulate_wide_block::<6, 2>(vp, n, d, ph, hp, ch, ah, j);
                    2
                }
                (6, _) => {
                    accumulate_wide_block::<6, 1>(vp, n, d, ph, hp, ch, ah, j);
                    1
                }
                (4, 2..) => {
                    accumulate_wide_block::<4, 2>(vp, n, d, ph, hp, ch, ah, j);
                    2
                }
                (4, _) => {
                    accumulate_wide_block::<4, 1>(vp, n, d, ph, hp, ch, ah, j);
                    1
                }
                (2, 4..) => {
                    accumulate_wide_block::<2, 4>(vp, n, d, ph, hp, ch, ah, j);
                    4
                }
                (2, _) => {
                    accumulate_wide_block::<2, 1>(vp, n, d, ph, hp, ch, ah, j);
                    1
                }
                (_, 8..) => {
                    accumulate_wide_block::<1, 8>(vp, n, d, ph, hp, ch, ah, j);
                    8
                }
                _ => {
                    accumulate_wide_block::<1, 1>(vp, n, d, ph, hp, ch, ah, j);
                    1
                }
            };
        }
        h += hb;
    }
}

/// AVX2 twin of [`crate::cpu::scalar::softmax_row`]: one head's tile of the online softmax.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn softmax_row(x: &mut [f32], max: &mut f32, sum: &mut f32) -> f32 {
    let (n, p) = (x.len(), x.as_mut_ptr());
    let whole = n - n % 8;
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..whole).step_by(8) {
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(p.add(i)));
    }
    let mut tile_max = x[whole..].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // Most tiles after the first hold no score above the running max: a compare, not a
    // horizontal reduction, tells so (the same m either way).
    if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(mv, _mm256_set1_ps(*max))) != 0 {
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), mv);
        tile_max = lanes.iter().fold(tile_max, |m, &v| m.max(v));
    }
    let m = max.max(tile_max);
    // exp(0) = 1 exactly: skip the libm call when the max holds (most tiles after the first).
    let c = if m == *max { 1.0 } else { (*max - m).exp() };
    let (mb, mut s) = (_mm256_set1_ps(m), _mm256_setzero_ps());
    for i in (0..whole).step_by(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mb));
        _mm256_storeu_ps(p.add(i), e);
        s = _mm256_add_ps(s, e);
    }
    let tail = &mut x[whole..];
    for v in tail.iter_mut() {
        *v -= m;
    }
    crate::cpu::exp_inplace(tail);
    *sum = *sum * c + hsum(s) + tail.iter().sum::<f32>();
    *max = m;
    c
}
