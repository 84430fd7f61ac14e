//! CPU kernels: decode and prefill attention, projections (SIMD with scalar twins).
