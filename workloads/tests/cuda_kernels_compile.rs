//! Every CUDA kernel compiles with NVRTC to PTX for sm_80 and sm_90, with no error and no
//! warning, for every storage codec. Needs libnvrtc (no GPU): set KVBENCH_NVRTC_LIB to the
//! directory `ci/install-nvrtc.sh` prints. Without it the test says so and skips.

use kvbench_workloads::cuda::codec::GpuCodec;
use kvbench_workloads::cuda::compile::{compile_uncached, KernelConfig, KERNEL_FILES};
use kvbench_workloads::cuda::loader;
use std::io::Write;

fn nvrtc_or_skip() -> bool {
    match loader::ensure_nvrtc() {
        Ok(()) => true,
        Err(e) => {
            // Written past the test harness's capture so a skip is never silent.
            let _ = writeln!(std::io::stderr(), "SKIPPED: NVRTC kernel compile test: {e}");
            false
        }
    }
}

fn compile_clean(cfg: KernelConfig, arch: &str) {
    for file in KERNEL_FILES {
        let out = compile_uncached(file, &cfg, arch).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !out.log.to_lowercase().contains("warning"),
            "{} for {arch} with {cfg:?} compiled with warnings:\n{}",
            file.name,
            out.log
        );
        for f in file.functions {
            assert!(
                out.ptx.contains(&format!(".entry {f}(")),
                "{} for {arch}: entry point {f} missing from the PTX",
                file.name
            );
        }
        let target = format!(".target sm_{}", &arch["compute_".len()..]);
        assert!(out.ptx.contains(&target), "PTX not for {arch}");
    }
}

#[test]
fn every_kernel_compiles_for_every_codec_on_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    for arch in ["compute_80", "compute_90"] {
        for codec in GpuCodec::ALL {
            compile_clean(KernelConfig::new(128, codec, codec).unwrap(), arch);
        }
    }
}

#[test]
fn kernels_compile_for_every_head_dim_and_mixed_codecs() {
    if !nvrtc_or_skip() {
        return;
    }
    for arch in ["compute_80", "compute_90"] {
        for hd in [64, 256] {
            compile_clean(
                KernelConfig::new(hd, GpuCodec::F16, GpuCodec::F16).unwrap(),
                arch,
            );
            compile_clean(
                KernelConfig::new(hd, GpuCodec::Int4, GpuCodec::Int8).unwrap(),
                arch,
            );
        }
        compile_clean(
            KernelConfig::new(128, GpuCodec::Fp8E4m3, GpuCodec::Bf16).unwrap(),
            arch,
        );
    }
}

#[test]
fn a_broken_kernel_fails_with_the_compile_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let broken = kvbench_workloads::cuda::compile::KernelFile {
        name: "broken.cu",
        source: "extern \"C\" __global__ void broken() { undefined_name = 1; }",
        functions: &["broken"],
    };
    let cfg = KernelConfig::new(128, GpuCodec::F16, GpuCodec::F16).unwrap();
    let err = compile_uncached(&broken, &cfg, "compute_80")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.cu") && err.contains("undefined_name"),
        "{err}"
    );
}

#[test]
fn warnings_reach_the_log_the_clean_check_reads() {
    // Guards the "no warning" assertions above against a log that never carries warnings.
    if !nvrtc_or_skip() {
        return;
    }
    let noisy = kvbench_workloads::cuda::compile::KernelFile {
        name: "noisy.cu",
        source: "extern \"C\" __global__ void noisy() { int unused_local; }",
        functions: &["noisy"],
    };
    let cfg = KernelConfig::new(128, GpuCodec::F16, GpuCodec::F16).unwrap();
    let out = compile_uncached(&noisy, &cfg, "compute_80").unwrap();
    assert!(
        out.log.to_lowercase().contains("warning"),
        "log: {}",
        out.log
    );
}
