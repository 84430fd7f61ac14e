//! f16 rows with F16C, 8 values an instruction. The `half` crate's slice conversion detects
//! the CPU and calls its converter once per 8 values; a prompt's fill converts every value
//! of the cache, and those calls took 10 % of a 32K MHA f16 run on a Zen 3. `vcvtps2ph`
//! rounds to nearest even, as `half` does, so the bytes are the same (tested).

use std::arch::x86_64::*;

/// Write `rows` as little-endian f16 into `out` (2 bytes a value) when the CPU has F16C and
/// AVX; `false`, writing nothing, when it does not.
pub(super) fn encode_f16(rows: &[f32], out: &mut [u8]) -> bool {
    if !(std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx"))
    {
        return false;
    }
    assert_eq!(out.len(), 2 * rows.len());
    // SAFETY: F16C and AVX were detected above; the lengths were checked.
    unsafe { encode_f16c(rows, out) };
    true
}

#[target_feature(enable = "avx,f16c")]
unsafe fn encode_f16c(rows: &[f32], out: &mut [u8]) {
    let n = rows.len() - rows.len() % 8;
    let (x, o) = (rows.as_ptr(), out.as_mut_ptr());
    for i in (0..n).step_by(8) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.add(i)));
        _mm_storeu_si128(o.add(2 * i) as *mut __m128i, h);
    }
    for (i, &v) in rows.iter().enumerate().skip(n) {
        out[2 * i..2 * i + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
    }
}
