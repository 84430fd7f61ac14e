//! CUDA backend through cudarc (loaded at run time): NVRTC-compiled kernels, cuBLAS GEMMs.

pub mod codec;
pub mod compile;
pub mod loader;
