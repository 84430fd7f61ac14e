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

/// softmax(q·Kᵀ/√d)·V over the rows of `view`, written to `out` (head_dim values).
pub fn attend(q: &[f32], view: &HeadView<'_>, out: &mut [f32]) {
    let d = q.len();
    let scale = 1.0 / (d as f32).sqrt();
    let mut row = vec![0f32; d];
    let mut scores = Vec::with_capacity(view.rows());
    for seg in &view.k {
        for r in seg.row0..seg.row0 + seg.rows {
            decode(seg, r, &mut row);
            scores.push(q.iter().zip(&row).map(|(a, b)| a * b).sum::<f32>() * scale);
        }
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for s in &mut scores {
        *s = (*s - max).exp();
        total += *s;
    }
    out.iter_mut().for_each(|o| *o = 0.0);
    let mut i = 0;
    for seg in &view.v {
        for r in seg.row0..seg.row0 + seg.rows {
            decode(seg, r, &mut row);
            let p = scores[i] / total;
            out.iter_mut().zip(&row).for_each(|(o, v)| *o += p * v);
            i += 1;
        }
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
        attend(&[1.0, 0.0], &view, &mut out);
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
