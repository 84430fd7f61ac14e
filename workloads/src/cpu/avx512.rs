//! AVX-512 (F + BW + VL + DQ) tile kernels: 16 lanes per vector, 32 registers.
//!
//! Two shapes of kernel:
//! - *fused* (few query heads per KV head: MHA, small GQA groups): rows are converted or
//!   dequantized 16 lanes at a time in registers inside the dot products, the way the AVX2
//!   kernels do, with blocks of rows × heads sharing every loaded K/V vector;
//! - *wide* (many query heads per KV head: large GQA groups, MQA): each tile of K and V is
//!   dequantized once into an f32 scratch tile, and the score and value products run as small
//!   register-blocked GEMMs vectorized over the query heads, so every K/V element is read once
//!   for all heads of the group and the FMA units, not the loads, set the pace.
//!
//! Conversions: f16 through `vcvtph2ps` (16 lanes), bf16 by a 16-bit shift (exact; the bf16
//! dot-product instruction would round q to bf16 and loosen accuracy), fp8 by moving its bits
//! into an f16 (e4m3: shift and a carry trick; e5m2 *is* the top byte of an f16) and
//! `vcvtph2ps`, nf4 by a 16-entry in-register table (`vpermps`), integers by widening.
//! Each public function's scalar twin is in `scalar.rs`; the tests compare them.

#![allow(unsafe_op_in_unsafe_fn)]

use crate::cache::Segment;
use crate::codec::fp8::Fp8;
use crate::codec::nf4::NF4_LEVELS;
use crate::codec::{Codec, Quant};
use std::arch::x86_64::*;

/// Whether this CPU runs the kernels of this module.
pub fn detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Most scale groups per row the quantized loaders precompute.
const MAX_GROUPS: usize = 16;

/// Whether these kernels handle this segment's format.
pub fn supports(c: &Codec) -> bool {
    let fmt = match c.quant {
        Quant::F32 | Quant::F16 | Quant::Bf16 => true,
        Quant::Int { bits, .. } => matches!(bits, 8 | 4 | 2),
        Quant::Fp8(_) | Quant::Nf4 => true,
    };
    // fp8's default one scale per tensor stores none per row (read_scalar gives the codec's
    // constant); integer per-tensor layouts keep to the AVX2 path.
    let per_tensor_fp8 = c.dtype.scale_bytes == 0 && matches!(c.quant, Quant::Fp8(_));
    let scales = c.dtype.kind.is_float() || matches!(c.dtype.scale_bytes, 2 | 4) || per_tensor_fp8;
    fmt && scales
        && c.unit_tokens == 1
        && c.head_dim.is_multiple_of(16)
        && c.group.is_multiple_of(16)
        && (c.group / 16).is_power_of_two()
        && c.head_dim / c.group <= MAX_GROUPS
}

/// A storage format: how to open a row and hand out 16 lanes as f32.
trait Format {
    type Row: Copy;
    /// Open row `r` of `seg` (reads its group parameters once).
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row;
    /// Lanes `16j .. 16j + 16` of the row, as f32.
    unsafe fn load(row: &Self::Row, j: usize) -> __m512;
}

struct F32;
struct F16;
struct Bf16;
/// Integer codes of `BITS` bits, read centred (`code − 2^(BITS−1)`) × scale + bias.
struct Int<const BITS: u32>;
struct Nf4;
struct Fp8Fmt<const E5M2: bool>;

#[inline(always)]
pub(crate) unsafe fn row_ptr(seg: &Segment, r: usize) -> *const u8 {
    seg.bytes.as_ptr().add(r * seg.codec.unit_bytes)
}

impl Format for F32 {
    type Row = *const f32;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        row_ptr(seg, r) as *const f32
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        _mm512_loadu_ps(row.add(16 * j))
    }
}

impl Format for F16 {
    type Row = *const u8;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        row_ptr(seg, r)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(row.add(32 * j) as *const __m256i))
    }
}

impl Format for Bf16 {
    type Row = *const u8;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        row_ptr(seg, r)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        let h = _mm256_loadu_si256(row.add(32 * j) as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
    }
}

/// A quantized row: its codes and every group's (scale, bias) for centred codes.
#[derive(Clone, Copy)]
struct QuantRow {
    codes: *const u8,
    /// log2 of the 16-lane chunks per group.
    shift: u32,
    scale: [f32; MAX_GROUPS],
    bias: [f32; MAX_GROUPS],
}

impl QuantRow {
    /// `raw × scale + bias` of chunk `j`'s group.
    #[inline(always)]
    unsafe fn apply(&self, raw: __m512, j: usize) -> __m512 {
        let g = j >> self.shift;
        _mm512_fmadd_ps(
            raw,
            _mm512_set1_ps(self.scale[g]),
            _mm512_set1_ps(self.bias[g]),
        )
    }
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

/// Open a quantized row. Integer codes are read centred on `2^(bits−1)` (so a symmetric
/// group's bias is exactly 0 and no large offset cancels); `mult` is a power of two folded
/// into the scale (fp8 e4m3 is decoded as an f16 that is 2^-8 of its value).
#[inline(always)]
unsafe fn quant_row(seg: &Segment, r: usize, mult: f32) -> QuantRow {
    let c = seg.codec;
    let codes = row_ptr(seg, r);
    let width = c.dtype.scale_bytes as usize;
    let asym = c.dtype.zero_point;
    let half = match c.quant {
        Quant::Int { bits, .. } => (1u32 << (bits - 1)) as f32,
        _ => 0.0,
    };
    let rec = if asym { 2 * width } else { width };
    let mut row = QuantRow {
        codes,
        shift: (c.group / 16).trailing_zeros(),
        scale: [0.0; MAX_GROUPS],
        bias: [0.0; MAX_GROUPS],
    };
    let params = codes.add(c.row_code_bytes);
    for g in 0..c.head_dim / c.group {
        let at = params.add(g * rec);
        let s = read_scalar(at, width);
        row.scale[g] = s * mult;
        row.bias[g] = if asym {
            read_scalar(at.add(width), width) + half * s
        } else {
            0.0
        };
    }
    row
}

/// The 16 four-bit codes of lanes `16j .. 16j + 16` (low nibble first), in 32-bit lanes.
#[inline(always)]
unsafe fn nibbles(codes: *const u8, j: usize) -> __m512i {
    let b = _mm_loadl_epi64(codes.add(8 * j) as *const __m128i);
    let x = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));
    let sh = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
    _mm512_and_si512(_mm512_srlv_epi32(x, sh), _mm512_set1_epi32(15))
}

impl Format for Int<8> {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, 1.0)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        // u8 ^ 0x80 read as i8 is code − 128.
        let b = _mm_xor_si128(
            _mm_loadu_si128(row.codes.add(16 * j) as *const __m128i),
            _mm_set1_epi8(-128),
        );
        row.apply(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)), j)
    }
}

impl Format for Int<4> {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, 1.0)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        let c = _mm512_sub_epi32(nibbles(row.codes, j), _mm512_set1_epi32(8));
        row.apply(_mm512_cvtepi32_ps(c), j)
    }
}

impl Format for Int<2> {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, 1.0)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        let w = (row.codes.add(4 * j) as *const u32).read_unaligned() as i32;
        let sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let c = _mm512_and_si512(
            _mm512_srlv_epi32(_mm512_set1_epi32(w), sh),
            _mm512_set1_epi32(3),
        );
        row.apply(
            _mm512_cvtepi32_ps(_mm512_sub_epi32(c, _mm512_set1_epi32(2))),
            j,
        )
    }
}

impl Format for Nf4 {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, 1.0)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        let levels = _mm512_loadu_ps(NF4_LEVELS.as_ptr());
        row.apply(_mm512_permutexvar_ps(nibbles(row.codes, j), levels), j)
    }
}

/// 16 fp8 codes as f32: e5m2 is the top byte of an f16; e4m3's bits shifted left by 7 make
/// an f16 of 2^-8 its value (exponent bias 15 vs 7, subnormals included) once the sign,
/// which lands on bit 14, is carried up to bit 15 by adding it to itself.
/// Codes whose exponent field is all ones in e5m2 (±inf/NaN in IEEE, never produced by the
/// saturating encoder) decode as inf/NaN here but as 2^16·(1 + m/4) in the table.
#[inline(always)]
unsafe fn fp8_lanes<const E5M2: bool>(codes: *const u8) -> __m512 {
    let x = _mm256_cvtepu8_epi16(_mm_loadu_si128(codes as *const __m128i));
    let h = if E5M2 {
        _mm256_slli_epi16(x, 8)
    } else {
        let a = _mm256_slli_epi16(x, 7);
        _mm256_add_epi16(a, _mm256_and_si256(a, _mm256_set1_epi16(0x4000)))
    };
    _mm512_cvtph_ps(h)
}

/// The scale factor `fp8_lanes` leaves out.
fn fp8_mult(e5m2: bool) -> f32 {
    if e5m2 {
        1.0
    } else {
        256.0
    }
}

impl<const E5M2: bool> Format for Fp8Fmt<E5M2> {
    type Row = QuantRow;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        quant_row(seg, r, fp8_mult(E5M2))
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        row.apply(fp8_lanes::<E5M2>(row.codes.add(16 * j)), j)
    }
}

/// AVX-512 decode of 16 fp8 codes (without the 2^-8 of e4m3 taken out): the twin of the
/// codec's table, exposed for the tests.
///
/// # Safety
/// The CPU must pass [`detected`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub unsafe fn fp8_decode16(fmt: Fp8, codes: &[u8; 16]) -> [f32; 16] {
    let v = match fmt {
        Fp8::E4m3 => _mm512_mul_ps(fp8_lanes::<false>(codes.as_ptr()), _mm512_set1_ps(256.0)),
        Fp8::E5m2 => fp8_lanes::<true>(codes.as_ptr()),
    };
    let mut out = [0.0f32; 16];
    _mm512_storeu_ps(out.as_mut_ptr(), v);
    out
}

/// Run `$body` with `$F` bound to the format type of `$quant`.
macro_rules! with_format {
    ($quant:expr, $F:ident => $body:expr) => {
        match $quant {
            Quant::F32 => {
                type $F = F32;
                $body
            }
            Quant::F16 => {
                type $F = F16;
                $body
            }
            Quant::Bf16 => {
                type $F = Bf16;
                $body
            }
            Quant::Int { bits: 8, .. } => {
                type $F = Int<8>;
                $body
            }
            Quant::Int { bits: 4, .. } => {
                type $F = Int<4>;
                $body
            }
            Quant::Int { .. } => {
                type $F = Int<2>;
                $body
            }
            Quant::Nf4 => {
                type $F = Nf4;
                $body
            }
            Quant::Fp8(Fp8::E4m3) => {
                type $F = Fp8Fmt<false>;
                $body
            }
            Quant::Fp8(Fp8::E5m2) => {
                type $F = Fp8Fmt<true>;
                $body
            }
        }
    };
}

/// Run `$body` with `$C` bound to the raw-code type of the quantized `$quant`.
macro_rules! with_codes {
    ($quant:expr, $C:ident => $body:expr) => {
        match $quant {
            Quant::Int { bits: 8, .. } => {
                type $C = Int<8>;
                $body
            }
            Quant::Int { bits: 4, .. } => {
                type $C = Int<4>;
                $body
            }
            Quant::Int { .. } => {
                type $C = Int<2>;
                $body
            }
            Quant::Nf4 => {
                type $C = Nf4;
                $body
            }
            Quant::Fp8(Fp8::E4m3) => {
                type $C = Fp8Fmt<false>;
                $body
            }
            Quant::Fp8(Fp8::E5m2) => {
                type $C = Fp8Fmt<true>;
                $body
            }
            Quant::F32 | Quant::F16 | Quant::Bf16 => unreachable!("float formats have no codes"),
        }
    };
}

// ---------------------------------------------------------------------------------------
// Fused kernels (few heads per KV head).

/// Chunks of 16 lanes in a row of `d`: `NC` when the kernel was built for one head
/// dimension (q then stays in registers, [`q_chunks`]), else `d / 16` (`NC` = 0).
#[inline(always)]
fn chunks<const NC: usize>(d: usize) -> usize {
    match NC {
        0 => d / 16,
        nc => nc,
    }
}

/// The kernel's chunk count `NC` for head dimension `d`: the common 64 and 128 are built
/// apart so that q stays in registers; 0 (read from memory) for any other.
macro_rules! with_chunks {
    ($d:expr, $nc:ident => $body:expr) => {
        match $d {
            128 => {
                const $nc: usize = 8;
                $body
            }
            64 => {
                const $nc: usize = 4;
                $body
            }
            _ => {
                const $nc: usize = 0;
                $body
            }
        }
    };
}

/// `HB` heads' q (`d` apart), `NC` chunks each, in registers (nothing when `NC` is 0).
#[inline(always)]
unsafe fn q_chunks<const HB: usize, const NC: usize>(
    q: *const f32,
    d: usize,
) -> [[__m512; NC]; HB] {
    let mut qv = [[_mm512_setzero_ps(); NC]; HB];
    for (h, qh) in qv.iter_mut().enumerate() {
        for (j, x) in qh.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(q.add(h * d + 16 * j));
        }
    }
    qv
}

/// Lane-wise products of chunks `js` of one row with `HB` heads' q, one sum per head; q
/// from `qv` where `NC` > 0, else from memory. [`dot_block`] calls it row after row, so
/// that a block's rows are read whole in address order: read chunk by chunk across 16 rows
/// instead (one chunk of every row, then the next), the same loads defeat the hardware
/// prefetchers of a Zen 4 from memory (a C loop of that order read 5-7 GB/s on one core, in
/// row order 25; docs/performance.md, fourteenth round).
#[inline(always)]
unsafe fn dot_row<F: Format, const HB: usize, const NC: usize>(
    row: &F::Row,
    js: std::ops::Range<usize>,
    qv: &[[__m512; NC]; HB],
    q: *const f32,
    d: usize,
) -> [__m512; HB] {
    let mut acc = [_mm512_setzero_ps(); HB];
    for j in js {
        let k = F::load(row, j);
        for (h, a) in acc.iter_mut().enumerate() {
            let qj = match NC {
                0 => _mm512_loadu_ps(q.add(h * d + 16 * j)),
                _ => qv[h][j],
            };
            *a = _mm512_fmadd_ps(qj, k, *a);
        }
    }
    acc
}

/// Lane-wise dot products of `R` rows with `HB` heads' q (`acc[h][i]`; their lanes sum to
/// the scores). Blocks of 8 or more rows (one or two heads) are read row after row
/// ([`dot_row`]); a block of fewer (four heads: 4 rows, at most 2 KiB) chunk by chunk across
/// its rows, as before: it loads each q chunk once for all its rows, and over so short a
/// span row order bought nothing from memory on a Zen 4 (GQA-8 32K, old and new builds
/// alternated: f16 0.89-1.00 of the old time, fp8 0.98-1.31).
#[inline(always)]
unsafe fn dot_block<F: Format, const R: usize, const HB: usize, const NC: usize>(
    rows: &[F::Row; R],
    q: *const f32,
    d: usize,
) -> [[__m512; R]; HB] {
    let mut acc = [[_mm512_setzero_ps(); R]; HB];
    if R >= 8 {
        let qv = q_chunks::<HB, NC>(q, d);
        for (i, row) in rows.iter().enumerate() {
            let a = dot_row::<F, HB, NC>(row, 0..chunks::<NC>(d), &qv, q, d);
            for (acc_h, a_h) in acc.iter_mut().zip(a) {
                acc_h[i] = a_h;
            }
        }
        return acc;
    }
    for j in 0..chunks::<NC>(d) {
        let mut kv = [_mm512_setzero_ps(); R];
        for (k, row) in kv.iter_mut().zip(rows) {
            *k = F::load(row, j);
        }
        for (h, acc_h) in acc.iter_mut().enumerate() {
            let qv = _mm512_loadu_ps(q.add(h * d + 16 * j));
            for i in 0..R {
                acc_h[i] = _mm512_fmadd_ps(qv, kv[i], acc_h[i]);
            }
        }
    }
    acc
}

/// Scores of `R` rows against `HB` heads: `R × HB` independent FMA chains
/// ([`dot_block`]). `NC`: see [`chunks`].
#[inline(always)]
unsafe fn scores_block<F: Format, const R: usize, const HB: usize, const NC: usize>(
    seg: &Segment,
    r0: usize,
    q: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    // Plain loops, not `array::from_fn`: closures would not inherit the target features.
    let first = F::row(seg, r0);
    let mut rows = [first; R];
    for (i, row) in rows.iter_mut().enumerate().skip(1) {
        *row = F::row(seg, r0 + i);
    }
    let acc = dot_block::<F, R, HB, NC>(&rows, q, d);
    if R * HB == 16 {
        let mut flat = [_mm512_setzero_ps(); 16];
        for (h, acc_h) in acc.iter().enumerate() {
            flat[h * R..(h + 1) * R].copy_from_slice(acc_h);
        }
        store_rows::<R, HB>(sum16(&flat), out, stride);
        return;
    }
    for (h, acc_h) in acc.iter().enumerate() {
        for (i, a) in acc_h.iter().enumerate() {
            *out.add(h * stride + i) = _mm512_reduce_add_ps(*a);
        }
    }
}

/// Lane `L` = the sum of the 16 lanes of `v[L]`: 16 horizontal sums in 45 shuffles and adds
/// (a transpose-and-add tree) instead of 16 × 8 for one `reduce_add` each.
#[inline(always)]
pub(crate) unsafe fn sum16(v: &[__m512; 16]) -> __m512 {
    // The tree leaves vector `L/4 + 4·(L%4)` in lane L; feed it the inputs in that order.
    let w: [__m512; 16] = std::array::from_fn(|j| v[4 * (j % 4) + j / 4]);
    // 512 → 256 lanes per vector: pairs of vectors share one register.
    let mut s = [_mm512_setzero_ps(); 8];
    for (i, si) in s.iter_mut().enumerate() {
        let (a, b) = (w[2 * i], w[2 * i + 1]);
        *si = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        );
    }
    // 256 → 128: four vectors per register, one 128-bit block each.
    let mut u = [_mm512_setzero_ps(); 4];
    for (i, ui) in u.iter_mut().enumerate() {
        let (a, b) = (s[2 * i], s[2 * i + 1]);
        *ui = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        );
    }
    // 128 → 64 → 32 inside each block.
    let z0 = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(u[0], u[1]),
        _mm512_shuffle_ps::<0xEE>(u[0], u[1]),
    );
    let z1 = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(u[2], u[3]),
        _mm512_shuffle_ps::<0xEE>(u[2], u[3]),
    );
    _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(z0, z1),
        _mm512_shuffle_ps::<0xDD>(z0, z1),
    )
}

/// Store lanes `h·R .. h·R + R` of `s` at `out + h·stride` (`R × HB = 16`).
#[inline(always)]
unsafe fn store_rows<const R: usize, const HB: usize>(s: __m512, out: *mut f32, stride: usize) {
    match R {
        16 => _mm512_storeu_ps(out, s),
        8 => {
            _mm256_storeu_ps(out, _mm512_castps512_ps256(s));
            _mm256_storeu_ps(out.add(stride), _mm512_extractf32x8_ps::<1>(s));
        }
        4 => {
            _mm_storeu_ps(out, _mm512_castps512_ps128(s));
            _mm_storeu_ps(out.add(stride), _mm512_extractf32x4_ps::<1>(s));
            _mm_storeu_ps(out.add(2 * stride), _mm512_extractf32x4_ps::<2>(s));
            _mm_storeu_ps(out.add(3 * stride), _mm512_extractf32x4_ps::<3>(s));
        }
        _ => {
            let mut lanes = [0.0f32; 16];
            _mm512_storeu_ps(lanes.as_mut_ptr(), s);
            for h in 0..HB {
                for i in 0..R {
                    *out.add(h * stride + i) = lanes[h * R + i];
                }
            }
        }
    }
}

/// Test access to [`sum16`]: lane L of the result is the sum of `v[L]`.
///
/// # Safety
/// The CPU must pass [`detected`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub unsafe fn sum16_of(v: &[[f32; 16]; 16]) -> [f32; 16] {
    let mut x = [_mm512_setzero_ps(); 16];
    for (xi, vi) in x.iter_mut().zip(v) {
        *xi = _mm512_loadu_ps(vi.as_ptr());
    }
    let mut out = [0.0f32; 16];
    _mm512_storeu_ps(out.as_mut_ptr(), sum16(&x));
    out
}

/// AVX-512 twin of [`super::scalar::scores`].
///
/// # Safety
/// The CPU must pass [`detected`], and [`supports`] must hold for `seg.codec`.
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
        Quant::F32 => {
            with_chunks!(seg.codec.head_dim, NC => scores_fmt::<F32, NC>(seg, row0, n, q, heads, out, stride))
        }
        Quant::F16 => {
            with_chunks!(seg.codec.head_dim, NC => scores_fmt::<F16, NC>(seg, row0, n, q, heads, out, stride))
        }
        Quant::Bf16 => {
            with_chunks!(seg.codec.head_dim, NC => scores_fmt::<Bf16, NC>(seg, row0, n, q, heads, out, stride))
        }
        quant => {
            with_codes!(quant, Cd => with_chunks!(seg.codec.head_dim, NC => scores_q::<Cd, NC>(&[(seg, row0, n)], q, heads, out, stride)))
        }
    }
}

/// [`scores`] over consecutive pieces of one tile (scores numbered across them), so that
/// paged blocks share one setup: the quantized kernels' Σq per group is computed once.
///
/// # Safety
/// As [`scores`]; every piece has the first one's format.
pub unsafe fn scores_pieces(
    pieces: &[Piece],
    q: &[f32],
    heads: usize,
    out: &mut [f32],
    stride: usize,
) {
    match pieces[0].0.codec.quant {
        Quant::F32 | Quant::F16 | Quant::Bf16 => {
            let mut off = 0;
            for &(seg, row0, n) in pieces {
                scores(seg, row0, n, q, heads, &mut out[off..], stride);
                off += n;
            }
        }
        quant => {
            with_codes!(quant, Cd => with_chunks!(pieces[0].0.codec.head_dim, NC => scores_q::<Cd, NC>(pieces, q, heads, out, stride)))
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn scores_fmt<F: Format, const NC: usize>(
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
    assert!((row0 + n) * seg.codec.unit_bytes <= seg.bytes.len());
    let (qp, op) = (q.as_ptr(), out.as_mut_ptr());
    let mut h = 0;
    while h < heads {
        let hb = head_block(heads - h);
        let mut i = 0;
        while i < n {
            let left = n - i;
            let (qh, oh, r) = (qp.add(h * d), op.add(h * stride + i), row0 + i);
            i += match (hb, left) {
                (4, 4..) => {
                    scores_block::<F, 4, 4, NC>(seg, r, qh, d, oh, stride);
                    4
                }
                (2, 8..) => {
                    scores_block::<F, 8, 2, NC>(seg, r, qh, d, oh, stride);
                    8
                }
                (2, 4..) => {
                    scores_block::<F, 4, 2, NC>(seg, r, qh, d, oh, stride);
                    4
                }
                (1, 16..) => {
                    scores_block::<F, 16, 1, NC>(seg, r, qh, d, oh, stride);
                    16
                }
                (1, 8..) => {
                    scores_block::<F, 8, 1, NC>(seg, r, qh, d, oh, stride);
                    8
                }
                (4, _) => {
                    scores_block::<F, 1, 4, NC>(seg, r, qh, d, oh, stride);
                    1
                }
                (2, _) => {
                    scores_block::<F, 1, 2, NC>(seg, r, qh, d, oh, stride);
                    1
                }
                _ => {
                    scores_block::<F, 1, 1, NC>(seg, r, qh, d, oh, stride);
                    1
                }
            };
        }
        h += hb;
    }
}

/// Query heads the next register block takes when `left` heads remain: 4, 2 or 1.
#[inline(always)]
pub(crate) fn head_block(left: usize) -> usize {
    match left {
        4.. => 4,
        2 | 3 => 2,
        _ => 1,
    }
}

/// `n` (≤ 16) f16 (`width` 2) or f32 scalars at `at` as f32 lanes, zeros after them; whole
/// 4/8/16-byte runs use plain loads (a masked load that crosses a cache line costs several
/// plain ones on a Zen 5).
#[inline(always)]
pub(crate) unsafe fn load_scalars(at: *const u8, n: usize, width: usize) -> __m512 {
    match (width, n) {
        (2, 2) => _mm512_zextps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(
            (at as *const u32).read_unaligned() as i32,
        ))),
        (2, 4) => _mm512_zextps256_ps512(_mm256_cvtph_ps(_mm_loadl_epi64(at as *const _))),
        (2, 8) => _mm512_zextps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(at as *const _))),
        (2, 16) => _mm512_cvtph_ps(_mm256_loadu_si256(at as *const _)),
        (2, _) => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
            ((1u32 << n) - 1) as u16,
            at as *const i16,
        )),
        (_, 4) => _mm512_zextps128_ps512(_mm_loadu_ps(at as *const f32)),
        (_, 8) => _mm512_zextps256_ps512(_mm256_loadu_ps(at as *const f32)),
        (_, 16) => _mm512_loadu_ps(at as *const f32),
        _ => _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, at as *const f32),
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

/// `HB` heads × `J` chunks of accumulators over every row of `pieces`.
#[inline(always)]
unsafe fn accumulate_block<F: Format, const HB: usize, const J: usize>(
    pieces: &[Piece],
    p: *const f32,
    stride: usize,
    acc: *mut f32,
    d: usize,
    j0: usize,
) {
    let mut a = [[_mm512_setzero_ps(); J]; HB];
    for (h, ah) in a.iter_mut().enumerate() {
        for (jj, v) in ah.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(acc.add(h * d + 16 * (j0 + jj)));
        }
    }
    let mut i = 0;
    for &(seg, r0, m) in pieces {
        for r in r0..r0 + m {
            let row = F::row(seg, r);
            let mut vv = [_mm512_setzero_ps(); J];
            for (jj, v) in vv.iter_mut().enumerate() {
                *v = F::load(&row, j0 + jj);
            }
            for (h, ah) in a.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*p.add(h * stride + i));
                for jj in 0..J {
                    ah[jj] = _mm512_fmadd_ps(w, vv[jj], ah[jj]);
                }
            }
            i += 1;
        }
    }
    for (h, ah) in a.iter().enumerate() {
        for (jj, v) in ah.iter().enumerate() {
            _mm512_storeu_ps(acc.add(h * d + 16 * (j0 + jj)), *v);
        }
    }
}

/// AVX-512 twin of [`super::scalar::accumulate`] over consecutive pieces (weights
/// `p[h·stride + i]` numbered across them), holding the accumulators in registers across
/// piece boundaries.
///
/// # Safety
/// The CPU must pass [`detected`], [`supports`] must hold, and every piece has the first
/// one's format.
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
        _ if nibble_pairs_fit(pieces[0].0.codec) => {
            accumulate_nibbles(pieces, p, heads, stride, acc)
        }
        quant => with_codes!(quant, Cd => accumulate_q::<Cd>(pieces, p, heads, stride, acc)),
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
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
    let chunks = d / 16;
    let (pp, ap) = (p.as_ptr(), acc.as_mut_ptr());
    let mut h = 0;
    while h < heads {
        let hb = head_block(heads - h);
        let (ph, ah) = (pp.add(h * stride), ap.add(h * d));
        let mut j = 0;
        while j < chunks {
            let left = chunks - j;
            j += match (hb, left) {
                (4, 4..) => {
                    accumulate_block::<F, 4, 4>(pieces, ph, stride, ah, d, j);
                    4
                }
                (2, 8..) => {
                    accumulate_block::<F, 2, 8>(pieces, ph, stride, ah, d, j);
                    8
                }
                (2, 4..) => {
                    accumulate_block::<F, 2, 4>(pieces, ph, stride, ah, d, j);
                    4
                }
                (1, 8..) => {
                    accumulate_block::<F, 1, 8>(pieces, ph, stride, ah, d, j);
                    8
                }
                (1, 4..) => {
                    accumulate_block::<F, 1, 4>(pieces, ph, stride, ah, d, j);
                    4
                }
                (4, _) => {
                    accumulate_block::<F, 4, 1>(pieces, ph, stride, ah, d, j);
                    1
                }
                (2, _) => {
                    accumulate_block::<F, 2, 1>(pieces, ph, stride, ah, d, j);
                    1
                }
                _ => {
                    accumulate_block::<F, 1, 1>(pieces, ph, stride, ah, d, j);
                    1
                }
            };
        }
        h += hb;
    }
}

// ---------------------------------------------------------------------------------------
// Wide kernels (many heads per KV head): dequantize a tile once, then small GEMMs.

/// AVX-512 twin of [`super::scalar::decode_tile`]: the rows of `pieces`, dequantized,
/// into `out` (`rows × d`, row-major).
///
/// # Safety
/// The CPU must pass [`detected`], [`supports`] must hold, and every piece has the first
/// one's format.
pub unsafe fn decode_tile(pieces: &[Piece], out: &mut [f32]) {
    with_format!(pieces[0].0.codec.quant, Fm => decode_tile_fmt::<Fm>(pieces, out))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn decode_tile_fmt<F: Format>(pieces: &[Piece], out: &mut [f32]) {
    let d = pieces[0].0.codec.head_dim;
    let n = check_pieces(pieces);
    assert!(out.len() >= n * d);
    let mut o = out.as_mut_ptr();
    for &(seg, r0, m) in pieces {
        for r in r0..r0 + m {
            let row = F::row(seg, r);
            for j in 0..d / 16 {
                _mm512_storeu_ps(o.add(16 * j), F::load(&row, j));
            }
            o = o.add(d);
        }
    }
}

/// `R` rows × `HV` vectors of 16 heads of scores: `st[i·hp + h] = Σ_c k[i·d + c] · qt[c·hp + h]`.
#[inline(always)]
unsafe fn scores_wide_block<const R: usize, const HV: usize>(
    k: *const f32,
    d: usize,
    qt: *const f32,
    hp: usize,
    st: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); HV]; R];
    for c in 0..d {
        let mut qv = [_mm512_setzero_ps(); HV];
        for (v, q) in qv.iter_mut().enumerate() {
            *q = _mm512_loadu_ps(qt.add(c * hp + 16 * v));
        }
        for (i, ai) in acc.iter_mut().enumerate() {
            let kv = _mm512_set1_ps(*k.add(i * d + c));
            for v in 0..HV {
                ai[v] = _mm512_fmadd_ps(kv, qv[v], ai[v]);
            }
        }
    }
    for (i, ai) in acc.iter().enumerate() {
        for (v, a) in ai.iter().enumerate() {
            _mm512_storeu_ps(st.add(i * hp + 16 * v), *a);
        }
    }
}

/// AVX-512 twin of [`super::scalar::scores_wide`]: scores of `n` f32 rows `k` (`n × d`)
/// against the transposed, head-padded queries `qt` (`d × hp`, `hp` a multiple of 16), into
/// `st` (`n × hp`).
///
/// # Safety
/// The CPU must pass [`detected`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub unsafe fn scores_wide(k: &[f32], n: usize, d: usize, qt: &[f32], hp: usize, st: &mut [f32]) {
    assert!(hp.is_multiple_of(16) && k.len() >= n * d && qt.len() >= d * hp);
    assert!(st.len() >= n * hp);
    let (kp, qp, sp) = (k.as_ptr(), qt.as_ptr(), st.as_mut_ptr());
    let mut v = 0;
    while v < hp / 16 {
        let two = hp / 16 - v >= 2;
        let (qv, sv) = (qp.add(16 * v), sp.add(16 * v));
        let mut i = 0;
        while i < n {
            let left = n - i;
            let (ki, si) = (kp.add(i * d), sv.add(i * hp));
            i += match (two, left) {
                (true, 12..) => {
                    scores_wide_block::<12, 2>(ki, d, qv, hp, si);
                    12
                }
                (false, 16..) => {
                    scores_wide_block::<16, 1>(ki, d, qv, hp, si);
                    16
                }
                (true, _) => {
                    scores_wide_block::<1, 2>(ki, d, qv, hp, si);
                    1
                }
                (false, _) => {
                    scores_wide_block::<1, 1>(ki, d, qv, hp, si);
                    1
                }
            };
        }
        v += if two { 2 } else { 1 };
    }
}

/// `exp(x)` on 16 lanes for x ≤ 0: the polynomial of [`super::exp_inplace`] (its twin).
#[inline(always)]
unsafe fn exp16(x: __m512) -> __m512 {
    let y = _mm512_max_ps(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        _mm512_set1_ps(-126.0),
    );
    let magic = _mm512_set1_ps(12_582_912.0);
    let n = _mm512_sub_ps(_mm512_add_ps(y, magic), magic);
    let f = _mm512_sub_ps(y, n);
    let mut p = _mm512_set1_ps(super::EXP2_POLY[0]);
    for &c in &super::EXP2_POLY[1..] {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    let bits = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)),
        23,
    );
    _mm512_mul_ps(p, _mm512_castsi512_ps(bits))
}

/// AVX-512 twin of [`super::scalar::softmax_wide`]: one tile of the online softmax over
/// `st` (`n × hp`), vectorized over heads; −inf scores (masked) weigh exactly 0. Replaces scores by exp(score − new max), updates
/// `max` and `sum` (`hp` each) and writes each head's rescale factor into `corr`.
///
/// # Safety
/// The CPU must pass [`detected`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub unsafe fn softmax_wide(
    st: &mut [f32],
    n: usize,
    hp: usize,
    max: &mut [f32],
    sum: &mut [f32],
    corr: &mut [f32],
) {
    assert!(hp.is_multiple_of(16) && st.len() >= n * hp);
    assert!(max.len() >= hp && sum.len() >= hp && corr.len() >= hp);
    let sp = st.as_mut_ptr();
    for v in 0..hp / 16 {
        let o = 16 * v;
        let mut m = _mm512_loadu_ps(max.as_ptr().add(o));
        let old = m;
        for i in 0..n {
            m = _mm512_max_ps(m, _mm512_loadu_ps(sp.add(i * hp + o)));
        }
        // An unchanged max rescales by exactly 1 (also when both are −inf: no NaN).
        let same = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(old, m);
        let c = _mm512_mask_blend_ps(same, exp16(_mm512_sub_ps(old, m)), _mm512_set1_ps(1.0));
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut s = _mm512_setzero_ps();
        for i in 0..n {
            let at = sp.add(i * hp + o);
            let x = _mm512_loadu_ps(at);
            // Masked (−inf) scores weigh exactly 0.
            let live = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(x, ninf);
            let e = _mm512_maskz_mov_ps(live, exp16(_mm512_sub_ps(x, m)));
            _mm512_storeu_ps(at, e);
            s = _mm512_add_ps(s, e);
        }
        let sum0 = _mm512_loadu_ps(sum.as_ptr().add(o));
        _mm512_storeu_ps(sum.as_mut_ptr().add(o), _mm512_fmadd_ps(sum0, c, s));
        _mm512_storeu_ps(max.as_mut_ptr().add(o), m);
        _mm512_storeu_ps(corr.as_mut_ptr().add(o), c);
    }
}

/// `HB` heads × `J` chunks of `acc[h·d + c] = acc · corr[h] + Σ_i p[i·hp + h] · v[i·d + c]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_wide_block<const HB: usize, const J: usize>(
    v: *const f32,
    n: usize,
    d: usize,
    p: *const f32,
    hp: usize,
    corr: *const f32,
    acc: *mut f32,
    j0: usize,
) {
    let mut a = [[_mm512_setzero_ps(); J]; HB];
    for (h, ah) in a.iter_mut().enumerate() {
        let c = _mm512_set1_ps(*corr.add(h));
        for (jj, x) in ah.iter_mut().enumerate() {
            *x = _mm512_mul_ps(_mm512_loadu_ps(acc.add(h * d + 16 * (j0 + jj))), c);
        }
    }
    for i in 0..n {
        let mut vv = [_mm512_setzero_ps(); J];
        for (jj, x) in vv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(v.add(i * d + 16 * (j0 + jj)));
        }
        for (h, ah) in a.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*p.add(i * hp + h));
            for jj in 0..J {
                ah[jj] = _mm512_fmadd_ps(w, vv[jj], ah[jj]);
            }
        }
    }
    for (h, ah) in a.iter().enumerate() {
        for (jj, x) in ah.iter().enumerate() {
            _mm512_storeu_ps(acc.add(h * d + 16 * (j0 + jj)), *x);
        }
    }
}

/// AVX-512 twin of [`super::scalar::accumulate_wide`]: `acc (heads × d) ← acc · corr +
/// pᵀ v` for weights `p` (`n × hp`) and f32 rows `v` (`n × d`).
///
/// # Safety
/// The CPU must pass [`detected`]; `d` is a multiple of 16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn accumulate_wide(
    v: &[f32],
    n: usize,
    d: usize,
    p: &[f32],
    hp: usize,
    heads: usize,
    corr: &[f32],
    acc: &mut [f32],
) {
    assert!(d.is_multiple_of(16) && heads <= hp && v.len() >= n * d && p.len() >= n * hp);
    assert!(corr.len() >= heads && acc.len() >= heads * d);
    let chunks = d / 16;
    let (vp, pp, cp, ap) = (v.as_ptr(), p.as_ptr(), corr.as_ptr(), acc.as_mut_ptr());
    let mut h = 0;
    while h < heads {
        let hb = if heads - h >= 4 { 4 } else { 1 };
        let (ph, ch, ah) = (pp.add(h), cp.add(h), ap.add(h * d));
        let mut j = 0;
        while j < chunks {
            let left = chunks - j;
            j += match (hb, left) {
                (4, 4..) => {
                    accumulate_wide_block::<4, 4>(vp, n, d, ph, hp, ch, ah, j);
                    4
                }
                (4, _) => {
                    accumulate_wide_block::<4, 1>(vp, n, d, ph, hp, ch, ah, j);
                    1
                }
                (_, 8..) => {
                    accumulate_wide_block::<1, 8>(vp, n, d, ph, hp, ch, ah, j);
                    8
                }
                _ => {
                    accumulate_wide_block::<1, 1>(vp, n, d, ph, hp, ch, ah, j);
                    1
                }
            };
        }
        h += hb;
    }
}

/// [`softmax_row`] of each head's `n` scores (`s[h·stride ..]`), in one call so that the
/// heads' reductions overlap; `corr[h]` gets each head's correction.
///
/// # Safety
/// The CPU must pass [`detected`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub unsafe fn softmax_rows(
    s: &mut [f32],
    n: usize,
    stride: usize,
    max: &mut [f32],
    sum: &mut [f32],
    corr: &mut [f32],
) {
    for (h, c) in corr.iter_mut().enumerate() {
        *c = softmax_row(&mut s[h * stride..h * stride + n], &mut max[h], &mut sum[h]);
    }
}

/// AVX-512 twin of [`super::scalar::softmax_row`].
///
/// # Safety
/// The CPU must pass [`detected`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
pub unsafe fn softmax_row(x: &mut [f32], max: &mut f32, sum: &mut f32) -> f32 {
    let (n, p) = (x.len(), x.as_mut_ptr());
    let mask = |i: usize| -> __mmask16 {
        if n - i >= 16 {
            0xffff
        } else {
            ((1u32 << (n - i)) - 1) as __mmask16
        }
    };
    let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in (0..n).step_by(16) {
        mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(mv, mask(i), p.add(i)));
    }
    // Most tiles after the first hold no score above the running max: a compare, not a
    // horizontal reduction, tells so (the same m either way).
    let m = match _mm512_cmp_ps_mask::<_CMP_GT_OQ>(mv, _mm512_set1_ps(*max)) {
        0 => *max,
        _ => max.max(_mm512_reduce_max_ps(mv)),
    };
    // exp(0) = 1 exactly: skip the libm call when the max holds (most tiles after the first).
    let c = if m == *max { 1.0 } else { (*max - m).exp() };
    let (mb, mut s) = (_mm512_set1_ps(m), _mm512_setzero_ps());
    for i in (0..n).step_by(16) {
        let k = mask(i);
        let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p.add(i)), mb));
        _mm512_mask_storeu_ps(p.add(i), k, e);
        s = _mm512_mask_add_ps(s, k, s, e);
    }
    *sum = *sum * c + _mm512_reduce_add_ps(s);
    *max = m;
    c
}

// ---------------------------------------------------------------------------------------
// Fused kernels for quantized rows: each scale group's dot product is taken with the raw
// codes, and the group's scale applied once (scores: `scale × (q · codes) + bias × Σq`;
// values: the weight becomes `p × scale`, the bias is summed as a scalar and added once),
// so no per-element dequantization multiply is paid.

/// Raw codes of a quantized format, 16 lanes at a time, without their group's scale.
trait Codes {
    unsafe fn raw(codes: *const u8, j: usize) -> __m512;
}

/// Codes read raw (centred, not scaled) as a [`Format`], for [`dot_block`].
struct Raw<C>(std::marker::PhantomData<C>);

impl<C: Codes> Format for Raw<C> {
    type Row = *const u8;
    #[inline(always)]
    unsafe fn row(seg: &Segment, r: usize) -> Self::Row {
        row_ptr(seg, r)
    }
    #[inline(always)]
    unsafe fn load(row: &Self::Row, j: usize) -> __m512 {
        C::raw(*row, j)
    }
}

impl Codes for Int<8> {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m512 {
        let b = _mm_xor_si128(
            _mm_loadu_si128(codes.add(16 * j) as *const __m128i),
            _mm_set1_epi8(-128),
        );
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b))
    }
}

impl Codes for Int<4> {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m512 {
        // Split and centre the nibbles on bytes in a 128-bit register (cheap ports), so
        // only the widening and the conversion are 512-bit operations.
        let b = _mm_loadl_epi64(codes.add(8 * j) as *const __m128i);
        let m = _mm_set1_epi8(15);
        let lo = _mm_and_si128(b, m);
        let hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
        let c = _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), _mm_set1_epi8(8));
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c))
    }
}

impl Codes for Int<2> {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m512 {
        let w = (codes.add(4 * j) as *const u32).read_unaligned() as i32;
        let sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let c = _mm512_and_si512(
            _mm512_srlv_epi32(_mm512_set1_epi32(w), sh),
            _mm512_set1_epi32(3),
        );
        _mm512_cvtepi32_ps(_mm512_sub_epi32(c, _mm512_set1_epi32(2)))
    }
}

impl Codes for Nf4 {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m512 {
        _mm512_permutexvar_ps(nibbles(codes, j), _mm512_loadu_ps(NF4_LEVELS.as_ptr()))
    }
}

impl<const E5M2: bool> Codes for Fp8Fmt<E5M2> {
    #[inline(always)]
    unsafe fn raw(codes: *const u8, j: usize) -> __m512 {
        fp8_lanes::<E5M2>(codes.add(16 * j))
    }
}

/// Where a quantized segment keeps its group parameters, and how to read them.
#[derive(Clone, Copy)]
pub(crate) struct QuantLayout {
    /// Bytes from a row's first code to its first parameter record.
    pub(crate) params: usize,
    /// Bytes of one group's record (scale, zero point).
    pub(crate) rec: usize,
    /// Bytes of one scale or zero point.
    pub(crate) width: usize,
    pub(crate) asym: bool,
    /// The centre integer codes are read around (0 for fp8/nf4).
    pub(crate) half: f32,
    /// Power of two folded into the scale (fp8 e4m3: 256).
    mult: f32,
    /// log2 of the 16-lane chunks per group.
    shift: u32,
}

impl QuantLayout {
    pub(crate) fn new(c: &Codec) -> Self {
        let width = c.dtype.scale_bytes as usize;
        let asym = c.dtype.zero_point;
        let (half, mult) = match c.quant {
            Quant::Int { bits, .. } => ((1u32 << (bits - 1)) as f32, 1.0),
            Quant::Fp8(f) => (0.0, fp8_mult(f == Fp8::E5m2)),
            _ => (0.0, 1.0),
        };
        QuantLayout {
            params: c.row_code_bytes,
            rec: if asym { 2 * width } else { width },
            width,
            asym,
            half,
            mult,
            shift: (c.group / 16).trailing_zeros(),
        }
    }

    /// (scale, bias) of group `g` of the row at `codes`, for raw codes.
    #[inline(always)]
    pub(crate) unsafe fn params(&self, codes: *const u8, g: usize) -> (f32, f32) {
        let at = codes.add(self.params + g * self.rec);
        if self.asym && self.width == 2 {
            // Scale and zero point converted together.
            let v = _mm_cvtph_ps(_mm_cvtsi32_si128((at as *const u32).read_unaligned() as i32));
            let (s, z) = (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)));
            return (s * self.mult, z + self.half * s);
        }
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

/// Scores of `R` rows against `HB` heads for quantized codes of several scale groups a row,
/// read group by group across the block's rows. Unlike the one- and two-head blocks of the
/// other score kernels it does not read row by row ([`dot_block`]): its rows are short (4-bit codes, or int8 with groups: at
/// most 8 rows of 136 bytes a block), and on a Zen 4 row order cost nf4 18-48 % more in
/// cache with no gain measured from memory (docs/performance.md, fourteenth round).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_block_q<C: Codes, const R: usize, const HB: usize>(
    seg: &Segment,
    lay: &QuantLayout,
    r0: usize,
    q: *const f32,
    qsum: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    let (cpg, ng) = (1usize << lay.shift, d / (16 << lay.shift));
    let mut rows = [std::ptr::null::<u8>(); R];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = row_ptr(seg, r0 + i);
    }
    let mut tot = [[_mm512_setzero_ps(); R]; HB];
    let mut bias = [[0.0f32; R]; HB];
    for g in 0..ng {
        let mut ga = [[_mm512_setzero_ps(); R]; HB];
        for j in g * cpg..(g + 1) * cpg {
            let mut kv = [_mm512_setzero_ps(); R];
            for (k, row) in kv.iter_mut().zip(&rows) {
                *k = C::raw(*row, j);
            }
            for (h, ga_h) in ga.iter_mut().enumerate() {
                let qv = _mm512_loadu_ps(q.add(h * d + 16 * j));
                for i in 0..R {
                    ga_h[i] = _mm512_fmadd_ps(qv, kv[i], ga_h[i]);
                }
            }
        }
        for (i, row) in rows.iter().enumerate() {
            let (s, b) = lay.params(*row, g);
            let sv = _mm512_set1_ps(s);
            for h in 0..HB {
                tot[h][i] = _mm512_fmadd_ps(ga[h][i], sv, tot[h][i]);
                if lay.asym {
                    bias[h][i] += b * *qsum.add(h * ng + g);
                }
            }
        }
    }
    for h in 0..HB {
        for i in 0..R {
            *out.add(h * stride + i) = _mm512_reduce_add_ps(tot[h][i]) + bias[h][i];
        }
    }
}

/// [`scores_block_q`] for rows of one scale group (int8, fp8 per row): the 16 dot products of
/// raw codes are summed by [`sum16`] and scaled afterwards, one multiply-add for all 16.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_block_q1<C: Codes, const R: usize, const HB: usize, const NC: usize>(
    seg: &Segment,
    lay: &QuantLayout,
    r0: usize,
    q: *const f32,
    qsum: *const f32,
    d: usize,
    out: *mut f32,
    stride: usize,
) {
    let mut rows = [std::ptr::null::<u8>(); R];
    for (i, row) in rows.iter_mut().enumerate() {
        *row = row_ptr(seg, r0 + i);
    }
    let acc = dot_block::<Raw<C>, R, HB, NC>(&rows, q, d);
    let mut flat = [_mm512_setzero_ps(); 16];
    let (mut sc, mut bi) = ([0.0f32; 16], [0.0f32; 16]);
    for (h, acc_h) in acc.iter().enumerate() {
        flat[h * R..(h + 1) * R].copy_from_slice(acc_h);
    }
    for (i, row) in rows.iter().enumerate() {
        let (s, b) = lay.params(*row, 0);
        for h in 0..HB {
            sc[h * R + i] = s;
            bi[h * R + i] = b * *qsum.add(h);
        }
    }
    let v = _mm512_fmadd_ps(
        sum16(&flat),
        _mm512_loadu_ps(sc.as_ptr()),
        _mm512_loadu_ps(bi.as_ptr()),
    );
    store_rows::<R, HB>(v, out, stride);
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn scores_q<C: Codes, const NC: usize>(
    pieces: &[Piece],
    q: &[f32],
    heads: usize,
    out: &mut [f32],
    stride: usize,
) {
    let c = pieces[0].0.codec;
    let (d, ng) = (c.head_dim, c.head_dim / c.group);
    let total = check_pieces(pieces);
    assert!(q.len() >= heads * d && out.len() >= (heads - 1) * stride + total);
    let lay = QuantLayout::new(c);
    // Σq of each (head, group), for the bias term.
    let mut buf = [0.0f32; 256];
    let mut heap = Vec::new();
    let qsum: &mut [f32] = if heads * ng <= buf.len() {
        &mut buf[..heads * ng]
    } else {
        heap.resize(heads * ng, 0.0);
        &mut heap
    };
    if lay.asym {
        for (i, s) in qsum.iter_mut().enumerate() {
            *s = q[i * c.group..(i + 1) * c.group].iter().sum();
        }
    }
    let (qp, sp) = (q.as_ptr(), qsum.as_ptr());
    let mut off = 0;
    for &(seg, row0, n) in pieces {
        let op = out.as_mut_ptr().add(off);
        let mut h = 0;
        while h < heads {
            let hb = head_block(heads - h);
            let (qh, sh) = (qp.add(h * d), sp.add(h * ng));
            let mut i = 0;
            while i < n {
                let left = n - i;
                let (oh, r) = (op.add(h * stride + i), row0 + i);
                i += match (hb, left, ng) {
                    (4, 4.., 1) => {
                        scores_block_q1::<C, 4, 4, NC>(seg, &lay, r, qh, sh, d, oh, stride);
                        4
                    }
                    (2, 8.., 1) => {
                        scores_block_q1::<C, 8, 2, NC>(seg, &lay, r, qh, sh, d, oh, stride);
                        8
                    }
                    (1, 16.., 1) => {
                        scores_block_q1::<C, 16, 1, NC>(seg, &lay, r, qh, sh, d, oh, stride);
                        16
                    }
                    (4, 2.., _) => {
                        scores_block_q::<C, 2, 4>(seg, &lay, r, qh, sh, d, oh, stride);
                        2
                    }
                    (2, 4.., _) => {
                        scores_block_q::<C, 4, 2>(seg, &lay, r, qh, sh, d, oh, stride);
                        4
                    }
                    (1, 8.., _) => {
                        scores_block_q::<C, 8, 1>(seg, &lay, r, qh, sh, d, oh, stride);
                        8
                    }
                    (4, _, _) => {
                        scores_block_q::<C, 1, 4>(seg, &lay, r, qh, sh, d, oh, stride);
                        1
                    }
                    (2, _, _) => {
                        scores_block_q::<C, 1, 2>(seg, &lay, r, qh, sh, d, oh, stride);
                        1
                    }
                    _ => {
                        scores_block_q::<C, 1, 1>(seg, &lay, r, qh, sh, d, oh, stride);
                        1
                    }
                };
            }
            h += hb;
        }
        off += n;
    }
}

/// One row's `GB` group records, f16 side by side (scale, and zero point when
/// asymmetric), times each head's weight: (p·s, p·z) per group. Returns the weights of the
/// codes, p·s broadcast per head and group; `sums` collects the products of asymmetric
/// records, from which [`record_bias`] makes the bias.
#[inline(always)]
unsafe fn record_weights<const HB: usize, const GB: usize>(
    row: *const u8,
    lay: &QuantLayout,
    g0: usize,
    p: *const f32,
    stride: usize,
    sums: &mut [__m512; HB],
) -> [[__m512; GB]; HB] {
    let at = row.add(lay.params + g0 * lay.rec);
    let mut rec = load_scalars(at, GB * lay.rec / 2, 2);
    if lay.mult != 1.0 {
        rec = _mm512_mul_ps(rec, _mm512_set1_ps(lay.mult));
    }
    let per_rec = (lay.rec / 2).max(1) as i32;
    let mut ws = [[_mm512_setzero_ps(); GB]; HB];
    for (h, wh) in ws.iter_mut().enumerate() {
        let wrec = _mm512_mul_ps(_mm512_set1_ps(*p.add(h * stride)), rec);
        if lay.asym {
            sums[h] = _mm512_add_ps(sums[h], wrec);
        }
        for (gb, w) in wh.iter_mut().enumerate() {
            *w = _mm512_permutexvar_ps(_mm512_set1_epi32(gb as i32 * per_rec), wrec);
        }
    }
    ws
}

/// Each head's bias per group from [`record_weights`]' sums, for centred codes:
/// Σ p·(z + half·s) when asymmetric, else none.
#[inline(always)]
unsafe fn record_bias<const HB: usize, const GB: usize>(
    sums: &[__m512; HB],
    lay: &QuantLayout,
) -> [[f32; GB]; HB] {
    let per_rec = (lay.rec / 2).max(1);
    let mut bias = [[0.0f32; GB]; HB];
    for (h, s) in sums.iter().enumerate() {
        let mut lanes = [0.0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), *s);
        for (gb, b) in bias[h].iter_mut().enumerate() {
            if lay.asym {
                *b = lanes[gb * per_rec + 1] + lay.half * lanes[gb * per_rec];
            }
        }
    }
    bias
}

/// Whether a row's `groups` records are read as one vector: f16, several, in 16 bytes.
fn records_as_vector(lay: &QuantLayout, groups: usize) -> bool {
    lay.width == 2 && groups >= 2 && groups * lay.rec <= 16
}

/// `HB` heads × `J` chunks of accumulators for quantized codes, spanning `GB` whole scale
/// groups (`GB = 1`: the `J` chunks lie inside one group).
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // gb indexes register arrays
unsafe fn accumulate_block_q<C: Codes, const HB: usize, const J: usize, const GB: usize>(
    pieces: &[Piece],
    lay: &QuantLayout,
    p: *const f32,
    stride: usize,
    acc: *mut f32,
    d: usize,
    j0: usize,
) {
    let g0 = j0 >> lay.shift;
    let per = J / GB;
    let vec_params = records_as_vector(lay, GB);
    let mut a = [[_mm512_setzero_ps(); J]; HB];
    let mut bias = [[0.0f32; GB]; HB];
    let mut sums = [_mm512_setzero_ps(); HB];
    let mut i = 0;
    for &(seg, r0, m) in pieces {
        for r in r0..r0 + m {
            let row = row_ptr(seg, r);
            let mut vv = [_mm512_setzero_ps(); J];
            for (jj, v) in vv.iter_mut().enumerate() {
                *v = C::raw(row, j0 + jj);
            }
            if vec_params {
                let ws = record_weights::<HB, GB>(row, lay, g0, p.add(i), stride, &mut sums);
                for (ah, wh) in a.iter_mut().zip(&ws) {
                    for (gb, w) in wh.iter().enumerate() {
                        for jj in gb * per..(gb + 1) * per {
                            ah[jj] = _mm512_fmadd_ps(*w, vv[jj], ah[jj]);
                        }
                    }
                }
                i += 1;
                continue;
            }
            for gb in 0..GB {
                let (s, b) = lay.params(row, g0 + gb);
                for (h, ah) in a.iter_mut().enumerate() {
                    let w = *p.add(h * stride + i);
                    if lay.asym {
                        bias[h][gb] += w * b;
                    }
                    let ws = _mm512_set1_ps(w * s);
                    for jj in gb * per..(gb + 1) * per {
                        ah[jj] = _mm512_fmadd_ps(ws, vv[jj], ah[jj]);
                    }
                }
            }
            i += 1;
        }
    }
    if vec_params {
        bias = record_bias::<HB, GB>(&sums, lay);
    }
    for (h, ah) in a.iter().enumerate() {
        for (jj, v) in ah.iter().enumerate() {
            let bv = _mm512_set1_ps(bias[h][jj / per]);
            let at = acc.add(h * d + 16 * (j0 + jj));
            _mm512_storeu_ps(
                at,
                _mm512_add_ps(_mm512_loadu_ps(at), _mm512_add_ps(*v, bv)),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Value sums of 4-bit codes (int4, nf4) read 32 channels at a time: 16 code bytes widened
// once to 32-bit lanes give the low nibbles (even channels) and, shifted, the high ones
// (odd channels), each turned into its level by one permute. The accumulators hold the
// channels in that order and are interleaved once, when stored: a third of the work of
// unpacking the nibbles to channel order for every row.

/// The 16 levels of a 4-bit format as f32 lanes: the centred integer codes, or NF4's table.
#[inline(always)]
unsafe fn nibble_levels(quant: Quant) -> __m512 {
    match quant {
        Quant::Nf4 => _mm512_loadu_ps(NF4_LEVELS.as_ptr()),
        _ => _mm512_setr_ps(
            -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0,
        ),
    }
}

/// Whether [`accumulate_nibbles`] takes these codes: 4-bit, whole 32-channel chunks, and
/// scale groups of whole chunks.
fn nibble_pairs_fit(c: &Codec) -> bool {
    let four_bit = matches!(c.quant, Quant::Nf4 | Quant::Int { bits: 4, .. });
    four_bit && c.head_dim.is_multiple_of(32) && c.group.is_multiple_of(32)
}

/// `HB` heads × `M` chunks of 32 channels, spanning `GB` whole scale groups (`GB = 1`: the
/// chunks lie inside one group); accumulator `2m` holds chunk `m`'s even channels, `2m + 1`
/// its odd ones.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // gb indexes register arrays
unsafe fn accumulate_block_n<const HB: usize, const M: usize, const GB: usize>(
    pieces: &[Piece],
    lay: &QuantLayout,
    levels: __m512,
    p: *const f32,
    stride: usize,
    acc: *mut f32,
    d: usize,
    m0: usize,
) {
    let g0 = (2 * m0) >> lay.shift;
    let per = M / GB;
    let vec_params = records_as_vector(lay, GB);
    let mut a = [[[_mm512_setzero_ps(); 2]; M]; HB];
    let mut bias = [[0.0f32; GB]; HB];
    let mut sums = [_mm512_setzero_ps(); HB];
    let mut i = 0;
    for &(seg, r0, n) in pieces {
        for r in r0..r0 + n {
            let row = row_ptr(seg, r);
            let mut vv = [[_mm512_setzero_ps(); 2]; M];
            for (m, v) in vv.iter_mut().enumerate() {
                let x =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(row.add(16 * (m0 + m)) as *const __m128i));
                v[0] = _mm512_permutexvar_ps(x, levels);
                v[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(x, 4), levels);
            }
            if vec_params {
                let ws = record_weights::<HB, GB>(row, lay, g0, p.add(i), stride, &mut sums);
                for (ah, wh) in a.iter_mut().zip(&ws) {
                    for (gb, w) in wh.iter().enumerate() {
                        for m in gb * per..(gb + 1) * per {
                            ah[m][0] = _mm512_fmadd_ps(*w, vv[m][0], ah[m][0]);
                            ah[m][1] = _mm512_fmadd_ps(*w, vv[m][1], ah[m][1]);
                        }
                    }
                }
                i += 1;
                continue;
            }
            for gb in 0..GB {
                let (s, b) = lay.params(row, g0 + gb);
                for (h, ah) in a.iter_mut().enumerate() {
                    let w = *p.add(h * stride + i);
                    if lay.asym {
                        bias[h][gb] += w * b;
                    }
                    let ws = _mm512_set1_ps(w * s);
                    for m in gb * per..(gb + 1) * per {
                        ah[m][0] = _mm512_fmadd_ps(ws, vv[m][0], ah[m][0]);
                        ah[m][1] = _mm512_fmadd_ps(ws, vv[m][1], ah[m][1]);
                    }
                }
            }
            i += 1;
        }
    }
    if vec_params {
        bias = record_bias::<HB, GB>(&sums, lay);
    }
    add_nibble_sums::<HB, M, GB>(&a, &bias, acc, d, m0);
}

/// Adds [`accumulate_block_n`]'s sums (even and odd channels apart, plus each head's bias
/// per group) into `acc` in channel order.
#[inline(always)]
unsafe fn add_nibble_sums<const HB: usize, const M: usize, const GB: usize>(
    a: &[[[__m512; 2]; M]; HB],
    bias: &[[f32; GB]; HB],
    acc: *mut f32,
    d: usize,
    m0: usize,
) {
    let per = M / GB;
    // Channel 2k of a chunk is lane k of its even half, 2k + 1 lane k of its odd half.
    let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (h, ah) in a.iter().enumerate() {
        for (m, [even, odd]) in ah.iter().enumerate() {
            let bv = _mm512_set1_ps(bias[h][m / per]);
            let at = acc.add(h * d + 32 * (m0 + m));
            for (half, idx) in [first, second].into_iter().enumerate() {
                let v = _mm512_permutex2var_ps(*even, idx, *odd);
                let o = at.add(16 * half);
                _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), _mm512_add_ps(v, bv)));
            }
        }
    }
}

/// [`accumulate_block_n`] for four heads: each chunk's levels become values once
/// (s · level + b of their group) and the heads' weights multiply the values. The other
/// blocks fold the scale into each head's weight instead, which costs a broadcast per head
/// and group of every row: cheaper for one or two heads, dearer for four.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // m and h index register arrays
unsafe fn accumulate_block_n4<const M: usize, const GB: usize>(
    pieces: &[Piece],
    lay: &QuantLayout,
    levels: __m512,
    p: *const f32,
    stride: usize,
    acc: *mut f32,
    d: usize,
    m0: usize,
) {
    const HB: usize = 4;
    let g0 = (2 * m0) >> lay.shift;
    let per = M / GB;
    let vec_params = records_as_vector(lay, GB);
    let per_rec = (lay.rec / 2).max(1) as i32;
    let zero = _mm512_setzero_ps();
    let mut a = [[[zero; 2]; M]; HB];
    let mut i = 0;
    for &(seg, r0, n) in pieces {
        for r in r0..r0 + n {
            let row = row_ptr(seg, r);
            // Each group's (scale, bias) as lanes, as `QuantLayout::params` gives them.
            let mut sb = [(zero, zero); GB];
            if vec_params {
                let rec = load_scalars(row.add(lay.params + g0 * lay.rec), GB * lay.rec / 2, 2);
                for (gb, x) in sb.iter_mut().enumerate() {
                    let s = _mm512_permutexvar_ps(_mm512_set1_epi32(gb as i32 * per_rec), rec);
                    let b = match lay.asym {
                        true => _mm512_fmadd_ps(
                            _mm512_set1_ps(lay.half),
                            s,
                            _mm512_permutexvar_ps(_mm512_set1_epi32(gb as i32 * per_rec + 1), rec),
                        ),
                        false => zero,
                    };
                    *x = match lay.mult {
                        1.0 => (s, b),
                        m => (_mm512_mul_ps(s, _mm512_set1_ps(m)), b),
                    };
                }
            } else {
                for (gb, x) in sb.iter_mut().enumerate() {
                    let (s, b) = lay.params(row, g0 + gb);
                    *x = (_mm512_set1_ps(s), _mm512_set1_ps(b));
                }
            }
            let w: [__m512; HB] = std::array::from_fn(|h| _mm512_set1_ps(*p.add(h * stride + i)));
            for m in 0..M {
                let (s, b) = sb[m / per];
                let x =
                    _mm512_cvtepu8_epi32(_mm_loadu_si128(row.add(16 * (m0 + m)) as *const __m128i));
                let halves = [x, _mm512_srli_epi32(x, 4)];
                for (half, codes) in halves.into_iter().enumerate() {
                    let level = _mm512_permutexvar_ps(codes, levels);
                    let value = match lay.asym {
                        true => _mm512_fmadd_ps(level, s, b),
                        false => _mm512_mul_ps(level, s),
                    };
                    for h in 0..HB {
                        a[h][m][half] = _mm512_fmadd_ps(w[h], value, a[h][m][half]);
                    }
                }
            }
            i += 1;
        }
    }
    add_nibble_sums::<HB, M, GB>(&a, &[[0.0; GB]; HB], acc, d, m0);
}

/// [`accumulate_q`] for 4-bit codes that [`nibble_pairs_fit`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn accumulate_nibbles(
    pieces: &[Piece],
    p: &[f32],
    heads: usize,
    stride: usize,
    acc: &mut [f32],
) {
    let c = pieces[0].0.codec;
    let d = c.head_dim;
    let n = check_pieces(pieces);
    assert!(acc.len() >= heads * d && p.len() >= (heads - 1) * stride + n);
    let lay = QuantLayout::new(c);
    let levels = nibble_levels(c.quant);
    // Scale groups in chunks of 32 channels.
    let cpg = (1usize << lay.shift) / 2;
    let chunks = d / 32;
    let (pp, ap) = (p.as_ptr(), acc.as_mut_ptr());
    macro_rules! blk {
        (4, $m:literal, $gb:literal, $ph:expr, $ah:expr, $mv:expr) => {{
            accumulate_block_n4::<$m, $gb>(pieces, &lay, levels, $ph, stride, $ah, d, $mv);
            $m
        }};
        ($hb:literal, $m:literal, $gb:literal, $ph:expr, $ah:expr, $mv:expr) => {{
            accumulate_block_n::<$hb, $m, $gb>(pieces, &lay, levels, $ph, stride, $ah, d, $mv);
            $m
        }};
    }
    let mut h = 0;
    while h < heads {
        let hb = head_block(heads - h);
        let (ph, ah) = (pp.add(h * stride), ap.add(h * d));
        let mut m = 0;
        while m < chunks {
            // Blocks of M chunks start on a group boundary or inside one group.
            m += match (hb, chunks - m, cpg) {
                (4, 2.., 2..) => blk!(4, 2, 1, ph, ah, m),
                (4, 2.., _) => blk!(4, 2, 2, ph, ah, m),
                (4, _, _) => blk!(4, 1, 1, ph, ah, m),
                (2, 4.., 4..) => blk!(2, 4, 1, ph, ah, m),
                (2, 4.., 2) => blk!(2, 4, 2, ph, ah, m),
                (2, 4.., _) => blk!(2, 4, 4, ph, ah, m),
                (2, 2.., 2..) => blk!(2, 2, 1, ph, ah, m),
                (2, 2.., _) => blk!(2, 2, 2, ph, ah, m),
                (2, _, _) => blk!(2, 1, 1, ph, ah, m),
                (_, 4.., 4..) => blk!(1, 4, 1, ph, ah, m),
                (_, 4.., 2) => blk!(1, 4, 2, ph, ah, m),
                (_, 4.., _) => blk!(1, 4, 4, ph, ah, m),
                (_, 2.., 2..) => blk!(1, 2, 1, ph, ah, m),
                (_, 2.., _) => blk!(1, 2, 2, ph, ah, m),
                _ => blk!(1, 1, 1, ph, ah, m),
            };
        }
        h += hb;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")]
unsafe fn accumulate_q<C: Codes>(
    pieces: &[Piece],
    p: &[f32],
    heads: usize,
    stride: usize,
    acc: &mut [f32],
) {
    let c = pieces[0].0.codec;
    let d = c.head_dim;
    let n = check_pieces(pieces);
    assert!(acc.len() >= heads * d && p.len() >= (heads - 1) * stride + n);
    let lay = QuantLayout::new(c);
    let cpg = 1usize << lay.shift;
    let chunks = d / 16;
    let (pp, ap) = (p.as_ptr(), acc.as_mut_ptr());
    macro_rules! blk {
        ($hb:literal, $j:literal, $gb:literal, $ph:expr, $ah:expr, $jv:expr) => {{
            accumulate_block_q::<C, $hb, $j, $gb>(pieces, &lay, $ph, stride, $ah, d, $jv);
            $j
        }};
    }
    let mut h = 0;
    while h < heads {
        let hb = head_block(heads - h);
        let (ph, ah) = (pp.add(h * stride), ap.add(h * d));
        let mut j = 0;
        while j < chunks {
            let left = chunks - j;
            // Blocks of J chunks start on a group boundary or inside one group.
            j += match (hb, left, cpg) {
                (4, 4.., 4..) => blk!(4, 4, 1, ph, ah, j),
                (4, 4.., 2) => blk!(4, 4, 2, ph, ah, j),
                (4, 4.., _) => blk!(4, 4, 4, ph, ah, j),
                (2, 8.., 8..) => blk!(2, 8, 1, ph, ah, j),
                (2, 8.., 4) => blk!(2, 8, 2, ph, ah, j),
                (2, 8.., 2) => blk!(2, 8, 4, ph, ah, j),
                (2, 8.., _) => blk!(2, 8, 8, ph, ah, j),
                (1, 8.., 8..) => blk!(1, 8, 1, ph, ah, j),
                (1, 8.., 4) => blk!(1, 8, 2, ph, ah, j),
                (1, 8.., 2) => blk!(1, 8, 4, ph, ah, j),
                (1, 8.., _) => blk!(1, 8, 8, ph, ah, j),
                (4, _, _) => blk!(4, 1, 1, ph, ah, j),
                (2, _, _) => blk!(2, 1, 1, ph, ah, j),
                _ => blk!(1, 1, 1, ph, ah, j),
            };
        }
        h += hb;
    }
}
