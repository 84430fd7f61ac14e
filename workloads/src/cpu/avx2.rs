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
    fused && c.unit_tokens == 1 && c.head_dim.is_multiple_of(8) && c.group.is_multiple_of(8)
}

/// One row of a segment, ready to hand out 8 dequantized lanes at a time.
#[derive(Clone, Copy)]
struct Row {
    ptr: *const u8,
    /// Group parameter records (scale [, zero]) after the codes.
    params: *const u8,
    quant: Quant,
    chunks_per_group: usize,
    scale_bytes: usize,
    asymmetric: bool,
}

impl Row {
    #[inline(always)]
    unsafe fn new(seg: &Segment, r: usize) -> Row {
        let c = seg.codec;
        let ptr = seg.bytes.as_ptr().add(r * c.unit_bytes);
        let asymmetric = matches!(
            c.quant,
            Quant::Int {
                asymmetric: true,
                ..
            }
        );
        Row {
            ptr,
            params: ptr.add(c.row_code_bytes),
            quant: c.quant,
            chunks_per_group: c.group / 8,
            scale_bytes: c.dtype.scale_bytes as usize,
            asymmetric,
        }
    }

    #[inline(always)]
    unsafe fn scalar(&self, at: *const u8) -> f32 {
        if self.scale_bytes == 2 {
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                (at as *const u16).read_unaligned() as i32,
            )))
        } else {
            (at as *const f32).read_unaligned()
        }
    }

    /// (scale, bias) broadcast for group `g`: a code decodes to `code × scale + bias`.
    #[inline(always)]
    unsafe fn params(&self, g: usize, bits: u32) -> (__m256, __m256) {
        let rec = if self.asymmetric {
            2 * self.scale_bytes
        } else {
            self.scale_bytes
        };
        let at = self.params.add(g * rec);
        let s = self.scalar(at);
        let b = if self.asymmetric {
            self.scalar(at.add(self.scale_bytes))
        } else {
            -((1u32 << (bits - 1)) as f32) * s
        };
        (_mm256_set1_ps(s), _mm256_set1_ps(b))
    }

    /// Lanes `8j .. 8j + 8` of the row, as f32.
    #[inline(always)]
    unsafe fn load(&self, j: usize) -> __m256 {
        let g = j / self.chunks_per_group;
        match self.quant {
            Quant::F32 => _mm256_loadu_ps((self.ptr as *const f32).add(8 * j)),
            Quant::F16 => _mm256_cvtph_ps(_mm_loadu_si128(self.ptr.add(16 * j) as *const __m128i)),
            Quant::Bf16 => {
                let h = _mm_loadu_si128(self.ptr.add(16 * j) as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
            }
            Quant::Int { bits: 8, .. } => {
                let b = _mm_loadl_epi64(self.ptr.add(8 * j) as *const __m128i);
                let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
                let (s, b) = self.params(g, 8);
                _mm256_fmadd_ps(v, s, b)
            }
            Quant::Int { bits: 4, .. } => {
                let v = _mm256_cvtepi32_ps(self.nibbles(j));
                let (s, b) = self.params(g, 4);
                _mm256_fmadd_ps(v, s, b)
            }
            Quant::Int { .. } => {
                let w = (self.ptr.add(2 * j) as *const u16).read_unaligned() as i32;
                let sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
                let codes = _mm256_and_si256(
                    _mm256_srlv_epi32(_mm256_set1_epi32(w), sh),
                    _mm256_set1_epi32(3),
                );
                let v = _mm256_cvtepi32_ps(codes);
                let (s, b) = self.params(g, 2);
                _mm256_fmadd_ps(v, s, b)
            }
            Quant::Nf4 => {
                let v = _mm256_i32gather_ps::<4>(NF4_LEVELS.as_ptr(), self.nibbles(j));
                _mm256_mul_ps(v, self.params(g, 8).0)
            }
            Quant::Fp8(fmt) => {
                let table = match fmt {
                    Fp8::E4m3 => Fp8::E4m3.table(),
                    Fp8::E5m2 => Fp8::E5m2.table(),
                };
                let b = _mm_loadl_epi64(self.ptr.add(8 * j) as *const __m128i);
                let v = _mm256_i32gather_ps::<4>(table.as_ptr(), _mm256_cvtepu8_epi32(b));
                _mm256_mul_ps(v, self.params(g, 8).0)
            }
        }
    }

    /// The 8 four-bit codes of lanes `8j .. 8j + 8` (low nibble first).
    #[inline(always)]
    unsafe fn nibbles(&self, j: usize) -> __m256i {
        let w = (self.ptr.add(4 * j) as *const u32).read_unaligned() as i32;
        let sh = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
        _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32(w), sh),
            _mm256_set1_epi32(15),
        )
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
unsafe fn scores_block<const R: usize, const HB: usize>(
    seg: &Segment,
    r0: usize,
    q: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    let rows: [Row; R] = std::array::from_fn(|i| Row::new(seg, r0 + i));
    let mut acc = [[_mm256_setzero_ps(); R]; HB];
    for j in 0..d / 8 {
        let kv: [__m256; R] = std::array::from_fn(|i| rows[i].load(j));
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
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scores(
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
                (2, true) => scores_block::<4, 2>(seg, row0 + i, qh, d, oh, stride),
                (1, true) => scores_block::<4, 1>(seg, row0 + i, qh, d, oh, stride),
                (2, false) => scores_block::<1, 2>(seg, row0 + i, qh, d, oh, stride),
                _ => scores_block::<1, 1>(seg, row0 + i, qh, d, oh, stride),
            }
            i += if left >= 4 { 4 } else { 1 };
        }
        h += hb;
    }
}

/// `HB` heads × `J` chunks of accumulators over all `n` rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_block<const HB: usize, const J: usize>(
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
        let row = Row::new(seg, row0 + i);
        let vv: [__m256; J] = std::array::from_fn(|jj| row.load(j0 + jj));
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
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn accumulate(
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
                    accumulate_block::<4, 2>(seg, row0, n, ph, stride, ah, d, j);
                    j += 2
                }
                2 | 3 if left >= 4 => {
                    accumulate_block::<2, 4>(seg, row0, n, ph, stride, ah, d, j);
                    j += 4
                }
                1 if left >= 8 => {
                    accumulate_block::<1, 8>(seg, row0, n, ph, stride, ah, d, j);
                    j += 8
                }
                1 if left >= 4 => {
                    accumulate_block::<1, 4>(seg, row0, n, ph, stride, ah, d, j);
                    j += 4
                }
                4 => {
                    accumulate_block::<4, 1>(seg, row0, n, ph, stride, ah, d, j);
                    j += 1
                }
                2 | 3 => {
                    accumulate_block::<2, 1>(seg, row0, n, ph, stride, ah, d, j);
                    j += 1
                }
                _ => {
                    accumulate_block::<1, 1>(seg, row0, n, ph, stride, ah, d, j);
                    j += 1
                }
            }
        }
        h += if hb == 3 { 2 } else { hb };
    }
}
