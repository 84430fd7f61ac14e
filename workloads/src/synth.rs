//! Deterministic synthetic numbers: any element of any input or weight can be regenerated
//! from (seed, stream, index) alone, so the f64 reference sees exactly what the workload saw.

/// SplitMix64's finaliser: a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Identifies one array: a tag and up to three indices (layer, sequence, position …).
pub fn stream(seed: u64, tag: u64, a: u64, b: u64, c: u64) -> u64 {
    mix(seed ^ mix(tag ^ mix(a ^ mix(b ^ mix(c.wrapping_add(0x9e37_79b9_7f4a_7c15))))))
}

/// Element `i` of a stream, uniform in [-1, 1).
#[inline]
pub fn uniform(stream: u64, i: u64) -> f32 {
    let bits = mix(stream.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    ((bits >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Fill `out` with elements `0..out.len()` of a stream, times `scale`.
pub fn fill(stream: u64, scale: f32, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = uniform(stream, i as u64) * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_has_the_moments_of_u_minus1_1() {
        let s = stream(7, 1, 2, 3, 4);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|i| uniform(s, i) as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.01, "var {var}");
        assert!(xs.iter().all(|x| (-1.0..1.0).contains(x)));
        assert_ne!(stream(7, 1, 2, 3, 4), stream(7, 1, 2, 4, 3));
    }
}
