//! A blocked f32 GEMM with an AVX-512 micro-kernel, so the GEMM limit is what this CPU's
//! widest FMA units can do (the `gemm` crate's AVX-512 kernels need a nightly compiler, so on
//! stable it runs AVX2). Classic Goto/BLIS blocking: B packed in KC×NR panels, A in MR×KC
//! strips, an MR×NR tile of C kept in registers (24 of the 32 zmm registers) and added into C
//! in place. Block depths come from this CPU's L1d and L2 ([`Blocking`]). Threads split C by
//! rows, each packing its own panels.

use rayon::prelude::*;
use std::sync::OnceLock;

/// Rows of C per register tile.
pub const MR: usize = 12;
/// Columns of C per register tile (two 16-lane vectors).
pub const NR: usize = 32;
/// Columns of B packed at once (KC×NC×4: 2 MiB per 256 of depth, 3 MiB at KC 384; the LLC holds it).
const NC: usize = 2048;

/// Depths of the packed blocks, sized from the caches they must stay in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Depth of one packed block: one KC×NR panel of B fills the L1d, where it is reused by
    /// every A strip of the block. Deeper is better until it spills: each tile's update of C
    /// (24 loads and stores) is spread over KC depth steps of 24 FMAs.
    pub kc: usize,
    /// Rows of A packed at once: the MC×KC block takes half the L2, the other half left to
    /// the B panel on its way to L1 and the lines of C being updated.
    pub mc: usize,
}

impl Blocking {
    /// For an L1d of `l1d` bytes and an L2 of `l2`; 0 (unknown) falls back to 32 KiB (the
    /// smallest AVX-512 L1d) and 512 KiB (no larger than any AVX-512 core's L2).
    pub fn for_caches(l1d: u64, l2: u64) -> Blocking {
        let l1d = if l1d == 0 { 32 << 10 } else { l1d } as usize;
        let l2 = if l2 == 0 { 512 << 10 } else { l2 } as usize;
        let kc = (l1d / (NR * 4)).clamp(64, 1024) / 8 * 8;
        let mc = ((l2 / 2 / (kc * 4)).clamp(MR, 2048)) / MR * MR;
        Blocking { kc, mc }
    }

    /// For this CPU's caches as sysfs lists them, read once.
    pub fn detected() -> Blocking {
        static DETECTED: OnceLock<Blocking> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            Blocking::for_caches(
                crate::env::data_cache_bytes(1),
                crate::env::data_cache_bytes(2),
            )
        })
    }
}

/// Whether [`matmul`] will use the AVX-512 micro-kernel on this CPU.
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// c (m×n) = a (m×k) · b (k×n), all row-major, on the current rayon pool's threads.
pub fn matmul(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    matmul_blocked(m, n, k, a, b, c, Blocking::detected());
}

fn matmul_blocked(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    blocking: Blocking,
) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
    c.fill(0.0);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let band = m.div_ceil(threads).div_ceil(MR) * MR;
    let avx512 = has_avx512();
    c.par_chunks_mut(band * n)
        .enumerate()
        .for_each(|(bi, c_band)| {
            let r0 = bi * band;
            let rows = c_band.len() / n;
            let band_a = &a[r0 * k..(r0 + rows) * k];
            band_product(band_a, rows, n, k, b, c_band, blocking, avx512);
        });
}

/// C band (rows×n) += A band (rows×k) · B (k×n), one thread.
#[allow(clippy::too_many_arguments)] // one band's shapes, operands and block sizes
fn band_product(
    a: &[f32],
    rows: usize,
    n: usize,
    k: usize,
    b: &[f32],
    c: &mut [f32],
    blocking: Blocking,
    avx512: bool,
) {
    // The deepest and tallest a block may be; `kc` and `mc` below are each block's own.
    let Blocking {
        kc: kc_max,
        mc: mc_max,
    } = blocking;
    let mut bp = vec![0f32; kc_max * NC.min(n.div_ceil(NR) * NR)];
    let mut ap = vec![0f32; mc_max.min(rows.div_ceil(MR) * MR) * kc_max];
    let mut tile = [0f32; MR * NR];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - pc);
            pack_b(b, n, pc, kc, jc, nc, &mut bp);
            for ic in (0..rows).step_by(mc_max) {
                let mc = mc_max.min(rows - ic);
                pack_a(a, k, ic, mc, pc, kc, &mut ap);
                for jr in (0..nc).step_by(NR) {
                    let nr = NR.min(nc - jr);
                    let bpanel = &bp[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let mr = MR.min(mc - ir);
                        let astrip = &ap[ir * kc..(ir + MR) * kc];
                        if mr == MR && nr == NR {
                            let at = (ic + ir) * n + jc + jr;
                            micro_tile(kc, astrip, bpanel, &mut c[at..], n, avx512);
                            continue;
                        }
                        // A ragged edge: a whole tile into a buffer, its valid part into C.
                        tile.fill(0.0);
                        micro_tile(kc, astrip, bpanel, &mut tile, NR, avx512);
                        for i in 0..mr {
                            let row = &mut c[(ic + ir + i) * n + jc + jr..][..nr];
                            for (o, t) in row.iter_mut().zip(&tile[i * NR..i * NR + nr]) {
                                *o += t;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// B[pc..pc+kc, jc..jc+nc] as panels of NR columns, each `kc` rows of NR values, zero-padded.
fn pack_b(b: &[f32], n: usize, pc: usize, kc: usize, jc: usize, nc: usize, out: &mut [f32]) {
    for (pi, j0) in (0..nc).step_by(NR).enumerate() {
        let w = NR.min(nc - j0);
        let panel = &mut out[pi * NR * kc..(pi + 1) * NR * kc];
        for p in 0..kc {
            let src = &b[(pc + p) * n + jc + j0..][..w];
            let dst = &mut panel[p * NR..(p + 1) * NR];
            dst[..w].copy_from_slice(src);
            dst[w..].fill(0.0);
        }
    }
}

/// A[ic..ic+mc, pc..pc+kc] as strips of MR rows, stored column by column, zero-padded.
fn pack_a(a: &[f32], k: usize, ic: usize, mc: usize, pc: usize, kc: usize, out: &mut [f32]) {
    for (si, i0) in (0..mc).step_by(MR).enumerate() {
        let h = MR.min(mc - i0);
        let strip = &mut out[si * MR * kc..(si + 1) * MR * kc];
        for p in 0..kc {
            for i in 0..MR {
                strip[p * MR + i] = if i < h {
                    a[(ic + i0 + i) * k + pc + p]
                } else {
                    0.0
                };
            }
        }
    }
}

/// C tile (MR rows of NR at stride `ldc`) += strip · panel over `kc`, with the widest kernel
/// allowed.
fn micro_tile(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, avx512: bool) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    assert!(ldc >= NR && c.len() >= (MR - 1) * ldc + NR);
    #[cfg(target_arch = "x86_64")]
    if avx512 {
        // SAFETY: `avx512` is only true when AVX-512F was detected; lengths checked above.
        unsafe { x86::tile_avx512(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc) };
        return;
    }
    let _ = avx512;
    tile_scalar(kc, a, b, c, ldc);
}

/// Scalar twin of the AVX-512 micro-kernel: the same sums in the same order per element,
/// accumulated from zero and then added into C.
pub fn tile_scalar(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize) {
    let mut acc = [0f32; MR * NR];
    for p in 0..kc {
        for i in 0..MR {
            let ai = a[p * MR + i];
            for j in 0..NR {
                acc[i * NR + j] = ai.mul_add(b[p * NR + j], acc[i * NR + j]);
            }
        }
    }
    for i in 0..MR {
        for (o, x) in c[i * ldc..i * ldc + NR].iter_mut().zip(&acc[i * NR..]) {
            *o += x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// C tile (stride `ldc`) += a-strip · b-panel: per depth step, two 16-float loads of B,
    /// MR broadcasts of A and 2·MR FMAs into 24 accumulators. The accumulators are named
    /// locals (not an array) so they stay in registers at every optimisation level. The
    /// tile's 24 lines of C are prefetched first, so their loads at the end hit L1.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_avx512(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize) {
        macro_rules! tile {
            ($($r:literal => $lo:ident $hi:ident),*) => {{
                $(
                    // SAFETY: prefetch never faults; the lines are the tile's own (see below).
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(c.add($r * ldc) as *const i8);
                        _mm_prefetch::<_MM_HINT_T0>(c.add($r * ldc + 16) as *const i8);
                    }
                )*
                $( let mut $lo = _mm512_setzero_ps(); let mut $hi = _mm512_setzero_ps(); )*
                for p in 0..kc {
                    // SAFETY: the caller guarantees kc·NR floats of B and kc·MR of A.
                    let (b0, b1, ap) = unsafe {
                        (_mm512_loadu_ps(b.add(p * NR)), _mm512_loadu_ps(b.add(p * NR + 16)), a.add(p * MR))
                    };
                    $(
                        let ai = _mm512_set1_ps(unsafe { *ap.add($r) });
                        $lo = _mm512_fmadd_ps(ai, b0, $lo);
                        $hi = _mm512_fmadd_ps(ai, b1, $hi);
                    )*
                }
                $(
                    // SAFETY: the caller guarantees NR floats of C at r·ldc for each row r.
                    unsafe {
                        let o = c.add($r * ldc);
                        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), $lo));
                        _mm512_storeu_ps(o.add(16), _mm512_add_ps(_mm512_loadu_ps(o.add(16)), $hi));
                    }
                )*
            }};
        }
        const _: () = assert!(
            MR == 12 && NR == 32,
            "the tile macro below spells out 12 rows"
        );
        tile!(0 => c0a c0b, 1 => c1a c1b, 2 => c2a c2b, 3 => c3a c3b, 4 => c4a c4b,
              5 => c5a c5b, 6 => c6a c6b, 7 => c7a c7b, 8 => c8a c8b, 9 => c9a c9b,
              10 => c10a c10b, 11 => c11a c11b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers keep every partial sum exact in f32 (|sum| < 2^24), so any order of
    /// summation gives the same bits and the comparison can be exact.
    fn ints(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 5) as f32 - 2.0)
            .collect()
    }

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn blocked_product_matches_the_definition_at_ragged_sizes() {
        // Sizes that cross every block edge (MR, NR, KC, MC) with remainders, under this
        // CPU's blocking and under small blocks that split even the small sizes.
        let small = Blocking { kc: 16, mc: 24 };
        for blocking in [Blocking::detected(), small] {
            for (m, n, k) in [(1, 1, 1), (13, 33, 7), (37, 45, 400), (250, 70, 385)] {
                let (a, b) = (ints(m * k, 1), ints(k * n, 2));
                let mut c = vec![f32::NAN; m * n];
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(3)
                    .build()
                    .unwrap();
                pool.install(|| matmul_blocked(m, n, k, &a, &b, &mut c, blocking));
                assert_eq!(c, naive(m, n, k, &a, &b), "{m}×{n}×{k} {blocking:?}");
            }
        }
        // 2×2 by hand: [[1,2],[3,4]]·[[5,6],[7,8]] = [[19,22],[43,50]].
        let mut c = [0f32; 4];
        matmul(2, 2, 2, &[1., 2., 3., 4.], &[5., 6., 7., 8.], &mut c);
        assert_eq!(c, [19., 22., 43., 50.]);
    }

    #[test]
    fn blocks_are_sized_from_the_caches() {
        // 48 KiB L1d / (32 columns × 4 bytes) = 384 deep; half of a 2 MiB L2 / (384 × 4)
        // = 682 rows, down to a multiple of 12: 672 (this Intel Xeon).
        assert_eq!(
            Blocking::for_caches(48 << 10, 2 << 20),
            Blocking { kc: 384, mc: 672 }
        );
        // 32 KiB L1d, 1 MiB L2 (Zen 4): 256 deep, 512 KiB / 1 KiB = 512 → 504 rows.
        assert_eq!(
            Blocking::for_caches(32 << 10, 1 << 20),
            Blocking { kc: 256, mc: 504 }
        );
        // Unknown caches: 32 KiB and 512 KiB → 256 deep, 256 KiB / 1 KiB = 256 → 252 rows.
        assert_eq!(Blocking::for_caches(0, 0), Blocking { kc: 256, mc: 252 });
    }

    #[test]
    fn avx512_tile_matches_its_scalar_twin() {
        if !has_avx512() {
            return; // nothing to compare on this CPU; the scalar path is tested above
        }
        // A tile inside a wider C (stride 40): only its 12×32 block may change.
        let (kc, ldc) = (97, 40);
        let a: Vec<f32> = (0..kc * MR).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..kc * NR).map(|i| (i as f32 * 0.11).cos()).collect();
        let start: Vec<f32> = (0..MR * ldc).map(|i| i as f32 * 0.5).collect();
        let (mut fast, mut slow) = (start.clone(), start.clone());
        micro_tile(kc, &a, &b, &mut fast, ldc, true);
        tile_scalar(kc, &a, &b, &mut slow, ldc);
        // Same FMA order per element: bit-identical.
        assert_eq!(fast, slow);
        let changed = |c: &[f32]| (0..c.len()).filter(|&i| c[i] != start[i]).count();
        assert_eq!(changed(&fast), MR * NR);
        assert!((0..MR)
            .all(|r| fast[r * ldc + NR..(r + 1) * ldc] == start[r * ldc + NR..(r + 1) * ldc]));
    }
}
