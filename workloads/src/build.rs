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
    validate(spec)?;
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

/// Refuse shapes and lengths the workloads cannot run, naming the bad value.
pub fn validate(spec: &WorkloadSpec) -> Result<(), WorkloadError> {
    let s = &spec.shape;
    let bad = |m: String| Err(WorkloadError::Invalid(m));
    if s.layers == 0 || s.q_heads == 0 || s.kv_heads == 0 || s.head_dim == 0 {
        return bad(format!(
            "shape {} has layers {}, q_heads {}, kv_heads {}, head_dim {}; all must be at least 1",
            s.name, s.layers, s.q_heads, s.kv_heads, s.head_dim
        ));
    }
    if !s.q_heads.is_multiple_of(s.kv_heads) {
        return bad(format!(
            "q_heads {} is not a multiple of kv_heads {}; GQA needs whole groups",
            s.q_heads, s.kv_heads
        ));
    }
    if !s.head_dim.is_multiple_of(2) {
        return bad(format!(
            "head_dim {} is odd; RoPE rotates pairs, use an even head_dim",
            s.head_dim
        ));
    }
    if spec.kind == WorkloadKind::Decoder && s.hidden == 0 {
        return bad(format!(
            "shape {} has hidden 0; the decoder needs a hidden size",
            s.name
        ));
    }
    if spec.prompt == 0 {
        return bad("--prompt 0: the prompt needs at least one token".into());
    }
    if spec.batch == 0 {
        return bad("--batch 0: the batch needs at least one sequence".into());
    }
    if spec.shared_prefix > spec.prompt {
        return bad(format!(
            "--shared-prefix {} is longer than --prompt {}; it must be part of the prompt",
            spec.shared_prefix, spec.prompt
        ));
    }
    Ok(())
}
