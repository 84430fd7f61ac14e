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
    fill_range(stream, 0, scale, out);
}

/// Fill `out` with elements `first..first + out.len()` of a stream, times `scale`: with
/// AVX-512 (64-bit lane multiplies) where the CPU has it, else [`fill_range_scalar`]; both
/// give the same bits (integer hashing, then an exact conversion of a 24-bit integer).
pub fn fill_range(stream: u64, first: u64, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
    {
        // SAFETY: AVX-512F and DQ were detected just above.
        unsafe { fill_range_avx512(stream, first, scale, out) };
        return;
    }
    fill_range_scalar(stream, first, scale, out);
}

/// The scalar twin of the vectorised fill.
pub fn fill_range_scalar(stream: u64, first: u64, scale: f32, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = uniform(stream, first + i as u64) * scale;
    }
}

/// [`fill_range_scalar`] compiled for AVX-512 so the compiler vectorises the hash across
/// eight 64-bit lanes (`vpmullq` needs AVX-512DQ); the same source, so the same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn fill_range_avx512(stream: u64, first: u64, scale: f32, out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = uniform(stream, first + i as u64) * scale;
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

    #[test]
    fn the_dispatched_fill_equals_its_scalar_twin() {
        let s = stream(3, 0x4b, 1, 0, 9);
        for (first, len) in [(0u64, 0usize), (0, 1), (5, 17), (1000, 4099)] {
            let (mut fast, mut slow) = (vec![0f32; len], vec![0f32; len]);
            fill_range(s, first, 3.0, &mut fast);
            fill_range_scalar(s, first, 3.0, &mut slow);
            assert_eq!(fast, slow, "first {first} len {len}");
            // A range is the same elements a whole fill makes at those indices.
            let mut whole = vec![0f32; first as usize + len];
            fill(s, 3.0, &mut whole);
            assert_eq!(&whole[first as usize..], &fast[..]);
        }
    }
}
