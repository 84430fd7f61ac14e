//! CUDA backend through cudarc (loaded at run time).
