//! The integer and NF4 encodings of token groups with AVX-512: the scalar `quantize_group`'s
//! arithmetic, in the same order, 16 values at a time, so the bytes are the same (each
//! group's min and max are exact whatever the order; every code rounds by the same
//! 1.5·2^23 addition). A prompt's fill encodes every row of every head this way.
//!
//! Rows with a value that is not finite keep to the scalar path, whose NaN handling is the
//! reference.

use super::nf4::NF4_LEVELS;
use super::{Codec, Quant};
use std::arch::x86_64::*;

/// Whether this CPU and `c` take [`encode_row`]: int8, int4 or nf4 codes of one token per
/// unit, in groups of 16 to 256 channels.
pub(super) fn fits(c: &Codec) -> bool {
    let int = matches!(c.quant, Quant::Int { bits: 8 | 4, .. } | Quant::Nf4);
    int && c.unit_tokens == 1
        && c.group.is_multiple_of(16)
        && (16..=256).contains(&c.group)
        && c.head_dim.is_multiple_of(c.group)
        && crate::cpu::avx512::detected()
}

/// Encode one row (`head_dim` values) into `out` (its unit) when the codec [`fits`];
/// `false`, writing nothing, when it does not or a value is not finite.
pub(super) fn encode_row(c: &Codec, row: &[f32], out: &mut [u8]) -> bool {
    if !fits(c) {
        return false;
    }
    assert!(row.len() == c.head_dim && out.len() == c.unit_bytes);
    // SAFETY: `fits` checked the CPU; the lengths were checked above.
    unsafe { encode_row_avx512(c, row, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn encode_row_avx512(c: &Codec, row: &[f32], out: &mut [u8]) -> bool {
    let x = row.as_ptr();
    let inf = _mm512_set1_ps(f32::INFINITY);
    let sign = _mm512_set1_epi32(0x7fff_ffff);
    for i in (0..row.len()).step_by(16) {
        let a = _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(_mm512_loadu_ps(x.add(i))),
            sign,
        ));
        if _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, inf) != 0xffff {
            return false;
        }
    }
    let (bits, asymmetric) = match c.quant {
        Quant::Int { bits, asymmetric } => (bits, asymmetric),
        _ => (4, false),
    };
    let nf4 = c.quant == Quant::Nf4;
    // NF4: a code is the number of midpoints between consecutive levels below the value,
    // as `nearest_level` finds it.
    let mut mids = [_mm512_setzero_ps(); 15];
    for (i, m) in mids.iter_mut().enumerate() {
        *m = _mm512_set1_ps(0.5 * (NF4_LEVELS[i] + NF4_LEVELS[i + 1]));
    }
    let (pb, po) = (c.param_bytes(), c.params_offset());
    let magic = _mm512_set1_ps(12_582_912.0);
    let magic_bits = _mm512_set1_epi32(12_582_912.0f32.to_bits() as i32);
    for g in 0..row.len() / c.group {
        let at = x.add(g * c.group);
        let n = c.group / 16;
        let (mut lo, mut hi) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at));
        for j in 1..n {
            let v = _mm512_loadu_ps(at.add(16 * j));
            lo = _mm512_min_ps(lo, v);
            hi = _mm512_max_ps(hi, v);
        }
        let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
        let params = &mut out[po + g * pb..po + (g + 1) * pb];
        // Per lane: code = round(clamp(x·mul + add, cmin, cmax)) + shift.
        let (mul, add, cmin, cmax, shift) = if nf4 {
            let scale = c.write_scalar(hi.max(-lo).max(0.0), params);
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            (inv, 0.0, 0.0, 0.0, 0)
        } else if asymmetric {
            let levels = ((1u32 << bits) - 1) as f32;
            let half = pb / 2;
            let scale = c.write_scalar((hi - lo) / levels, &mut params[..half]);
            let zero = c.write_scalar(lo, &mut params[half..]);
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            (inv, -zero, 0.0, levels, 0)
        } else {
            let absmax = hi.max(-lo).max(0.0);
            let qmax = ((1u32 << (bits - 1)) - 1) as f32;
            let scale = c.write_scalar(absmax / qmax, params);
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            (inv, 0.0, -qmax, qmax, 1i32 << (bits - 1))
        };
        let (mul, add) = (_mm512_set1_ps(mul), _mm512_set1_ps(add));
        let (cmin, cmax) = (_mm512_set1_ps(cmin), _mm512_set1_ps(cmax));
        let shift = _mm512_set1_epi32(shift);
        let codes = out.as_mut_ptr().add(g * c.group * bits as usize / 8);
        for j in 0..n {
            let v = _mm512_loadu_ps(at.add(16 * j));
            let r = if nf4 {
                let y = _mm512_mul_ps(v, mul);
                mids.iter().fold(_mm512_setzero_si512(), |n, m| {
                    let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, *m);
                    _mm512_mask_add_epi32(n, above, n, _mm512_set1_epi32(1))
                })
            } else {
                // (x − zero)·inv as the scalar computes it: the subtraction first.
                let y = _mm512_mul_ps(_mm512_add_ps(v, add), mul);
                let y = _mm512_min_ps(_mm512_max_ps(y, cmin), cmax);
                _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(y, magic)), magic_bits)
            };
            let bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(r, shift));
            if bits == 8 {
                _mm_storeu_si128(codes.add(16 * j) as *mut __m128i, bytes);
            } else {
                // Element 2i in the low nibble of byte i, 2i + 1 in the high one.
                let w = _mm_or_si128(bytes, _mm_srli_epi16::<4>(bytes));
                let packed = _mm_cvtepi16_epi8(_mm_and_si128(w, _mm_set1_epi16(0x00ff)));
                _mm_storel_epi64(codes.add(8 * j) as *mut __m128i, packed);
            }
        }
    }
    true
}
