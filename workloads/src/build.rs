//! Building a workload from its spec, for the backend it names.

use crate::attention::{AttentionWorkload, PrefillMode};
use crate::decoder::DecoderWorkload;
use crate::{Backend, Strategy, Workload, WorkloadError, WorkloadKind, WorkloadSpec};

/// Choices `build` makes by default that a caller may want to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildOptions {
    /// Prefill of attention workloads, chosen by the caller (`--prefill`); `None` = real
    /// causal attention over the prompt (`compute`), whatever its length.
    pub prefill: Option<PrefillMode>,
}

/// Build a ready-to-run workload (inputs, weights, empty cache) for `spec`.
pub fn build(spec: &WorkloadSpec) -> Result<Box<dyn Workload>, WorkloadError> {
    build_with(spec, BuildOptions::default())
}

/// [`build`] with explicit options.
pub fn build_with(
    spec: &WorkloadSpec,
    opts: BuildOptions,
) -> Result<Box<dyn Workload>, WorkloadError> {
    spec.validate()?;
    // The CUDA backend and the offload tiers build their own workloads; every other
    // workload runs on the CPU layouts here.
    if spec.backend == Backend::Cuda {
        return crate::cuda::build(spec);
    }
    if let Strategy::Offload(_) = spec.strategy {
        return Ok(Box::new(crate::tier::OffloadWorkload::new(spec, true)?));
    }
    Ok(match spec.kind {
        WorkloadKind::Decoder => Box::new(DecoderWorkload::new(spec)?),
        WorkloadKind::Attention => {
            let mode = opts.prefill.unwrap_or(PrefillMode::Attention);
            Box::new(AttentionWorkload::new(spec, mode)?)
        }
    })
}
