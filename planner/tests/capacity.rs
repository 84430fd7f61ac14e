//! Capacity against vLLM's arithmetic (REFERENCE.md) and the plan's figures against
//! REFERENCE.md's published numbers.

use kvbench_planner::deploy::{capacity, capacity_as_logged, Deployment, WeightDtype, WindowRule};
use kvbench_planner::plan::{plan, AttentionOverride, PlanRequest};
use kvbench_planner::{find_model, gpu, parse_kv_dtypes, PlanError};

const GIB: u64 = 1 << 30;

fn deployment(gpu_name: Option<&str>, gpus: u32, tp: u32) -> Deployment {
    Deployment {
        gpu: gpu_name.map(|g| gpu::find(g).unwrap()),
        gpus,
        tp,
        pp: 1,
        weights: "bf16".parse::<WeightDtype>().unwrap(),
        mem_util: 0.9,
        reserve: None,
        kv_budget: None,
        block_size: 16,
        max_batched_tokens: 8192,
        window_rule: WindowRule::Window,
        dp_attention: 1,
        ep: 1,
        engine: Default::default(),
        weights_detail: None,
    }
}

fn request(model: &str, seq: u32, batch: u32) -> PlanRequest {
    PlanRequest {
        model: find_model(model).unwrap(),
        kv: parse_kv_dtypes("f16").unwrap(),
        attention: None,
        seq,
        batch,
        block_size: 16,
        shared_prefix: 0,
        window_rule: WindowRule::Window,
        max_batched_tokens: 8192,
        deployment: None,
        state_dtype: None,
    }
}

#[test]
fn kv_budget_gives_whole_blocks_of_every_layer() {
    // 58.5 GiB = 62,813,896,704 B; Llama-3-70B at tp 8 keeps 1 KV head per GPU:
    // a block is 16 x 80 layers x 2 x 1 x 128 x 2 B = 655,360 B -> 95,846 blocks.
    let model = find_model("llama3-70b").unwrap();
    let kv = parse_kv_dtypes("bf16").unwrap();
    let mut dep = deployment(None, 8, 8);
    dep.kv_budget = Some(62_813_896_704);
    let cap = capacity(&model, &kv, &dep, 8192, 1).unwrap();
    assert_eq!(cap.block_bytes, 655_360);
    assert_eq!(cap.blocks, 95_846);
    assert_eq!(cap.token_capacity, 1_533_536);
    assert_eq!(cap.kv_heads_per_gpu, 1);
    // 8192 tokens take 512 blocks per sequence: 187 whole sequences.
    assert_eq!(cap.max_seqs, 95_846 / 512);
    // One sequence may use the whole budget, in whole blocks of 16 tokens.
    assert_eq!(cap.max_context_at_batch, Some(1_533_536));
}

#[test]
fn h100_capacity_follows_vllm_arithmetic() {
    let model = find_model("llama3-70b").unwrap();
    let kv = parse_kv_dtypes("bf16").unwrap();
    let mut dep = deployment(Some("h100"), 8, 8);
    dep.reserve = Some(2 * GIB);
    let cap = capacity(&model, &kv, &dep, 4096, 1).unwrap();
    // vLLM: total x util - reserve - weights per GPU, then whole blocks.
    let total = (79.19 * GIB as f64).round();
    let weights = (70.55e9 * 2.0 / 8.0_f64).round() as u64;
    let available = (total * 0.9) as u64 - 2 * GIB - weights;
    assert_eq!(cap.weights_bytes_per_gpu, weights);
    assert_eq!(cap.kv_budget_bytes_per_gpu, available);
    assert_eq!(cap.blocks, available / 655_360);
    assert_eq!(cap.token_capacity, available / 655_360 * 16);
    // About 52.8 GiB of KV per GPU -> ~1.38 M tokens.
    assert!((cap.kv_budget_bytes_per_gpu as f64 / GIB as f64 - 52.85).abs() < 0.01);
}

#[test]
fn tp_beyond_kv_heads_replicates() {
    // Llama-3-8B has 8 KV heads: at tp 16... q_heads 32 divisible by 16, KV heads replicated.
    let model = find_model("llama3-8b").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    let mut dep = deployment(None, 16, 16);
    dep.kv_budget = Some(GIB);
    let cap = capacity(&model, &kv, &dep, 1024, 1).unwrap();
    assert!(cap.kv_heads_replicated);
    assert_eq!(cap.kv_heads_per_gpu, 1);
    // MLA: the latent is never split.
    let ds = find_model("deepseek-v3").unwrap();
    let mut dep = deployment(None, 8, 8);
    dep.kv_budget = Some(GIB);
    let cap = capacity(&ds, &kv, &dep, 1024, 1).unwrap();
    assert_eq!(cap.block_bytes, 16 * 70_272);
}

#[test]
fn user_errors_are_clear() {
    let model = find_model("llama3-70b").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    // 64 query heads: tp 3 does not divide them.
    let err = capacity(&model, &kv, &deployment(Some("h100"), 3, 3), 1024, 1).unwrap_err();
    assert!(
        matches!(err, PlanError::TpNotDivisor { tp: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("tp = 3"), "{err}");
    // 70B in bf16 (141 GB) cannot fit one 80 GB GPU.
    let err = capacity(&model, &kv, &deployment(Some("h100"), 1, 1), 1024, 1).unwrap_err();
    assert!(
        err.to_string().contains("no room for the KV cache"),
        "{err}"
    );
    // A budget that fits no sequence.
    let mut dep = deployment(None, 1, 1);
    dep.kv_budget = Some(1 << 20);
    let err = capacity(&model, &kv, &dep, 4096, 1).unwrap_err();
    assert!(err.to_string().contains("fits 0 sequences"), "{err}");
}

#[test]
fn reference_bytes_per_token() {
    for (model, bytes) in [
        ("opt-13b", 819_200.0),
        ("llama2-7b", 524_288.0),
        ("llama3-70b", 327_680.0),
        ("llama3.1-8b", 131_072.0),
        ("qwen2.5-7b", 57_344.0),
        ("deepseek-v3", 70_272.0),
    ] {
        let p = plan(&request(model, 1024, 1)).unwrap();
        assert_eq!(p.bytes_per_token, bytes, "{model}");
    }
    // Llama-3-70B at 4096 tokens: 1.25 GiB; as MHA (64 KV heads) 10 GiB; MQA 1/64 of MHA.
    let mut r = request("llama3-70b", 4096, 1);
    assert_eq!(plan(&r).unwrap().seq_bytes, 5 * GIB / 4);
    r.attention = Some(AttentionOverride::Mha);
    assert_eq!(plan(&r).unwrap().seq_bytes, 10 * GIB);
    r.attention = Some(AttentionOverride::Mqa);
    assert_eq!(plan(&r).unwrap().seq_bytes, 10 * GIB / 64);
    r.attention = Some(AttentionOverride::Gqa(3));
    assert!(plan(&r).is_err());
}

#[test]
fn vllm_window_rule_reserves_more_for_sliding_layers() {
    // Mistral-7B-v0.1 (window 4096) at 32k tokens: window rule keeps 4096 tokens per layer;
    // vLLM's rule keeps 4096 - 1 + 8192 = 12287.
    let mut r = request("mistral-7b-v0.1", 32_768, 1);
    let per_token = 131_072;
    assert_eq!(plan(&r).unwrap().seq_bytes, 4096 * per_token);
    r.window_rule = WindowRule::Vllm;
    assert_eq!(plan(&r).unwrap().seq_bytes, 12_287 * per_token);
    // Gemma-2-9B alternates: 21 sliding layers hold 4096, 21 global layers hold 8192.
    let g = plan(&request("gemma2-9b", 8192, 1)).unwrap();
    let per_layer = 2 * 8 * 256 * 2;
    assert_eq!(g.sliding_layers, 21);
    assert_eq!(g.seq_bytes, 21 * (4096 + 8192) * per_layer);
}

#[test]
fn vllm_window_rule_in_capacity_counts_blocks_of_the_reservation() {
    // Mistral-7B-v0.1, 32,768 tokens, blocks of 16 (2 MiB for all 32 layers at tp 1).
    // Window rule: positions [28672, 32768) = 256 blocks at 32,768, but 257 at lengths
    // where the window starts mid-block, which a request growing to 32,768 passes through:
    // (4096 + 16 - 2) / 16 + 1 = 257. vLLM rule (4096 - 1 + 8192 = 12287 tokens): 768
    // blocks at 32,768, (12287 + 14) / 16 + 1 = 769 at the widest.
    let model = find_model("mistral-7b-v0.1").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    let mut dep = deployment(None, 1, 1);
    dep.kv_budget = Some(40 * GIB);
    let cap = capacity(&model, &kv, &dep, 32_768, 1).unwrap();
    assert_eq!(cap.block_bytes, 2 << 20);
    assert_eq!(cap.seq_bytes_per_gpu, 257 * (2 << 20));
    assert_eq!(cap.max_seqs, 20_480 / 257);
    // Every layer slides: any context fits one sequence.
    assert_eq!(cap.max_context_at_batch, None);
    dep.window_rule = WindowRule::Vllm;
    let cap = capacity(&model, &kv, &dep, 32_768, 1).unwrap();
    assert_eq!(cap.seq_bytes_per_gpu, 769 * (2 << 20));
    // Through plan(), the rule is applied once, not twice.
    let mut r = request("mistral-7b-v0.1", 32_768, 1);
    r.window_rule = WindowRule::Vllm;
    r.deployment = Some(dep);
    let p = plan(&r).unwrap();
    assert_eq!(p.capacity.unwrap().seq_bytes_per_gpu, 769 * (2 << 20));
}

#[test]
fn pipeline_parallel_splits_layers_and_weights() {
    // Llama-3.1-405B: 126 layers over pp 2 = 63 per stage; tp 8 leaves 1 KV head per GPU.
    let model = find_model("llama3.1-405b").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    let mut dep = deployment(Some("h200"), 16, 8);
    dep.pp = 2;
    dep.weights = "fp8".parse().unwrap();
    let cap = capacity(&model, &kv, &dep, 8192, 1).unwrap();
    assert_eq!(cap.layers_per_gpu, 63);
    assert_eq!(cap.kv_heads_per_gpu, 1);
    assert_eq!(
        cap.weights_bytes_per_gpu,
        (405.85e9_f64 / 16.0).round() as u64
    );
    assert_eq!(cap.block_bytes, 16 * 63 * 2 * 128 * 2);
    assert_eq!(cap.replicas, 1);
    dep.pp = 200;
    let err = capacity(&model, &kv, &dep, 8192, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pp = 200"), "{err}");
}

#[test]
fn hybrid_models_use_vllm_kv_cache_groups() {
    // Gemma-3-27B on one GPU with 20 GiB of KV: 52 sliding + 10 full layers form 7 groups of
    // 10 layers; a pool block is 10 pages of 131,072 B; tokens = blocks // 7 x 16.
    let model = find_model("gemma3-27b").unwrap();
    let kv = parse_kv_dtypes("bf16").unwrap();
    let mut dep = deployment(None, 1, 1);
    dep.kv_budget = Some(20 * GIB);
    let cap = capacity(&model, &kv, &dep, 32_768, 1).unwrap();
    let blocks = 20 * GIB / 1_310_720;
    assert_eq!((cap.kv_cache_groups, cap.layers_per_group), (7, 10));
    assert_eq!(cap.blocks, blocks);
    assert_eq!(cap.token_capacity, blocks / 7 * 16);
    // One 32k request: 2048 blocks for the full group, at most 65 for each of the 6 sliding
    // groups (64 at an aligned length, 65 when the window starts mid-block).
    assert_eq!(cap.max_seqs, blocks / (2048 + 6 * 65));
    assert!((cap.concurrency - blocks as f64 / 2438.0).abs() < 1e-9);
    // vLLM's logged "Maximum concurrency" counts each sliding group at its
    // SlidingWindowSpec.max_memory_usage_bytes: cdiv(1023 + 8192, 16) + 1 = 577 blocks
    // (kv_cache_interface.py), so 2048 + 6 x 577 per request; after 0.19 it logs
    // int(that x 32,768) as the token capacity (kv_cache_utils.py, issue #40691).
    let vllm = blocks as f64 / (2048.0 + 6.0 * 577.0);
    assert!((cap.vllm_concurrency - vllm).abs() < 1e-9);
    assert_eq!(cap.token_capacity_vllm_new, (vllm * 32_768.0) as u64);
}

#[test]
fn full_attention_logs_one_token_capacity_under_both_rules() {
    // Llama-3.1-8B with 10 GiB of KV: 5120 blocks of 2 MiB; at a context that is a
    // multiple of 16 the old (blocks x 16) and new (concurrency x context) rules agree.
    let model = find_model("llama3.1-8b").unwrap();
    let kv = parse_kv_dtypes("bf16").unwrap();
    let mut dep = deployment(None, 1, 1);
    dep.kv_budget = Some(10 * GIB);
    let cap = capacity(&model, &kv, &dep, 32_768, 1).unwrap();
    assert_eq!(cap.token_capacity, 5120 * 16);
    assert_eq!(cap.token_capacity_vllm_new, 5120 * 16);
    assert!((cap.vllm_concurrency - cap.concurrency).abs() < 1e-12);
}

#[test]
fn reserve_estimate_is_near_vllm_logs() {
    // vLLM's memory profiling of Llama-3.1-8B on an 80 GB card with
    // max_num_batched_tokens=8192 logs "PyTorch activation peak memory takes 1.19GiB" to
    // "1.24GiB" and "non_torch_memory takes 0.12GiB" to "0.35GiB" (versions before CUDA
    // graphs were counted, 256 sequences).
    use kvbench_planner::engine::{vllm, EngineOptions, Version};
    let model = find_model("llama3.1-8b").unwrap();
    let opts = EngineOptions {
        version: Some(Version::new(0, 19)),
        max_num_seqs: Some(256),
        ..Default::default()
    };
    let r = vllm::reserve(&model, 1, 8192, 80 * GIB, "h100-sxm", &opts);
    let gib = r.total() as f64 / GIB as f64;
    assert!((1.31..=1.59).contains(&gib), "{gib} GiB: {}", r.note());
    assert!(r.note().contains("vLLM 0.19"));
}

#[test]
fn tp_above_kv_heads_must_replicate_evenly() {
    // Qwen2.5-7B: 28 query heads, 4 KV heads. tp 14 divides 28 but not evenly over 4 heads.
    let model = find_model("qwen2.5-7b").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    let mut dep = deployment(None, 14, 14);
    dep.kv_budget = Some(GIB);
    let err = capacity(&model, &kv, &dep, 1024, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tp = 14") && err.contains("valid: 1, 2, 4, 28"),
        "{err}"
    );
    let mut dep = deployment(None, 28, 28);
    dep.kv_budget = Some(GIB);
    let cap = capacity(&model, &kv, &dep, 1024, 1).unwrap();
    assert!(cap.kv_heads_replicated);
}

#[test]
fn blocks_match_a_vllm_log_on_an_a100_40gb() {
    // A vLLM (v0.6) log for meta-llama/Meta-Llama-3-8B on one A100 40GB: "the rest of the
    // memory reserved for KV Cache is 11.12GiB" and "# GPU blocks: 5691". 11.12 is rounded,
    // so the budget lay in [11.115, 11.125) GiB; the blocks that range holds must include 5691.
    let model = find_model("llama3-8b").unwrap();
    let kv = parse_kv_dtypes("bf16").unwrap();
    let blocks = |gib: f64| {
        let mut dep = deployment(None, 1, 1);
        dep.kv_budget = Some((gib * GIB as f64) as u64);
        capacity(&model, &kv, &dep, 8192, 1).unwrap().blocks
    };
    assert!(blocks(11.115) <= 5691 && 5691 <= blocks(11.125));
    // Its total_gpu_memory (39.50 GiB) is the registry's.
    let a100 = gpu::find("a100-40gb").unwrap();
    assert_eq!(a100.usable_bytes, (39.50 * GIB as f64).round() as u64);
}

#[test]
fn llama4_chunked_layers_follow_the_vllm_version() {
    // Llama-4-Scout at tp 8: 1 KV head per GPU, 512 B per token per layer; 36 chunked
    // layers (chunks of 8192) and 12 full ones (every 4th, NoPE). 40 GiB of KV per GPU.
    use kvbench_planner::engine::{EngineOptions, HybridCache, Version};
    let model = find_model("llama4-scout").unwrap();
    let kv = parse_kv_dtypes("bf16").unwrap();
    let mut dep = deployment(None, 8, 8);
    dep.kv_budget = Some(40 * GIB);
    let at = |version: (u32, u32), hybrid: HybridCache| {
        let mut d = dep.clone();
        d.engine = EngineOptions {
            version: Some(Version::new(version.0, version.1)),
            hybrid,
            ..Default::default()
        };
        capacity(&model, &kv, &d, 32_768, 1).unwrap()
    };
    // vLLM 0.14 on (VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE defaults to 1):
    // groups of 12 layers (36 >= 1.5 x 12): 1 full + 3 chunked; a block is
    // 16 x 512 B x 12 = 98,304 B.
    let grouped = at((0, 14), HybridCache::default());
    let blocks = 40 * GIB / 98_304;
    assert_eq!((grouped.kv_cache_groups, grouped.layers_per_group), (4, 12));
    assert_eq!(grouped.blocks, blocks);
    assert_eq!(grouped.token_capacity, blocks / 4 * 16);
    // A 32k request holds 2048 blocks in the full group and 512 (one chunk) in each chunked
    // group; vLLM's logged concurrency counts ChunkedLocalAttentionSpec's
    // cdiv(min(8192 + 8192, 32768), 16) = 1024 a chunked group.
    assert_eq!(grouped.max_seqs, blocks / (2048 + 3 * 512));
    let logged = blocks as f64 / (2048.0 + 3.0 * 1024.0);
    assert!((grouped.vllm_concurrency - logged).abs() < 1e-9);
    assert!(grouped.allocator_rule.contains("vLLM 0.14"));
    // vLLM 0.10.1 to 0.13 default to 0: every layer full, one group of 48; a block is
    // 16 x 512 x 48 = 393,216 B and a request 2048 blocks.
    let full = at((0, 12), HybridCache::default());
    let blocks = 40 * GIB / 393_216;
    assert_eq!((full.kv_cache_groups, full.blocks), (1, blocks));
    assert_eq!(full.max_seqs, blocks / 2048);
    assert!((full.vllm_concurrency - blocks as f64 / 2048.0).abs() < 1e-9);
    assert!(
        full.allocator_rule.contains("=0"),
        "{}",
        full.allocator_rule
    );
    // The env var set either way outranks the version; the manager turned off makes all full.
    let set = |chunked| HybridCache {
        disabled: false,
        chunked: Some(chunked),
    };
    assert_eq!(at((0, 12), set(true)).kv_cache_groups, 4);
    assert_eq!(at((0, 21), set(false)).kv_cache_groups, 1);
    let off = HybridCache {
        disabled: true,
        chunked: None,
    };
    assert_eq!(at((0, 21), off).kv_cache_groups, 1);
    // SGLang caches them as full attention.
    let mut d = dep.clone();
    d.engine.engine = kvbench_planner::engine::Engine::Sglang;
    d.block_size = 1;
    let sglang = capacity(&model, &kv, &d, 32_768, 1).unwrap();
    assert_eq!(sglang.kv_cache_groups, 1);
    assert_eq!(sglang.max_seqs, 40 * GIB / (48 * 512) / 32_768);
}

#[test]
fn disabling_the_hybrid_manager_caches_windows_in_full() {
    // Gemma-3-27B with --disable-hybrid-kv-cache-manager: one group of all 62 layers, each
    // holding every token: 16 x 62 x 2 x 16 x 128 x 2 B = 8,126,464 B a block.
    use kvbench_planner::engine::HybridCache;
    let model = find_model("gemma3-27b").unwrap();
    let kv = parse_kv_dtypes("bf16").unwrap();
    let mut dep = deployment(None, 1, 1);
    dep.kv_budget = Some(20 * GIB);
    dep.engine.hybrid = HybridCache {
        disabled: true,
        chunked: None,
    };
    let cap = capacity(&model, &kv, &dep, 32_768, 1).unwrap();
    assert_eq!((cap.kv_cache_groups, cap.block_bytes), (1, 8_126_464));
    assert_eq!(cap.max_seqs, 20 * GIB / 8_126_464 / 2048);
    assert!(cap
        .allocator_rule
        .contains("--disable-hybrid-kv-cache-manager"));
}

#[test]
fn llama4_scout_matches_a_published_vllm_012_run() {
    // Llama-4-Scout-17B-16E-Instruct, tp 8 on 8 x H200, vLLM v0.12.0 (a deployment write-up,
    // https://github.com/fuhengwu2021/coderepo/blob/main/extra/README.md, quoting its log):
    // "Available KV cache memory: 89.71 GiB", "GPU KV cache size: 3,919,664 tokens";
    // max concurrency 0.75x at max_model_len 5M (5,242,880) with the hybrid manager off,
    // as v0.12 defaults for chunked attention (its log warns "Disabling it, by default"),
    // and with VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1 2.96x at 5M and 1.86x at
    // 8M (8,388,608), the token count unchanged.
    use kvbench_planner::engine::{EngineOptions, HybridCache, Version};
    let model = find_model("meta-llama/Llama-4-Scout-17B-16E-Instruct").unwrap();
    let kv = parse_kv_dtypes("bf16").unwrap();
    let at = |gib: f64, chunked: Option<bool>, context: u32| {
        let mut dep = deployment(None, 8, 8);
        dep.kv_budget = Some((gib * GIB as f64) as u64);
        dep.engine = EngineOptions {
            version: Some(Version::new(0, 12)),
            hybrid: HybridCache {
                disabled: false,
                chunked,
            },
            ..Default::default()
        };
        // A 5M request does not fit whole with every layer full (0.75x): vLLM 0.12 still
        // started, so this is sized as it logs.
        capacity_as_logged(&model, &kv, &dep, context, 1).unwrap()
    };
    // 89.71 GiB is rounded: the budget lay in [89.705, 89.715) GiB.
    for chunked in [None, Some(true)] {
        let (lo, hi) = (
            at(89.705, chunked, 5_242_880),
            at(89.715, chunked, 5_242_880),
        );
        assert!(
            lo.token_capacity <= 3_919_664 && 3_919_664 <= hi.token_capacity,
            "{chunked:?}: {} .. {}",
            lo.token_capacity,
            hi.token_capacity
        );
    }
    let two_places = |x: f64| (x * 100.0).round() / 100.0;
    let mid = 89.71;
    assert_eq!(two_places(at(mid, None, 5_242_880).vllm_concurrency), 0.75);
    assert_eq!(
        two_places(at(mid, Some(true), 5_242_880).vllm_concurrency),
        2.96
    );
    assert_eq!(
        two_places(at(mid, Some(true), 8_388_608).vllm_concurrency),
        1.86
    );
}

#[test]
fn only_layers_that_keep_no_full_context_make_any_length_fit() {
    // 512 TiB holds more than u32::MAX tokens of Llama-3-8B: the longest context is the
    // search's ceiling, not "any context" (it used to say every layer slides).
    let kv = parse_kv_dtypes("f16").unwrap();
    let mut dep = deployment(None, 1, 1);
    dep.kv_budget = Some(512 << 40);
    let llama = capacity(&find_model("llama3-8b").unwrap(), &kv, &dep, 4096, 1).unwrap();
    assert_eq!(llama.max_context_at_batch, Some(u32::MAX as u64));
    // Mistral-7B-v0.1 slides on every layer: any length fits a small budget.
    dep.kv_budget = Some(GIB);
    let mistral = capacity(&find_model("mistral-7b-v0.1").unwrap(), &kv, &dep, 4096, 1).unwrap();
    assert_eq!(mistral.max_context_at_batch, None);
}

#[test]
fn a_tiny_or_huge_mem_util_is_quoted_in_exponent_form() {
    // 1e-300 used to be printed as 300 digits in the error.
    let model = find_model("llama3-8b").unwrap();
    let kv = parse_kv_dtypes("f16").unwrap();
    for (util, shown) in [(1e-300, "mem-util 1e-300"), (1e300, "mem-util = 1e300")] {
        let mut dep = deployment(Some("h100"), 1, 1);
        dep.mem_util = util;
        let e = capacity(&model, &kv, &dep, 4096, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains(shown) && e.len() < 400, "{e}");
    }
}
