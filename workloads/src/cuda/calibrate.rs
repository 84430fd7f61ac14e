//! The GPU's own ceilings: device-to-device copy bandwidth (bytes read + written) and cuBLAS
//! GEMM rates, timed with CUDA events after warm-up, so GPU rows get a `pct_of_limit`.

use super::device::{CudaResultExt, DeviceInfo, Gpu};
use super::loader;
use crate::WorkloadError;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use serde::{Deserialize, Serialize};

/// Measured limits of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CudaLimits {
    pub device: DeviceInfo,
    /// Device-to-device copy: (bytes read + bytes written) / time, GB/s (10⁹ bytes).
    pub copy_gbps: f64,
    /// cuBLAS SGEMM (f32 in, f32 out, default math mode), GFLOP/s.
    pub gemm_f32_gflops: f64,
    /// cuBLAS HGEMM through cublasGemmEx (f16 in/out, f32 accumulate), GFLOP/s.
    pub gemm_f16_gflops: f64,
}

/// Bytes per copy buffer: large enough to defeat the L2 (50 MiB on H100) many times over.
pub const COPY_BYTES: usize = 1 << 30;
/// Square GEMM size.
pub const GEMM_N: usize = 8192;
const WARMUP: usize = 3;
const REPS: usize = 10;

/// GB/s of `reps` copies of `bytes` each taking `ms` in total (read + write counted).
pub fn copy_gbps(bytes: usize, reps: usize, ms: f64) -> f64 {
    2.0 * bytes as f64 * reps as f64 / (ms * 1e-3) / 1e9
}

/// GFLOP/s of `reps` n×n×n GEMMs taking `ms` in total.
pub fn gemm_gflops(n: usize, reps: usize, ms: f64) -> f64 {
    2.0 * (n as f64).powi(3) * reps as f64 / (ms * 1e-3) / 1e9
}

/// Measure the limits of GPU 0.
pub fn calibrate() -> Result<CudaLimits, WorkloadError> {
    let gpu = Gpu::open()?;
    loader::ensure_cublas()?;
    loader::guarded("calibration", || {
        let (free, _) = gpu.mem_info()?;
        let bytes = COPY_BYTES.min((free as usize / 4) & !0xfff);
        let copy_ms = {
            let src = gpu.stream.alloc_zeros::<u8>(bytes).cuda("allocation")?;
            let mut dst = gpu.stream.alloc_zeros::<u8>(bytes).cuda("allocation")?;
            time(&gpu, || {
                gpu.stream.memcpy_dtod(&src, &mut dst).cuda("memcpy")
            })?
        };
        let blas = CudaBlas::new(gpu.stream.clone()).cuda("cuBLAS handle")?;
        let n = GEMM_N;
        let f32_ms = {
            let a = gpu.stream.alloc_zeros::<f32>(n * n).cuda("allocation")?;
            let b = gpu.stream.alloc_zeros::<f32>(n * n).cuda("allocation")?;
            let mut c = gpu.stream.alloc_zeros::<f32>(n * n).cuda("allocation")?;
            time(&gpu, || {
                // SAFETY: n×n column-major matrices, sized above.
                unsafe { blas.gemm(square(n, 1.0f32, 0.0f32), &a, &b, &mut c) }.cuda("SGEMM")
            })?
        };
        let f16_ms = {
            let a = gpu
                .stream
                .alloc_zeros::<half::f16>(n * n)
                .cuda("allocation")?;
            let b = gpu
                .stream
                .alloc_zeros::<half::f16>(n * n)
                .cuda("allocation")?;
            let mut c = gpu
                .stream
                .alloc_zeros::<half::f16>(n * n)
                .cuda("allocation")?;
            let (one, zero) = (half::f16::ONE, half::f16::ZERO);
            time(&gpu, || {
                // SAFETY: as above.
                unsafe { blas.gemm(square(n, one, zero), &a, &b, &mut c) }.cuda("HGEMM")
            })?
        };
        Ok(CudaLimits {
            device: gpu.info.clone(),
            copy_gbps: copy_gbps(bytes, REPS, copy_ms),
            gemm_f32_gflops: gemm_gflops(n, REPS, f32_ms),
            gemm_f16_gflops: gemm_gflops(n, REPS, f16_ms),
        })
    })
}

/// C = αAB + βC for n×n column-major matrices.
fn square<T>(n: usize, alpha: T, beta: T) -> GemmConfig<T> {
    GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: n as i32,
        k: n as i32,
        alpha,
        lda: n as i32,
        ldb: n as i32,
        beta,
        ldc: n as i32,
    }
}

/// Total device time of REPS runs of `op` after WARMUP runs, from CUDA events.
fn time(
    gpu: &Gpu,
    mut op: impl FnMut() -> Result<(), WorkloadError>,
) -> Result<f64, WorkloadError> {
    for _ in 0..WARMUP {
        op()?;
    }
    let (start, stop) = (gpu.timing_event()?, gpu.timing_event()?);
    start.record(&gpu.stream).cuda("event record")?;
    for _ in 0..REPS {
        op()?;
    }
    stop.record(&gpu.stream).cuda("event record")?;
    Ok(start.elapsed_ms(&stop).cuda("event timing")? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rate_counts_read_and_write() {
        // 1 GiB copied 10 times in 7.158 ms moves 2 × 10.74 GB: 3.0 TB/s, an H100's figure.
        let gbps = copy_gbps(1 << 30, 10, 7.158);
        assert!((gbps - 3000.0).abs() < 1.0, "{gbps}");
    }

    #[test]
    fn gemm_rate_is_two_n_cubed_per_run() {
        // 8192³ × 2 = 1.0995e12 FLOP; 10 runs in 20 ms = 549.8 TFLOP/s.
        let g = gemm_gflops(8192, 10, 20.0);
        assert!((g - 549_755.8).abs() < 1.0, "{g}");
    }
}
