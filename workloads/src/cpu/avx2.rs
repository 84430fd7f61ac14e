//! AVX2 + FMA + F16C tile kernels (for CPUs without AVX-512; see `avx512.rs`). Rows are converted or dequantized 8 lanes at a time in
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
/// fp8 codes (decoded by bit manipulation) × scale per group.
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

/// A group's stored scale or bias; a per-tensor row (`width` 0) stores none and uses the
/// codec's fixed per-tensor scale.
#[inline(always)]
unsafe fn read_scalar(at: *const u8, width: usize) -> f32 {
    if width == 0 {
        crate::codec::PER_TENSOR_SCALE
    } else if width == 2 {
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

/// Integer codes read as `code − 2^(BITS−1)` (centred, so a symmetric group's bias is 0 and
/// the dot product does not cancel a large offset), without their group's scale.
trait Codes {
    /// 8 centred codes of lanes `8j .. 8j + 8`, as f32.
    unsafe fn raw(codes: *const u8, j: usize) -> __m256;
}

impl Codes for Int<8> {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m256 {
        // u8 ^ 0x80 reinterpreted as i8 is code − 128.
        let b = _mm_xor_si128(
            _mm_loadl_epi64(codes.add(8 * j) as *const __m128i),
            _mm_set1_epi8(-128),
        );
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))
    }
}

impl Codes for Int<4> {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_sub_epi32(nibbles(codes, j), _mm256_set1_epi32(8)))
    }
}

impl Codes for Int<2> {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m256 {
        let w = (codes.add(2 * j) as *const u16).read_unaligned() as i32;
        let sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        let c = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32(w), sh),
            _mm256_set1_epi32(3),
        );
        _mm256_cvtepi32_ps(_mm256_sub_epi32(c, _mm256_set1_epi32(2)))
    }
}

/// Where an integer segment keeps its group parameters, and how to read them.
#[derive(Clone, Copy)]
struct IntLayout {
    /// Bytes from a row's first code to its first parameter record.
    params: usize,
    /// Bytes of one group's record.
    rec: usize,
    /// Bytes of one scalar (2 = f16, 4 = f32).
    width: usize,
    asym: bool,
    /// 2^(bits−1): the centre the codes are read around.
    half: f32,
    /// Power of two folded into the scale (fp8 e4m3 codes are read as 2^-8 their value).
    mult: f32,
}

impl IntLayout {
    fn new(seg: &Segment) -> Self {
        let c = seg.codec;
        let width = c.dtype.scale_bytes as usize;
        let (asym, bits) = match c.quant {
            Quant::Int { bits, asymmetric } => (asymmetric, bits),
            _ => (false, 8),
        };
        IntLayout {
            params: c.row_code_bytes,
            rec: if asym { 2 * width } else { width },
            width,
            asym,
            half: (1u32 << (bits - 1)) as f32,
            mult: if c.quant == Quant::Fp8(Fp8::E4m3) {
                256.0
            } else {
                1.0
            },
        }
    }

    /// (scale, bias) of group `g` of the row at `codes`, for centred codes: the stored
    /// bias plus half × scale (exactly 0 for symmetric groups).
    #[inline(always)]
    unsafe fn params(&self, codes: *const u8, g: usize) -> (f32, f32) {
        let at = codes.add(self.params + g * self.rec);
        let s = read_scalar(at, self.width);
        if self.asym {
            (
                s * self.mult,
                read_scalar(at.add(self.width), self.width) + self.half * s,
            )
        } else {
            (s * self.mult, 0.0)
        }
    }
}

/// Scores of `R` rows against `HB` heads for integer codes: each group's dot product with
/// the raw codes, times the group's scale once, plus bias × Σq of the group.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_block_int<C: Codes, const R: usize, const HB: usize>(
    seg: &Segment,
    lay: &IntLayout,
    r0: usize,
    q: *const f32,
    qsum: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    let c = seg.codec;
    let (cpg, ng) = (c.group / 8, d / c.group);
    let mut rows = [std::ptr::null::<u8>(); R];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = row_ptr(seg, r0 + i);
    }
    let mut tot = [[_mm256_setzero_ps(); R]; HB];
    let mut bias = [[0.0f32; R]; HB];
    for g in 0..ng {
        let mut ga = [[_mm256_setzero_ps(); R]; HB];
        for j in g * cpg..(g + 1) * cpg {
            let mut kv = [_mm256_setzero_ps(); R];
            for (k, row) in kv.iter_mut().zip(&rows) {
                *k = C::raw(*row, j);
            }
            for (h, ga_h) in ga.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(q.add(h * d + 8 * j));
                for i in 0..R {
                    ga_h[i] = _mm256_fmadd_ps(qv, kv[i], ga_h[i]);
                }
            }
        }
        for (i, row) in rows.iter().enumerate() {
            let (s, b) = lay.params(*row, g);
            let sv = _mm256_set1_ps(s);
            for h in 0..HB {
                tot[h][i] = _mm256_fmadd_ps(ga[h][i], sv, tot[h][i]);
                bias[h][i] += b * *qsum.add(h * ng + g);
            }
        }
    }
    for h in 0..HB {
        for i in 0..R {
            *out.add(h * stride + i) = hsum(tot[h][i]) + bias[h][i];
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_int<C: Codes>(
    seg: &Segment,
    row0: usize,
    n: usize,
    q: &[f32],
    heads: usize,
    out: &mut [f32],
    stride: usize,
) {
    let c = seg.codec;
    let (d, ng) = (c.head_dim, c.head_dim / c.group);
    assert!(q.len() >= heads * d && out.len() >= (heads - 1) * stride + n);
    let lay = IntLayout::new(seg);
    // Σq of each (head, group), for the bias term.
    let mut buf = [0.0f32; 256];
    let mut heap = Vec::new();
    let qsum: &mut [f32] = if heads * ng <= buf.len() {
        &mut buf[..heads * ng]
    } else {
        heap.resize(heads * ng, 0.0);
        &mut heap
    };
    for (i, s) in qsum.iter_mut().enumerate() {
        *s = q[i * c.group..(i + 1) * c.group].iter().sum();
    }
    let (qp, op, sp) = (q.as_ptr(), out.as_mut_ptr(), qsum.as_ptr());
    let mut h = 0;
    while h < heads {
        let hb = if heads - h >= 2 { 2 } else { 1 };
        let (qh, sh) = (qp.add(h * d), sp.add(h * ng));
        let mut i = 0;
        while i < n {
            let left = n - i;
            let oh = op.add(h * stride + i);
            let r = row0 + i;
            let step = match (hb, left) {
                (2, 2..) => {
                    scores_block_int::<C, 2, 2>(seg, &lay, r, qh, sh, d, oh, stride);
                    2
                }
                (1, 4..) => {
                    scores_block_int::<C, 4, 1>(seg, &lay, r, qh, sh, d, oh, stride);
                    4
                }
                (2, _) => {
                    scores_block_int::<C, 1, 2>(seg, &lay, r, qh, sh, d, oh, stride);
                    1
                }
                _ => {
                    scores_block_int::<C, 1, 1>(seg, &lay, r, qh, sh, d, oh, stride);
                    1
                }
            };
            i += step;
        }
        h += hb;
    }
}

/// `HB` heads × `J` chunks of accumulators for integer codes, spanning `GB` whole scale
/// groups (`GB = 1`: the `J` chunks lie inside one group). Each row's scale is folded into
/// the weight once per group (`p × scale`) and its bias is summed as a scalar and added
/// once at the end.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // gb indexes fixed register arrays
unsafe fn accumulate_block_int<C: Codes, const HB: usize, const J: usize, const GB: usize>(
    pieces: &[Piece],
    lay: &IntLayout,
    p: *const f32,
    stride: usize,
    acc: *mut f32,
    d: usize,
    j0: usize,
) {
    let g0 = j0 * 8 / pieces[0].0.codec.group;
    let per = J / GB;
    let mut a = [[_mm256_setzero_ps(); J]; HB];
    let mut bias = [[0.0f32; GB]; HB];
    let mut i = 0;
    for &(seg, r0, m) in pieces {
        for r in r0..r0 + m {
            let row = row_ptr(seg, r);
            let mut vv = [_mm256_setzero_ps(); J];
            for (jj, v) in vv.iter_mut().enumerate() {
                *v = C::raw(row, j0 + jj);
            }
            for gb in 0..GB {
                let (s, b) = lay.params(row, g0 + gb);
                for (h, ah) in a.iter_mut().enumerate() {
                    let w = *p.add(h * stride + i);
                    bias[h][gb] += w * b;
                    let ws = _mm256_set1_ps(w * s);
                    for jj in gb * per..(gb + 1) * per {
                        ah[jj] = _mm256_fmadd_ps(ws, vv[jj], ah[jj]);
                    }
                }
            }
            i += 1;
        }
    }
    for (h, ah) in a.iter().enumerate() {
        for (jj, v) in ah.iter().enumerate() {
            let bv = _mm256_set1_ps(bias[h][jj / per]);
            let at = acc.add(h * d + 8 * (j0 + jj));
            _mm256_storeu_ps(
                at,
                _mm256_add_ps(_mm256_loadu_ps(at), _mm256_add_ps(*v, bv)),
            );
        }
    }
}

/// One [`accumulate_block_int`] call; returns the chunks it covered.
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn blk<C: Codes, const HB: usize, const J: usize, const GB: usize>(
    (pieces, lay, p, stride, acc, d, j0): (
        &[Piece],
        &IntLayout,
        *const f32,
        usize,
        *mut f32,
        usize,
        usize,
    ),
) -> usize {
    accumulate_block_int::<C, HB, J, GB>(pieces, lay, p, stride, acc, d, j0);
    J
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate_int<C: Codes>(
    pieces: &[Piece],
    p: &[f32],
    heads: usize,
    stride: usize,
    acc: &mut [f32],
) {
    let seg = pieces[0].0;
    let d = seg.codec.head_dim;
    let n = check_pieces(pieces);
    assert!(acc.len() >= heads * d && p.len() >= (heads - 1) * stride + n);
    let lay = IntLayout::new(seg);
    // Chunks per block never cross a scale group (`group / 8` is a power of two).
    let cpg = seg.codec.group / 8;
    let chunks = d / 8;
    let (pp, ap) = (p.as_ptr(), acc.as_mut_ptr());
    let mut h = 0;
    while h < heads {
        let hb = (heads - h).min(4);
        let (ph, ah) = (pp.add(h * stride), ap.add(h * d));
        let mut j = 0;
        while j < chunks {
            let left = chunks - j;
            let args = (pieces, &lay, ph, stride, ah, d, j);
            // Blocks of J chunks start on a group boundary (or inside one group), so
            // GB = J / cpg whole groups when J > cpg.
            let step = match (hb, left, cpg) {
                (4, 2.., 2..) => blk::<C, 4, 2, 1>(args),
                (4, 2.., 1) => blk::<C, 4, 2, 2>(args),
                (2 | 3, 4.., 4..) => blk::<C, 2, 4, 1>(args),
                (2 | 3, 4.., 2) => blk::<C, 2, 4, 2>(args),
                (2 | 3, 4.., 1) => blk::<C, 2, 4, 4>(args),
                (1, 8.., 8..) => blk::<C, 1, 8, 1>(args),
                (1, 8.., 4) => blk::<C, 1, 8, 2>(args),
                (1, 8.., 2) => blk::<C, 1, 8, 4>(args),
                (1, 8.., 1) => blk::<C, 1, 8, 8>(args),
                (4, _, _) => blk::<C, 4, 1, 1>(args),
                (2 | 3, _, _) => blk::<C, 2, 1, 1>(args),
                _ => blk::<C, 1, 1, 1>(args),
            };
            j += step;
        }
        h += if hb == 3 { 2 } else { hb };
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

impl<const E5M2: bool> Codes for Fp8Fmt<E5M2> {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m256 {
        // Bit manipulation, no table: e5m2 is the top byte of an f16; e4m3 shifted left by
        // 7 is an f16 of 2^-8 its value once the sign (now on bit 14) is carried to bit 15
        // (the 2^8 is folded into the scale, see `IntLayout::mult`).
        let x = _mm_cvtepu8_epi16(_mm_loadl_epi64(codes.add(8 * j) as *const __m128i));
        let h = if E5M2 {
            _mm_slli_epi16(x, 8)
        } else {
            let a = _mm_slli_epi16(x, 7);
            _mm_add_epi16(a, _mm_and_si128(a, _mm_set1_epi16(0x4000)))
        };
        _mm256_cvtph_ps(h)
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
        Quant::Int { bits: 8, .. } => scores_int::<Int<8>>(seg, row0, n, q, heads, out, stride),
        Quant::Int { bits: 4, .. } => scores_int::<Int<4>>(seg, row0, n, q, heads, out, stride),
        Quant::Int { .. } => scores_int::<Int<2>>(seg, row0, n, q, heads, out, stride),
        Quant::Nf4 => scores_fmt::<Nf4>(seg, row0, n, q, heads, out, stride),
        Quant::Fp8(Fp8::E4m3) => scores_int::<Fp8Fmt<false>>(seg, row0, n, q, heads, out, stride),
        Quant::Fp8(Fp8::E5m2) => scores_int::<Fp8Fmt<true>>(seg, row0, n, q, heads, out, stride),
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
    pieces: &[Piece],
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
    let mut i = 0;
    for &(seg, r0, m) in pieces {
        for r in r0..r0 + m {
            let row = F::row(seg, r);
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
            i += 1;
        }
    }
    for (h, ah) in a.iter().enumerate() {
        for (jj, v) in ah.iter().enumerate() {
            _mm256_storeu_ps(acc.add(h * d + 8 * (j0 + jj)), *v);
        }
    }
}

/// Rows `row .. row + n` of a segment: one piece of a tile (paged tiles span blocks).
pub type Piece<'a> = (&'a Segment<'a>, usize, usize);

/// Total rows of `pieces`, after checking that they share one format and hold their rows.
fn check_pieces(pieces: &[Piece]) -> usize {
    let c = pieces[0].0.codec;
    pieces
        .iter()
        .map(|&(seg, r0, n)| {
            assert!(seg.codec.same(c) && (r0 + n) * c.unit_bytes <= seg.bytes.len());
            n
        })
        .sum()
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
    accumulate_pieces(&[(seg, row0, n)], p, heads, stride, acc)
}

/// [`accumulate`] over consecutive pieces (weights `p[h·stride + i]` numbered across them),
/// holding the accumulators in registers across piece boundaries.
///
/// # Safety
/// As [`accumulate`]; every piece has the first one's format.
pub unsafe fn accumulate_pieces(
    pieces: &[Piece],
    p: &[f32],
    heads: usize,
    stride: usize,
    acc: &mut [f32],
) {
    match pieces[0].0.codec.quant {
        Quant::F32 => accumulate_fmt::<F32>(pieces, p, heads, stride, acc),
        Quant::F16 => accumulate_fmt::<F16>(pieces, p, heads, stride, acc),
        Quant::Bf16 => accumulate_fmt::<Bf16>(pieces, p, heads, stride, acc),
        Quant::Int { bits: 8, .. } => accumulate_int::<Int<8>>(pieces, p, heads, stride, acc),
        Quant::Int { bits: 4, .. } => accumulate_int::<Int<4>>(pieces, p, heads, stride, acc),
        Quant::Int { .. } => accumulate_int::<Int<2>>(pieces, p, heads, stride, acc),
        Quant::Nf4 => accumulate_fmt::<Nf4>(pieces, p, heads, stride, acc),
        Quant::Fp8(Fp8::E4m3) => accumulate_int::<Fp8Fmt<false>>(pieces, p, heads, stride, acc),
        Quant::Fp8(Fp8::E5m2) => accumulate_int::<Fp8Fmt<true>>(pieces, p, heads, stride, acc),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate_fmt<F: Format>(
    pieces: &[Piece],
    p: &[f32],
    heads: usize,
    stride: usize,
    acc: &mut [f32],
) {
    let d = pieces[0].0.codec.head_dim;
    let n = check_pieces(pieces);
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
                    accumulate_block::<F, 4, 2>(pieces, ph, stride, ah, d, j);
                    j += 2
                }
                2 | 3 if left >= 4 => {
                    accumulate_block::<F, 2, 4>(pieces, ph, stride, ah, d, j);
                    j += 4
                }
                1 if left >= 8 => {
                    accumulate_block::<F, 1, 8>(pieces, ph, stride, ah, d, j);
                    j += 8
                }
                1 if left >= 4 => {
                    accumulate_block::<F, 1, 4>(pieces, ph, stride, ah, d, j);
                    j += 4
                }
                4 => {
                    accumulate_block::<F, 4, 1>(pieces, ph, stride, ah, d, j);
                    j += 1
                }
                2 | 3 => {
                    accumulate_block::<F, 2, 1>(pieces, ph, stride, ah, d, j);
                    j += 1
                }
                _ => {
                    accumulate_block::<F, 1, 1>(pieces, ph, stride, ah, d, j);
                    j += 1
                }
            }
        }
        h += if hb == 3 { 2 } else { hb };
    }
}
