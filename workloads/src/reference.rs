//! The f64 reference: the same computations done without any cache, in double precision,
//! straight from the definitions (softmax(q·Kᵀ/√d)·V, RMSNorm, RoPE, SiLU-gated MLP).

/// Σ a·b over the shorter of the two, in f64. Eight partial sums, each over every eighth
/// product, then added: one running sum waits on each add before the next (a 128-term dot
/// of 32 query heads at every one of 32K positions made verifying a 28-layer MQA row take
/// a quarter of its time), eight are independent and vectorize. Reordering f64 sums moves
/// the result by f64 rounding, far below what the f32 kernels are checked to.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut part = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            part[i] += x[i] * y[i];
        }
    }
    ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7])) + tail
}

/// Softmax attention of one query head (`d` values) over `keys`/`values` rows.
pub fn attend(q: &[f64], keys: &[Vec<f64>], values: &[Vec<f64>]) -> Vec<f64> {
    let d = q.len();
    let scale = 1.0 / (d as f64).sqrt();
    let scores: Vec<f64> = keys.iter().map(|k| scale * dot(q, k)).collect();
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut out = vec![0.0; d];
    for (wi, v) in w.iter().zip(values) {
        for (o, x) in out.iter_mut().zip(v) {
            *o += wi / total * x;
        }
    }
    out
}

/// [`attend`] for the `queries` of one GQA group (each `d` values) over keys and values made
/// one position at a time by `kv(p, k, v)` for `p` in `positions`: one pass with a running
/// maximum (online softmax, Milakov & Gimelshein 2018), so memory is O(group × d) however
/// long the context, and each K/V row is made once for the whole group. Equal to [`attend`]
/// up to f64 rounding.
pub fn attend_streaming(
    queries: &[Vec<f64>],
    positions: std::ops::Range<usize>,
    mut kv: impl FnMut(usize, &mut [f64], &mut [f64]),
) -> Vec<Vec<f64>> {
    let d = queries.first().map_or(0, Vec::len);
    let scale = 1.0 / (d as f64).sqrt();
    let g = queries.len();
    let mut max = vec![f64::NEG_INFINITY; g];
    let mut total = vec![0.0f64; g];
    let mut acc = vec![vec![0.0f64; d]; g];
    let (mut k, mut v) = (vec![0.0f64; d], vec![0.0f64; d]);
    for p in positions {
        kv(p, &mut k, &mut v);
        for h in 0..g {
            let s = scale * dot(&queries[h], &k);
            if s > max[h] {
                // Rescale what was summed against the old maximum.
                let r = (max[h] - s).exp();
                total[h] *= r;
                acc[h].iter_mut().for_each(|a| *a *= r);
                max[h] = s;
            }
            let w = (s - max[h]).exp();
            total[h] += w;
            for (a, x) in acc[h].iter_mut().zip(&v) {
                *a += w * x;
            }
        }
    }
    for (a, t) in acc.iter_mut().zip(&total) {
        a.iter_mut().for_each(|x| *x /= t);
    }
    acc
}

/// RMSNorm with weight `w` (ε = 1e-5).
pub fn rms_norm(x: &[f64], w: &[f64]) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + 1e-5).sqrt();
    x.iter().zip(w).map(|(a, b)| a * inv * b).collect()
}

/// Rotary position embedding (rotate-half, as Llama/NeoX) of one head vector at `pos`.
pub fn rope(x: &mut [f64], pos: usize, base: f64) {
    let half = x.len() / 2;
    for i in 0..half {
        let theta = pos as f64 * base.powf(-2.0 * i as f64 / x.len() as f64);
        let (s, c) = theta.sin_cos();
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * c - b * s;
        x[i + half] = a * s + b * c;
    }
}

/// `x (1×k) · w (k×n, row-major)`.
pub fn vec_mat(x: &[f64], w: &[f32], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    for (xi, row) in x.iter().zip(w.chunks_exact(n)) {
        for (o, wv) in out.iter_mut().zip(row) {
            *o += xi * *wv as f64;
        }
    }
    out
}

/// `x (t×k, row-major) · w (k×n, row-major)` in f64 (the weights widened exactly), through
/// `gemm`'s f64 kernels: the same sums as [`vec_mat`], blocked and multithreaded.
pub fn mat_mul(x: &[f64], t: usize, w: &[f32], n: usize) -> Vec<f64> {
    let k = w.len() / n;
    assert_eq!(x.len(), t * k, "mat_mul shapes");
    let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    let mut out = vec![0.0f64; t * n];
    if t == 0 || n == 0 || k == 0 {
        return out;
    }
    let par = match rayon::current_num_threads() {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    };
    // SAFETY: all three buffers have exactly the sizes the strides describe.
    unsafe {
        gemm::gemm(
            t,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w64.as_ptr(),
            1,
            n as isize,
            0.0f64,
            1.0f64,
            false,
            false,
            false,
            par,
        )
    }
    out
}

/// SiLU(x) = x · σ(x).
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// ‖a − b‖ / ‖b‖ (0 when both are 0).
pub fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_attention_equals_the_two_pass_definition() {
        // Scores that rise and fall, so the running maximum is replaced several times.
        let d = 16;
        let n = 300;
        let row = |p: usize, c: usize, t: f64| ((p * 31 + c * 7) as f64 * t).sin() * 2.0;
        let keys: Vec<Vec<f64>> = (0..n)
            .map(|p| (0..d).map(|c| row(p, c, 0.37)).collect())
            .collect();
        let vals: Vec<Vec<f64>> = (0..n)
            .map(|p| (0..d).map(|c| row(p, c, 0.11)).collect())
            .collect();
        let queries: Vec<Vec<f64>> = (0..3)
            .map(|h| (0..d).map(|c| row(h, c, 0.53) * 2.0).collect())
            .collect();
        let got = attend_streaming(&queries, 5..n, |p, k, v| {
            k.copy_from_slice(&keys[p]);
            v.copy_from_slice(&vals[p]);
        });
        for (h, q) in queries.iter().enumerate() {
            let want = attend(q, &keys[5..], &vals[5..]);
            assert!(rel_error(&got[h], &want) < 1e-13, "head {h}");
        }
    }

    #[test]
    fn the_dot_is_the_sum_of_products_to_f64_rounding() {
        // Integers small enough that every partial sum is exact: equal to the bit.
        for n in [0usize, 1, 7, 8, 9, 16, 127, 128, 129] {
            let a: Vec<f64> = (0..n).map(|i| (i % 13) as f64 - 6.0).collect();
            let b: Vec<f64> = (0..n).map(|i| (i % 7) as f64 * 3.0 - 9.0).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot(&a, &b), want, "n {n}");
        }
        // Values that round: within a few f64 ulps of Σ|a·b| of the sequential sum.
        let a: Vec<f64> = (0..200).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..200).map(|i| (i as f64 * 0.11).cos() * 1e3).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let size: f64 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-14 * size);
        // Only the shorter length counts.
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0]), 14.0);
    }

    #[test]
    fn attention_of_equal_scores_is_the_mean_of_values() {
        let keys = vec![vec![1.0, 0.0]; 3];
        let values = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 9.0]];
        assert_eq!(attend(&[0.3, 0.7], &keys, &values), vec![3.0, 5.0]);
    }

    #[test]
    fn attention_weights_follow_the_softmax_by_hand() {
        // Scores 0 and ln(3)·√2/√2: weights 1/4 and 3/4.
        let d = 2.0f64;
        let keys = vec![vec![0.0, 0.0], vec![3f64.ln() * d.sqrt(), 0.0]];
        let values = vec![vec![4.0, 0.0], vec![0.0, 8.0]];
        let out = attend(&[1.0, 0.0], &keys, &values);
        assert!(
            (out[0] - 1.0).abs() < 1e-12 && (out[1] - 6.0).abs() < 1e-12,
            "{out:?}"
        );
    }

    #[test]
    fn rope_rotates_pairs_by_pos_times_theta() {
        let mut x = vec![1.0, 0.0, 0.0, 0.0];
        rope(&mut x, 1, 10000.0);
        // Pair (0, 2) turns by 1 rad, pair (1, 3) by 1/100 rad.
        assert!((x[0] - 1f64.cos()).abs() < 1e-12 && (x[2] - 1f64.sin()).abs() < 1e-12);
        let mut y = vec![0.0, 1.0, 0.0, 0.0];
        rope(&mut y, 1, 10000.0);
        assert!((y[1] - 0.01f64.cos()).abs() < 1e-12 && (y[3] - 0.01f64.sin()).abs() < 1e-12);
    }

    #[test]
    fn mat_mul_equals_row_by_row_vec_mat() {
        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
        let x: Vec<f64> = (0..8).map(|i| i as f64 - 3.5).collect();
        let m = mat_mul(&x, 2, &w, 3);
        let mut want = vec_mat(&x[..4], &w, 3);
        want.extend(vec_mat(&x[4..], &w, 3));
        for (a, b) in m.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn rms_norm_of_a_constant_is_one() {
        let n = rms_norm(&[2.0; 8], &[1.0; 8]);
        assert!(n.iter().all(|v| (v - 1.0).abs() < 1e-5));
    }
}
