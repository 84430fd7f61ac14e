//! A blocked f32 GEMM with an AVX-512 micro-kernel, so the GEMM limit is what this CPU's
//! widest FMA units can do (the `gemm` crate's AVX-512 kernels need a nightly compiler, so on
//! stable it runs AVX2). Classic Goto/BLIS blocking: B packed in KC×NR panels, A in MR×KC
//! strips, an MR×NR tile of C kept in registers (24 of the 32 zmm registers). Threads split C
//! by rows, each packing its own panels.

use rayon::prelude::*;

/// Rows of C per register tile.
pub const MR: usize = 12;
/// Columns of C per register tile (two 16-lane vectors).
pub const NR: usize = 32;
/// Depth of one packed block: KC×NR of B (32 KiB) stays in L1 while MR×KC strips of A
/// (12 KiB each) stream from L2.
const KC: usize = 256;
/// Rows of A packed at once (MC×KC×4 = 240 KiB, within a modern L2).
const MC: usize = 240;
/// Columns of B packed at once (KC×NC×4 = 2 MiB, within the LLC).
const NC: usize = 2048;

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
            band_product(&a[r0 * k..(r0 + rows) * k], rows, n, k, b, c_band, avx512);
        });
}

/// C band (rows×n) += A band (rows×k) · B (k×n), one thread.
fn band_product(
    a: &[f32],
    rows: usize,
    n: usize,
    k: usize,
    b: &[f32],
    c: &mut [f32],
    avx512: bool,
) {
    let mut bp = vec![0f32; KC * NC.min(n.div_ceil(NR) * NR)];
    let mut ap = vec![0f32; MC.min(rows.div_ceil(MR) * MR) * KC];
    let mut tile = [0f32; MR * NR];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            pack_b(b, n, pc, kc, jc, nc, &mut bp);
            for ic in (0..rows).step_by(MC) {
                let mc = MC.min(rows - ic);
                pack_a(a, k, ic, mc, pc, kc, &mut ap);
                for jr in (0..nc).step_by(NR) {
                    let nr = NR.min(nc - jr);
                    let bpanel = &bp[jr * kc..(jr + NR) * kc];
                    for ir in (0..mc).step_by(MR) {
                        let mr = MR.min(mc - ir);
                        let astrip = &ap[ir * kc..(ir + MR) * kc];
                        tile.fill(0.0);
                        micro_tile(kc, astrip, bpanel, &mut tile, avx512);
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

/// tile (MR×NR, row-major) += strip · panel over `kc`, with the widest kernel allowed.
fn micro_tile(kc: usize, a: &[f32], b: &[f32], tile: &mut [f32; MR * NR], avx512: bool) {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    #[cfg(target_arch = "x86_64")]
    if avx512 {
        // SAFETY: `avx512` is only true when AVX-512F was detected; lengths checked above.
        unsafe { x86::tile_avx512(kc, a.as_ptr(), b.as_ptr(), tile) };
        return;
    }
    let _ = avx512;
    tile_scalar(kc, a, b, tile);
}

/// Scalar twin of the AVX-512 micro-kernel: the same sums in the same order per element.
pub fn tile_scalar(kc: usize, a: &[f32], b: &[f32], tile: &mut [f32; MR * NR]) {
    for p in 0..kc {
        for i in 0..MR {
            let ai = a[p * MR + i];
            for j in 0..NR {
                tile[i * NR + j] = ai.mul_add(b[p * NR + j], tile[i * NR + j]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// tile += a-strip · b-panel: per depth step, two 16-float loads of B, MR broadcasts of A
    /// and 2·MR FMAs into 24 accumulators. The accumulators are named locals (not an array)
    /// so they stay in registers at every optimisation level.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_avx512(kc: usize, a: *const f32, b: *const f32, tile: &mut [f32; MR * NR]) {
        macro_rules! tile {
            ($($r:literal => $lo:ident $hi:ident),*) => {{
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
                let t = tile.as_mut_ptr();
                $(
                    // SAFETY: row r of the MR×NR tile is NR floats at r·NR.
                    unsafe {
                        let o = t.add($r * NR);
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
        // Sizes that cross every block edge (MR, NR, KC, MC) with remainders.
        for (m, n, k) in [(1, 1, 1), (13, 33, 7), (37, 45, 400), (250, 70, 385)] {
            let (a, b) = (ints(m * k, 1), ints(k * n, 2));
            let mut c = vec![f32::NAN; m * n];
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            pool.install(|| matmul(m, n, k, &a, &b, &mut c));
            assert_eq!(c, naive(m, n, k, &a, &b), "{m}×{n}×{k}");
        }
        // 2×2 by hand: [[1,2],[3,4]]·[[5,6],[7,8]] = [[19,22],[43,50]].
        let mut c = [0f32; 4];
        matmul(2, 2, 2, &[1., 2., 3., 4.], &[5., 6., 7., 8.], &mut c);
        assert_eq!(c, [19., 22., 43., 50.]);
    }

    #[test]
    fn avx512_tile_matches_its_scalar_twin() {
        if !has_avx512() {
            return; // nothing to compare on this CPU; the scalar path is tested above
        }
        let kc = 97;
        let a: Vec<f32> = (0..kc * MR).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..kc * NR).map(|i| (i as f32 * 0.11).cos()).collect();
        let (mut fast, mut slow) = ([0.5f32; MR * NR], [0.5f32; MR * NR]);
        micro_tile(kc, &a, &b, &mut fast, true);
        // The scalar twin accumulates from zero like the kernel, then adds the old tile.
        let mut acc = [0f32; MR * NR];
        tile_scalar(kc, &a, &b, &mut acc);
        for (s, x) in slow.iter_mut().zip(acc) {
            *s += x;
        }
        // Same FMA order per element: bit-identical.
        assert_eq!(fast, slow);
    }
}
