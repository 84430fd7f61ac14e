//! The integer and NF4 encodings of token groups with AVX-512 or AVX2: the scalar
//! `quantize_group`'s arithmetic, in the same order, 16 or 8 values at a time, so the bytes
//! are the same (each group's min and max are exact whatever the order; every code rounds by
//! the same 1.5·2^23 addition). A prompt's fill encodes every row of every head this way;
//! on a Zen 3 (AVX2) the scalar encoding took 38 % of a 32K MHA int8 and fp8 run.
//!
//! Rows with a value that is not finite keep to the scalar path, whose NaN handling is the
//! reference.

use super::nf4::NF4_LEVELS;
use super::{Codec, Quant};
use std::arch::x86_64::*;

/// Whether `c` takes [`encode_row`] where the CPU has AVX-512 or AVX2: int8, int4, nf4 or
/// fp8 codes of one token per unit, in groups of 16 to 256 channels (fp8 on AVX2 only).
pub(super) fn fits(c: &Codec) -> bool {
    let int = matches!(
        c.quant,
        Quant::Int { bits: 8 | 4, .. } | Quant::Nf4 | Quant::Fp8(_)
    );
    int && c.unit_tokens == 1
        && c.group.is_multiple_of(16)
        && (16..=256).contains(&c.group)
        && c.head_dim.is_multiple_of(c.group)
}

/// The SIMD encodings this CPU has, widest first; detected once (every row of a fill asks).
pub(super) fn available() -> &'static [Simd] {
    static FOUND: std::sync::OnceLock<Vec<Simd>> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| {
        let mut out = Vec::new();
        if crate::cpu::avx512::detected() {
            out.push(Simd::Avx512);
        }
        if is_x86_feature_detected!("avx2") {
            out.push(Simd::Avx2);
        }
        out
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Simd {
    Avx512,
    Avx2,
}

/// Encode one row (`head_dim` values) into `out` (its unit) when the codec [`fits`] and the
/// CPU has AVX-512 or AVX2; `false`, writing nothing, when not or a value is not finite.
pub(super) fn encode_row(c: &Codec, row: &[f32], out: &mut [u8]) -> bool {
    let simd = match c.quant {
        Quant::Fp8(_) => Simd::Avx2,
        _ => match available().first() {
            Some(&simd) => simd,
            None => return false,
        },
    };
    encode_row_with(simd, c, row, out)
}

/// [`encode_row`] with one of the [`available`] encodings; `false` where that one does not
/// take `c`'s format.
pub(super) fn encode_row_with(simd: Simd, c: &Codec, row: &[f32], out: &mut [u8]) -> bool {
    let fp8 = matches!(c.quant, Quant::Fp8(_));
    if !fits(c) || !available().contains(&simd) || (fp8 && simd != Simd::Avx2) {
        return false;
    }
    assert!(row.len() == c.head_dim && out.len() == c.unit_bytes);
    // SAFETY: `available` checked the CPU; the lengths were checked above.
    unsafe {
        match (simd, c.quant) {
            (Simd::Avx512, _) => encode_row_avx512(c, row, out),
            (Simd::Avx2, Quant::Fp8(fmt)) => encode_fp8_avx2(c, fmt, row, out),
            (Simd::Avx2, _) => encode_row_avx2(c, row, out),
        }
    }
}

/// One group's mapping to codes, per value: `code = round(clamp((x + add)·mul, cmin, cmax))
/// + shift` (NF4: `mul` only, then the count of level midpoints below), its parameters
/// written into `params` as the scalar encoding writes them.
struct GroupPlan {
    mul: f32,
    add: f32,
    cmin: f32,
    cmax: f32,
    shift: i32,
}

fn group_plan(c: &Codec, (lo, hi): (f32, f32), params: &mut [u8]) -> GroupPlan {
    let (bits, asymmetric) = match c.quant {
        Quant::Int { bits, asymmetric } => (bits, asymmetric),
        _ => (4, false),
    };
    let inverse = |scale: f32| if scale > 0.0 { 1.0 / scale } else { 0.0 };
    if c.quant == Quant::Nf4 {
        let scale = c.write_scalar(hi.max(-lo).max(0.0), params);
        let mul = inverse(scale);
        return GroupPlan {
            mul,
            add: 0.0,
            cmin: 0.0,
            cmax: 0.0,
            shift: 0,
        };
    }
    if asymmetric {
        let levels = ((1u32 << bits) - 1) as f32;
        let half = params.len() / 2;
        let scale = c.write_scalar((hi - lo) / levels, &mut params[..half]);
        let zero = c.write_scalar(lo, &mut params[half..]);
        return GroupPlan {
            mul: inverse(scale),
            add: -zero,
            cmin: 0.0,
            cmax: levels,
            shift: 0,
        };
    }
    let absmax = hi.max(-lo).max(0.0);
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let scale = c.write_scalar(absmax / qmax, params);
    GroupPlan {
        mul: inverse(scale),
        add: 0.0,
        cmin: -qmax,
        cmax: qmax,
        shift: 1i32 << (bits - 1),
    }
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
    let bits = match c.quant {
        Quant::Int { bits, .. } => bits,
        _ => 4,
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
        let GroupPlan {
            mul,
            add,
            cmin,
            cmax,
            shift,
        } = group_plan(c, (lo, hi), params);
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

/// Whether every value of `row` (a multiple of 8 long) is finite.
#[target_feature(enable = "avx2")]
unsafe fn all_finite(row: &[f32]) -> bool {
    let x = row.as_ptr();
    let inf = _mm256_set1_ps(f32::INFINITY);
    let sign = _mm256_set1_epi32(0x7fff_ffff);
    (0..row.len()).step_by(8).all(|i| {
        let a = _mm256_castsi256_ps(_mm256_and_si256(
            _mm256_castps_si256(_mm256_loadu_ps(x.add(i))),
            sign,
        ));
        _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(a, inf)) == 0xff
    })
}

#[target_feature(enable = "avx2")]
unsafe fn encode_row_avx2(c: &Codec, row: &[f32], out: &mut [u8]) -> bool {
    if !all_finite(row) {
        return false;
    }
    let x = row.as_ptr();
    let bits = match c.quant {
        Quant::Int { bits, .. } => bits,
        _ => 4,
    };
    let nf4 = c.quant == Quant::Nf4;
    let mut mids = [_mm256_setzero_ps(); 15];
    for (i, m) in mids.iter_mut().enumerate() {
        *m = _mm256_set1_ps(0.5 * (NF4_LEVELS[i] + NF4_LEVELS[i + 1]));
    }
    let (pb, po) = (c.param_bytes(), c.params_offset());
    let magic = _mm256_set1_ps(12_582_912.0);
    let magic_bits = _mm256_set1_epi32(12_582_912.0f32.to_bits() as i32);
    for g in 0..row.len() / c.group {
        let at = x.add(g * c.group);
        let (lo, hi) = super::extremes(&row[g * c.group..(g + 1) * c.group]);
        let params = &mut out[po + g * pb..po + (g + 1) * pb];
        let plan = group_plan(c, (lo, hi), params);
        let (mul, add) = (_mm256_set1_ps(plan.mul), _mm256_set1_ps(plan.add));
        let (cmin, cmax) = (_mm256_set1_ps(plan.cmin), _mm256_set1_ps(plan.cmax));
        let shift = _mm256_set1_epi32(plan.shift);
        let codes = out.as_mut_ptr().add(g * c.group * bits as usize / 8);
        let code8 = |at: *const f32| {
            let v = _mm256_loadu_ps(at);
            let r = if nf4 {
                let y = _mm256_mul_ps(v, mul);
                // A compare's true lane is −1: subtracting it counts.
                mids.iter().fold(_mm256_setzero_si256(), |n, m| {
                    _mm256_sub_epi32(n, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(y, *m)))
                })
            } else {
                // (x − zero)·inv as the scalar computes it: the subtraction first.
                let y = _mm256_mul_ps(_mm256_add_ps(v, add), mul);
                let y = _mm256_min_ps(_mm256_max_ps(y, cmin), cmax);
                _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(y, magic)), magic_bits)
            };
            _mm256_add_epi32(r, shift)
        };
        for j in 0..c.group / 16 {
            // 16 codes in 0..=255 to bytes: the packs work within 128-bit halves, so the
            // dwords [a0-3, b0-3 | a4-7, b4-7] are put back in order.
            let (a, b) = (code8(at.add(16 * j)), code8(at.add(16 * j + 8)));
            let words = _mm256_packus_epi32(a, b);
            let bytes = _mm256_packus_epi16(words, words);
            let ordered =
                _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let bytes = _mm256_castsi256_si128(ordered);
            if bits == 8 {
                _mm_storeu_si128(codes.add(16 * j) as *mut __m128i, bytes);
            } else {
                // Element 2i in the low nibble of byte i, 2i + 1 in the high one.
                let w = _mm_or_si128(bytes, _mm_srli_epi16::<4>(bytes));
                let packed = _mm_packus_epi16(_mm_and_si128(w, _mm_set1_epi16(0x00ff)), w);
                _mm_storel_epi64(codes.add(8 * j) as *mut __m128i, packed);
            }
        }
    }
    true
}

/// fp8 codes of token groups on AVX2: the scalar [`super::fp8::Fp8::encode`] (bit
/// manipulation, no table) on 8 lanes, each group scaled as `quantize_group` scales it.
#[target_feature(enable = "avx2")]
unsafe fn encode_fp8_avx2(c: &Codec, fmt: super::fp8::Fp8, row: &[f32], out: &mut [u8]) -> bool {
    if !all_finite(row) {
        return false;
    }
    let x = row.as_ptr();
    let (pb, po) = (c.param_bytes(), c.params_offset());
    let (m, min_exp) = (fmt.mantissa_bits(), 1 - fmt.bias());
    // The smallest normal, and 2^(m − min_exp): a subnormal's code is a times it, rounded.
    let smallest = _mm256_set1_ps(f32::from_bits(((min_exp + 127) as u32) << 23));
    let quantum = _mm256_set1_ps(f32::from_bits(((m - min_exp + 127) as u32) << 23));
    let shift = _mm_cvtsi32_si128(23 - m);
    let half_less = _mm256_set1_epi32((1 << (22 - m)) - 1);
    let rebias = _mm256_set1_epi32((127 - fmt.bias()) << m);
    let (max, max_code) = (
        _mm256_set1_ps(fmt.max()),
        _mm256_set1_epi32(fmt.max_code() as i32),
    );
    let (abs, one) = (_mm256_set1_epi32(0x7fff_ffff), _mm256_set1_epi32(1));
    let per_tensor = c.dtype.is_per_tensor();
    for g in 0..row.len() / c.group {
        let at = x.add(g * c.group);
        // x / PER_TENSOR_SCALE, or x · (1 / scale), as the scalar computes it.
        let (div, mul) = if per_tensor {
            (super::PER_TENSOR_SCALE, 1.0)
        } else {
            let (lo, hi) = super::extremes(&row[g * c.group..(g + 1) * c.group]);
            let absmax = hi.max(-lo).max(0.0);
            let params = &mut out[po + g * pb..po + (g + 1) * pb];
            let scale = c.write_scalar(absmax / fmt.max(), params);
            (1.0, if scale > 0.0 { 1.0 / scale } else { 0.0 })
        };
        let (div, mul) = (_mm256_set1_ps(div), _mm256_set1_ps(mul));
        let codes = out.as_mut_ptr().add(g * c.group);
        for j in 0..c.group / 8 {
            let v = _mm256_loadu_ps(at.add(8 * j));
            let v = match per_tensor {
                true => _mm256_div_ps(v, div),
                false => _mm256_mul_ps(v, mul),
            };
            let bits = _mm256_castps_si256(v);
            let sign = _mm256_and_si256(_mm256_srli_epi32::<24>(bits), _mm256_set1_epi32(0x80));
            let magnitude = _mm256_and_si256(bits, abs);
            let a = _mm256_castsi256_ps(magnitude);
            // Subnormal: the quanta, rounded to nearest even (the default rounding mode).
            let sub = _mm256_cvtps_epi32(_mm256_mul_ps(a, quantum));
            // Normal: the mantissa rounded to m bits, ties to even, then rebiased; a carry
            // moves into the exponent.
            let lsb = _mm256_and_si256(_mm256_srl_epi32(magnitude, shift), one);
            let rounded = _mm256_srl_epi32(
                _mm256_add_epi32(_mm256_add_epi32(magnitude, half_less), lsb),
                shift,
            );
            let normal = _mm256_min_epu32(_mm256_sub_epi32(rounded, rebias), max_code);
            let below = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(a, smallest));
            let code = _mm256_blendv_epi8(normal, sub, below);
            let saturated = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(a, max));
            let code = _mm256_blendv_epi8(code, max_code, saturated);
            // NaN (0 · ∞ where a group's scale is subnormal) keeps its sign only.
            let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(a, a));
            let code = _mm256_or_si256(sign, _mm256_andnot_si256(nan, code));
            // 8 codes below 256 to bytes.
            let words = _mm256_packus_epi32(code, code);
            let bytes = _mm256_packus_epi16(words, words);
            let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(bytes));
            let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(bytes));
            std::ptr::write_unaligned(codes.add(8 * j) as *mut i32, lo);
            std::ptr::write_unaligned(codes.add(8 * j + 4) as *mut i32, hi);
        }
    }
    true
}
