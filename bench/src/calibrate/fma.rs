//! The ceiling of the FMA units: twelve independent chains of fused multiply-adds on the
//! widest vectors the CPU has, in registers, touching no memory. No f32 kernel, ours or a
//! tuned BLAS, can beat it, so it tells a reader how far the measured GEMM limit is from
//! what the silicon allows (a well-tuned BLAS reaches about 90 % of it).

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// FMA throughput, GFLOP/s (2 per lane per fused multiply-add).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FmaPeak {
    /// The vectors used: `avx512` (16 lanes) or `avx2` (8 lanes).
    pub isa: String,
    pub gflops_1t: f64,
    /// All threads of the pool, each running its own chains.
    pub gflops: f64,
}

impl FmaPeak {
    /// The higher of two measurements, figure by figure.
    pub fn max(self, other: &FmaPeak) -> FmaPeak {
        FmaPeak {
            gflops_1t: self.gflops_1t.max(other.gflops_1t),
            gflops: self.gflops.max(other.gflops),
            ..self
        }
    }

    /// Whether this ceiling lies below rates a kernel reached (one thread, all threads):
    /// then it was measured while something else held the cores.
    pub fn below(&self, gflops_1t: f64, gflops: f64) -> bool {
        self.gflops_1t < gflops_1t || self.gflops < gflops
    }

    /// Whether the all-thread figure is what `threads` threads on their own cores give:
    /// at least 80 % of `min(threads, cores)` times one thread's. Registers only, no memory:
    /// nothing but another program on the same cores (or SMT siblings the OS does not
    /// show) holds it lower.
    pub fn scales(&self, threads: usize, cores: usize) -> bool {
        let independent = threads.min(cores.max(1));
        independent <= 1 || self.gflops >= 0.8 * independent as f64 * self.gflops_1t
    }

    /// Why the all-thread figures may be low, when this ceiling did not [`Self::scales`]:
    /// the line `calibrate` prints and the file keeps.
    pub fn scaling_warning(&self, threads: usize, cores: usize) -> Option<String> {
        (!self.scales(threads, cores)).then(|| {
            format!(
                "the FMA chains ran {:.2}× as fast on {threads} threads as on one, on {} cores \
                 the OS calls separate: another program held a core, or the host runs them as \
                 SMT siblings; the all-thread limits may be low (rerun `kvbench calibrate` on \
                 a quiet machine)",
                self.gflops / self.gflops_1t,
                threads.min(cores)
            )
        })
    }

    /// What share of this ceiling a measured rate is, in percent.
    pub fn percent(&self, gflops: f64, threads: u32) -> f64 {
        let peak = if threads <= 1 {
            self.gflops_1t
        } else {
            self.gflops
        };
        100.0 * gflops / peak
    }
}

/// The ceiling on one thread and on every thread of `pool`, best of `passes`; `None` on a
/// CPU without FMA vectors (the GEMM limit then stands alone).
pub fn measure(pool: &rayon::ThreadPool, passes: u32) -> Option<FmaPeak> {
    let vectors = Vectors::widest()?;
    let flops_per_iter = vectors.flops_per_iter();
    // About 20 ms a pass at 100 GFLOP/s: long against timer and thread start, short overall.
    let iters = 2_000_000_000 / flops_per_iter;
    let rate = |threads: usize| {
        let mut best = 0f64;
        for _ in 0..passes.max(1) + 1 {
            let t = Instant::now();
            if threads == 1 {
                std::hint::black_box(vectors.chains(iters));
            } else {
                std::hint::black_box(pool.broadcast(|_| vectors.chains(iters)));
            }
            let s = t.elapsed().as_secs_f64();
            best = best.max((threads as u64 * iters * flops_per_iter) as f64 / s / 1e9);
        }
        best
    };
    let gflops_1t = rate(1);
    let threads = pool.current_num_threads();
    let gflops = if threads > 1 {
        rate(threads)
    } else {
        gflops_1t
    };
    Some(FmaPeak {
        isa: vectors.name().into(),
        gflops_1t,
        gflops: gflops.max(gflops_1t),
    })
}

/// Independent accumulators: enough to cover two FMA ports × a 4–5 cycle latency.
const CHAINS: u64 = 12;

/// The FMA vectors a probe runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Vectors {
    /// 16 f32 lanes.
    Avx512,
    /// 8 f32 lanes.
    Avx2,
}

impl Vectors {
    /// The widest this CPU has, `None` without FMA vectors.
    fn widest() -> Option<Vectors> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Vectors::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Vectors::Avx2);
            }
        }
        None
    }

    fn name(self) -> &'static str {
        match self {
            Vectors::Avx512 => "avx512",
            Vectors::Avx2 => "avx2",
        }
    }

    fn lanes(self) -> u64 {
        match self {
            Vectors::Avx512 => 16,
            Vectors::Avx2 => 8,
        }
    }

    /// FLOPs of one iteration of [`Self::chains`].
    fn flops_per_iter(self) -> u64 {
        CHAINS * self.lanes() * 2
    }

    /// `iters` steps of every chain; the sum of all lanes, so nothing is optimised away.
    fn chains(self, iters: u64) -> f32 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Vectors` comes only from `widest`, which detected the features each
        // kernel enables.
        unsafe {
            match self {
                Vectors::Avx512 => x86::chains_avx512(iters),
                Vectors::Avx2 => x86::chains_avx2(iters),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = iters;
            0.0
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    // a ← a·x + y converges to y / (1 − x) = 0.1: no overflow, no subnormals.
    const X: f32 = 0.999_999;
    const Y: f32 = 1e-7;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn chains_avx512(iters: u64) -> f32 {
        let (x, y) = (_mm512_set1_ps(X), _mm512_set1_ps(Y));
        let mut acc = [_mm512_set1_ps(1.0); super::CHAINS as usize];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn chains_avx2(iters: u64) -> f32 {
        let (x, y) = (_mm256_set1_ps(X), _mm256_set1_ps(Y));
        let mut acc = [_mm256_set1_ps(1.0); super::CHAINS as usize];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, x, y);
            }
        }
        let mut lanes = [0f32; 8];
        let mut sum = 0.0;
        for a in acc {
            // SAFETY: `lanes` holds the 8 floats of one vector.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
            sum += lanes.iter().sum::<f32>();
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_thread_figures_scale_with_the_cores_that_run_them() {
        let peak = |gflops_1t, gflops| FmaPeak {
            isa: "avx512".into(),
            gflops_1t,
            gflops,
        };
        // Measured on a 2-core Zen 5 guest: 248 on one thread, 493 on two; the same
        // calibration run once while another program held a core gave 255 on two.
        assert!(peak(248.3, 492.6).scales(2, 2));
        assert!(!peak(254.1, 255.5).scales(2, 2));
        // Two threads on one core, or one thread: nothing to scale.
        assert!(peak(254.1, 255.5).scales(2, 1));
        assert!(peak(254.1, 254.1).scales(1, 2));
        // Four threads on two cores scale as two.
        assert!(peak(100.0, 190.0).scales(4, 2));
        assert!(!peak(100.0, 150.0).scales(4, 2));
    }

    #[test]
    fn chains_compute_the_recurrence() {
        let Some(vectors) = Vectors::widest() else {
            return; // no FMA vectors: `measure` returns None, nothing to check
        };
        // Three steps of a ← a·X + Y from 1.0, by hand in f64 (f32 rounding is far below
        // the tolerance), summed over every lane of every chain.
        let mut a = 1.0f64;
        for _ in 0..3 {
            a = a * 0.999_999f32 as f64 + 1e-7f32 as f64;
        }
        let want = a * vectors.lanes() as f64 * CHAINS as f64;
        let got = vectors.chains(3) as f64;
        assert!((got - want).abs() < 1e-4 * want, "{got} vs {want}");
    }
}
