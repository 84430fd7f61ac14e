//! Integer-dot scores for int8 and int4 keys (AVX-512 VNNI): one `vpdpbusd` multiplies 64
//! stored codes (unsigned bytes) by 64 signed bytes and sums them four to a 32-bit lane,
//! where the float kernels widen, convert and multiply 16 codes at a time.
//!
//! The query is split once per decode part into three signed 8-bit parts,
//! q ≈ s·(a + b/F + c/F²) with F = 254, which keeps about 24 bits: the scores agree with the
//! float kernels' to f32 rounding, not to 8 bits as llama.cpp's q8_0 × q8_0 dot does. Each
//! part's products are summed exactly in integers; the codes' offset (2^(bits−1)) is taken
//! off by starting each lane at −offset·Σ(part) instead of zero. A lane becomes f32 once per
//! scale group (or per row, when the row is one group) and then takes the group's scale and,
//! for asymmetric codes, bias · Σq.
//!
//! Code order: an int8 chunk is 64 codes, lane `k` holding elements 4k..4k+3; an int4 chunk
//! is 64 bytes of nibbles (low nibble first, so 128 elements), split into the even elements
//! (low nibbles) and the odd ones (high nibbles), lane `k` holding elements 8k..8k+7. The
//! query parts are laid out in that order, so no code is moved.

use crate::codec::{Codec, Quant};

/// Parts the query is split into.
const PARTS: usize = 3;
/// Weight of each part relative to the one before.
const SPLIT: f32 = 254.0;
/// Code bytes per chunk (one 512-bit load).
const CHUNK_BYTES: usize = 64;

/// `heads` query heads prepared for integer dot products against one int8 or int4 format.
#[derive(Debug, Clone)]
pub struct IntQuery {
    codec: Codec,
    heads: usize,
    bits: u32,
    /// Chunks of one row's codes: 1, 2 or 4 (the last may be partial).
    chunks: usize,
    /// Code bytes of one row.
    row_bytes: usize,
    /// Whether a chunk holds one or more whole scale groups (else the row is one group, and
    /// its chunks add up in integers before one conversion).
    grouped: bool,
    /// Scale groups per chunk (when `grouped`).
    groups_per_chunk: usize,
    /// Each lane's scalar within its chunk's parameter records (when `grouped`).
    lane_rec: [i32; 16],
    /// Per chunk, the scalars of its parameter records the row holds (when `grouped`; a
    /// partial last chunk holds fewer groups).
    chunk_scalars: [usize; 4],
    /// `heads × chunks × PARTS × part_bytes`: the parts in code order.
    parts: Vec<i8>,
    /// `heads × spans × PARTS × 16`: each lane's starting value, −offset · Σ part (a span
    /// is a chunk when `grouped`, else the row).
    init: Vec<i32>,
    /// `heads × spans × 16`: Σq over each lane's elements (the bias term of asymmetric codes).
    qlane: Vec<f32>,
    /// `heads × PARTS`: the scale of each part.
    mult: Vec<f32>,
}

impl IntQuery {
    /// `q` (`heads × d`) prepared for `k`'s codes, when this CPU has the integer dot
    /// ([`detected`]) and the format fits it: int8 or int4 with one token per unit, f16 or
    /// f32 scales, a row of 1, 2 or 4 chunks, and scale groups that are the whole row or
    /// divide a chunk.
    pub fn new(k: &Codec, q: &[f32], heads: usize) -> Option<Self> {
        let Quant::Int { bits, .. } = k.quant else {
            return None;
        };
        let (d, group) = (k.head_dim, k.group);
        let per_lane = 32 / bits as usize;
        let chunk_elems = 16 * per_lane;
        let chunks = d.div_ceil(chunk_elems);
        let grouped = chunk_elems.is_multiple_of(group);
        let fits = matches!(bits, 8 | 4)
            && k.unit_tokens == 1
            && matches!(k.dtype.scale_bytes, 2 | 4)
            && d.is_multiple_of(16)
            && matches!(chunks, 1 | 2 | 4)
            && (grouped || group == d)
            && group.is_multiple_of(per_lane)
            && q.len() >= heads * d
            && heads > 0
            && detected();
        if !fits {
            return None;
        }
        let spans = if grouped { chunks } else { 1 };
        let per_rec = if k.dtype.zero_point { 2 } else { 1 };
        let lanes_per_group = group / per_lane;
        let mut iq = IntQuery {
            codec: *k,
            heads,
            bits,
            chunks,
            row_bytes: d * bits as usize / 8,
            grouped,
            groups_per_chunk: chunk_elems / group,
            lane_rec: std::array::from_fn(|lane| (lane / lanes_per_group * per_rec) as i32),
            chunk_scalars: std::array::from_fn(|ch| {
                let groups_here = (d / group).saturating_sub(ch * (chunk_elems / group));
                groups_here.min(chunk_elems / group) * per_rec
            }),
            parts: vec![0; heads * chunks * PARTS * part_bytes(bits)],
            init: vec![0; heads * spans * PARTS * 16],
            qlane: vec![0.0; heads * spans * 16],
            mult: vec![0.0; heads * PARTS],
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detected` holds.
        unsafe {
            kernel::split(&mut iq, q)
        };
        // Σq per lane, for the bias of asymmetric codes.
        if k.dtype.zero_point {
            for h in 0..heads {
                for (c, chunk) in q[h * d..(h + 1) * d].chunks(chunk_elems).enumerate() {
                    let span = if grouped { c } else { 0 };
                    let lanes = &mut iq.qlane[(h * spans + span) * 16..][..16];
                    for (l, elems) in lanes.iter_mut().zip(chunk.chunks(per_lane)) {
                        *l += elems.iter().sum::<f32>();
                    }
                }
            }
        }
        Some(iq)
    }

    /// Whether these are the query parts for rows of format `c`.
    pub fn is_for(&self, c: &Codec) -> bool {
        self.codec == *c
    }

    /// Query heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    fn spans(&self) -> usize {
        if self.grouped {
            self.chunks
        } else {
            1
        }
    }
}

/// Bytes of one part of one chunk: 64, or for int4 the even and the odd elements' 64 each.
fn part_bytes(bits: u32) -> usize {
    CHUNK_BYTES * (8 / bits as usize)
}

/// Whether this CPU has the AVX-512 kernels and VNNI.
pub fn detected() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::cpu::avx512::detected() && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
pub use kernel::scores;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_op_in_unsafe_fn)]
mod kernel {
    use super::{part_bytes, IntQuery, CHUNK_BYTES, PARTS, SPLIT};
    use crate::cache::Segment;
    use crate::cpu::avx512::{head_block, load_scalars, row_ptr, sum16, Piece, QuantLayout};
    use std::arch::x86_64::*;

    /// Fill `iq`'s parts, part scales and lane starting values from `q`.
    ///
    /// # Safety
    /// The CPU must pass [`super::detected`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn split(iq: &mut IntQuery, q: &[f32]) {
        let d = iq.codec.head_dim;
        let (bits, pb, spans) = (iq.bits, part_bytes(iq.bits), iq.spans());
        let chunk_elems = 16 * (32 / bits as usize);
        let ones = _mm512_set1_epi8(1);
        // Even and odd elements of 32 (int4's low and high nibbles).
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        for h in 0..iq.heads {
            let qh = q.as_ptr().add(h * d);
            let top = q[h * d..(h + 1) * d]
                .iter()
                .fold(0.0f32, |m, x| m.max(x.abs()));
            let scale = if top > 0.0 { top / 127.0 } else { 1.0 };
            for p in 0..PARTS {
                iq.mult[h * PARTS + p] = scale / SPLIT.powi(p as i32);
            }
            let inv = _mm512_set1_ps(1.0 / scale);
            for ch in 0..iq.chunks {
                let base = iq.parts.as_mut_ptr().add((h * iq.chunks + ch) * PARTS * pb);
                let first = ch * chunk_elems;
                for b in 0..4 {
                    match bits {
                        8 => {
                            let e = first + 16 * b;
                            if e >= d {
                                break;
                            }
                            let parts = split16(_mm512_loadu_ps(qh.add(e)), inv);
                            for (p, v) in parts.iter().enumerate() {
                                _mm_storeu_si128(base.add(p * pb + 16 * b) as *mut __m128i, *v);
                            }
                        }
                        _ => {
                            let e = first + 32 * b;
                            if e >= d {
                                break;
                            }
                            let (x0, x1) =
                                (_mm512_loadu_ps(qh.add(e)), _mm512_loadu_ps(qh.add(e + 16)));
                            let lo = split16(_mm512_permutex2var_ps(x0, even, x1), inv);
                            let hi = split16(_mm512_permutex2var_ps(x0, odd, x1), inv);
                            for p in 0..PARTS {
                                let at = base.add(p * pb + 16 * b);
                                _mm_storeu_si128(at as *mut __m128i, lo[p]);
                                _mm_storeu_si128(at.add(CHUNK_BYTES) as *mut __m128i, hi[p]);
                            }
                        }
                    }
                }
                // Each lane starts at −offset · Σ of its part bytes (a dot with ones).
                let span = if iq.grouped { ch } else { 0 };
                for p in 0..PARTS {
                    let at = base.add(p * pb);
                    let mut s = _mm512_dpbusd_epi32(
                        _mm512_setzero_si512(),
                        ones,
                        _mm512_loadu_si512(at as *const _),
                    );
                    if bits == 4 {
                        let hi = _mm512_loadu_si512(at.add(CHUNK_BYTES) as *const _);
                        s = _mm512_dpbusd_epi32(s, ones, hi);
                    }
                    let init = iq
                        .init
                        .as_mut_ptr()
                        .add(((h * spans + span) * PARTS + p) * 16);
                    let was = _mm512_loadu_si512(init as *const _);
                    let off = _mm512_sllv_epi32(s, _mm512_set1_epi32(bits as i32 - 1));
                    _mm512_storeu_si512(init as *mut _, _mm512_sub_epi32(was, off));
                }
            }
        }
    }

    /// Sixteen values (in units of the part-0 step) as three parts of 16 signed bytes.
    #[inline(always)]
    unsafe fn split16(x: __m512, inv: __m512) -> [__m128i; PARTS] {
        let (lim, f) = (_mm512_set1_ps(127.0), _mm512_set1_ps(SPLIT));
        let mut y = _mm512_mul_ps(x, inv);
        let mut out = [_mm_setzero_si128(); PARTS];
        for o in out.iter_mut() {
            let a = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
            let a = _mm512_min_ps(
                _mm512_max_ps(a, _mm512_sub_ps(_mm512_setzero_ps(), lim)),
                lim,
            );
            *o = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(a));
            // The remainder is exact (|y − a| ≤ 1/2); scaling it by F rounds at 2^-24.
            y = _mm512_mul_ps(_mm512_sub_ps(y, a), f);
        }
        out
    }

    /// Scores `out[h·stride + i]` of the rows of `pieces` (numbered across them) against
    /// the query heads of `iq`; the twin of [`crate::cpu::scalar::scores`] to f32 rounding.
    ///
    /// # Safety
    /// The CPU must pass [`super::detected`]; every piece is in the format `iq` was made for.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")]
    pub unsafe fn scores(pieces: &[Piece], iq: &IntQuery, out: &mut [f32], stride: usize) {
        let Some(&(seg0, _, _)) = pieces.first() else {
            return;
        };
        let first = seg0.codec;
        assert!(iq.is_for(first));
        let total: usize = pieces
            .iter()
            .map(|&(seg, r0, n)| {
                assert!(seg.codec.same(first) && (r0 + n) * first.unit_bytes <= seg.bytes.len());
                n
            })
            .sum();
        assert!(out.len() >= (iq.heads - 1) * stride + total);
        let lay = QuantLayout::new(&iq.codec);
        let op = out.as_mut_ptr();
        macro_rules! shape {
            ($bits:literal, $hb:literal, $seg:expr, $r0:expr, $n:expr, $h:expr, $o:expr) => {
                match (iq.chunks, iq.grouped) {
                    (1, false) => {
                        rows::<$bits, $hb, 1, false>($seg, $r0, $n, iq, &lay, $h, $o, stride)
                    }
                    (2, false) => {
                        rows::<$bits, $hb, 2, false>($seg, $r0, $n, iq, &lay, $h, $o, stride)
                    }
                    (4, false) => {
                        rows::<$bits, $hb, 4, false>($seg, $r0, $n, iq, &lay, $h, $o, stride)
                    }
                    (1, true) => {
                        rows::<$bits, $hb, 1, true>($seg, $r0, $n, iq, &lay, $h, $o, stride)
                    }
                    (2, true) => {
                        rows::<$bits, $hb, 2, true>($seg, $r0, $n, iq, &lay, $h, $o, stride)
                    }
                    _ => rows::<$bits, $hb, 4, true>($seg, $r0, $n, iq, &lay, $h, $o, stride),
                }
            };
        }
        let mut off = 0;
        for &(seg, row0, n) in pieces {
            let mut h = 0;
            while h < iq.heads {
                let o = op.add(h * stride + off);
                h += match (iq.bits, head_block(iq.heads - h)) {
                    (8, 4) => shape!(8, 4, seg, row0, n, h, o),
                    (8, 2) => shape!(8, 2, seg, row0, n, h, o),
                    (8, _) => shape!(8, 1, seg, row0, n, h, o),
                    (_, 4) => shape!(4, 4, seg, row0, n, h, o),
                    (_, 2) => shape!(4, 2, seg, row0, n, h, o),
                    _ => shape!(4, 1, seg, row0, n, h, o),
                };
            }
            off += n;
        }
    }

    /// Scores of rows `row0 .. row0 + n` against heads `h0 .. h0 + HB`, for rows of `C`
    /// chunks, 16 rows at a time (one horizontal-sum tree per 16); returns `HB`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows<const BITS: u32, const HB: usize, const C: usize, const GROUPED: bool>(
        seg: &Segment,
        row0: usize,
        n: usize,
        iq: &IntQuery,
        lay: &QuantLayout,
        h0: usize,
        out: *mut f32,
        stride: usize,
    ) -> usize {
        let mut mult = [[_mm512_setzero_ps(); PARTS]; HB];
        for (hh, m) in mult.iter_mut().enumerate() {
            for (p, mp) in m.iter_mut().enumerate() {
                *mp = _mm512_set1_ps(iq.mult[(h0 + hh) * PARTS + p]);
            }
        }
        let mut i = 0;
        while i < n {
            let m = (n - i).min(16);
            let mut flat = [[_mm512_setzero_ps(); 16]; HB];
            for t in 0..m {
                let row = row_ptr(seg, row0 + i + t);
                let tot = row_scores::<BITS, HB, C, GROUPED>(row, iq, lay, h0, &mult);
                for (f, v) in flat.iter_mut().zip(tot) {
                    f[t] = v;
                }
            }
            let keep = ((1u32 << m) - 1) as u16;
            for (hh, f) in flat.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add(hh * stride + i), keep, sum16(f));
            }
            i += m;
        }
        HB
    }

    /// One row's 16 partial scores per head (their sum is the score).
    #[inline(always)]
    unsafe fn row_scores<const BITS: u32, const HB: usize, const C: usize, const GROUPED: bool>(
        row: *const u8,
        iq: &IntQuery,
        lay: &QuantLayout,
        h0: usize,
        mult: &[[__m512; PARTS]; HB],
    ) -> [__m512; HB] {
        let pb = part_bytes(BITS);
        let spans = if GROUPED { C } else { 1 };
        // The row's codes, chunk by chunk (int4: low and high nibbles apart).
        let nib = _mm512_set1_epi8(15);
        let mut lo = [_mm512_setzero_si512(); C];
        let mut hi = [_mm512_setzero_si512(); C];
        for ch in 0..C {
            let codes = load_chunk(row, ch, C, iq.row_bytes);
            if BITS == 8 {
                lo[ch] = codes;
            } else {
                lo[ch] = _mm512_and_si512(codes, nib);
                hi[ch] = _mm512_and_si512(_mm512_srli_epi16::<4>(codes), nib);
            }
        }
        let mut tot = [_mm512_setzero_ps(); HB];
        for sp in 0..spans {
            let chunks = if GROUPED { sp..sp + 1 } else { 0..C };
            let (scale, bias) = match GROUPED {
                true => chunk_params(row, sp, iq, lay),
                false => {
                    let (s, b) = lay.params(row, 0);
                    (_mm512_set1_ps(s), _mm512_set1_ps(b))
                }
            };
            for hh in 0..HB {
                let h = h0 + hh;
                let init = iq.init.as_ptr().add((h * spans + sp) * PARTS * 16);
                let mut acc = [_mm512_setzero_si512(); PARTS];
                for (p, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_loadu_si512(init.add(16 * p) as *const _);
                }
                for ch in chunks.clone() {
                    let qp = iq.parts.as_ptr().add((h * C + ch) * PARTS * pb);
                    for (p, a) in acc.iter_mut().enumerate() {
                        let q = qp.add(p * pb);
                        *a = _mm512_dpbusd_epi32(*a, lo[ch], _mm512_loadu_si512(q as *const _));
                        if BITS == 4 {
                            let q2 = q.add(CHUNK_BYTES) as *const _;
                            *a = _mm512_dpbusd_epi32(*a, hi[ch], _mm512_loadu_si512(q2));
                        }
                    }
                }
                let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[0]), mult[hh][0]);
                for p in 1..PARTS {
                    v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[p]), mult[hh][p], v);
                }
                tot[hh] = _mm512_fmadd_ps(v, scale, tot[hh]);
                if lay.asym {
                    let ql = iq.qlane.as_ptr().add((h * spans + sp) * 16);
                    tot[hh] = _mm512_fmadd_ps(bias, _mm512_loadu_ps(ql), tot[hh]);
                }
            }
        }
        tot
    }

    /// Code bytes `64·ch ..` of a row of `row_bytes`; a short last chunk reads as zeros past
    /// the row. Whole chunks use plain loads: a masked load that crosses a cache line costs
    /// several times a plain one (Zen 5).
    #[inline(always)]
    unsafe fn load_chunk(row: *const u8, ch: usize, chunks: usize, row_bytes: usize) -> __m512i {
        let at = row.add(ch * CHUNK_BYTES);
        let left = row_bytes - ch * CHUNK_BYTES;
        if ch + 1 < chunks || left >= CHUNK_BYTES {
            return _mm512_loadu_si512(at as *const _);
        }
        match left {
            32 => _mm512_zextsi256_si512(_mm256_loadu_si256(at as *const __m256i)),
            16 => _mm512_zextsi128_si512(_mm_loadu_si128(at as *const __m128i)),
            _ => _mm512_maskz_loadu_epi8((1u64 << left) - 1, at as *const i8),
        }
    }

    /// Each lane's (scale, bias for centred codes) in chunk `ch` of the row at `row`, when
    /// chunks hold whole groups.
    #[inline(always)]
    unsafe fn chunk_params(
        row: *const u8,
        ch: usize,
        iq: &IntQuery,
        lay: &QuantLayout,
    ) -> (__m512, __m512) {
        let gpc = iq.groups_per_chunk;
        if gpc == 1 {
            let (s, b) = lay.params(row, ch);
            return (_mm512_set1_ps(s), _mm512_set1_ps(b));
        }
        // The chunk's records side by side, then each lane its group's. Records past the
        // row's last group (a partial last chunk) read as zero.
        let at = row.add(lay.params + ch * gpc * lay.rec);
        let v = load_scalars(at, iq.chunk_scalars[ch], lay.width);
        let rec = _mm512_loadu_si512(iq.lane_rec.as_ptr() as *const _);
        let scale = _mm512_permutexvar_ps(rec, v);
        if !lay.asym {
            return (scale, _mm512_setzero_ps());
        }
        let zero = _mm512_permutexvar_ps(_mm512_add_epi32(rec, _mm512_set1_epi32(1)), v);
        // Centred codes: value = (c − half)·s + (z + half·s).
        (
            scale,
            _mm512_fmadd_ps(_mm512_set1_ps(lay.half), scale, zero),
        )
    }
}
