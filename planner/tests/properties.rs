//! Invariants of the sizing math, checked on random shapes and sizes.

use kvbench_planner::deploy::per_gpu_shape;
use kvbench_planner::layout::{
    allocated_bytes, bytes_per_token, used_bytes, LayoutKind, LayoutQuery,
};
use kvbench_planner::{AttentionKind, CacheDtype, DtypeKind, ModelShape};
use proptest::prelude::*;

fn f16() -> CacheDtype {
    CacheDtype::new(DtypeKind::F16)
}

fn shape_strategy() -> impl Strategy<Value = ModelShape> {
    (
        1u32..6,
        1u32..5,
        0u32..4,
        prop_oneof![Just(64u32), Just(128), Just(96)],
        proptest::option::of(1u32..300),
        any::<bool>(),
    )
        .prop_map(|(layers, kv, group_pow, head_dim, window, chunked)| {
            let q = kv << group_pow;
            let mut s =
                ModelShape::uniform("p", layers, q, kv, head_dim, q * head_dim, 4 * q * head_dim);
            if let Some(w) = window {
                // Every other layer slides, like Gemma-2, or attends in chunks, like Llama-4.
                let local = match chunked {
                    true => AttentionKind::Chunked { chunk: w },
                    false => AttentionKind::Sliding { window: w },
                };
                for (i, k) in s.layer_kinds.iter_mut().enumerate() {
                    if i % 2 == 0 {
                        *k = local;
                    }
                }
            }
            s
        })
}

fn query(
    shape: &ModelShape,
    kind: LayoutKind,
    batch: u32,
    len: u32,
    k: CacheDtype,
) -> LayoutQuery<'_> {
    LayoutQuery {
        shape,
        k,
        v: k,
        kind,
        batch,
        max_len: len,
        shared_prefix: 0,
        window: None,
    }
}

proptest! {
    #[test]
    fn contiguous_is_linear_in_batch(s in shape_strategy(), b in 1u32..64, len in 1u32..5000) {
        let one = allocated_bytes(&query(&s, LayoutKind::Contiguous, 1, len, f16())).unwrap();
        let many = allocated_bytes(&query(&s, LayoutKind::Contiguous, b, len, f16())).unwrap();
        prop_assert_eq!(many, b as u64 * one);
    }

    #[test]
    fn full_attention_is_linear_in_seq(layers in 1u32..80, kv in 1u32..16, len in 1u32..100_000) {
        let s = ModelShape::uniform("p", layers, kv, kv, 128, kv * 128, 1);
        let one = allocated_bytes(&query(&s, LayoutKind::Contiguous, 1, 1, f16())).unwrap();
        let many = allocated_bytes(&query(&s, LayoutKind::Contiguous, 1, len, f16())).unwrap();
        prop_assert_eq!(many, len as u64 * one);
        prop_assert_eq!(one as f64, bytes_per_token(&s, &f16(), &f16()));
    }

    #[test]
    fn fewer_bits_never_cost_more(s in shape_strategy(), len in 1u32..5000) {
        let bytes = |name: &str| {
            let d: CacheDtype = name.parse().unwrap();
            allocated_bytes(&query(&s, LayoutKind::Contiguous, 1, len, d)).unwrap()
        };
        let (i2, i4, i8, h) = (bytes("int2"), bytes("int4"), bytes("int8"), bytes("f16"));
        prop_assert!(i2 < i4 && i4 < i8 && i8 < h, "{} {} {} {}", i2, i4, i8, h);
        prop_assert!(bytes("f16") < bytes("f32"));
    }

    #[test]
    fn paged_holds_at_least_contiguous_and_used(s in shape_strategy(), b in 1u32..16, len in 1u32..5000, block in prop_oneof![Just(1u32), Just(16), Just(32), Just(256)]) {
        let c = allocated_bytes(&query(&s, LayoutKind::Contiguous, b, len, f16())).unwrap();
        let p = query(&s, LayoutKind::Paged { block_size: block }, b, len, f16());
        let paged = allocated_bytes(&p).unwrap();
        prop_assert!(paged >= c, "paged {} < contiguous {}", paged, c);
        prop_assert!(paged >= used_bytes(&p).unwrap());
        // Waste is under one block per sequence per layer, plus one for a window's ragged start.
        let block_bytes = 2 * s.kv_heads as u64 * s.head_dim as u64 * 2 * block as u64;
        prop_assert!(paged - c < 2 * b as u64 * s.layers as u64 * block_bytes);
        if block == 1 {
            prop_assert_eq!(paged, c);
        }
    }

    #[test]
    fn prefix_sharing_never_costs_more(s in shape_strategy(), b in 1u32..16, len in 1u32..3000, frac in 0.0f64..=1.0) {
        let prefix = (len as f64 * frac) as u32;
        let mut q = query(&s, LayoutKind::Paged { block_size: 16 }, b, len, f16());
        let alone = allocated_bytes(&q).unwrap();
        q.shared_prefix = prefix;
        let shared = allocated_bytes(&q).unwrap();
        prop_assert!(shared <= alone);
        if b == 1 {
            prop_assert_eq!(shared, alone);
        }
    }

    #[test]
    fn tp_conserves_total_bytes_unless_heads_replicate(layers in 1u32..40, kv_pow in 0u32..5, tp_pow in 0u32..5, len in 1u32..5000) {
        let kv = 1 << kv_pow;
        let tp = 1 << tp_pow;
        let s = ModelShape::uniform("p", layers, 64, kv, 128, 8192, 1);
        let whole = allocated_bytes(&query(&s, LayoutKind::Contiguous, 1, len, f16())).unwrap();
        let (gpu, replicated) = per_gpu_shape(&s, tp, 1).unwrap();
        let per_gpu = allocated_bytes(&query(&gpu, LayoutKind::Contiguous, 1, len, f16())).unwrap();
        if replicated {
            prop_assert!(tp > kv);
            prop_assert_eq!(tp as u64 * per_gpu, whole * (tp / kv) as u64);
        } else {
            prop_assert_eq!(tp as u64 * per_gpu, whole);
        }
    }
}

proptest! {
    #[test]
    fn pool_blocks_agree_with_the_storage_contract(s in shape_strategy(), len in 1u32..20_000, block in prop_oneof![Just(1u32), Just(16), Just(32)], budget_mib in 1u64..4096) {
        use kvbench_planner::pool::{blocks_per_request, pool};
        let kv = kvbench_planner::KvDtypes::same(f16());
        let budget = budget_mib << 20;
        let p = pool(&s, &kv, block, budget).unwrap();
        let needed = blocks_per_request(&s, block, len as u64);
        if p.groups == 1 {
            // One group: a request holds the paged layout's bytes at `len`, or for windowed
            // layers the widest they were on the way there (at most one block more a layer).
            let paged = allocated_bytes(&query(&s, LayoutKind::Paged { block_size: block }, 1, len, f16())).unwrap();
            let windowed = s.layer_kinds.iter().any(|k| !matches!(k, AttentionKind::Full));
            if windowed {
                prop_assert!(needed * p.block_bytes >= paged);
                prop_assert!(needed * p.block_bytes <= paged + p.block_bytes);
            } else {
                prop_assert_eq!(needed * p.block_bytes, paged);
            }
            prop_assert_eq!(p.token_capacity, budget / p.block_bytes * block as u64);
        } else {
            // Hybrid: padding layers only ever add.
            let paged = allocated_bytes(&query(&s, LayoutKind::Paged { block_size: block }, 1, len, f16())).unwrap();
            prop_assert!(needed * p.block_bytes >= paged);
            prop_assert_eq!(p.token_capacity, budget / p.block_bytes / p.groups * block as u64);
        }
        prop_assert!(p.blocks * p.block_bytes <= budget);
        prop_assert!((p.blocks + 1) * p.block_bytes > budget);
    }

    #[test]
    fn dtype_names_round_trip(kind in prop_oneof![Just("int8"), Just("int4"), Just("int2"), Just("nf4"), Just("fp8-e4m3"), Just("fp8-e5m2")], group in proptest::option::of(1u32..512), tensor in any::<bool>()) {
        let name = match (tensor, group) {
            (true, _) => format!("{kind}/tensor"),
            (false, Some(g)) => format!("{kind}/g{g}"),
            (false, None) => kind.to_string(),
        };
        let d: CacheDtype = name.parse().unwrap();
        let again: CacheDtype = d.to_string().parse().unwrap();
        prop_assert_eq!(d, again);
        if let (false, Some(g)) = (tensor, group) {
            prop_assert_eq!(d.group_size, Some(g));
        }
    }
}

proptest! {
    #[test]
    fn chunk_blocks_are_the_most_held_at_any_length(chunk in 1u64..200, block in prop_oneof![Just(1u64), Just(16), Just(32), Just(48)], len in 1u64..2000) {
        use kvbench_planner::span::Span;
        let s = Span::Chunk(chunk);
        // Brute force: the positions of the newest token's chunk, counted by their blocks,
        // at every length up to `len`.
        let widest = (1..=len)
            .map(|t| {
                let first = (t - 1) / chunk * chunk;
                (first..t).map(|p| p / block).collect::<std::collections::BTreeSet<_>>().len() as u64
            })
            .max()
            .unwrap();
        prop_assert_eq!(s.blocks(len, block), widest);
        prop_assert_eq!(s.peak(len), len.min(chunk));
    }

    #[test]
    fn user_text_parsers_never_panic(text in ".{0,40}") {
        let _ = text.parse::<CacheDtype>();
        let _ = kvbench_planner::parse_kv_dtypes(&text);
        let _ = kvbench_planner::dtype::parse_side(&text, true);
        let _ = kvbench_planner::units::parse_size(&text);
        let _ = text.parse::<kvbench_planner::deploy::WeightDtype>();
        let _ = text.parse::<kvbench_planner::plan::AttentionOverride>();
        let _ = kvbench_planner::find_model(&text);
        let _ = kvbench_planner::gpu::find(&text);
    }

    #[test]
    fn dtype_suffix_numbers_never_panic(n in any::<u64>(), kind in prop_oneof![Just("int4"), Just("kivi2"), Just("f16")]) {
        let _ = kvbench_planner::parse_kv_dtypes(&format!("{kind}/g{n}"));
        let _ = kvbench_planner::parse_kv_dtypes(&format!("{kind}/r{n}"));
        let _ = kvbench_planner::units::parse_size(&format!("{n}TiB"));
    }
}
