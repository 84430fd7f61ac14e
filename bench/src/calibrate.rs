//! Machine limits: read/copy bandwidth and f32 GEMM rate.
