//! The layouts allocate exactly what the planner predicts (docs/storage-contract.md):
//! `kv_bytes_allocated` (measured) == `layout::allocated_bytes` (predicted), for every layout,
//! dtype, window and shared prefix, once each sequence reaches prompt + gen tokens.

mod common;

use common::*;
use kvbench_planner::layout::{allocated_bytes, used_bytes, LayoutKind, LayoutQuery};
use kvbench_planner::{AttentionKind, CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::attention::{AttentionWorkload, PrefillMode};
use kvbench_workloads::{Strategy, Workload, WorkloadKind, WorkloadSpec};
use proptest::prelude::*;

fn predicted(s: &WorkloadSpec) -> (u64, u64) {
    let kind = match s.strategy {
        Strategy::None => LayoutKind::None,
        Strategy::Concat => LayoutKind::Concat,
        Strategy::Contiguous => LayoutKind::Contiguous,
        _ => LayoutKind::Paged {
            block_size: s.block_size,
        },
    };
    let q = LayoutQuery {
        shape: &s.shape,
        k: s.k_dtype,
        v: s.v_dtype,
        kind,
        batch: s.batch,
        max_len: s.max_len(),
        shared_prefix: s.shared_prefix,
        window: s.window,
    };
    (allocated_bytes(&q).unwrap(), used_bytes(&q).unwrap())
}

fn measured(s: &WorkloadSpec) -> kvbench_workloads::MemoryUse {
    let mut w = AttentionWorkload::new(s, PrefillMode::Fill).unwrap();
    w.prefill().unwrap();
    for _ in 0..s.gen {
        w.decode_step().unwrap();
    }
    w.memory()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn allocated_equals_the_planners_prediction(
        st in prop::sample::select(vec![Strategy::None, Strategy::Concat, Strategy::Contiguous, Strategy::Paged]),
        dt in prop::sample::select(vec![DtypeKind::F32, DtypeKind::F16, DtypeKind::Int8, DtypeKind::Int4, DtypeKind::Nf4, DtypeKind::Fp8E5m2]),
        (batch, prompt, gen, block) in (1u32..4, 1u32..60, 0u32..20, 1u32..24),
        window in prop::option::of(1u32..50),
        sliding_layer in prop::option::of(1u32..40),
        prefix in 0u32..60,
        kv in prop::sample::select(vec![1u32, 2]),
    ) {
        let mut s = spec(WorkloadKind::Attention, st, dt);
        s.shape = ModelShape::uniform("agree", 2, 2, kv, 64, 64, 64);
        if let Some(w) = sliding_layer {
            s.shape.layer_kinds[1] = AttentionKind::Sliding { window: w };
        }
        s.window = window;
        s.batch = batch;
        s.prompt = prompt;
        s.gen = gen;
        s.block_size = block;
        s.shared_prefix = prefix.min(prompt);
        let (alloc, used) = predicted(&s);
        let m = measured(&s);
        prop_assert_eq!(m.kv_bytes_allocated, alloc, "{:?}", s);
        // Used agrees wherever the contract is unambiguous: see docs/storage-contract.md
        // (a shared prefix's partial block is stored once per sequence here).
        if st != Strategy::Paged || s.shared_prefix.is_multiple_of(block) {
            prop_assert_eq!(m.kv_bytes_used, used, "{:?}", s);
        }
    }
}

#[test]
fn kivi_residual_layouts_allocate_the_predicted_bytes() {
    for st in [Strategy::Concat, Strategy::Contiguous] {
        for (prompt, gen) in [(10, 5), (100, 29), (129, 0), (161, 40)] {
            let mut s = spec(WorkloadKind::Attention, st, DtypeKind::Int4);
            s.shape = ModelShape::uniform("kivi", 2, 4, 2, 64, 64, 64);
            let (k, v) = CacheDtype::kivi(DtypeKind::Int4, 64);
            s.k_dtype = k;
            s.v_dtype = v;
            s.prompt = prompt;
            s.gen = gen;
            let (alloc, _) = predicted(&s);
            assert_eq!(
                measured(&s).kv_bytes_allocated,
                alloc,
                "{st:?} {prompt}+{gen}"
            );
        }
    }
}
