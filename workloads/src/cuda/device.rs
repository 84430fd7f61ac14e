//! The GPU: context and stream, what it is (DeviceInfo), its compiled kernels, event timing.

use super::compile::{self, KernelConfig};
use super::loader;
use crate::WorkloadError;
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What the GPU is, recorded in every CUDA row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    /// Kernel driver version (e.g. "580.65.06"), "unknown" when /proc does not say.
    pub driver_version: String,
    /// CUDA version the driver supports (e.g. "13.0").
    pub cuda_version: String,
    pub compute_capability: (i32, i32),
    pub sm_count: u32,
    pub memory_bytes: u64,
}

impl DeviceInfo {
    /// One-line description for the `gpu` CSV column.
    pub fn label(&self) -> String {
        format!(
            "{} (sm_{}{}, {} SMs, {:.1} GiB, driver {}, CUDA {})",
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            self.sm_count,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.driver_version,
            self.cuda_version
        )
    }
}

/// "13.0" from cuDriverGetVersion's 13000.
pub fn cuda_version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The driver version from /proc/driver/nvidia/version's "NVRM version" line.
pub fn parse_driver_version(proc_text: &str) -> Option<String> {
    let line = proc_text.lines().find(|l| l.starts_with("NVRM version"))?;
    line.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

/// Map a cudarc error into a backend error saying what was being done.
pub(crate) trait CudaResultExt<T> {
    fn cuda(self, what: &str) -> Result<T, WorkloadError>;
}

impl<T, E: std::fmt::Debug> CudaResultExt<T> for Result<T, E> {
    fn cuda(self, what: &str) -> Result<T, WorkloadError> {
        self.map_err(|e| WorkloadError::Backend(format!("CUDA {what} failed: {e:?}")))
    }
}

/// An open GPU: context, one stream, and what it is.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub info: DeviceInfo,
    /// NVRTC virtual architecture of this device, e.g. `compute_90`.
    pub arch: &'static str,
}

impl Gpu {
    /// Open device 0, or say clearly why not (no driver, no device).
    pub fn open() -> Result<Gpu, WorkloadError> {
        loader::ensure_driver()?;
        loader::guarded("device open", || {
            let count = CudaContext::device_count().cuda("device count")?;
            if count < 1 {
                return Err(WorkloadError::Backend(
                    "the CUDA driver sees no GPU: run on a machine with an NVIDIA GPU, or use \
                     --backend cpu"
                        .to_string(),
                ));
            }
            let ctx = CudaContext::new(0).cuda("context creation")?;
            // One stream does all the work, so cudarc's per-buffer event tracking only costs.
            // SAFETY: no buffer is shared between streams.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.default_stream();
            let info = query_info(&ctx)?;
            let arch = compile::arch_for(info.compute_capability.0, info.compute_capability.1);
            Ok(Gpu {
                ctx,
                stream,
                info,
                arch,
            })
        })
    }

    /// The kernels for a configuration, compiled for this device (cached per process).
    pub fn kernels(&self, cfg: &KernelConfig) -> Result<Kernels, WorkloadError> {
        let load =
            |file: &compile::KernelFile| -> Result<Arc<cudarc::driver::CudaModule>, WorkloadError> {
                let compiled = compile::compile(file, cfg, self.arch)?;
                self.ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(compiled.ptx.clone()))
                    .cuda(&format!("loading {}", file.name))
            };
        let cw = load(&compile::CACHE_WRITE)?;
        let da = load(&compile::DECODE_ATTENTION)?;
        let pa = load(&compile::PREFILL_ATTENTION)?;
        let f = |m: &Arc<cudarc::driver::CudaModule>, name: &str| {
            m.load_function(name)
                .cuda(&format!("loading kernel {name}"))
        };
        Ok(Kernels {
            cache_write_k: f(&cw, "cache_write_k")?,
            cache_write_v: f(&cw, "cache_write_v")?,
            synthetic_rows: f(&cw, "synthetic_rows")?,
            decode_g1: f(&da, "decode_attention_g1")?,
            decode_g2: f(&da, "decode_attention_g2")?,
            decode_g4: f(&da, "decode_attention_g4")?,
            decode_merge: f(&da, "decode_merge")?,
            prefill: f(&pa, "prefill_attention")?,
        })
    }

    /// The device address of a buffer (valid while the buffer lives).
    pub fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        let (p, _guard) = s.device_ptr(&self.stream);
        p
    }

    /// Free and total device memory now.
    pub fn mem_info(&self) -> Result<(u64, u64), WorkloadError> {
        let (free, total) = self.ctx.mem_get_info().cuda("mem_get_info")?;
        Ok((free as u64, total as u64))
    }

    /// A timing event (CU_EVENT_DEFAULT: events made with None cannot be timed).
    pub fn timing_event(&self) -> Result<CudaEvent, WorkloadError> {
        self.ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .cuda("event creation")
    }

    /// Fill a buffer with 0xFF bytes (NaN for f32) so unwritten outputs are caught.
    pub fn poison<T>(&self, s: &mut CudaSlice<T>) -> Result<(), WorkloadError> {
        let bytes = s.num_bytes();
        let p = self.ptr(s);
        // SAFETY: p is a live allocation of `bytes` bytes on this stream's context.
        unsafe { cudarc::driver::result::memset_d8_async(p, 0xff, bytes, self.stream.cu_stream()) }
            .cuda("memset")
    }

    /// Wait for all queued work.
    pub fn sync(&self) -> Result<(), WorkloadError> {
        self.stream.synchronize().cuda("stream synchronize")
    }
}

/// Every kernel entry point of one configuration.
pub struct Kernels {
    pub cache_write_k: CudaFunction,
    pub cache_write_v: CudaFunction,
    pub synthetic_rows: CudaFunction,
    pub decode_g1: CudaFunction,
    pub decode_g2: CudaFunction,
    pub decode_g4: CudaFunction,
    pub decode_merge: CudaFunction,
    pub prefill: CudaFunction,
}

impl Kernels {
    /// The decode kernel serving `heads` query heads per block.
    pub fn decode(&self, heads: u32) -> &CudaFunction {
        match heads {
            4 => &self.decode_g4,
            2 => &self.decode_g2,
            _ => &self.decode_g1,
        }
    }
}

fn query_info(ctx: &Arc<CudaContext>) -> Result<DeviceInfo, WorkloadError> {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: writes one int.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }
        .result()
        .cuda("cuDriverGetVersion")?;
    let driver_version = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|t| parse_driver_version(&t))
        .unwrap_or_else(|| "unknown".to_string());
    Ok(DeviceInfo {
        name: ctx.name().cuda("device name")?,
        driver_version,
        cuda_version: cuda_version_string(v),
        compute_capability: ctx.compute_capability().cuda("compute capability")?,
        sm_count: ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .cuda("SM count")? as u32,
        memory_bytes: ctx.total_mem().cuda("total memory")? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions_read_as_major_minor() {
        assert_eq!(cuda_version_string(13000), "13.0");
        assert_eq!(cuda_version_string(12080), "12.8");
    }

    #[test]
    fn driver_version_comes_from_the_nvrm_line() {
        let text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 \
                    07:09:15 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(parse_driver_version(text).as_deref(), Some("580.65.06"));
        assert_eq!(parse_driver_version("GCC version: 12.2.0"), None);
    }

    #[test]
    fn label_names_everything_a_row_needs() {
        let info = DeviceInfo {
            name: "NVIDIA H100 80GB HBM3".into(),
            driver_version: "580.65.06".into(),
            cuda_version: "13.0".into(),
            compute_capability: (9, 0),
            sm_count: 132,
            memory_bytes: 85_030_338_560,
        };
        assert_eq!(
            info.label(),
            "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.2 GiB, driver 580.65.06, CUDA 13.0)"
        );
    }
}
