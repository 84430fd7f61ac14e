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
/// AVX-512 (64-bit lane multiplies) or AVX2 (the multiplies built from 32-bit halves) where
/// the CPU has them, else [`fill_range_scalar`]; all give the same bits (integer hashing,
/// then an exact conversion of a 24-bit integer).
pub fn fill_range(stream: u64, first: u64, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
        {
            // SAFETY: AVX-512F and DQ were detected just above.
            unsafe { fill_range_avx512(stream, first, scale, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected just above.
            unsafe { fill_range_avx2(stream, first, scale, out) };
            return;
        }
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

/// [`fill_range_scalar`] on AVX2, 8 elements at a time. AVX2 has no 64-bit multiply, and
/// scalar `imul` (one a cycle) bounded the fill: the synthetic rows took 44 % of a 32K MHA
/// f16 run on a Zen 3, the scalar hash about 2.5 cycles an element.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_range_avx2(stream: u64, first: u64, scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    /// `a × b` modulo 2⁶⁴ in each lane, from 32 × 32 → 64-bit products: the low halves'
    /// product plus the two cross products shifted up (the high halves' product is lost
    /// to the modulus).
    #[inline(always)]
    unsafe fn mul64(a: __m256i, b: u64) -> __m256i {
        let (lo, hi) = (
            _mm256_set1_epi64x(b as i64),
            _mm256_set1_epi64x((b >> 32) as i64),
        );
        let cross = _mm256_add_epi64(
            _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), lo),
            _mm256_mul_epu32(a, hi),
        );
        _mm256_add_epi64(_mm256_mul_epu32(a, lo), _mm256_slli_epi64::<32>(cross))
    }
    /// [`mix`] in each lane.
    #[inline(always)]
    unsafe fn mix4(z: __m256i) -> __m256i {
        let z = mul64(
            _mm256_xor_si256(z, _mm256_srli_epi64::<30>(z)),
            0xbf58_476d_1ce4_e5b9,
        );
        let z = mul64(
            _mm256_xor_si256(z, _mm256_srli_epi64::<27>(z)),
            0x94d0_49bb_1331_11eb,
        );
        _mm256_xor_si256(z, _mm256_srli_epi64::<31>(z))
    }
    const STEP: u64 = 0x9e37_79b9_7f4a_7c15;
    let n = out.len() - out.len() % 8;
    let key = |i: u64| stream.wrapping_add(i.wrapping_mul(STEP)) as i64;
    let lanes = |i: u64| _mm256_set_epi64x(key(i + 3), key(i + 2), key(i + 1), key(i));
    let eight = _mm256_set1_epi64x(8u64.wrapping_mul(STEP) as i64);
    let (mut a, mut b) = (lanes(first), lanes(first + 4));
    let (unit, two, one, sc) = (
        _mm256_set1_ps(1.0 / (1u64 << 24) as f32),
        _mm256_set1_ps(2.0),
        _mm256_set1_ps(1.0),
        _mm256_set1_ps(scale),
    );
    for i in (0..n).step_by(8) {
        // The top 24 bits of each hash; the low dwords of the 8 lanes, in order.
        let (ha, hb) = (
            _mm256_srli_epi64::<40>(mix4(a)),
            _mm256_srli_epi64::<40>(mix4(b)),
        );
        let dwords =
            _mm256_shuffle_ps::<0b10_00_10_00>(_mm256_castsi256_ps(ha), _mm256_castsi256_ps(hb));
        let ints = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_castps_si256(dwords));
        // The scalar's operations in its order, each rounded alike (no fused multiply-add).
        let u = _mm256_sub_ps(
            _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(ints), unit), two),
            one,
        );
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(u, sc));
        a = _mm256_add_epi64(a, eight);
        b = _mm256_add_epi64(b, eight);
    }
    fill_range_scalar(stream, first + n as u64, scale, &mut out[n..]);
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
        for (first, len) in [
            (0u64, 0usize),
            (0, 1),
            (5, 17),
            (1000, 4099),
            (3, 8),
            (9, 64),
        ] {
            let (mut fast, mut slow) = (vec![0f32; len], vec![0f32; len]);
            fill_range(s, first, 3.0, &mut fast);
            fill_range_scalar(s, first, 3.0, &mut slow);
            assert_eq!(fast, slow, "first {first} len {len}");
            // The AVX2 path too where AVX-512 takes the dispatch.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut avx2 = vec![0f32; len];
                // SAFETY: AVX2 was detected just above.
                unsafe { fill_range_avx2(s, first, 3.0, &mut avx2) };
                assert_eq!(avx2, slow, "AVX2, first {first} len {len}");
            }
            // A range is the same elements a whole fill makes at those indices.
            let mut whole = vec![0f32; first as usize + len];
            fill(s, 3.0, &mut whole);
            assert_eq!(&whole[first as usize..], &fast[..]);
        }
    }
}
