//! What the GPU must produce, computed on the host in f64 from the same synthetic inputs.
//!
//! Two references per output: from the exact inputs (the accuracy a dtype costs) and from the
//! values the cache stores after quantization (computed with the bit-exact codec twins), which
//! the kernels must match to f32 rounding whatever the dtype.

use super::codec::{splitmix64, synthetic_index, synthetic_value, GpuCodec};

/// Which synthetic tensor a stream feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tensor {
    K = 1,
    V = 2,
    Q = 3,
}

/// The stream key of one tensor of one layer.
pub fn stream_key(seed: u64, layer: u32, tensor: Tensor) -> u64 {
    splitmix64(seed ^ ((layer as u64) << 8) ^ tensor as u64)
}

/// One KV head's rows 0..len for sequence `b`: (exact values, values as stored by `codec`),
/// each [len][head_dim]. Positions below `shared_prefix` are those of sequence 0.
pub fn cache_rows(
    key: u64,
    codec: GpuCodec,
    b: u32,
    kvh: u32,
    len: u32,
    head_dim: u32,
    shared_prefix: u32,
) -> (Vec<f32>, Vec<f32>) {
    let hd = head_dim as usize;
    let mut exact = Vec::with_capacity(len as usize * hd);
    let mut stored = Vec::with_capacity(len as usize * hd);
    for pos in 0..len {
        let sb = if pos < shared_prefix { 0 } else { b };
        let row: Vec<f32> = (0..head_dim)
            .map(|d| synthetic_value(key, synthetic_index(sb, pos, kvh, d)))
            .collect();
        let (codes, scales) = codec.encode_row(&row);
        stored.extend(codec.decode_row(&codes, &scales, hd));
        exact.extend(row);
    }
    (exact, stored)
}

/// The query of head `qh` of sequence `b` at position `pos`.
pub fn query(key: u64, b: u32, pos: u32, qh: u32, head_dim: u32) -> Vec<f32> {
    (0..head_dim)
        .map(|d| synthetic_value(key, synthetic_index(b, pos, qh, d)))
        .collect()
}

/// softmax(q·kᵀ / sqrt(d)) v over the first `len` rows, in f64.
pub fn attend(q: &[f32], k: &[f32], v: &[f32], len: usize) -> Vec<f64> {
    let hd = q.len();
    let scale = 1.0 / (hd as f64).sqrt();
    let scores: Vec<f64> = (0..len)
        .map(|t| {
            let row = &k[t * hd..(t + 1) * hd];
            q.iter()
                .zip(row)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut out = vec![0.0; hd];
    for (t, w) in weights.iter().enumerate() {
        for (o, x) in out.iter_mut().zip(&v[t * hd..(t + 1) * hd]) {
            *o += w * *x as f64;
        }
    }
    out.iter_mut().for_each(|o| *o /= total);
    out
}

/// Running ‖got − want‖² and ‖want‖² and the cosine terms over many output vectors.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorSum {
    diff2: f64,
    want2: f64,
    got2: f64,
    dot: f64,
    /// Elements that were NaN or infinite (an unwritten, poisoned output).
    pub non_finite: u64,
}

impl ErrorSum {
    /// Add one output vector.
    pub fn add(&mut self, got: &[f32], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            if !g.is_finite() {
                self.non_finite += 1;
                continue;
            }
            let g = *g as f64;
            self.diff2 += (g - w) * (g - w);
            self.want2 += w * w;
            self.got2 += g * g;
            self.dot += g * w;
        }
    }

    /// ‖got − want‖ / ‖want‖ (NaN when an element was not finite).
    pub fn rel_error(&self) -> f64 {
        if self.non_finite > 0 {
            return f64::NAN;
        }
        (self.diff2 / self.want2).sqrt()
    }

    /// Cosine similarity of got and want.
    pub fn cosine(&self) -> f64 {
        if self.non_finite > 0 {
            return f64::NAN;
        }
        self.dot / (self.got2.sqrt() * self.want2.sqrt())
    }
}

/// The relative error a kernel may show against the reference over the *stored* values:
/// f32 arithmetic, exp2f and a different summation order only.
pub const KERNEL_BOUND: f64 = 1e-4;

/// The relative error a dtype may cost against the exact reference (attention output over
/// uniform synthetic inputs; see the test that measures it).
pub fn dtype_bound(codec: GpuCodec) -> f64 {
    match codec {
        GpuCodec::F32 => KERNEL_BOUND,
        GpuCodec::F16 => 2e-3,
        GpuCodec::Bf16 => 1e-2,
        GpuCodec::Int8 => 2e-2,
        GpuCodec::Fp8E4m3 => 6e-2,
        GpuCodec::Fp8E5m2 => 1.2e-1,
        GpuCodec::Int4 => 1.5e-1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_of_identical_keys_is_the_mean_of_values() {
        // Equal scores give equal weights: the output is the plain mean of V.
        let q = vec![0.3f32; 4];
        let k = vec![1.0f32; 12];
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let out = attend(&q, &k, &v, 3);
        assert_eq!(out, vec![4.0, 5.0, 6.0, 7.0]);
    }

    #[test]
    fn attention_follows_softmax_by_hand() {
        // d = 1, q = 2, keys 0 and 1: scores 0 and 2 (scale 1), weights 1 : e².
        let out = attend(&[2.0], &[0.0, 1.0], &[10.0, 20.0], 2);
        let e2 = 2f64.exp();
        assert!((out[0] - (10.0 + 20.0 * e2) / (1.0 + e2)).abs() < 1e-12);
    }

    #[test]
    fn error_sum_flags_unwritten_outputs() {
        let mut e = ErrorSum::default();
        e.add(&[1.0, f32::NAN], &[1.0, 2.0]);
        assert!(e.rel_error().is_nan());
        let mut e = ErrorSum::default();
        e.add(&[1.0, 2.2], &[1.0, 2.0]);
        assert!((e.rel_error() - 0.2 / 5f64.sqrt()).abs() < 1e-6);
        assert!(e.cosine() > 0.99);
    }

    #[test]
    fn shared_prefix_rows_are_those_of_sequence_zero() {
        let key = stream_key(1, 0, Tensor::K);
        let (a, _) = cache_rows(key, GpuCodec::F32, 0, 2, 8, 64, 5);
        let (b, _) = cache_rows(key, GpuCodec::F32, 3, 2, 8, 64, 5);
        assert_eq!(a[..5 * 64], b[..5 * 64]);
        assert_ne!(a[5 * 64..], b[5 * 64..]);
    }

    /// The quantization error each dtype costs on these inputs (exact vs stored reference),
    /// measured: every bound must hold it with a factor 2 to spare, so a GPU run that
    /// matches the stored reference always passes, and a wrong codec does not.
    #[test]
    fn dtype_bounds_hold_the_measured_quantization_error_twice_over() {
        let (hd, len) = (128u32, 512u32);
        for codec in GpuCodec::ALL {
            let mut err = ErrorSum::default();
            for kvh in 0..2 {
                let (ke, ks) = cache_rows(stream_key(9, 0, Tensor::K), codec, 0, kvh, len, hd, 0);
                let (ve, vs) = cache_rows(stream_key(9, 0, Tensor::V), codec, 0, kvh, len, hd, 0);
                for pos in [0, 17, len - 1] {
                    let q = query(stream_key(9, 0, Tensor::Q), 0, pos, kvh, hd);
                    let want = attend(&q, &ke, &ve, pos as usize + 1);
                    let got: Vec<f32> = attend(&q, &ks, &vs, pos as usize + 1)
                        .iter()
                        .map(|x| *x as f32)
                        .collect();
                    err.add(&got, &want);
                }
            }
            let measured = err.rel_error();
            let bound = dtype_bound(codec);
            eprintln!("{codec:?}: quantization costs rel_error {measured:.2e} (bound {bound:.0e})");
            assert!(
                measured * 2.0 <= bound.max(2e-7),
                "{codec:?}: {measured} vs {bound}"
            );
        }
    }
}
