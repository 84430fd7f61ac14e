//! CUDA backend through cudarc (loaded at run time): NVRTC-compiled kernels, cuBLAS GEMMs.

pub mod block_table;
pub mod codec;
pub mod compile;
pub mod device;
pub mod launch;
pub mod loader;
pub mod params;
pub mod plan;
pub mod reference;
