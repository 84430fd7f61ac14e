//! kvbench-workloads: what kvbench runs — cache layouts, quantization codecs, attention
//! kernels (CPU and CUDA), the synthetic decoder and the f64 reference.

pub mod accuracy;
pub mod attention;
pub mod build;
pub mod cache;
pub mod codec;
pub mod cpu;
pub mod cuda;
pub mod decoder;
pub mod reference;
pub mod spec;
pub mod synth;
pub mod tier;
pub mod workload;

pub use build::{build, build_with, BuildOptions};
pub use spec::{Backend, OffloadConfig, SpecError, Strategy, Tier, WorkloadKind, WorkloadSpec};
pub use workload::{Interrupt, MemoryUse, Verification, Workload};

/// Errors a user can cause or a backend can report while building or running a workload.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("invalid workload: {0}")]
    Invalid(String),
    #[error("invalid workload: {0}")]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Backend(String),
    /// The user asked to stop ([`Interrupt`]); the workload's state is unfinished.
    #[error("interrupted: the user asked to stop (Ctrl-C)")]
    Interrupted,
}
