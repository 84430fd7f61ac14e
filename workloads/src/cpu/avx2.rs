//! AVX2 + FMA + F16C tile kernels. Rows are converted or dequantized 8 lanes at a time in
//! registers, inside the dot products (never into a copy of the cache). Blocks of rows and
//! query heads share every loaded K/V vector, so GQA reads each KV byte once per tile.
//! Each function's scalar twin is in `scalar.rs`; the tests compare them.

#![allow(unsafe_op_in_unsafe_fn)]

use crate::cache::Segment;
use crate::codec::fp8::Fp8;
use crate::codec::nf4::NF4_LEVELS;
use crate::codec::{Codec, Quant};
use std::arch::x86_64::*;

/// Whether the fused AVX2 kernels handle this segment's format.
pub fn supports(c: &Codec) -> bool {
    let fused = match c.quant {
        Quant::F32 | Quant::F16 | Quant::Bf16 => true,
        Quant::Int { bits, .. } => bits == 8 || bits == 4 || bits == 2,
        Quant::Fp8(_) | Quant::Nf4 => true,
    };
    fused
        && c.unit_tokens == 1
        && c.head_dim.is_multiple_of(8)
        && c.group.is_multiple_of(8)
        && (c.group / 8).is_power_of_two()
        && c.head_dim / c.group <= MAX_GROUPS
}

/// Most scale groups per row the quantized loaders precompute.
const MAX_GROUPS: usize = 16;

/// A storage format seen by the kernels: how to open a row and hand out 8 lanes as f32.
/// One implementation per format, so the kernels are compiled once per format with no
/// per-lane dispatch.
trait Format {
    type Row: Copy;
    /// Open row `r` of `seg` (reads its group parameters once).
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row;
    /// Lanes `8j .. 8j + 8` of the row, as f32.
    unsafe fn load(row: &Self::Row, j: usize) -> __m256;
}

struct F32;
struct F16;
struct Bf16;
/// Integer codes of `BITS` bits, `code × scale + bias` per group.
struct Int<const BITS: u32>;
/// NF4 levels × absmax per group.
struct Nf4;
/// fp8 codes through a 256-entry table × scale per group.
struct Fp8Fmt<const E5M2: bool>;

#[inline(always)]
unsafe fn row_ptr(seg: &Segment, r: usize) -> *const u8 {
    seg.bytes.as_ptr().add(r * seg.codec.unit_bytes)
}

impl Format for F32 {
    type Row = *const f32;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        row_ptr(seg, r) as *const f32
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m256 {
        _mm256_loadu_ps(row.add(8 * j))
    }
}

impl Format for F16 {
    type Row = *const u8;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        row_ptr(seg, r)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(row.add(16 * j) as *const __m128i))
    }
}

impl Format for Bf16 {
    type Row = *const u8;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        row_ptr(seg, r)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m256 {
        let h = _mm_loadu_si128(row.add(16 * j) as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
    }
}

/// A quantized row: its codes and every group's (scale, bias), read once.
#[derive(Clone, Copy)]
struct QuantRow {
    codes: *const u8,
    /// log2 of the 8-lane chunks per group.
    shift: u32,
    scale: [f32; MAX_GROUPS],
    bias: [f32; MAX_GROUPS],
}

#[inline(always)]
unsafe fn read_scalar(at: *const u8, width: usize) -> f32 {
    if width == 2 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (at as *const u16).read_unaligned() as i32,
        )))
    } else {
        (at as *const f32).read_unaligned()
    }
}

#[inline(always)]
unsafe fn quant_row(seg: &Segment, r: usize, bits: u32) -> QuantRow {
    let c = seg.codec;
    let codes = row_ptr(seg, r);
    let width = c.dtype.scale_bytes as usize;
    let asym = c.dtype.zero_point;
    let rec = if asym { 2 * width } else { width };
    let mut row = QuantRow {
        codes,
        shift: (c.group / 8).trailing_zeros(),
        scale: [0.0; MAX_GROUPS],
        bias: [0.0; MAX_GROUPS],
    };
    let params = codes.add(c.row_code_bytes);
    for g in 0..c.head_dim / c.group {
        let at = params.add(g * rec);
        let s = read_scalar(at, width);
        row.scale[g] = s;
        row.bias[g] = if asym {
            read_scalar(at.add(width), width)
        } else if matches!(c.quant, Quant::Int { .. }) {
            -((1u32 << (bits - 1)) as f32) * s
        } else {
            0.0
        };
    }
    row
}

#[inline(always)]
unsafe fn dequant(row: &QuantRow, j: usize, codes: __m256i) -> __m256 {
    let g = j >> row.shift;
    _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(codes),
        _mm256_set1_ps(row.scale[g]),
        _mm256_set1_ps(row.bias[g]),
    )
}

/// The 8 four-bit codes of lanes `8j .. 8j + 8` (low nibble first).
#[inline(always)]
unsafe fn nibbles(codes: *const u8, j: usize) -> __m256i {
    let w = (codes.add(4 * j) as *const u32).read_unaligned() as i32;
    let sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(w), sh),
        _mm256_set1_epi32(15),
    )
}

impl Format for Int<8> {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, 8)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m256 {
        let b = _mm_loadl_epi64(row.codes.add(8 * j) as *const __m128i);
        dequant(row, j, _mm256_cvtepu8_epi32(b))
    }
}

impl Format for Int<4> {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, 4)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m256 {
        dequant(row, j, nibbles(row.codes, j))
    }
}

impl Format for Int<2> {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, 2)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m256 {
        let w = (row.codes.add(2 * j) as *const u16).read_unaligned() as i32;
        let sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        let codes = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32(w), sh),
            _mm256_set1_epi32(3),
        );
        dequant(row, j, codes)
    }
}

impl Format for Nf4 {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, 4)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m256 {
        let v = _mm256_i32gather_ps::<4>(NF4_LEVELS.as_ptr(), nibbles(row.codes, j));
        _mm256_mul_ps(v, _mm256_set1_ps(row.scale[j >> row.shift]))
    }
}

impl<const E5M2: bool> Format for Fp8Fmt<E5M2> {
    type Row = (QuantRow, *const f32);
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        let table = if E5M2 {
            Fp8::E5m2.table()
        } else {
            Fp8::E4m3.table()
        };
        (quant_row(seg, r, 8), table.as_ptr())
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m256 {
        let b = _mm_loadl_epi64(row.0.codes.add(8 * j) as *const __m128i);
        let v = _mm256_i32gather_ps::<4>(row.1, _mm256_cvtepu8_epi32(b));
        _mm256_mul_ps(v, _mm256_set1_ps(row.0.scale[j >> row.0.shift]))
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Scores of `R` rows against `HB` heads: `R × HB` independent FMA chains.
#[inline(always)]
unsafe fn scores_block<F: Format, const R: usize, const HB: usize>(
    seg: &Segment,
    r0: usize,
    q: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    // Plain loops, not `array::from_fn`: its closures would not inherit the target
    // features, and every load would become a call.
    let first = F::row(seg, r0);
    let mut rows = [first; R];
    for (i, row) in rows.iter_mut().enumerate().skip(1) {
        *row = F::row(seg, r0 + i);
    }
    let mut acc = [[_mm256_setzero_ps(); R]; HB];
    for j in 0..d / 8 {
        let mut kv = [_mm256_setzero_ps(); R];
        for (k, row) in kv.iter_mut().zip(&rows) {
            *k = F::load(row, j);
        }
        for (h, acc_h) in acc.iter_mut().enumerate() {
            let qv = _mm256_loadu_ps(q.add(h * d + 8 * j));
            for i in 0..R {
                acc_h[i] = _mm256_fmadd_ps(qv, kv[i], acc_h[i]);
            }
        }
    }
    for (h, acc_h) in acc.iter().enumerate() {
        for (i, a) in acc_h.iter().enumerate() {
            *out.add(h * stride + i) = hsum(*a);
        }
    }
}

/// AVX2 twin of [`super::scalar::scores`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C, and [`supports`] must hold for `seg.codec`.
pub unsafe fn scores(
    seg: &Segment,
    row0: usize,
    n: usize,
    q: &[f32],
    heads: usize,
    out: &mut [f32],
    stride: usize,
) {
    match seg.codec.quant {
        Quant::F32 => scores_fmt::<F32>(seg, row0, n, q, heads, out, stride),
        Quant::F16 => scores_fmt::<F16>(seg, row0, n, q, heads, out, stride),
        Quant::Bf16 => scores_fmt::<Bf16>(seg, row0, n, q, heads, out, stride),
        Quant::Int { bits: 8, .. } => scores_fmt::<Int<8>>(seg, row0, n, q, heads, out, stride),
        Quant::Int { bits: 4, .. } => scores_fmt::<Int<4>>(seg, row0, n, q, heads, out, stride),
        Quant::Int { .. } => scores_fmt::<Int<2>>(seg, row0, n, q, heads, out, stride),
        Quant::Nf4 => scores_fmt::<Nf4>(seg, row0, n, q, heads, out, stride),
        Quant::Fp8(Fp8::E4m3) => scores_fmt::<Fp8Fmt<false>>(seg, row0, n, q, heads, out, stride),
        Quant::Fp8(Fp8::E5m2) => scores_fmt::<Fp8Fmt<true>>(seg, row0, n, q, heads, out, stride),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_fmt<F: Format>(
    seg: &Segment,
    row0: usize,
    n: usize,
    q: &[f32],
    heads: usize,
    out: &mut [f32],
    stride: usize,
) {
    let d = seg.codec.head_dim;
    assert!(q.len() >= heads * d && out.len() >= (heads - 1) * stride + n);
    let (qp, op) = (q.as_ptr(), out.as_mut_ptr());
    let mut h = 0;
    while h < heads {
        let hb = if heads - h >= 2 { 2 } else { 1 };
        let mut i = 0;
        while i < n {
            let left = n - i;
            let (qh, oh) = (qp.add(h * d), op.add(h * stride + i));
            match (hb, left >= 4) {
                (2, true) => scores_block::<F, 4, 2>(seg, row0 + i, qh, d, oh, stride),
                (1, true) => scores_block::<F, 4, 1>(seg, row0 + i, qh, d, oh, stride),
                (2, false) => scores_block::<F, 1, 2>(seg, row0 + i, qh, d, oh, stride),
                _ => scores_block::<F, 1, 1>(seg, row0 + i, qh, d, oh, stride),
            }
            i += if left >= 4 { 4 } else { 1 };
        }
        h += hb;
    }
}

/// `HB` heads × `J` chunks of accumulators over all `n` rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_block<F: Format, const HB: usize, const J: usize>(
    seg: &Segment,
    row0: usize,
    n: usize,
    p: *const f32,
    stride: usize,
    acc: *mut f32,
    d: usize,
    j0: usize,
) {
    let mut a = [[_mm256_setzero_ps(); J]; HB];
    for (h, ah) in a.iter_mut().enumerate() {
        for (jj, v) in ah.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(acc.add(h * d + 8 * (j0 + jj)));
        }
    }
    for i in 0..n {
        let row = F::row(seg, row0 + i);
        let mut vv = [_mm256_setzero_ps(); J];
        for (jj, v) in vv.iter_mut().enumerate() {
            *v = F::load(&row, j0 + jj);
        }
        for (h, ah) in a.iter_mut().enumerate() {
            let w = _mm256_set1_ps(*p.add(h * stride + i));
            for jj in 0..J {
                ah[jj] = _mm256_fmadd_ps(w, vv[jj], ah[jj]);
            }
        }
    }
    for (h, ah) in a.iter().enumerate() {
        for (jj, v) in ah.iter().enumerate() {
            _mm256_storeu_ps(acc.add(h * d + 8 * (j0 + jj)), *v);
        }
    }
}

/// AVX2 twin of [`super::scalar::accumulate`].
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C, and [`supports`] must hold for `seg.codec`.
pub unsafe fn accumulate(
    seg: &Segment,
    row0: usize,
    n: usize,
    p: &[f32],
    heads: usize,
    stride: usize,
    acc: &mut [f32],
) {
    match seg.codec.quant {
        Quant::F32 => accumulate_fmt::<F32>(seg, row0, n, p, heads, stride, acc),
        Quant::F16 => accumulate_fmt::<F16>(seg, row0, n, p, heads, stride, acc),
        Quant::Bf16 => accumulate_fmt::<Bf16>(seg, row0, n, p, heads, stride, acc),
        Quant::Int { bits: 8, .. } => accumulate_fmt::<Int<8>>(seg, row0, n, p, heads, stride, acc),
        Quant::Int { bits: 4, .. } => accumulate_fmt::<Int<4>>(seg, row0, n, p, heads, stride, acc),
        Quant::Int { .. } => accumulate_fmt::<Int<2>>(seg, row0, n, p, heads, stride, acc),
        Quant::Nf4 => accumulate_fmt::<Nf4>(seg, row0, n, p, heads, stride, acc),
        Quant::Fp8(Fp8::E4m3) => {
            accumulate_fmt::<Fp8Fmt<false>>(seg, row0, n, p, heads, stride, acc)
        }
        Quant::Fp8(Fp8::E5m2) => {
            accumulate_fmt::<Fp8Fmt<true>>(seg, row0, n, p, heads, stride, acc)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate_fmt<F: Format>(
    seg: &Segment,
    row0: usize,
    n: usize,
    p: &[f32],
    heads: usize,
    stride: usize,
    acc: &mut [f32],
) {
    let d = seg.codec.head_dim;
    assert!(acc.len() >= heads * d && p.len() >= (heads - 1) * stride + n);
    let chunks = d / 8;
    let (pp, ap) = (p.as_ptr(), acc.as_mut_ptr());
    let mut h = 0;
    while h < heads {
        let hb = (heads - h).min(4);
        let (ph, ah) = (pp.add(h * stride), ap.add(h * d));
        let mut j = 0;
        while j < chunks {
            let left = chunks - j;
            match hb {
                4 if left >= 2 => {
                    accumulate_block::<F, 4, 2>(seg, row0, n, ph, stride, ah, d, j);
                    j += 2
                }
                2 | 3 if left >= 4 => {
                    accumulate_block::<F, 2, 4>(seg, row0, n, ph, stride, ah, d, j);
                    j += 4
                }
                1 if left >= 8 => {
                    accumulate_block::<F, 1, 8>(seg, row0, n, ph, stride, ah, d, j);
                    j += 8
                }
                1 if left >= 4 => {
                    accumulate_block::<F, 1, 4>(seg, row0, n, ph, stride, ah, d, j);
                    j += 4
                }
                4 => {
                    accumulate_block::<F, 4, 1>(seg, row0, n, ph, stride, ah, d, j);
                    j += 1
                }
                2 | 3 => {
                    accumulate_block::<F, 2, 1>(seg, row0, n, ph, stride, ah, d, j);
                    j += 1
                }
                _ => {
                    accumulate_block::<F, 1, 1>(seg, row0, n, ph, stride, ah, d, j);
                    j += 1
                }
            }
        }
        h += if hb == 3 { 2 } else { hb };
    }
}
