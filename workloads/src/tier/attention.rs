//! Attention of one query head over stored rows (f32, decoding each row from its codec), and
//! the f64 reference over the unquantized vectors.

use crate::cache::{HeadView, Segment};

/// Decode row `r` of a segment into `out`.
fn decode(seg: &Segment<'_>, r: usize, out: &mut [f32]) {
    let c = seg.codec;
    let (unit, t) = (r / c.unit_tokens, r % c.unit_tokens);
    c.decode_row(
        &seg.bytes[unit * c.unit_bytes..(unit + 1) * c.unit_bytes],
        t,
        out,
    );
}

/// softmax(q·Kᵀ/√d)·V over the rows of `view` for every query of one KV head's group: the
/// rows are decoded once and shared by the queries. `outs[i]` gets query `i`'s output.
pub fn attend(queries: &[&[f32]], view: &HeadView<'_>, outs: &mut [&mut [f32]]) {
    let d = queries.first().map_or(0, |q| q.len());
    let n = view.rows();
    let (mut keys, mut values) = (vec![0f32; n * d], vec![0f32; n * d]);
    for (segs, rows) in [(&view.k, &mut keys), (&view.v, &mut values)] {
        let mut i = 0;
        for seg in segs {
            for r in seg.row0..seg.row0 + seg.rows {
                decode(seg, r, &mut rows[i * d..(i + 1) * d]);
                i += 1;
            }
        }
    }
    for (q, out) in queries.iter().zip(outs.iter_mut()) {
        attend_rows(q, &keys, &values, out);
    }
}

/// Dot product with eight independent sums, so the compiler can vectorize it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// softmax(q·Kᵀ/√d)·V over f32 rows (`keys`, `values`: n × d, row-major).
pub fn attend_rows(q: &[f32], keys: &[f32], values: &[f32], out: &mut [f32]) {
    let d = q.len();
    let scale = 1.0 / (d as f32).sqrt();
    let scores: Vec<f32> = keys.chunks_exact(d).map(|k| dot(q, k) * scale).collect();
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = weights.iter().sum();
    out.iter_mut().for_each(|o| *o = 0.0);
    for (w, v) in weights.iter().zip(values.chunks_exact(d)) {
        let p = w / total;
        out.iter_mut().zip(v).for_each(|(o, x)| *o += p * x);
    }
}

/// The same attention in f64 over unquantized rows `keys[i]`, `values[i]`.
pub fn attend_f64(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>]) -> Vec<f64> {
    let d = q.len();
    let scale = 1.0 / (d as f64).sqrt();
    let scores: Vec<f64> = keys
        .iter()
        .map(|k| {
            q.iter()
                .zip(k)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                * scale
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut out = vec![0f64; d];
    for (w, v) in weights.iter().zip(values) {
        for (o, x) in out.iter_mut().zip(v) {
            *o += w / total * *x as f64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use kvbench_planner::{CacheDtype, DtypeKind};

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.25).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(
            (dot(&a, &b) - plain).abs() < 1e-4,
            "{} vs {plain}",
            dot(&a, &b)
        );
        // Σ_{i<19} i/2 − i²/8 = 171/2 − 2109/8 = −178.125.
        assert!((plain - -178.125).abs() < 1e-3, "{plain}");
    }

    #[test]
    fn two_rows_by_hand() {
        // q = (1, 0), keys (1, 0) and (0, 1), scale 1/√2: scores 0.7071, 0 →
        // weights e^0.7071 / (e^0.7071 + 1) = 0.66976, 0.33024.
        let codec = Codec::new(CacheDtype::new(DtypeKind::F32), 2).unwrap();
        let k: Vec<u8> = [1f32, 0., 0., 1.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let v: Vec<u8> = [10f32, 0., 0., 20.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let seg = |bytes| Segment {
            codec: &codec,
            bytes,
            row0: 0,
            rows: 2,
        };
        let view = HeadView {
            k: vec![seg(&k)],
            v: vec![seg(&v)],
        };
        let mut out = [0f32; 2];
        attend(&[&[1.0, 0.0]], &view, &mut [&mut out[..]]);
        assert!(
            (out[0] - 6.6976).abs() < 1e-3 && (out[1] - 6.6048).abs() < 1e-3,
            "{out:?}"
        );
        let r = attend_f64(
            &[1.0, 0.0],
            &[vec![1., 0.], vec![0., 1.]],
            &[vec![10., 0.], vec![0., 20.]],
        );
        assert!(
            (r[0] - 6.69762).abs() < 1e-4 && (r[1] - 6.60477).abs() < 1e-4,
            "{r:?}"
        );
    }
}
