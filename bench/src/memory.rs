//! What a workload will need before it is built: the planner's KV bytes for its layout, the
//! weights, and the f64 reference used to verify it — checked against available memory so a
//! workload that cannot fit is refused with its figure instead of crashing the machine.

use crate::export::table::bytes;
use crate::matrix::is_paged;
use kvbench_planner::layout::{allocated_bytes, LayoutKind, LayoutQuery};
use kvbench_workloads::{Backend, Strategy, WorkloadKind, WorkloadSpec};

/// Share of available memory a workload may plan to use; the rest is headroom for
/// activations, allocator slack and the rest of the machine.
pub const USABLE_FRACTION: f64 = 0.8;

/// The planner's layout for a strategy (offload pages its working pool).
pub fn layout_kind(spec: &WorkloadSpec) -> LayoutKind {
    match spec.strategy {
        Strategy::None => LayoutKind::None,
        Strategy::Concat => LayoutKind::Concat,
        Strategy::Contiguous => LayoutKind::Contiguous,
        Strategy::Paged | Strategy::Offload(_) => LayoutKind::Paged {
            block_size: spec.block_size,
        },
    }
}

/// `kv_bytes_predicted`: what the planner says this workload's layout allocates at its
/// longest sequence (docs/storage-contract.md).
pub fn predicted_kv_bytes(spec: &WorkloadSpec) -> Result<u64, kvbench_planner::error::PlanError> {
    allocated_bytes(&LayoutQuery {
        shape: &spec.shape,
        k: spec.k_dtype,
        v: spec.v_dtype,
        kind: layout_kind(spec),
        batch: spec.batch,
        max_len: spec.max_len(),
        shared_prefix: if is_paged(spec.strategy) {
            spec.shared_prefix
        } else {
            0
        },
        window: spec.window,
    })
}

/// Refuse, before anything runs, a sweep with a workload whose KV cache cannot even be
/// counted (more than 16 EiB): an impossible shape, named with its sizes' error.
pub fn check_countable(specs: &[WorkloadSpec]) -> Result<(), String> {
    for spec in specs {
        if let Err(e @ kvbench_planner::error::PlanError::TooLarge { .. }) =
            predicted_kv_bytes(spec)
        {
            return Err(format!("{}: {e}", crate::matrix::describe(spec)));
        }
    }
    Ok(())
}

/// Product of user sizes, saturating at `u64::MAX`: an estimate that overflows is "more
/// than any machine has", never a wrapped total smaller than its parts.
fn product(factors: &[u64]) -> u64 {
    factors.iter().fold(1u64, |acc, &f| acc.saturating_mul(f))
}

/// f32 weights of the synthetic decoder: per layer Q, K, V and output projections, two norms
/// and (with the MLP) gate, up and down projections. Attention-only workloads hold none.
pub fn weights_bytes(spec: &WorkloadSpec) -> u64 {
    if spec.kind == WorkloadKind::Attention {
        return 0;
    }
    let s = &spec.shape;
    let (h, hd) = (s.hidden as u64, s.head_dim as u64);
    let q = product(&[h, s.q_heads as u64, hd]);
    let kv = product(&[2, h, s.kv_heads as u64, hd]);
    let out = product(&[s.q_heads as u64, hd, h]);
    let mlp = if spec.mlp {
        product(&[3, h, s.intermediate as u64])
    } else {
        0
    };
    let per_layer = q
        .saturating_add(kv)
        .saturating_add(out)
        .saturating_add(mlp)
        .saturating_add(2 * h);
    product(&[s.layers as u64, per_layer, 4])
}

/// Every token's K and V of every layer in f64: what the decoder's reference holds, and about
/// what `none` recomputes each step.
pub fn f64_kv_bytes(spec: &WorkloadSpec) -> u64 {
    let s = &spec.shape;
    product(&[
        spec.batch as u64,
        s.layers as u64,
        2,
        s.kv_heads as u64,
        s.head_dim as u64,
        spec.max_len() as u64,
        8,
    ])
}

/// Memory of the f64 reference. The decoder's holds every token's K and V in f64; the
/// attention workload's streams one row at a time per (layer, sequence, KV head) task, so it
/// holds only each task's queries and accumulators (bounded, whatever the context).
pub fn reference_bytes(spec: &WorkloadSpec) -> u64 {
    match spec.kind {
        WorkloadKind::Decoder => f64_kv_bytes(spec),
        WorkloadKind::Attention => {
            let s = &spec.shape;
            let group = (s.q_heads / s.kv_heads.max(1)) as u64;
            let tasks = spec.batch as u64 * s.layers as u64 * s.kv_heads as u64;
            // Each task's result (group × d) lives until all are joined.
            tasks * (group + 2) * s.head_dim as u64 * 8
        }
    }
}

/// Estimated host memory of one workload, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// The planner's KV bytes; doubled for `concat`, whose reallocation holds old and new.
    pub kv: u64,
    pub weights: u64,
    pub reference: u64,
}

impl MemoryNeed {
    /// Estimate for `spec` from its predicted KV bytes. CUDA workloads keep the cache on the
    /// device, so only the host-side weights and reference count here.
    pub fn of(spec: &WorkloadSpec, predicted_kv: u64) -> MemoryNeed {
        let kv = match (spec.backend, spec.strategy) {
            (Backend::Cuda, _) => 0,
            (_, Strategy::Concat) => predicted_kv.saturating_mul(2),
            // `none` recomputes K/V for the whole sequence each step: about a cache's worth.
            (_, Strategy::None) => f64_kv_bytes(spec) / 2,
            _ => predicted_kv,
        };
        MemoryNeed {
            kv,
            weights: weights_bytes(spec),
            reference: reference_bytes(spec),
        }
    }

    /// All parts together.
    pub fn total(&self) -> u64 {
        self.kv
            .saturating_add(self.weights)
            .saturating_add(self.reference)
    }

    /// `Err(reason)` when the estimate exceeds [`USABLE_FRACTION`] of `available` bytes.
    pub fn check(&self, available: u64) -> Result<(), String> {
        let usable = (available as f64 * USABLE_FRACTION) as u64;
        if self.total() <= usable {
            return Ok(());
        }
        Err(format!(
            "needs about {} (KV cache {}, weights {}, f64 reference {}) but only {} is available \
             ({:.0}% of {}); lower --prompt, --gen, --batch or --layers",
            bytes(self.total()),
            bytes(self.kv),
            bytes(self.weights),
            bytes(self.reference),
            bytes(usable),
            USABLE_FRACTION * 100.0,
            bytes(available)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
    use kvbench_workloads::OffloadConfig;

    fn spec(
        strategy: Strategy,
        shape: ModelShape,
        batch: u32,
        prompt: u32,
        gen: u32,
    ) -> WorkloadSpec {
        WorkloadSpec {
            kind: WorkloadKind::Decoder,
            backend: Backend::Cpu,
            shape,
            strategy,
            k_dtype: CacheDtype::new(DtypeKind::F16),
            v_dtype: CacheDtype::new(DtypeKind::F16),
            batch,
            prompt,
            gen,
            block_size: 16,
            shared_prefix: 0,
            window: None,
            mlp: true,
            seed: 0,
            offload: OffloadConfig::default(),
        }
    }

    #[test]
    fn predicted_bytes_match_reference_figures() {
        // REFERENCE.md: 32 layers × 32 heads × 128, 1024 tokens, fp16 = 512 MiB.
        let mha = ModelShape::uniform("llama2-7b", 32, 32, 32, 128, 4096, 11008);
        let s = spec(Strategy::Contiguous, mha, 1, 1000, 24);
        assert_eq!(predicted_kv_bytes(&s).unwrap(), 536_870_912);
        // Paged, block 16: 1000 + 30 = 1030 tokens → 65 blocks of 16 = 1040 token slots.
        let mut p = spec(
            Strategy::Paged,
            ModelShape::uniform("llama2-7b", 32, 32, 32, 128, 4096, 11008),
            1,
            1000,
            30,
        );
        assert_eq!(predicted_kv_bytes(&p).unwrap(), 1040 * 524_288);
        p.strategy = Strategy::None;
        assert_eq!(predicted_kv_bytes(&p).unwrap(), 0);
    }

    #[test]
    fn weights_by_hand() {
        // 2 layers, hidden 64, 4 q heads × 16, 2 kv heads × 16, intermediate 128:
        // q 64·64 + kv 2·64·32 + out 64·64 + mlp 3·64·128 + norms 128 = 36_992 per layer.
        let mut s = spec(
            Strategy::Contiguous,
            ModelShape::uniform("t", 2, 4, 2, 16, 64, 128),
            1,
            8,
            8,
        );
        assert_eq!(weights_bytes(&s), 2 * 36_992 * 4);
        s.mlp = false;
        assert_eq!(weights_bytes(&s), 2 * (36_992 - 24_576) * 4);
        s.kind = WorkloadKind::Attention;
        assert_eq!(weights_bytes(&s), 0);
    }

    #[test]
    fn sizes_past_u64_saturate_and_are_refused() {
        // 4e9 tokens × 2e9 batch × wide heads overflows u64 many times over: the total must
        // stay at least each of its parts, so the guard refuses it instead of allocating.
        let wide = ModelShape::uniform("wide", 1_000_000, 4096, 4096, 4096, 1 << 30, 1 << 30);
        let s = spec(Strategy::Concat, wide, u32::MAX, u32::MAX, u32::MAX);
        let need = MemoryNeed::of(&s, u64::MAX);
        assert!(need.total() >= need.kv && need.total() >= need.weights);
        assert_eq!(need.total(), u64::MAX);
        assert!(need.check(64 << 30).is_err());
    }

    #[test]
    fn too_big_is_refused_with_its_figure() {
        // Llama-3-70B shape at 4096 tokens, f16: 1.25 GiB of cache (REFERENCE.md).
        let s = spec(
            Strategy::Contiguous,
            ModelShape::uniform("llama3-70b", 80, 64, 8, 128, 8192, 28672),
            1,
            4000,
            96,
        );
        let need = MemoryNeed::of(&s, predicted_kv_bytes(&s).unwrap());
        assert_eq!(need.kv, 1_342_177_280);
        let e = need.check(4 << 30).unwrap_err();
        assert!(e.contains("KV cache 1.25 GiB"), "{e}");
        assert!(e.contains("lower --prompt"), "{e}");
        assert!(need.check(1 << 40).is_ok());
    }
}
