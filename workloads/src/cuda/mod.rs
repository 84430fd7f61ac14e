//! CUDA backend through cudarc, loaded at run time (no toolkit needed to build): kernels in
//! CUDA C (kernels/*.cu) compiled by NVRTC for the device, cuBLAS for GEMM calibration.
//!
//! Every entry point checks that libcuda (and libnvrtc, libcublas where needed) can be
//! loaded before cudarc touches them, and returns one clear error when not.

pub mod attention;
pub mod block_table;
pub mod calibrate;
pub mod codec;
pub mod compile;
pub mod device;
pub mod launch;
pub mod loader;
pub mod params;
pub mod plan;
pub mod reference;

pub use calibrate::{calibrate, CudaLimits};
pub use device::DeviceInfo;

use crate::{Workload, WorkloadError, WorkloadSpec};

/// Build a CUDA workload for `spec`: validated first (no GPU needed to refuse), then
/// kernels compiled and caches allocated on GPU 0.
pub fn build(spec: &WorkloadSpec) -> Result<Box<dyn Workload>, WorkloadError> {
    let plan = plan::CudaPlan::new(spec)?;
    let gpu = device::Gpu::open()?;
    loader::ensure_nvrtc()?;
    loader::guarded("workload build", || {
        Ok(Box::new(attention::CudaAttention::new(spec, plan, gpu)?) as Box<dyn Workload>)
    })
}

/// What GPU 0 is: name, driver and CUDA versions, SM count, memory.
pub fn device_info() -> Result<DeviceInfo, WorkloadError> {
    Ok(device::Gpu::open()?.info)
}
pub mod check;
pub mod schedule;
