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
