//! CPU kernels: decode and prefill attention and projections. SIMD paths are picked at run
//! time from the CPU's features; each has a scalar twin the tests compare against.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod decode;
pub mod matmul;
pub mod prefill;
pub mod scalar;
pub mod vnni;

use crate::cache::Segment;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether the decode kernels prefetch the next tile's K and V rows, for a contiguous row
/// store and for paged blocks. It is a property of the machine, not of the code: on a Zen 5
/// it costs a contiguous step up to 45 % while it saves a paged one 13-23 % (the hardware
/// prefetchers follow one long run of rows but stop at every 4 KiB block), and on an older
/// EPYC it halved a contiguous f32 step; so `kvbench calibrate` measures both and the runner
/// sets them from there.
static PREFETCH_CONTIGUOUS: AtomicBool = AtomicBool::new(true);
static PREFETCH_PAGED: AtomicBool = AtomicBool::new(true);

/// Turn the next-tile prefetch on or off, per layout, for every decode kernel of this process.
pub fn set_tile_prefetch(contiguous: bool, paged: bool) {
    PREFETCH_CONTIGUOUS.store(contiguous, Ordering::Relaxed);
    PREFETCH_PAGED.store(paged, Ordering::Relaxed);
}

/// Whether to prefetch the next tile of rows spread over `segments` segments (one: a
/// contiguous store; more: paged blocks). On unless a calibration said no.
pub fn tile_prefetch(segments: usize) -> bool {
    match segments > 1 {
        true => PREFETCH_PAGED.load(Ordering::Relaxed),
        false => PREFETCH_CONTIGUOUS.load(Ordering::Relaxed),
    }
}

/// Whether int8/int4 scores use the integer-dot kernels where the CPU has them (on unless
/// switched off to compare the two, e.g. by `decode_roofline`).
static INTEGER_DOT: AtomicBool = AtomicBool::new(true);

/// Fewest rows a decode part scores by integer dot products (see [`Isa::int_query`]).
pub const INT_DOT_MIN_ROWS: usize = 256;

/// Turn the integer-dot score kernels ([`vnni`]) on or off for this process.
pub fn set_integer_dot(on: bool) {
    INTEGER_DOT.store(on, Ordering::Relaxed);
}

/// The last-level cache the decode kernels may assume (bytes; 0 = unknown), set by the runner
/// from the calibration.
static CACHE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Tell the decode kernels how large this machine's last-level cache is.
pub fn set_cache_bytes(bytes: u64) {
    CACHE_BYTES.store(bytes, Ordering::Relaxed);
}

/// Whether to read a sequence's KV heads together, block by block, when their rows share
/// blocks and a decode step reads `resident_bytes` of KV. From main memory the block-by-block
/// walk is faster (one stream instead of one short run per head and block); from cache it is
/// slower (cause not found: the extra time did not grow with the number of head switches).
/// Measured on a Zen 5 (docs/performance.md, fifth round): below the 32 MiB LLC head by head
/// was 1.2–1.5× faster, at and above it together was 1.05–1.3× faster. Together when the
/// cache size is unknown.
pub fn heads_together(resident_bytes: u64) -> bool {
    reads_past_the_cache(resident_bytes)
}

/// Whether a decode step over `resident_bytes` of KV reads past this machine's last-level
/// cache (as the runner set it; when unknown, assume it does).
pub fn reads_past_the_cache(resident_bytes: u64) -> bool {
    reads_past_cache(resident_bytes, CACHE_BYTES.load(Ordering::Relaxed))
}

/// `resident_bytes` do not fit in a cache of `cache_bytes` (0: unknown, assume they do not).
pub fn reads_past_cache(resident_bytes: u64, cache_bytes: u64) -> bool {
    resident_bytes >= cache_bytes
}

/// The instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable element-by-element code.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64-v3).
    Avx2,
    /// AVX-512 F/BW/VL/DQ (with AVX2, FMA, F16C); formats it cannot take use AVX2.
    Avx512,
}

/// A tile piece: rows `row .. row + n` of a segment.
pub type Piece<'a> = (&'a Segment<'a>, usize, usize);

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if avx512::detected() && is_x86_feature_detected!("avx2") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Name as shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma+f16c",
            Isa::Avx512 => "avx512f/bw/vl/dq",
        }
    }

    /// Every instruction set this CPU can run, scalar first (for tests and comparisons).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i as u8 <= best as u8)
            .collect()
    }

    /// The 16-lane kernels apply to this format on this ISA.
    #[inline]
    fn avx512_for(self, _c: &crate::codec::Codec) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx512 {
            return avx512::supports(_c);
        }
        false
    }

    /// The 8-lane kernels apply to this format on this ISA.
    #[inline]
    fn avx2_for(self, _c: &crate::codec::Codec) -> bool {
        #[cfg(target_arch = "x86_64")]
        if matches!(self, Isa::Avx2 | Isa::Avx512) {
            return avx2::supports(_c);
        }
        false
    }

    /// Whether decode attention of `heads` query heads per KV head over rows of these
    /// formats runs the wide kernels (dequantize a tile once, then GEMM over the heads).
    /// Below 8 heads the fused kernels waste fewer lanes.
    pub fn wide(self, heads: usize, k: &crate::codec::Codec, v: &crate::codec::Codec) -> bool {
        let simd = |c| match self {
            Isa::Avx512 => self.avx512_for(c),
            _ => self.avx2_for(c),
        };
        heads >= 8 && simd(k) && simd(v)
    }

    /// Whether a decode tile of `c`'s code rows (int8/int4/nf4/fp8) is decoded to f32 once
    /// and read by the float kernels, for `heads` query heads per KV head: on AVX2 from 4
    /// heads up to the wide path's 8. The AVX2 code kernels decode every row once per pair
    /// of heads (scores) and per 4-head, 16-channel pass (values, with the row's scale and
    /// bias each time). Measured in cache on a Zen 3 (docs/performance.md, fifteenth
    /// round), ns a KV row at 4 heads: int8 80-83 -> 64-65, int4 96 -> 72, nf4 118 -> 101,
    /// fp8 84-87 -> 67-68; at 2 heads 1.2x slower.
    pub fn decodes_codes_first(self, heads: usize, c: &crate::codec::Codec) -> bool {
        let codes = !c.dtype.kind.is_float();
        self == Isa::Avx2 && codes && (4..8).contains(&heads) && self.avx2_for(c)
    }

    /// Heads one vector of the wide kernels holds: their head count `hp` is padded to a
    /// multiple of it (8 heads on AVX2 would waste half of 16 lanes).
    pub fn wide_lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            _ => 8,
        }
    }

    /// The rows of `pieces` decoded into `out` (`rows × d`; see [`scalar::decode_tile`]).
    pub fn decode_tile(self, pieces: &[Piece], out: &mut [f32]) {
        let d = pieces.first().map_or(0, |p| p.0.codec.head_dim);
        let mut off = 0;
        for run in pieces.chunk_by(|a, b| a.0.codec.same(b.0.codec)) {
            let n: usize = run.iter().map(|r| r.2).sum();
            let o = &mut out[off * d..(off + n) * d];
            #[cfg(target_arch = "x86_64")]
            if self.avx512_for(run[0].0.codec) {
                // SAFETY: `Isa::Avx512` is only produced by `detect` on CPUs that pass
                // `avx512::detected`; `run` shares one format.
                unsafe { avx512::decode_tile(run, o) };
                off += n;
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if self.avx2_for(run[0].0.codec) {
                // SAFETY: `Isa::Avx2`/`Avx512` are only produced by `detect` on CPUs with
                // AVX2, FMA and F16C; `run` shares one format.
                unsafe { avx2::decode_tile(run, o) };
                off += n;
                continue;
            }
            scalar::decode_tile(run, o);
            off += n;
        }
    }

    /// Scores of f32 rows against transposed queries (see [`scalar::scores_wide`]).
    pub fn scores_wide(self, k: &[f32], n: usize, d: usize, qt: &[f32], hp: usize, st: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx512 && hp.is_multiple_of(16) {
            // SAFETY: as above.
            return unsafe { avx512::scores_wide(k, n, d, qt, hp, st) };
        }
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx2 && hp.is_multiple_of(8) {
            // SAFETY: as in `decode_tile`.
            return unsafe { avx2::scores_wide(k, n, d, qt, hp, st) };
        }
        scalar::scores_wide(k, n, d, qt, hp, st)
    }

    /// One online-softmax tile over head columns (see [`scalar::softmax_wide`]).
    pub fn softmax_wide(
        self,
        st: &mut [f32],
        n: usize,
        hp: usize,
        max: &mut [f32],
        sum: &mut [f32],
        corr: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx512 && hp.is_multiple_of(16) {
            // SAFETY: as above.
            return unsafe { avx512::softmax_wide(st, n, hp, max, sum, corr) };
        }
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx2 && hp.is_multiple_of(8) {
            // SAFETY: as in `decode_tile`.
            return unsafe { avx2::softmax_wide(st, n, hp, max, sum, corr) };
        }
        scalar::softmax_wide(st, n, hp, max, sum, corr)
    }

    /// One head's online-softmax tile (see [`scalar::softmax_row`]).
    #[inline]
    pub fn softmax_row(self, x: &mut [f32], max: &mut f32, sum: &mut f32) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx512 {
            // SAFETY: as above.
            return unsafe { avx512::softmax_row(x, max, sum) };
        }
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx2 {
            // SAFETY: as in `decode_tile`.
            return unsafe { avx2::softmax_row(x, max, sum) };
        }
        scalar::softmax_row(x, max, sum)
    }

    /// [`Isa::softmax_row`] of each head's `n` scores (`s[h·stride ..]`); `corr[h]` gets
    /// each head's correction.
    pub fn softmax_rows(
        self,
        s: &mut [f32],
        n: usize,
        stride: usize,
        max: &mut [f32],
        sum: &mut [f32],
        corr: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx512 {
            // SAFETY: as above.
            return unsafe { avx512::softmax_rows(s, n, stride, max, sum, corr) };
        }
        for (h, c) in corr.iter_mut().enumerate() {
            *c = self.softmax_row(&mut s[h * stride..h * stride + n], &mut max[h], &mut sum[h]);
        }
    }

    /// `acc ← acc · corr + pᵀ v` (see [`scalar::accumulate_wide`]).
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate_wide(
        self,
        v: &[f32],
        n: usize,
        d: usize,
        p: &[f32],
        hp: usize,
        heads: usize,
        corr: &[f32],
        acc: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx512 && d.is_multiple_of(16) {
            // SAFETY: as above.
            return unsafe { avx512::accumulate_wide(v, n, d, p, hp, heads, corr, acc) };
        }
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx2 && d.is_multiple_of(8) {
            // SAFETY: as in `decode_tile`.
            return unsafe { avx2::accumulate_wide(v, n, d, p, hp, heads, corr, acc) };
        }
        scalar::accumulate_wide(v, n, d, p, hp, heads, corr, acc)
    }

    /// Scores of `n` rows of `seg` against `heads` query heads (see [`scalar::scores`]).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn scores(
        self,
        seg: &Segment,
        row0: usize,
        n: usize,
        q: &[f32],
        heads: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            if self.avx512_for(seg.codec) {
                // SAFETY: `Isa::Avx512` is only produced by `detect` on CPUs with it.
                return unsafe { avx512::scores(seg, row0, n, q, heads, out, stride) };
            }
            if self.avx2_for(seg.codec) {
                // SAFETY: `Isa::Avx2`/`Avx512` are only produced by `detect` on CPUs with
                // AVX2, FMA and F16C.
                return unsafe { avx2::scores(seg, row0, n, q, heads, out, stride) };
            }
        }
        scalar::scores(seg, row0, n, q, heads, out, stride)
    }

    /// `q` (`heads × d`) prepared for integer dot products against `rows` rows of format `k`
    /// ([`vnni`]), when this ISA has them for it and they pay; `None` leaves scoring to the
    /// float kernels. Measured in cache (docs/performance.md, sixth and thirteenth rounds):
    /// - int8 keys at one query head per KV head (MHA) only: there the float kernels convert
    ///   every code for one head, and the integer dot scores int8 keys in 0.7× their time
    ///   (Zen 5). With more heads the float kernels share each conversion across them, while
    ///   the integer dot pays its three parts per head: int8 1.1× slower at 2 heads and 1.5×
    ///   at 4 (Zen 5), 0.95–1.35× at 4 (Intel Xeon);
    /// - int4 keys at every head count below the wide path's: their float kernel also pays
    ///   each row's scale groups per head, so the integer dot wins at one head (0.65×, Zen 5),
    ///   at 2 and 4 (0.9×, Zen 5) and at 4 (0.70–0.74× the whole step, Intel Xeon);
    /// - at least [`INT_DOT_MIN_ROWS`] rows: splitting q costs ~0.2 µs per head (d 128) and
    ///   saves ~1 ns per int8 row, so short parts (short contexts, the CI matrix's 32–128
    ///   tokens) keep the float kernels.
    pub fn int_query(
        self,
        k: &crate::codec::Codec,
        q: &[f32],
        heads: usize,
        rows: usize,
    ) -> Option<Prepared> {
        let four_bit = matches!(k.quant, crate::codec::Quant::Int { bits: 4, .. });
        let pays = (heads == 1 || four_bit) && rows >= INT_DOT_MIN_ROWS;
        if pays && self.avx512_for(k) && INTEGER_DOT.load(Ordering::Relaxed) {
            return vnni::IntQuery::new(k, q, heads).map(Prepared::Int);
        }
        None
    }

    /// `q` (`heads × d`) prepared once for the AVX2 code kernels' scores against rows of
    /// format `k` ([`avx2::CodeQuery`]), when those kernels score `k` on this ISA.
    pub fn code_query(self, k: &crate::codec::Codec, q: &[f32], heads: usize) -> Option<Prepared> {
        #[cfg(target_arch = "x86_64")]
        if self.avx2_for(k) && !self.avx512_for(k) {
            return avx2::CodeQuery::new(k, q, heads).map(Prepared::Codes);
        }
        let _ = (k, q, heads);
        None
    }

    /// [`Isa::scores`] over consecutive pieces of one tile: scores `out[h·stride + i]` are
    /// numbered across the pieces. Runs of pieces in one format go to the SIMD kernel
    /// together, so paged blocks share its setup; runs in the format `prepared` was made for
    /// (the same `q`, by [`Isa::int_query`] or [`Isa::code_query`]) take it instead of
    /// preparing `q` again.
    pub fn scores_pieces(
        self,
        pieces: &[Piece],
        q: &[f32],
        prepared: Option<&Prepared>,
        heads: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        let mut off = 0;
        for run in pieces.chunk_by(|a, b| a.0.codec.same(b.0.codec)) {
            let n: usize = run.iter().map(|r| r.2).sum();
            #[cfg(target_arch = "x86_64")]
            match prepared.filter(|p| p.is_for(run[0].0.codec) && p.heads() == heads) {
                Some(Prepared::Int(iq)) => {
                    // SAFETY: an `IntQuery` is only made by `int_query` on CPUs that pass
                    // `vnni::detected`; `run` is in its format.
                    unsafe { vnni::scores(run, iq, &mut out[off..], stride) };
                    off += n;
                    continue;
                }
                Some(Prepared::Codes(cq)) => {
                    // SAFETY: a `CodeQuery` is only made on CPUs with AVX2, FMA and F16C;
                    // `run` is in its format.
                    unsafe { avx2::scores_prepared(run, cq, &mut out[off..], stride) };
                    off += n;
                    continue;
                }
                None => {}
            }
            #[cfg(target_arch = "x86_64")]
            if self.avx512_for(run[0].0.codec) {
                // SAFETY: as in `scores`; `run` shares one format.
                unsafe { avx512::scores_pieces(run, q, heads, &mut out[off..], stride) };
                off += n;
                continue;
            }
            let mut o = off;
            for &(seg, row0, m) in run {
                self.scores(seg, row0, m, q, heads, &mut out[o..], stride);
                o += m;
            }
            off += n;
        }
    }

    /// Weighted sum of `n` rows of `seg` into `acc` (see [`scalar::accumulate`]).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate(
        self,
        seg: &Segment,
        row0: usize,
        n: usize,
        p: &[f32],
        heads: usize,
        stride: usize,
        acc: &mut [f32],
    ) {
        self.accumulate_pieces(&[(seg, row0, n)], p, heads, stride, acc)
    }

    /// [`Isa::accumulate`] over consecutive pieces of one tile: weights `p[h·stride + i]`
    /// are numbered across the pieces. Runs of pieces in one format go to the SIMD kernel
    /// together, so paged blocks do not each pay a call.
    pub fn accumulate_pieces(
        self,
        pieces: &[Piece],
        p: &[f32],
        heads: usize,
        stride: usize,
        acc: &mut [f32],
    ) {
        let mut off = 0;
        for run in pieces.chunk_by(|a, b| a.0.codec.same(b.0.codec)) {
            let n: usize = run.iter().map(|r| r.2).sum();
            let pr = &p[off..];
            #[cfg(target_arch = "x86_64")]
            {
                if self.avx512_for(run[0].0.codec) {
                    // SAFETY: as in `scores`; `run` shares one format.
                    unsafe { avx512::accumulate_pieces(run, pr, heads, stride, acc) };
                    off += n;
                    continue;
                }
                if self.avx2_for(run[0].0.codec) {
                    // SAFETY: as in `scores`; `run` shares one format.
                    unsafe { avx2::accumulate_pieces(run, pr, heads, stride, acc) };
                    off += n;
                    continue;
                }
            }
            let mut o = 0;
            for &(seg, row0, m) in run {
                scalar::accumulate(seg, row0, m, &pr[o..], heads, stride, acc);
                o += m;
            }
            off += n;
        }
    }
}

/// A decode part's query heads prepared once for the score kernels of its K format, so
/// that each tile does not prepare them again.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// For integer dot products ([`vnni`]).
    Int(vnni::IntQuery),
    /// For the AVX2 code kernels.
    #[cfg(target_arch = "x86_64")]
    Codes(avx2::CodeQuery),
}

impl Prepared {
    /// Whether these heads were prepared for rows of format `c`.
    #[inline]
    pub fn is_for(&self, c: &crate::codec::Codec) -> bool {
        match self {
            Prepared::Int(iq) => iq.is_for(c),
            #[cfg(target_arch = "x86_64")]
            Prepared::Codes(cq) => cq.is_for(c),
        }
    }

    /// Query heads prepared.
    #[inline]
    pub fn heads(&self) -> usize {
        match self {
            Prepared::Int(iq) => iq.heads(),
            #[cfg(target_arch = "x86_64")]
            Prepared::Codes(cq) => cq.heads(),
        }
    }
}

/// The degree-6 polynomial for 2^f on [-0.5, 0.5], highest degree first (Horner's order):
/// [`exp_inplace`] and its SIMD twins all evaluate it.
pub(crate) const EXP2_POLY: [f32; 7] = [
    0.000_154_035_3,
    0.001_333_355_8,
    0.009_618_129,
    0.055_504_11,
    0.240_226_5,
    std::f32::consts::LN_2,
    1.0,
];

/// `x ← exp(x)` for x ≤ 0 (softmax numerators), branch-free so it vectorizes; relative
/// error below 2e-7 · (1 + |x|) ([`EXP2_POLY`]).
pub fn exp_inplace(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        let y = (*x * std::f32::consts::LOG2_E).max(-126.0);
        // Round to nearest by the 1.5·2^23 trick: no libm call, so the loop vectorizes.
        let n = (y + 12_582_912.0) - 12_582_912.0;
        let f = y - n;
        let p = EXP2_POLY[1..].iter().fold(EXP2_POLY[0], |p, &c| p * f + c);
        let bits = ((n as i32 + 127) as u32) << 23;
        *x = p * f32::from_bits(bits);
    }
}

#[cfg(test)]
mod tests;
