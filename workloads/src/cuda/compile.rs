//! Compiling the CUDA C kernels with NVRTC, once per configuration per process.

use super::codec::GpuCodec;
use super::loader;
use crate::WorkloadError;
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};

/// Definitions every kernel file is compiled with (fp16/fp8 conversions, codecs, addressing).
pub const COMMON_HEADER: &str = include_str!("kernels/common.cuh");

/// One kernel source file and the entry points it defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelFile {
    pub name: &'static str,
    pub source: &'static str,
    pub functions: &'static [&'static str],
}

/// Cache write with quantize-on-write, plus synthetic query rows.
pub const CACHE_WRITE: KernelFile = KernelFile {
    name: "cache_write.cu",
    source: include_str!("kernels/cache_write.cu"),
    functions: &["cache_write_k", "cache_write_v", "synthetic_rows"],
};

/// Split-K decode attention (contiguous and paged) and its merge.
pub const DECODE_ATTENTION: KernelFile = KernelFile {
    name: "decode_attention.cu",
    source: include_str!("kernels/decode_attention.cu"),
    functions: &[
        "decode_attention_g1",
        "decode_attention_g2",
        "decode_attention_g4",
        "decode_merge",
    ],
};

/// Tiled causal prefill attention with an online softmax.
pub const PREFILL_ATTENTION: KernelFile = KernelFile {
    name: "prefill_attention.cu",
    source: include_str!("kernels/prefill_attention.cu"),
    functions: &["prefill_attention"],
};

/// Every kernel file kvbench compiles.
pub const KERNEL_FILES: &[KernelFile] = &[CACHE_WRITE, DECODE_ATTENTION, PREFILL_ATTENTION];

/// Head dimensions the kernels are written for (HEAD_DIM / 16 threads per row, a power of 2).
pub const SUPPORTED_HEAD_DIMS: &[u32] = &[64, 128, 256];

/// The compile-time parameters of one build of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelConfig {
    pub head_dim: u32,
    pub k_codec: GpuCodec,
    pub v_codec: GpuCodec,
}

impl KernelConfig {
    /// Validate the head dimension.
    pub fn new(head_dim: u32, k_codec: GpuCodec, v_codec: GpuCodec) -> Result<Self, WorkloadError> {
        if !SUPPORTED_HEAD_DIMS.contains(&head_dim) {
            return Err(WorkloadError::Invalid(format!(
                "head_dim {head_dim} is not supported by the CUDA kernels (supported: 64, 128, \
                 256); use --backend cpu for this shape"
            )));
        }
        Ok(KernelConfig {
            head_dim,
            k_codec,
            v_codec,
        })
    }
}

/// NVRTC options for a configuration and a virtual architecture such as `compute_90`.
/// No fast math: the encoders must round exactly as their Rust twins in `codec.rs`.
pub fn compile_options(cfg: &KernelConfig, arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        format!("-DHEAD_DIM={}", cfg.head_dim),
        format!("-DK_CODEC={}", cfg.k_codec.id()),
        format!("-DV_CODEC={}", cfg.v_codec.id()),
    ]
}

/// The full program text NVRTC sees for one kernel file (header, then the file).
pub fn program_source(file: &KernelFile) -> String {
    format!(
        "#line 1 \"common.cuh\"\n{COMMON_HEADER}\n#line 1 \"{}\"\n{}",
        file.name, file.source
    )
}

/// A compiled program: PTX text and NVRTC's log (warnings land here on success).
#[derive(Debug, Clone)]
pub struct CompiledKernel {
    pub ptx: String,
    pub log: String,
}

/// The virtual architecture for a compute capability, e.g. (9, 0) → `compute_90`.
pub fn arch_for(major: i32, minor: i32) -> &'static str {
    // NVRTC wants a 'static str in cudarc's options; the set is small, so intern them.
    static NAMES: OnceLock<Mutex<HashMap<(i32, i32), &'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap();
    names
        .entry((major, minor))
        .or_insert_with(|| Box::leak(format!("compute_{major}{minor}").into_boxed_str()))
}

/// Compile one kernel file, failing with NVRTC's log on any error. Not cached.
pub fn compile_uncached(
    file: &KernelFile,
    cfg: &KernelConfig,
    arch: &str,
) -> Result<CompiledKernel, WorkloadError> {
    loader::ensure_nvrtc()?;
    use cudarc::nvrtc::result;
    let src = CString::new(program_source(file)).expect("kernel sources contain no NUL");
    let name = CString::new(file.name).expect("kernel names contain no NUL");
    let options = compile_options(cfg, arch);
    loader::guarded("NVRTC compile", || {
        let prog = result::create_program(&src, Some(&name))
            .map_err(|e| WorkloadError::Backend(format!("NVRTC create {}: {e:?}", file.name)))?;
        // SAFETY: `prog` was just created and is destroyed exactly once below.
        let compiled = unsafe { result::compile_program(prog, &options) };
        let log = unsafe { result::get_program_log(prog) }
            .map(|raw| c_chars_to_string(&raw))
            .unwrap_or_default();
        let ptx = match compiled {
            Ok(()) => unsafe { result::get_ptx(prog) }
                .map(|raw| c_chars_to_string(&raw))
                .map_err(|e| WorkloadError::Backend(format!("NVRTC PTX of {}: {e:?}", file.name))),
            Err(e) => Err(WorkloadError::Backend(format!(
                "NVRTC failed to compile {} for {arch} ({e:?}) with {options:?}:\n{log}",
                file.name
            ))),
        };
        // SAFETY: created above, not destroyed before.
        let _ = unsafe { result::destroy_program(prog) };
        Ok(CompiledKernel { ptx: ptx?, log })
    })
}

/// Compile (or fetch from this process's cache) one kernel file for a configuration.
pub fn compile(
    file: &KernelFile,
    cfg: &KernelConfig,
    arch: &str,
) -> Result<Arc<CompiledKernel>, WorkloadError> {
    type Key = (&'static str, KernelConfig, String);
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<CompiledKernel>>>> = OnceLock::new();
    let key = (file.name, *cfg, arch.to_string());
    if let Some(hit) = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .get(&key)
    {
        return Ok(hit.clone());
    }
    let compiled = Arc::new(compile_uncached(file, cfg, arch)?);
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert(key, compiled.clone());
    Ok(compiled)
}

fn c_chars_to_string(raw: &[c_char]) -> String {
    if raw.is_empty() {
        return String::new();
    }
    // SAFETY: NVRTC returns NUL-terminated buffers of exactly the size it reported.
    unsafe { CStr::from_ptr(raw.as_ptr()) }
        .to_string_lossy()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_carry_arch_head_dim_and_codec_ids() {
        let cfg = KernelConfig::new(128, GpuCodec::F16, GpuCodec::Int8).unwrap();
        assert_eq!(
            compile_options(&cfg, "compute_90"),
            vec![
                "--gpu-architecture=compute_90",
                "--std=c++17",
                "-DHEAD_DIM=128",
                "-DK_CODEC=1",
                "-DV_CODEC=3"
            ]
        );
    }

    #[test]
    fn unsupported_head_dim_is_a_clear_error() {
        let err = KernelConfig::new(96, GpuCodec::F16, GpuCodec::F16).unwrap_err();
        assert!(err.to_string().contains("head_dim 96"), "{err}");
    }

    #[test]
    fn arch_names_follow_compute_capability() {
        assert_eq!(arch_for(9, 0), "compute_90");
        assert_eq!(arch_for(8, 6), "compute_86");
    }

    #[test]
    fn every_entry_point_is_defined_in_its_file() {
        for file in KERNEL_FILES {
            for f in file.functions {
                let def = format!("__global__ void {f}(");
                let launch_bounds = format!(") {f}(");
                assert!(
                    file.source.contains(&def) || file.source.contains(&launch_bounds),
                    "{f} not defined in {}",
                    file.name
                );
            }
        }
    }
}
