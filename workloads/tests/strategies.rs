//! Every strategy × dtype against the f64 reference, over random shapes (GQA, MQA, MHA,
//! batch > 1, prompt 1, block-size boundaries, sliding windows, shared prefixes).

mod common;

use common::*;
use kvbench_planner::{AttentionKind, CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::attention::{AttentionWorkload, PrefillMode};
use kvbench_workloads::cpu::Isa;
use kvbench_workloads::{build, Strategy, Workload, WorkloadKind};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

const STRATEGIES: [Strategy; 4] = [
    Strategy::None,
    Strategy::Concat,
    Strategy::Contiguous,
    Strategy::Paged,
];
const DTYPES: [DtypeKind; 9] = [
    DtypeKind::F32,
    DtypeKind::F16,
    DtypeKind::Bf16,
    DtypeKind::Fp8E4m3,
    DtypeKind::Fp8E5m2,
    DtypeKind::Int8,
    DtypeKind::Int4,
    DtypeKind::Nf4,
    DtypeKind::Int2,
];

#[test]
fn every_strategy_and_dtype_passes_verification_for_both_workloads() {
    for kind in [WorkloadKind::Attention, WorkloadKind::Decoder] {
        for dt in DTYPES {
            for st in STRATEGIES {
                let s = spec(kind, st, dt);
                let v = build(&s).unwrap().verify().unwrap();
                assert!(v.passed, "{kind:?} {st:?} {dt:?}: {}", v.detail);
                if dt == DtypeKind::F32 || st == Strategy::None {
                    // Lossless: f32 rounding only.
                    assert!(
                        v.rel_error < 1e-5,
                        "{kind:?} {st:?} {dt:?}: {}",
                        v.rel_error
                    );
                }
            }
        }
    }
}

#[test]
fn quantized_errors_rank_as_their_precision() {
    // More bits, less error: f16 < bf16 < int8 < fp8-e4m3 < int4 < int2 (same inputs).
    let err = |dt| {
        build(&spec(WorkloadKind::Attention, Strategy::Contiguous, dt))
            .unwrap()
            .verify()
            .unwrap()
            .rel_error
    };
    use DtypeKind::*;
    let e: Vec<f64> = [F16, Bf16, Int8, Fp8E4m3, Int4, Int2]
        .into_iter()
        .map(err)
        .collect();
    assert!(e.windows(2).all(|w| w[0] < w[1]), "{e:?}");
}

#[test]
fn kivi_with_residual_passes_and_beats_plain_int4() {
    let mut s = spec(
        WorkloadKind::Attention,
        Strategy::Contiguous,
        DtypeKind::Int4,
    );
    s.shape = ModelShape::uniform("kivi", 1, 4, 1, 64, 64, 64);
    s.prompt = 150;
    s.gen = 20;
    let plain = build(&s).unwrap().verify().unwrap();
    let (k, v) = CacheDtype::kivi(DtypeKind::Int4, 64);
    s.k_dtype = k;
    s.v_dtype = v;
    for st in [Strategy::Contiguous, Strategy::Concat] {
        s.strategy = st;
        let kivi = build(&s).unwrap().verify().unwrap();
        assert!(kivi.passed, "{}", kivi.detail);
        // The most recent 64 tokens are exact f16: less error than quantizing everything.
        assert!(
            kivi.rel_error < plain.rel_error,
            "{} vs {}",
            kivi.rel_error,
            plain.rel_error
        );
    }
}

#[test]
fn concat_and_contiguous_give_identical_outputs() {
    for kind in [WorkloadKind::Attention, WorkloadKind::Decoder] {
        for dt in [DtypeKind::F32, DtypeKind::F16, DtypeKind::Int4] {
            let a = build(&spec(kind, Strategy::Concat, dt))
                .unwrap()
                .verify()
                .unwrap();
            let b = build(&spec(kind, Strategy::Contiguous, dt))
                .unwrap()
                .verify()
                .unwrap();
            // Same rows in the same order through the same kernels: bit-identical results.
            assert_eq!(
                a.rel_error.to_bits(),
                b.rel_error.to_bits(),
                "{kind:?} {dt:?}"
            );
            assert_eq!(a.cosine.to_bits(), b.cosine.to_bits());
        }
    }
}

#[test]
fn fill_mode_is_verified_through_a_decode_of_the_last_prompt_token() {
    let mut s = spec(WorkloadKind::Attention, Strategy::Paged, DtypeKind::F16);
    s.gen = 0;
    for isa in [Isa::Scalar, Isa::detect()] {
        let mut w = AttentionWorkload::new(&s, PrefillMode::Fill)
            .unwrap()
            .with_isa(isa);
        let v = w.verify().unwrap();
        assert!(v.passed, "{}", v.detail);
        assert_eq!(w.prefill_flops(), 0.0);
    }
}

#[test]
fn memory_and_bytes_read_follow_the_layout() {
    let s = spec(
        WorkloadKind::Attention,
        Strategy::Contiguous,
        DtypeKind::F16,
    );
    let mut w = build(&s).unwrap();
    w.prefill().unwrap();
    w.decode_step().unwrap();
    // 2 layers × 2 seqs × 2 KV heads × 14 slots × 64 dims × 2 bytes × (K, V).
    assert_eq!(w.memory().kv_bytes_allocated, 2 * 2 * 2 * 14 * 64 * 2 * 2);
    assert_eq!(w.memory().kv_bytes_used, 2 * 2 * 2 * 10 * 64 * 2 * 2);
    // The step read every stored token of every head once: 10 tokens.
    assert_eq!(w.kv_bytes_read_last_step(), 2 * 2 * 2 * 10 * 64 * 2 * 2);
    // Decoding past prompt + gen is refused, not a panic.
    for _ in 0..4 {
        w.decode_step().unwrap();
    }
    let e = w.decode_step().unwrap_err().to_string();
    assert!(e.contains("past prompt + gen"), "{e}");
    w.reset().unwrap();
    assert_eq!(w.memory().kv_bytes_used, 0);
}

#[test]
fn bad_specs_are_refused_with_the_value_and_a_fix() {
    let mut s = spec(WorkloadKind::Decoder, Strategy::Paged, DtypeKind::F16);
    s.shape.kv_heads = 3;
    let e = build(&s).err().unwrap().to_string();
    assert!(
        e.contains("q_heads 4 is not a multiple of kv_heads 3"),
        "{e}"
    );
    let mut s = spec(WorkloadKind::Decoder, Strategy::Paged, DtypeKind::F16);
    s.prompt = 0;
    assert!(build(&s).err().unwrap().to_string().contains("--prompt 0"));
    let mut s = spec(WorkloadKind::Decoder, Strategy::Paged, DtypeKind::F16);
    s.backend = kvbench_workloads::Backend::Cuda;
    assert!(build(&s)
        .err()
        .unwrap()
        .to_string()
        .contains("--backend cpu"));
    let s = spec(
        WorkloadKind::Decoder,
        Strategy::Offload(kvbench_workloads::Tier::Host),
        DtypeKind::F16,
    );
    assert!(build(&s)
        .err()
        .unwrap()
        .to_string()
        .contains("--workload attention"));
    let mut s = spec(WorkloadKind::Attention, Strategy::Paged, DtypeKind::Int4);
    s.shape.head_dim = 48;
    assert!(build(&s).err().unwrap().to_string().contains("head_dim 48"));
}

fn arb_spec() -> impl proptest::strategy::Strategy<Value = kvbench_workloads::WorkloadSpec> {
    (
        (
            1u32..3,
            prop::sample::select(vec![(4u32, 4u32), (4, 2), (4, 1), (6, 3)]),
            prop::sample::select(vec![16u32, 32]),
        ),
        (1u32..4, 1u32..40, 0u32..12, 1u32..20),
        (prop::option::of(1u32..30), 0u32..12),
        (
            0usize..4,
            prop::sample::select(vec![
                DtypeKind::F32,
                DtypeKind::F16,
                DtypeKind::Int8,
                DtypeKind::Fp8E4m3,
            ]),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (layers, (hq, hk), d),
                (batch, prompt, gen, block),
                (window, prefix),
                (st, dt, decoder),
            )| {
                let kind = if decoder {
                    WorkloadKind::Decoder
                } else {
                    WorkloadKind::Attention
                };
                let mut s = spec(kind, STRATEGIES[st], dt);
                s.shape = ModelShape::uniform("p", layers, hq, hk, d, 48, 64);
                if let (Some(w), true) = (window, layers > 1) {
                    s.shape.layer_kinds[1] = AttentionKind::Sliding { window: w };
                }
                s.batch = batch;
                s.prompt = prompt;
                s.gen = gen;
                s.block_size = block;
                s.shared_prefix = prefix.min(prompt);
                s
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn random_shapes_and_strategies_match_the_reference(s in arb_spec()) {
        let v = build(&s).unwrap().verify().unwrap();
        prop_assert!(v.passed, "{:?}: {}", s, v.detail);
    }
}

#[test]
fn sliding_windows_and_shared_prefix_pass_on_every_layout() {
    for st in STRATEGIES {
        let mut s = with_sliding(spec(WorkloadKind::Decoder, st, DtypeKind::F16), 5);
        s.shared_prefix = 8;
        let v = build(&s).unwrap().verify().unwrap();
        assert!(v.passed, "{st:?}: {}", v.detail);
    }
}
