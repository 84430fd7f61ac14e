//! CPU kernels: decode and prefill attention and projections. SIMD paths are picked at run
//! time from the CPU's features; each has a scalar twin the tests compare against.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
pub mod decode;
pub mod matmul;
pub mod prefill;
pub mod scalar;

use crate::cache::Segment;

/// The instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable element-by-element code.
    Scalar,
    /// AVX2 + FMA + F16C (x86-64-v3).
    Avx2,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
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
        }
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
        if self == Isa::Avx2 && avx2::supports(seg.codec) {
            // SAFETY: `Isa::Avx2` is only produced by `detect` on CPUs with these features.
            return unsafe { avx2::scores(seg, row0, n, q, heads, out, stride) };
        }
        scalar::scores(seg, row0, n, q, heads, out, stride)
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
        #[cfg(target_arch = "x86_64")]
        if self == Isa::Avx2 && avx2::supports(seg.codec) {
            // SAFETY: as above.
            return unsafe { avx2::accumulate(seg, row0, n, p, heads, stride, acc) };
        }
        scalar::accumulate(seg, row0, n, p, heads, stride, acc)
    }

    /// [`Isa::accumulate`] over consecutive pieces of one tile: weights `p[h·stride + i]`
    /// are numbered across the pieces. Runs of pieces in one format go to the SIMD kernel
    /// together, so paged blocks do not each pay a call.
    pub fn accumulate_pieces(
        self,
        pieces: &[(&Segment, usize, usize)],
        p: &[f32],
        heads: usize,
        stride: usize,
        acc: &mut [f32],
    ) {
        let mut off = 0;
        for run in pieces.chunk_by(|a, b| a.0.codec == b.0.codec) {
            let n: usize = run.iter().map(|r| r.2).sum();
            let pr = &p[off..];
            #[cfg(target_arch = "x86_64")]
            if self == Isa::Avx2 && avx2::supports(run[0].0.codec) {
                // SAFETY: as above; `run` shares one format.
                unsafe { avx2::accumulate_pieces(run, pr, heads, stride, acc) };
                off += n;
                continue;
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

/// `x ← exp(x)` for x ≤ 0 (softmax numerators), branch-free so it vectorizes; relative
/// error below 2e-7 · (1 + |x|) (degree-6 polynomial for 2^f on [-0.5, 0.5]).
pub fn exp_inplace(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        let y = (*x * std::f32::consts::LOG2_E).max(-126.0);
        // Round to nearest by the 1.5·2^23 trick: no libm call, so the loop vectorizes.
        let n = (y + 12_582_912.0) - 12_582_912.0;
        let f = y - n;
        let p = 1.0
            + f * (std::f32::consts::LN_2
                + f * (0.240_226_5
                    + f * (0.055_504_11
                        + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
        let bits = ((n as i32 + 127) as u32) << 23;
        *x = p * f32::from_bits(bits);
    }
}

#[cfg(test)]
mod tests;
