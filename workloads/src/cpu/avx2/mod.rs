//! AVX2 + FMA + F16C tile kernels (for CPUs without AVX-512; see `avx512.rs`). Rows are
//! converted or dequantized in registers, inside the dot products (never into a copy of the
//! cache): float rows 8 lanes at a time, codes 16 channels at a time ([`Codes`]). Blocks of
//! rows and query heads share every loaded K/V vector, so GQA reads each KV byte once per
//! tile.
//! Each function's scalar twin is in `scalar.rs`; the tests compare them.

#![allow(unsafe_op_in_unsafe_fn)]

use crate::cache::Segment;
use crate::codec::fp8::Fp8;
use crate::codec::nf4::NF4_LEVELS;
use crate::codec::{Codec, Quant};
use std::arch::x86_64::*;

mod wide;
pub use wide::{accumulate_wide, decode_tile, scores_wide, softmax_row, softmax_wide};

/// Whether the fused AVX2 kernels handle this segment's format.
pub fn supports(c: &Codec) -> bool {
    let codes = match c.quant {
        Quant::F32 | Quant::F16 | Quant::Bf16 => false,
        Quant::Int { bits, .. } if !matches!(bits, 8 | 4 | 2) => return false,
        Quant::Int { .. } | Quant::Fp8(_) | Quant::Nf4 => true,
    };
    // Codes are read a pair of 8 lanes at a time, and whole pairs make up a scale group.
    let unit = if codes { PAIR } else { 8 };
    c.unit_tokens == 1
        && c.head_dim.is_multiple_of(unit)
        && (!codes
            || (c.group.is_multiple_of(PAIR)
                && (c.group / PAIR).is_power_of_two()
                && c.head_dim / c.group <= MAX_GROUPS))
}

/// A float storage format seen by the kernels: how to open a row and hand out 8 lanes as
/// f32.
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

/// Channels a code pair covers: the unit of the code kernels.
const PAIR: usize = 16;

/// Codes read 16 channels at a time (a pair of 8-lane vectors), without their group's scale.
/// Four-bit codes come as the even channels then the odd ones: one widening load gives 8
/// bytes, whose low nibbles are the even channels and high nibbles the odd ones, where
/// unpacking them into channel order would cost a shift and a mask per 8 lanes more.
trait Codes {
    /// What a lane reads less than the stored code (so a symmetric group of centred codes
    /// needs no bias).
    const CENTRE: f32;
    /// Whether a pair is the even channels then the odd ones, rather than two runs of 8.
    const SPLIT: bool;
    /// Power of two a lane reads less than the code means, taken into the scale (fp8 e4m3
    /// codes are read as 2^-8 their value).
    const MULT: f32 = 1.0;
    /// Channels `16p .. 16p + 16` of the row at `codes`.
    unsafe fn pair(codes: *const u8, p: usize) -> [__m256; 2];
}

/// The 16 four-bit codes of pair `p` as 32-bit lanes: even channels, odd channels.
#[inline(always)]
unsafe fn nibble_pair(codes: *const u8, p: usize) -> [__m256i; 2] {
    let bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(codes.add(8 * p) as *const __m128i));
    [
        _mm256_and_si256(bytes, _mm256_set1_epi32(15)),
        _mm256_srli_epi32(bytes, 4),
    ]
}

impl Codes for Int<8> {
    // Centred: read as stored, Σq · 128 would dwarf the score it is cancelled from.
    const CENTRE: f32 = 128.0;
    const SPLIT: bool = false;
    #[inline(always)]
    unsafe fn pair(codes: *const u8, p: usize) -> [__m256; 2] {
        // u8 ^ 0x80 reinterpreted as i8 is code − 128.
        let b = _mm_xor_si128(
            _mm_loadu_si128(codes.add(PAIR * p) as *const __m128i),
            _mm_set1_epi8(-128),
        );
        [
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)),
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(b, b))),
        ]
    }
}

impl Codes for Int<4> {
    // Read as stored (0..15): the group's bias takes the offset, one FMA a row.
    const CENTRE: f32 = 0.0;
    const SPLIT: bool = true;
    #[inline(always)]
    unsafe fn pair(codes: *const u8, p: usize) -> [__m256; 2] {
        let [even, odd] = nibble_pair(codes, p);
        [_mm256_cvtepi32_ps(even), _mm256_cvtepi32_ps(odd)]
    }
}

impl Codes for Int<2> {
    const CENTRE: f32 = 2.0;
    const SPLIT: bool = false;
    #[inline(always)]
    unsafe fn pair(codes: *const u8, p: usize) -> [__m256; 2] {
        [int2_eight(codes, 2 * p), int2_eight(codes, 2 * p + 1)]
    }
}

/// The 8 two-bit codes of channels `8j .. 8j + 8`, less 2.
#[inline(always)]
unsafe fn int2_eight(codes: *const u8, j: usize) -> __m256 {
    let w = (codes.add(2 * j) as *const u16).read_unaligned() as i32;
    let sh = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let c = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(w), sh),
        _mm256_set1_epi32(3),
    );
    _mm256_cvtepi32_ps(_mm256_sub_epi32(c, _mm256_set1_epi32(2)))
}

impl Codes for Nf4 {
    const CENTRE: f32 = 0.0;
    const SPLIT: bool = true;
    #[inline(always)]
    unsafe fn pair(codes: *const u8, p: usize) -> [__m256; 2] {
        let [even, odd] = nibble_pair(codes, p);
        [nf4_levels(even), nf4_levels(odd)]
    }
}

/// NF4's level of each code (0..15): two 8-entry permutes and a blend on the code's bit 3,
/// where a gather costs several times more on the CPUs this path serves.
#[inline(always)]
unsafe fn nf4_levels(c: __m256i) -> __m256 {
    let lo = _mm256_loadu_ps(NF4_LEVELS.as_ptr());
    let hi = _mm256_loadu_ps(NF4_LEVELS.as_ptr().add(8));
    _mm256_blendv_ps(
        _mm256_permutevar8x32_ps(lo, c),
        _mm256_permutevar8x32_ps(hi, c),
        _mm256_castsi256_ps(_mm256_slli_epi32(c, 28)),
    )
}

impl<const E5M2: bool> Codes for Fp8Fmt<E5M2> {
    const CENTRE: f32 = 0.0;
    const SPLIT: bool = false;
    const MULT: f32 = if E5M2 { 1.0 } else { 256.0 };
    #[inline(always)]
    unsafe fn pair(codes: *const u8, p: usize) -> [__m256; 2] {
        [
            fp8_eight::<E5M2>(codes, 2 * p),
            fp8_eight::<E5M2>(codes, 2 * p + 1),
        ]
    }
}

/// The 8 fp8 codes of channels `8j .. 8j + 8`, by bit manipulation, no table: e5m2 is the
/// top byte of an f16; e4m3 shifted left by 7 is an f16 of 2^-8 its value once the sign
/// (now on bit 14) is carried to bit 15 (the 2^8 is folded into the scale: `Codes::MULT`).
#[inline(always)]
unsafe fn fp8_eight<const E5M2: bool>(codes: *const u8, j: usize) -> __m256 {
    let x = _mm_cvtepu8_epi16(_mm_loadl_epi64(codes.add(8 * j) as *const __m128i));
    let h = if E5M2 {
        _mm_slli_epi16(x, 8)
    } else {
        let a = _mm_slli_epi16(x, 7);
        _mm_add_epi16(a, _mm_and_si128(a, _mm_set1_epi16(0x4000)))
    };
    _mm256_cvtph_ps(h)
}

/// Where a code segment keeps its group parameters, and how to read them.
#[derive(Clone, Copy)]
struct IntLayout {
    /// Bytes from a row's first code to its first parameter record.
    params: usize,
    /// Bytes of a row's records (all groups).
    bytes: usize,
    /// Bytes of one scalar (0 = per tensor, 2 = f16, 4 = f32).
    width: usize,
    asym: bool,
    /// Multiples of the scale the bias gains because lanes read `code − CENTRE`, not the
    /// value the format means (`code − 2^(bits−1)` for symmetric integers).
    shift: f32,
    /// Lanes of the row's groups (all ones), the rest zero.
    groups: __m256,
}

/// Most scale groups a row may have: one lane each in [`IntLayout::params`].
const MAX_GROUPS: usize = 8;

impl IntLayout {
    #[inline(always)]
    unsafe fn new<C: Codes>(c: &Codec) -> Self {
        let width = c.dtype.scale_bytes as usize;
        let (asym, shift) = match c.quant {
            Quant::Int {
                asymmetric: true, ..
            } => (true, C::CENTRE),
            Quant::Int { bits, .. } => (false, C::CENTRE - (1u32 << (bits - 1)) as f32),
            _ => (false, 0.0),
        };
        let ng = (c.head_dim / c.group) as i32;
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        IntLayout {
            params: c.row_code_bytes,
            bytes: ng as usize * width * if asym { 2 } else { 1 },
            width,
            asym,
            shift,
            groups: _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(ng), lane)),
        }
    }

    /// Whether any group has a bias (else the scores need no Σq).
    fn biased(&self) -> bool {
        self.asym || self.shift != 0.0
    }

    /// Every group's scale and bias of the row at `codes`, one group a lane (lanes past
    /// the row's groups: scale undefined, bias 0), for the codes as `Codes` reads them: the
    /// bias is the stored one plus `shift` × scale, and the scale is × `C::MULT`. `end` is
    /// where the segment's bytes end: a row whose two vectors of scalars would pass it is
    /// copied out first.
    #[inline(always)]
    unsafe fn params<C: Codes>(&self, codes: *const u8, end: *const u8) -> (__m256, __m256) {
        let (s, stored) = if self.width == 0 {
            (
                _mm256_set1_ps(crate::codec::PER_TENSOR_SCALE),
                _mm256_setzero_ps(),
            )
        } else {
            // Two vectors of scalars: 32 bytes of f16, 64 of f32.
            let mut buf = [0u8; 64];
            let mut at = codes.add(self.params);
            if at.add(16 * self.width) > end {
                std::ptr::copy_nonoverlapping(at, buf.as_mut_ptr(), self.bytes);
                at = buf.as_ptr();
            }
            let (v0, v1) = if self.width == 2 {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(at as *const __m128i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(at.add(16) as *const __m128i)),
                )
            } else {
                (
                    _mm256_loadu_ps(at as *const f32),
                    _mm256_loadu_ps(at.add(32) as *const f32),
                )
            };
            if self.asym {
                // (scale, zero point) pairs: the even lanes, then the odd ones.
                let even = _mm256_shuffle_ps::<0x88>(v0, v1);
                let odd = _mm256_shuffle_ps::<0xdd>(v0, v1);
                (
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0xd8>(_mm256_castps_pd(even))),
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0xd8>(_mm256_castps_pd(odd))),
                )
            } else {
                (v0, _mm256_setzero_ps())
            }
        };
        let bias = _mm256_fmadd_ps(_mm256_set1_ps(self.shift), s, stored);
        let s = if C::MULT == 1.0 {
            s
        } else {
            _mm256_mul_ps(s, _mm256_set1_ps(C::MULT))
        };
        (s, _mm256_and_ps(bias, self.groups))
    }
}

impl IntLayout {
    /// Group `g`'s scale and bias alone, as [`IntLayout::params`] reads them: cheaper when a
    /// block of pairs needs one group.
    #[inline(always)]
    unsafe fn param<C: Codes>(&self, codes: *const u8, g: usize) -> (f32, f32) {
        if self.width == 0 {
            return (crate::codec::PER_TENSOR_SCALE * C::MULT, 0.0);
        }
        let rec = if self.asym {
            2 * self.width
        } else {
            self.width
        };
        let at = codes.add(self.params + g * rec);
        let s = read_scalar(at, self.width);
        let stored = if self.asym {
            read_scalar(at.add(self.width), self.width)
        } else {
            0.0
        };
        (s * C::MULT, stored + self.shift * s)
    }
}

/// A stored f16 or f32 scalar.
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

/// Where a segment's bytes end.
#[inline(always)]
fn end_of(seg: &Segment) -> *const u8 {
    seg.bytes.as_ptr_range().end
}

/// Scores of `R` rows against `HB` heads for codes: each group's dot product with the
/// codes, times the group's scale once, plus the row's biases · Σq of their groups. `q` is
/// in code order; `qsum` (null when no group has a bias) holds 8 lanes a head, one group a
/// lane.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // g and i index register arrays
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
    let (ppg, ng, end) = (c.group / PAIR, d / c.group, end_of(seg));
    let mut rows = [std::ptr::null::<u8>(); R];
    let mut scales = [[0.0f32; MAX_GROUPS]; R];
    let mut tot = [[_mm256_setzero_ps(); R]; HB];
    for i in 0..R {
        rows[i] = row_ptr(seg, r0 + i);
        let (s, b) = lay.params::<C>(rows[i], end);
        _mm256_storeu_ps(scales[i].as_mut_ptr(), s);
        if !qsum.is_null() {
            for (h, tot_h) in tot.iter_mut().enumerate() {
                tot_h[i] = _mm256_mul_ps(b, _mm256_loadu_ps(qsum.add(8 * h)));
            }
        }
    }
    for g in 0..ng {
        let mut ga = [[_mm256_setzero_ps(); R]; HB];
        for p in g * ppg..(g + 1) * ppg {
            let mut kv = [[_mm256_setzero_ps(); 2]; R];
            for (k, row) in kv.iter_mut().zip(&rows) {
                *k = C::pair(*row, p);
            }
            for (h, ga_h) in ga.iter_mut().enumerate() {
                let q0 = _mm256_loadu_ps(q.add(h * d + PAIR * p));
                let q1 = _mm256_loadu_ps(q.add(h * d + PAIR * p + 8));
                for i in 0..R {
                    ga_h[i] = _mm256_fmadd_ps(q0, kv[i][0], ga_h[i]);
                    ga_h[i] = _mm256_fmadd_ps(q1, kv[i][1], ga_h[i]);
                }
            }
        }
        for i in 0..R {
            let sv = _mm256_broadcast_ss(&scales[i][g]);
            for h in 0..HB {
                tot[h][i] = _mm256_fmadd_ps(ga[h][i], sv, tot[h][i]);
            }
        }
    }
    for (h, tot_h) in tot.iter().enumerate() {
        store_sums(tot_h, &[0.0; R], out.add(h * stride));
    }
}

/// `out[i] = Σ lanes of acc[i] + add[i]`, four rows reduced together.
#[inline(always)]
unsafe fn store_sums<const R: usize>(acc: &[__m256; R], add: &[f32; R], out: *mut f32) {
    let mut i = 0;
    while i + 4 <= R {
        let s = hsum4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]);
        let a = _mm_loadu_ps(add.as_ptr().add(i));
        _mm_storeu_ps(out.add(i), _mm_add_ps(s, a));
        i += 4;
    }
    while i < R {
        *out.add(i) = hsum(acc[i]) + add[i];
        i += 1;
    }
}

/// A pair of vectors as [`Codes::pair`] orders it (even channels then odd ones for split
/// codes), put in channel order.
#[inline(always)]
unsafe fn in_channel_order<C: Codes>([x0, x1]: [__m256; 2]) -> [__m256; 2] {
    if !C::SPLIT {
        return [x0, x1];
    }
    let lo = _mm256_unpacklo_ps(x0, x1);
    let hi = _mm256_unpackhi_ps(x0, x1);
    [
        _mm256_permute2f128_ps(lo, hi, 0x20),
        _mm256_permute2f128_ps(lo, hi, 0x31),
    ]
}

/// `q` with each pair of 8-channel runs split into even and odd channels, the order split
/// [`Codes`] hand them out, into `out` (as long as `q`).
fn split_pairs(q: &[f32], out: &mut [f32]) {
    for (pair, to) in q.chunks_exact(PAIR).zip(out.chunks_exact_mut(PAIR)) {
        for k in 0..PAIR / 2 {
            to[k] = pair[2 * k];
            to[PAIR / 2 + k] = pair[2 * k + 1];
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
    let d = seg.codec.head_dim;
    assert!(q.len() >= heads * d && out.len() >= (heads - 1) * stride + n);
    // The decode walk prepares the query once per part; a call on its own does it here.
    let cq = CodeQuery::build::<C>(seg.codec, q, heads);
    scores_prepared_in::<C>(&[(seg, row0, n)], &cq, out, stride);
}

/// `q` (`heads × d`) into `qc` in the order `C` hands out codes (split pairs for split
/// codes), and, when some group of `c` has a bias, each head's Σq per group into `sums`
/// (`heads × MAX_GROUPS`, a group a lane); returns whether it did the latter.
#[inline(always)]
unsafe fn in_code_order<C: Codes>(
    c: &Codec,
    lay: &IntLayout,
    q: &[f32],
    qc: &mut [f32],
    sums: &mut [f32],
) -> bool {
    if C::SPLIT {
        split_pairs(q, qc);
    } else {
        qc.copy_from_slice(q);
    }
    if !lay.biased() {
        return false;
    }
    let d = c.head_dim;
    for (sums, qh) in sums.chunks_exact_mut(MAX_GROUPS).zip(q.chunks_exact(d)) {
        sums.fill(0.0);
        for (s, g) in sums.iter_mut().zip(qh.chunks_exact(c.group)) {
            *s = sum_lanes(g.as_ptr(), g.len());
        }
    }
    true
}

/// Scores of rows `row0 .. row0 + n` of `seg` against `heads` heads of `qc` (in code
/// order), with each head's Σq per group at `sp` (null when no group has a bias).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_int_rows<C: Codes>(
    seg: &Segment,
    lay: &IntLayout,
    row0: usize,
    n: usize,
    qc: *const f32,
    sp: *const f32,
    heads: usize,
    out: &mut [f32],
    stride: usize,
) {
    let d = seg.codec.head_dim;
    assert!(out.len() >= (heads - 1) * stride + n);
    assert!((row0 + n) * seg.codec.unit_bytes <= seg.bytes.len());
    let op = out.as_mut_ptr();
    let mut h = 0;
    while h < heads {
        let hb = if heads - h >= 2 { 2 } else { 1 };
        let qh = qc.add(h * d);
        let sh = if sp.is_null() {
            sp
        } else {
            sp.add(h * MAX_GROUPS)
        };
        let mut i = 0;
        while i < n {
            let left = n - i;
            let oh = op.add(h * stride + i);
            let r = row0 + i;
            let step = match (hb, left) {
                (2, 2..) => {
                    scores_block_int::<C, 2, 2>(seg, lay, r, qh, sh, d, oh, stride);
                    2
                }
                (1, 4..) => {
                    scores_block_int::<C, 4, 1>(seg, lay, r, qh, sh, d, oh, stride);
                    4
                }
                (2, _) => {
                    scores_block_int::<C, 1, 2>(seg, lay, r, qh, sh, d, oh, stride);
                    1
                }
                _ => {
                    scores_block_int::<C, 1, 1>(seg, lay, r, qh, sh, d, oh, stride);
                    1
                }
            };
            i += step;
        }
        h += hb;
    }
}

/// Query heads prepared once for the code kernels' scores against one code format: in
/// code order, with each group's Σq. [`scores`] prepares them on every call, which a
/// decode tile of one paged block (16 rows) paid once per tile: 1 KB of query rewritten
/// and 3 KB of stack cleared, about 6 ns a row at MHA int4 in cache on a Zen 3, where a
/// row's whole step costs 28 (docs/performance.md, seventeenth round).
#[derive(Debug, Clone)]
pub struct CodeQuery {
    codec: Codec,
    heads: usize,
    /// `heads × d`, in code order.
    q: Vec<f32>,
    /// `heads × MAX_GROUPS`: Σq of each group; empty when no group has a bias.
    sums: Vec<f32>,
}

impl CodeQuery {
    /// `q` (`heads × d`) prepared for the scores of `k`'s codes; `None` for float formats
    /// and formats these kernels do not take ([`supports`]).
    pub fn new(k: &Codec, q: &[f32], heads: usize) -> Option<Self> {
        let cpu = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let codes = !k.dtype.kind.is_float() && supports(k);
        if !cpu || !codes || heads == 0 || q.len() < heads * k.head_dim {
            return None;
        }
        // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
        Some(unsafe {
            match k.quant {
                Quant::Int { bits: 8, .. } => Self::build::<Int<8>>(k, q, heads),
                Quant::Int { bits: 4, .. } => Self::build::<Int<4>>(k, q, heads),
                Quant::Int { .. } => Self::build::<Int<2>>(k, q, heads),
                Quant::Nf4 => Self::build::<Nf4>(k, q, heads),
                Quant::Fp8(Fp8::E4m3) => Self::build::<Fp8Fmt<false>>(k, q, heads),
                Quant::Fp8(Fp8::E5m2) => Self::build::<Fp8Fmt<true>>(k, q, heads),
                Quant::F32 | Quant::F16 | Quant::Bf16 => return None,
            }
        })
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn build<C: Codes>(k: &Codec, q: &[f32], heads: usize) -> Self {
        let lay = IntLayout::new::<C>(k);
        let d = k.head_dim;
        let mut qc = vec![0.0; heads * d];
        let mut sums = vec![0.0; heads * MAX_GROUPS];
        if !in_code_order::<C>(k, &lay, &q[..heads * d], &mut qc, &mut sums) {
            sums.clear();
        }
        CodeQuery {
            codec: *k,
            heads,
            q: qc,
            sums,
        }
    }

    /// Whether these heads were prepared for rows of format `c`.
    #[inline]
    pub fn is_for(&self, c: &Codec) -> bool {
        self.codec.same(c)
    }

    /// Query heads prepared.
    #[inline]
    pub fn heads(&self) -> usize {
        self.heads
    }
}

/// [`scores`] of consecutive pieces in `cq`'s format (scores numbered across them), with
/// the query prepared once ([`CodeQuery`]).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; every piece is in `cq`'s format.
pub unsafe fn scores_prepared(pieces: &[Piece], cq: &CodeQuery, out: &mut [f32], stride: usize) {
    match cq.codec.quant {
        Quant::Int { bits: 8, .. } => scores_prepared_in::<Int<8>>(pieces, cq, out, stride),
        Quant::Int { bits: 4, .. } => scores_prepared_in::<Int<4>>(pieces, cq, out, stride),
        Quant::Int { .. } => scores_prepared_in::<Int<2>>(pieces, cq, out, stride),
        Quant::Nf4 => scores_prepared_in::<Nf4>(pieces, cq, out, stride),
        Quant::Fp8(Fp8::E4m3) => scores_prepared_in::<Fp8Fmt<false>>(pieces, cq, out, stride),
        Quant::Fp8(Fp8::E5m2) => scores_prepared_in::<Fp8Fmt<true>>(pieces, cq, out, stride),
        Quant::F32 | Quant::F16 | Quant::Bf16 => unreachable!("a CodeQuery is for codes"),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_prepared_in<C: Codes>(
    pieces: &[Piece],
    cq: &CodeQuery,
    out: &mut [f32],
    stride: usize,
) {
    // Each piece's rows are checked where they are read; its format by the caller.
    debug_assert!(pieces.iter().all(|p| cq.is_for(p.0.codec)));
    let lay = IntLayout::new::<C>(pieces[0].0.codec);
    let sp = match cq.sums.is_empty() {
        true => std::ptr::null(),
        false => cq.sums.as_ptr(),
    };
    let mut off = 0;
    for &(seg, row0, n) in pieces {
        let o = &mut out[off..];
        scores_int_rows::<C>(seg, &lay, row0, n, cq.q.as_ptr(), sp, cq.heads, o, stride);
        off += n;
    }
}

/// Σ of `n` floats (a multiple of 8) at `x`.
#[inline(always)]
unsafe fn sum_lanes(x: *const f32, n: usize) -> f32 {
    let mut s = _mm256_setzero_ps();
    for j in 0..n / 8 {
        s = _mm256_add_ps(s, _mm256_loadu_ps(x.add(8 * j)));
    }
    hsum(s)
}

/// `HB` heads × `P` pairs of accumulators for codes, spanning `GB` whole scale groups
/// (`GB = 1`: the `P` pairs lie inside one group). Each row's scales are folded into the
/// weight once per group (`p × scale`), its biases are summed in one vector (a group a
/// lane) and added once at the end; split pairs are put back in channel order at the store.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // gb indexes fixed register arrays
unsafe fn accumulate_block_int<C: Codes, const HB: usize, const P: usize, const GB: usize>(
    pieces: &[Piece],
    lay: &IntLayout,
    p: *const f32,
    stride: usize,
    acc: *mut f32,
    d: usize,
    p0: usize,
) {
    let g0 = p0 * PAIR / pieces[0].0.codec.group;
    let per = P / GB;
    let mut a = [[[_mm256_setzero_ps(); 2]; P]; HB];
    // A block inside one group sums its one bias as a scalar; one over several groups sums
    // them all in a vector, a group a lane.
    let mut bias = [_mm256_setzero_ps(); HB];
    let mut bias1 = [0.0f32; HB];
    let mut i = 0;
    for &(seg, r0, m) in pieces {
        let end = end_of(seg);
        for r in r0..r0 + m {
            let row = row_ptr(seg, r);
            let mut ws = [[_mm256_setzero_ps(); GB]; HB];
            if GB == 1 {
                let (s, b) = lay.param::<C>(row, g0);
                for h in 0..HB {
                    let w = *p.add(h * stride + i);
                    bias1[h] += w * b;
                    ws[h][0] = _mm256_set1_ps(w * s);
                }
            } else {
                let (s, b) = lay.params::<C>(row, end);
                let mut scales = [0.0f32; MAX_GROUPS];
                _mm256_storeu_ps(scales.as_mut_ptr(), s);
                for h in 0..HB {
                    let w = _mm256_set1_ps(*p.add(h * stride + i));
                    bias[h] = _mm256_fmadd_ps(w, b, bias[h]);
                    for gb in 0..GB {
                        ws[h][gb] = _mm256_mul_ps(w, _mm256_broadcast_ss(&scales[g0 + gb]));
                    }
                }
            }
            for pp in 0..P {
                let v = C::pair(row, p0 + pp);
                for h in 0..HB {
                    let w = ws[h][pp / per];
                    a[h][pp][0] = _mm256_fmadd_ps(w, v[0], a[h][pp][0]);
                    a[h][pp][1] = _mm256_fmadd_ps(w, v[1], a[h][pp][1]);
                }
            }
            i += 1;
        }
    }
    for h in 0..HB {
        let mut biases = [0.0f32; MAX_GROUPS];
        _mm256_storeu_ps(biases.as_mut_ptr(), bias[h]);
        if GB == 1 {
            biases[g0] = bias1[h];
        }
        for pp in 0..P {
            let [x0, x1] = in_channel_order::<C>(a[h][pp]);
            let bv = _mm256_set1_ps(biases[g0 + pp / per]);
            let at = acc.add(h * d + PAIR * (p0 + pp));
            _mm256_storeu_ps(
                at,
                _mm256_add_ps(_mm256_loadu_ps(at), _mm256_add_ps(x0, bv)),
            );
            let at = at.add(8);
            _mm256_storeu_ps(
                at,
                _mm256_add_ps(_mm256_loadu_ps(at), _mm256_add_ps(x1, bv)),
            );
        }
    }
}

/// One [`accumulate_block_int`] call; returns the pairs it covered.
#[inline(always)]
#[allow(clippy::type_complexity)]
unsafe fn blk<C: Codes, const HB: usize, const P: usize, const GB: usize>(
    (pieces, lay, p, stride, acc, d, p0): (
        &[Piece],
        &IntLayout,
        *const f32,
        usize,
        *mut f32,
        usize,
        usize,
    ),
) -> usize {
    accumulate_block_int::<C, HB, P, GB>(pieces, lay, p, stride, acc, d, p0);
    P
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
    let lay = IntLayout::new::<C>(seg.codec);
    // Pairs per group: a power of two (see `supports`), so a block of P pairs starting at a
    // multiple of P lies inside one group or covers whole ones.
    let ppg = seg.codec.group / PAIR;
    let pairs = d / PAIR;
    let (pp, ap) = (p.as_ptr(), acc.as_mut_ptr());
    let mut h = 0;
    while h < heads {
        let hb = (heads - h).min(4);
        let (ph, ah) = (pp.add(h * stride), ap.add(h * d));
        let mut j = 0;
        while j < pairs {
            let left = pairs - j;
            let args = (pieces, &lay, ph, stride, ah, d, j);
            j += match (hb, left, ppg) {
                (4, _, _) => blk::<C, 4, 1, 1>(args),
                (2 | 3, 2.., 2..) => blk::<C, 2, 2, 1>(args),
                (2 | 3, 2.., 1) => blk::<C, 2, 2, 2>(args),
                (2 | 3, _, _) => blk::<C, 2, 1, 1>(args),
                (1, 4.., 4..) => blk::<C, 1, 4, 1>(args),
                (1, 4.., 2) => blk::<C, 1, 4, 2>(args),
                (1, 4.., 1) => blk::<C, 1, 4, 4>(args),
                (1, 2.., 2..) => blk::<C, 1, 2, 1>(args),
                (1, 2.., 1) => blk::<C, 1, 2, 2>(args),
                _ => blk::<C, 1, 1, 1>(args),
            };
        }
        h += if hb == 3 { 2 } else { hb };
    }
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// The lane sums of four vectors, in order: three horizontal adds for all four, where
/// four [`hsum`]s take five operations each.
#[inline(always)]
unsafe fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))
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
        store_sums(acc_h, &[0.0; R], out.add(h * stride));
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
        Quant::Nf4 => scores_int::<Nf4>(seg, row0, n, q, heads, out, stride),
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
            if HB == 1 {
                // Each chunk loaded into its FMA: at 16 chunks (a whole 128-wide row, so rows
                // are read in address order) holding them all as well would spill.
                let w = _mm256_set1_ps(*p.add(i));
                for (jj, v) in a[0].iter_mut().enumerate() {
                    *v = _mm256_fmadd_ps(w, F::load(&row, j0 + jj), *v);
                }
                i += 1;
                continue;
            }
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
        Quant::Nf4 => accumulate_int::<Nf4>(pieces, p, heads, stride, acc),
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
                1 if left >= 16 => {
                    accumulate_block::<F, 1, 16>(pieces, ph, stride, ah, d, j);
                    j += 16
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
