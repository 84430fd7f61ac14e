//! The scalar twin of the SIMD tile kernels: the same contract, computed element by element
//! through the codec. Used where no SIMD path applies, and by the tests as the yardstick.

use crate::cache::Segment;

/// `out[h·stride + i] = Σ_c q[h·d + c] · k(row0 + i)[c]` for `n` rows of `seg` from `row0`.
pub fn scores(
    seg: &Segment,
    row0: usize,
    n: usize,
    q: &[f32],
    heads: usize,
    out: &mut [f32],
    stride: usize,
) {
    let c = seg.codec;
    let d = c.head_dim;
    let mut row = vec![0.0f32; d];
    for i in 0..n {
        let r = row0 + i;
        let u = r / c.unit_tokens;
        c.decode_row(
            &seg.bytes[u * c.unit_bytes..(u + 1) * c.unit_bytes],
            r % c.unit_tokens,
            &mut row,
        );
        for h in 0..heads {
            out[h * stride + i] = q[h * d..(h + 1) * d]
                .iter()
                .zip(&row)
                .map(|(a, b)| a * b)
                .sum();
        }
    }
}

/// `acc[h·d + c] += Σ_i p[h·stride + i] · v(row0 + i)[c]`.
pub fn accumulate(
    seg: &Segment,
    row0: usize,
    n: usize,
    p: &[f32],
    heads: usize,
    stride: usize,
    acc: &mut [f32],
) {
    let c = seg.codec;
    let d = c.head_dim;
    let mut row = vec![0.0f32; d];
    for i in 0..n {
        let r = row0 + i;
        let u = r / c.unit_tokens;
        c.decode_row(
            &seg.bytes[u * c.unit_bytes..(u + 1) * c.unit_bytes],
            r % c.unit_tokens,
            &mut row,
        );
        for h in 0..heads {
            let w = p[h * stride + i];
            for (a, v) in acc[h * d..(h + 1) * d].iter_mut().zip(&row) {
                *a += w * v;
            }
        }
    }
}

/// The rows of `pieces` (segment, first row, rows), decoded into `out` (`rows × d`).
pub fn decode_tile(pieces: &[(&Segment, usize, usize)], out: &mut [f32]) {
    let mut o = 0;
    for &(seg, row0, n) in pieces {
        let c = seg.codec;
        let d = c.head_dim;
        for r in row0..row0 + n {
            let u = r / c.unit_tokens;
            c.decode_row(
                &seg.bytes[u * c.unit_bytes..(u + 1) * c.unit_bytes],
                r % c.unit_tokens,
                &mut out[o..o + d],
            );
            o += d;
        }
    }
}

/// `st[i·hp + h] = Σ_c k[i·d + c] · qt[c·hp + h]`: scores of `n` rows against queries stored
/// transposed (`d × hp`, heads padded to `hp`).
pub fn scores_wide(k: &[f32], n: usize, d: usize, qt: &[f32], hp: usize, st: &mut [f32]) {
    for i in 0..n {
        for h in 0..hp {
            st[i * hp + h] = (0..d).map(|c| k[i * d + c] * qt[c * hp + h]).sum();
        }
    }
}

/// One tile of the online softmax over `st` (`n × hp`, a column per head): scores become
/// exp(score − new max), −inf (masked) scores 0; `max`, `sum` advance; `corr[h]` =
/// exp(old max − new max), exactly 1 where the max did not change.
pub fn softmax_wide(
    st: &mut [f32],
    n: usize,
    hp: usize,
    max: &mut [f32],
    sum: &mut [f32],
    corr: &mut [f32],
) {
    let mut col = vec![0.0f32; n];
    for h in 0..hp {
        let m = (0..n).fold(max[h], |m, i| m.max(st[i * hp + h]));
        let mut c = [max[h] - m];
        super::exp_inplace(&mut c);
        if max[h] == m {
            // Also when both are −inf (a fully masked column): no NaN.
            c[0] = 1.0;
        }
        for (i, x) in col.iter_mut().enumerate() {
            *x = st[i * hp + h] - m;
        }
        super::exp_inplace(&mut col);
        for (i, x) in col.iter().enumerate() {
            // Masked (−inf) scores weigh exactly 0.
            st[i * hp + h] = if st[i * hp + h] == f32::NEG_INFINITY {
                0.0
            } else {
                *x
            };
        }
        sum[h] = sum[h] * c[0] + col.iter().sum::<f32>();
        max[h] = m;
        corr[h] = c[0];
    }
}

/// `acc[h·d + c] = acc[h·d + c] · corr[h] + Σ_i p[i·hp + h] · v[i·d + c]` for `heads` heads.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_wide(
    v: &[f32],
    n: usize,
    d: usize,
    p: &[f32],
    hp: usize,
    heads: usize,
    corr: &[f32],
    acc: &mut [f32],
) {
    for h in 0..heads {
        for c in 0..d {
            let a = &mut acc[h * d + c];
            *a = *a * corr[h] + (0..n).map(|i| p[i * hp + h] * v[i * d + c]).sum::<f32>();
        }
    }
}

/// One head's tile of the online softmax: `x ← exp(x − m)` for the new max `m` =
/// max(`*max`, max x); `*sum ← *sum · c + Σ x`; returns the rescale factor c = exp(old − m).
pub fn softmax_row(x: &mut [f32], max: &mut f32, sum: &mut f32) -> f32 {
    let tile_max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let m = max.max(tile_max);
    // exp(0) = 1 exactly: skip the libm call when the max holds (most tiles after the first).
    let c = if m == *max { 1.0 } else { (*max - m).exp() };
    for v in x.iter_mut() {
        *v -= m;
    }
    super::exp_inplace(x);
    *sum = *sum * c + x.iter().sum::<f32>();
    *max = m;
    c
}
