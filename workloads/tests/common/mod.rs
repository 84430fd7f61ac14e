//! Spec builders shared by the integration tests.

use kvbench_planner::{AttentionKind, CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::{Backend, OffloadConfig, Strategy, WorkloadKind, WorkloadSpec};

/// A small spec; tests change what they exercise.
pub fn spec(kind: WorkloadKind, strategy: Strategy, dtype: DtypeKind) -> WorkloadSpec {
    WorkloadSpec {
        kind,
        backend: Backend::Cpu,
        shape: ModelShape::uniform("tiny", 2, 4, 2, 64, 64, 96),
        strategy,
        k_dtype: CacheDtype::new(dtype),
        v_dtype: CacheDtype::new(dtype),
        batch: 2,
        prompt: 9,
        gen: 5,
        block_size: 4,
        shared_prefix: 0,
        window: None,
        mlp: true,
        seed: 42,
        offload: OffloadConfig::default(),
    }
}

/// A shape with a sliding-window layer after a full one.
#[allow(dead_code)] // not every test file uses it
pub fn with_sliding(mut s: WorkloadSpec, window: u32) -> WorkloadSpec {
    s.shape.layer_kinds[1] = AttentionKind::Sliding { window };
    s
}
