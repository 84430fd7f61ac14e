//! The default suite: what `kvbench run` runs with no sweep flags. Small shapes, so the table
//! answers four questions quickly: cache vs none, paged vs contiguous, quantized memory saving
//! vs error, GQA vs MHA; and decode attention from main memory, its rows grown (more layers)
//! until a step reads more than 4 × this machine's last-level cache (`sizing`).

use crate::matrix::{Matrix, MatrixError, Sweep};
use kvbench_planner::dtype::{parse_kv_dtypes, KvDtypes};
use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::attention::PrefillMode;
use kvbench_workloads::{Backend, OffloadConfig, Strategy, WorkloadKind};

/// The suite's attention rows fill their 64K-token prompts rather than attend over them:
/// they measure decode, and a causal prefill of every layer would take minutes.
pub const PREFILL: PrefillMode = PrefillMode::Fill;

/// A Llama-like shape scaled down: 2 layers, 8 query heads of 64, hidden 512, with `kv_heads`
/// KV heads (8 = MHA, 2 = GQA with groups of 4).
pub fn mini_shape(kv_heads: u32) -> ModelShape {
    let name = if kv_heads == 8 {
        "mini-mha"
    } else {
        "mini-gqa"
    };
    ModelShape::uniform(name, 2, 8, kv_heads, 64, 512, 1408)
}

/// Settings every part of the suite shares.
fn base(seed: u64) -> Matrix {
    Matrix {
        shapes: vec![mini_shape(2)],
        kinds: vec![WorkloadKind::Decoder],
        backends: vec![Backend::Cpu],
        strategies: vec![Strategy::Contiguous],
        dtypes: vec![KvDtypes::same(CacheDtype::new(DtypeKind::F16))],
        prompts: vec![128],
        gens: vec![32],
        batches: vec![1],
        block_sizes: vec![16],
        shared_prefix: 0,
        window: None,
        mlp: true,
        seed,
        offload: OffloadConfig::default(),
    }
}

/// The parts of the default suite, each one question.
pub fn default_suite(seed: u64) -> Vec<(&'static str, Matrix)> {
    let dtypes = |names: &[&str]| -> Vec<KvDtypes> {
        names
            .iter()
            .map(|n| parse_kv_dtypes(n).expect("suite dtype names are valid"))
            .collect()
    };
    vec![
        (
            "cache vs none, paged vs contiguous (decoder, GQA)",
            Matrix {
                strategies: vec![
                    Strategy::None,
                    Strategy::Concat,
                    Strategy::Contiguous,
                    Strategy::Paged,
                ],
                ..base(seed)
            },
        ),
        (
            "quantized memory saving vs error (decoder, GQA, contiguous)",
            Matrix {
                dtypes: dtypes(&[
                    "f32",
                    "bf16",
                    "fp8-e4m3",
                    "int8",
                    "int4",
                    "nf4",
                    "kivi4/r32",
                ]),
                ..base(seed)
            },
        ),
        (
            "GQA vs MHA (decoder, contiguous f16)",
            Matrix {
                shapes: vec![mini_shape(8)],
                ..base(seed)
            },
        ),
        (
            "decode attention at a longer context: MHA vs GQA, paged vs contiguous, f16 vs int8",
            Matrix {
                shapes: vec![mini_shape(8), mini_shape(2)],
                kinds: vec![WorkloadKind::Attention],
                strategies: vec![Strategy::Contiguous, Strategy::Paged],
                dtypes: dtypes(&["f16", "int8"]),
                // 17 MiB (GQA int8) to 128 MiB (MHA f16) of KV per layer; the run adds layers
                // until a step reads more than 4 × the measured last-level cache, so the rows
                // measure main memory on any machine. Few steps: each reads gigabytes.
                prompts: vec![65536],
                gens: vec![8],
                ..base(seed)
            },
        ),
    ]
}

/// The whole default suite as one sweep, in the order above.
pub fn default_sweep(seed: u64) -> Result<Sweep, MatrixError> {
    let mut all = Sweep {
        specs: Vec::new(),
        skipped: Vec::new(),
    };
    for (_, m) in default_suite(seed) {
        let part = m.expand()?;
        all.specs.extend(part.specs);
        all.skipped.extend(part.skipped);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_covers_the_four_questions_without_skips() {
        let sweep = default_sweep(0).unwrap();
        assert!(sweep.skipped.is_empty(), "{:?}", sweep.skipped);
        let has = |f: &dyn Fn(&kvbench_workloads::WorkloadSpec) -> bool| sweep.specs.iter().any(f);
        assert!(has(&|s| s.strategy == Strategy::None));
        assert!(has(&|s| s.strategy == Strategy::Paged));
        assert!(has(
            &|s| s.k_dtype.kind == DtypeKind::Int4 && s.k_dtype.residual == 0
        ));
        assert!(has(&|s| s.k_dtype.residual == 32));
        assert!(has(&|s| s.shape.kv_heads == 8) && has(&|s| s.shape.kv_heads == 2));
        assert!(has(&|s| s.kind == WorkloadKind::Attention));
        assert_eq!(sweep.specs.len(), 4 + 7 + 1 + 8);
    }
}
