//! vLLM's (v1 engine) startup memory rule, from its source:
//!
//! - `vllm/v1/worker/gpu_worker.py` `determine_available_memory`: the KV cache gets
//!   `requested_memory - non_kv_cache_memory`, where `requested_memory = total_memory x
//!   gpu_memory_utilization` (of the GPU's *total* memory, not of what is free) and
//!   `non_kv_cache_memory` = weights + the torch peak increase of `profile_run` + the
//!   non-torch increase during it (`vllm/utils` `memory_profiling`), + from v0.21 on the
//!   estimated CUDA-graph memory (`VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS`, "default
//!   since v0.21.0" as the engine logs it). Before v0.21 graphs were captured after the KV
//!   cache was allocated, inside the (1 - utilization) headroom, so they did not shrink it.
//! - `gpu_model_runner.py` `profile_run`: one forward pass of `max_num_batched_tokens`
//!   tokens, then `_dummy_sampler_run` on the logits of min(max_num_seqs,
//!   max_num_batched_tokens) requests (last pipeline stage only).
//! - `vllm/engine/arg_utils.py` `get_batch_defaults` for the OpenAI server:
//!   max_num_batched_tokens 8192 and max_num_seqs 1024 on GPUs with >= 70 GiB other than
//!   A100, else 2048 and 256.
//!
//! The activation sizes are kvbench's model of what that pass allocates (bf16): the
//! residual and normed hidden state plus the MLP's gate/up output and its activated half
//! per token; for MoE layers the fused-MoE workspaces (`fused_moe.py`: caches of
//! M x top_k x (2N, N, K) for M tokens, N the expert width per GPU, K the hidden size, M
//! chunked at VLLM_FUSED_MOE_CHUNK_SIZE = 32768); the sampler's f32 logits with their
//! sorted copy and indices for top-k/top-p (12 bytes per logit).

use super::{EngineOptions, Reserve, ReserveComponent, Version};
use crate::registry::ModelInfo;

const GIB: u64 = 1 << 30;

/// The newest vLLM whose rules this module follows.
pub const LATEST: Version = Version::new(0, 21);

/// The first version whose default keeps chunked local-attention layers (Llama-4) in KV
/// cache groups of their own: `VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE` came in
/// defaulting to 0 with vllm-project/vllm#21761 (July 2025, v0.10.1) and was turned to 1 by
/// #29627, merged the week of 2025-12-19, after v0.13 branched. (Releases between #19351, June
/// 2025, which first grouped them, and #21761 may have grouped them too; this major.minor
/// rule cannot tell those apart: `--chunked-kv` sets it.)
pub const CHUNKED_GROUPED_SINCE: Version = Version::new(0, 14);

/// The first version that subtracts its CUDA-graph estimate from the KV cache.
pub const GRAPHS_COUNTED_SINCE: Version = Version::new(0, 21);

/// vLLM's default max_num_seqs for the OpenAI server on a GPU of `total_bytes` named
/// `gpu_key` (`arg_utils.py` `get_batch_defaults`: >= 70 GiB and not an A100).
pub fn default_max_num_seqs(total_bytes: u64, gpu_key: &str) -> u32 {
    if total_bytes >= 70 * GIB && !gpu_key.contains("a100") {
        1024
    } else {
        256
    }
}

/// Decoder layers on each pipeline stage, as `vllm/distributed/utils.py` `get_pp_indices`
/// splits them (vLLM 0.9 to 0.21): `layers // pp` each, the remainder going one apiece to
/// the stages before the last (27 layers on pp 2: [14, 13]).
pub fn pp_stage_layers(layers: u32, pp: u32) -> Vec<u32> {
    let pp = pp.max(1);
    let mut parts = vec![layers / pp; pp as usize];
    let rem = (layers % pp) as usize;
    for i in 2..rem + 2 {
        let at = parts.len() - i.min(parts.len());
        parts[at] += 1;
    }
    parts
}

/// The KV budget per GPU that, spread over the largest stage's layers, gives the blocks vLLM
/// allocates under pipeline parallelism: every stage sizes its own cache from its own
/// "Available KV cache memory" and `kv_cache_utils.py` `unify_kv_cache_configs` then gives
/// all stages the smallest block count. With uniform layers a stage's blocks are
/// budget / (layers x page), so the binding stage is the one with the least budget per
/// layer. `by_rank` is (global rank, bytes); rank = stage x tp + tp rank
/// (`parallel_state.py` `initialize_model_parallel`). None when no stage is named.
pub fn pp_binding_budget(by_rank: &[(u32, u64)], layers: u32, tp: u32, pp: u32) -> Option<u64> {
    let stages = pp_stage_layers(layers, pp);
    let largest = *stages.iter().max()? as f64;
    by_rank
        .iter()
        .filter_map(|&(rank, bytes)| {
            let stage_layers = *stages.get((rank / tp.max(1)) as usize)?;
            (stage_layers > 0).then(|| (bytes as f64 * largest / stage_layers as f64) as u64)
        })
        .min()
}

/// Tokens of the fused-MoE chunk (VLLM_FUSED_MOE_CHUNK_SIZE's default).
const MOE_CHUNK: u64 = 32_768;

/// CUDA-graph capture sizes vLLM uses by default: 1, 2, 4, then every 8 up to
/// min(512, 2 x max_num_seqs) (`vllm/config/compilation.py`).
pub fn capture_sizes(max_num_seqs: u32) -> Vec<u32> {
    let top = (2 * max_num_seqs).min(512);
    let mut s = vec![1, 2, 4];
    s.extend((1..).map(|i| i * 8).take_while(|&x| x <= top));
    s.retain(|&x| x <= top.max(1));
    s
}

/// Experts each token runs through, recovered from the active parameter count (top_k +
/// shared experts); 0 for dense models.
fn active_experts(model: &ModelInfo) -> f64 {
    if !model.is_moe() {
        return 0.0;
    }
    let s = &model.shape;
    let expert = 3.0 * s.hidden as f64 * s.intermediate as f64 * s.layers as f64;
    let total_experts = model.params / expert; // roughly: routed + shared, plus the rest
    let inactive = model.params - model.active_params;
    // params - active = (routed - top_k) x expert  =>  top_k + shared = total - that.
    (total_experts - inactive / expert).max(1.0)
}

/// Bytes of activations per token of the profiling forward pass on one GPU.
fn forward_bytes_per_token(model: &ModelInfo, tp: u32) -> u64 {
    let s = &model.shape;
    let h = s.hidden as f64;
    let n = s.intermediate as f64 / tp.max(1) as f64;
    let k = active_experts(model);
    let per_token = if k > 0.0 {
        // fused-MoE caches: top_k x (2N + N + K) per token.
        2.0 * h + k * (3.0 * n + h)
    } else {
        2.0 * h + 3.0 * n
    };
    (per_token * 2.0) as u64
}

/// vLLM's reserve per GPU for `model` at tensor parallelism `tp`.
pub fn reserve(
    model: &ModelInfo,
    tp: u32,
    max_num_batched_tokens: u32,
    gpu_total_bytes: u64,
    gpu_key: &str,
    opts: &EngineOptions,
) -> Reserve {
    let version = opts.version.unwrap_or(LATEST);
    let max_num_seqs = opts
        .max_num_seqs
        .unwrap_or_else(|| default_max_num_seqs(gpu_total_bytes, gpu_key));
    let t = max_num_batched_tokens as u64;
    let per_token = forward_bytes_per_token(model, tp);
    let moe_tokens = if model.is_moe() { t.min(MOE_CHUNK) } else { t };
    let forward = moe_tokens * per_token;
    let reqs = (max_num_seqs as u64).min(t);
    let sampler = reqs * model.vocab as u64 * 12;
    // Non-torch growth during profiling: cuBLAS/NCCL workspaces; with tp > 1 the custom
    // all-reduce and NCCL buffers used by the first collective.
    let non_torch = if tp > 1 { GIB / 2 + GIB / 4 } else { GIB / 4 };
    let graphs = if opts.enforce_eager || version < GRAPHS_COUNTED_SINCE {
        0
    } else {
        // The largest captured batch's activations plus a fixed cost per graph.
        let sizes = capture_sizes(max_num_seqs);
        let largest = *sizes.last().unwrap_or(&1) as u64;
        largest * per_token + sizes.len() as u64 * (2 << 20)
    };
    let o = &opts.overrides;
    let given = |v: Option<u64>, flag: &str, rule: String| match v {
        Some(b) => (b, format!("given ({flag})")),
        None => (0, rule),
    };
    let mut components = Vec::new();
    let mut push = |name: &'static str, over: Option<u64>, flag: &str, bytes: u64, rule: String| {
        let (b, r) = given(over, flag, rule);
        components.push(ReserveComponent {
            name,
            bytes: if over.is_some() { b } else { bytes },
            rule: r,
        });
    };
    push(
        "peak activation",
        o.activation,
        "--reserve-activation",
        forward,
        format!(
            "profile_run forward of {t} tokens{} x {} B/token",
            if model.is_moe() && t > MOE_CHUNK {
                format!(" (MoE chunked at {MOE_CHUNK})")
            } else {
                String::new()
            },
            per_token
        ),
    );
    push(
        "sampler",
        o.sampler,
        "--reserve-sampler",
        sampler,
        format!(
            "{reqs} sequences x {} vocab x 12 B (f32 logits, sort)",
            model.vocab
        ),
    );
    push(
        "non-torch",
        o.non_torch,
        "--reserve-non-torch",
        non_torch,
        if tp > 1 {
            format!("tp {tp}: NCCL + custom all-reduce buffers")
        } else {
            "tp 1: cuBLAS workspaces".to_string()
        },
    );
    push(
        "CUDA graphs",
        o.cuda_graph,
        "--reserve-cuda-graph",
        graphs,
        if opts.enforce_eager {
            "none (--enforce-eager)".to_string()
        } else if version < GRAPHS_COUNTED_SINCE {
            format!(
                "not subtracted before vLLM {GRAPHS_COUNTED_SINCE} (captured after the KV cache)"
            )
        } else {
            format!(
                "estimate: {} capture sizes up to {} (max_num_seqs {max_num_seqs})",
                capture_sizes(max_num_seqs).len(),
                capture_sizes(max_num_seqs).last().unwrap_or(&1)
            )
        },
    );
    Reserve {
        components,
        follows: format!("vLLM {version}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn pipeline_stages_split_as_vllm_does() {
        // get_pp_indices: the remainder goes one apiece to stages -2, -3, ...; [14, 13] is
        // also what PR #20665's log implies (807,792 tokens = 12.13 GiB over 14 layers).
        assert_eq!(pp_stage_layers(27, 2), vec![14, 13]);
        assert_eq!(pp_stage_layers(32, 2), vec![16, 16]);
        assert_eq!(pp_stage_layers(10, 4), vec![2, 3, 3, 2]);
        assert_eq!(pp_stage_layers(7, 1), vec![7]);
        // Stage 0 (14 layers) at 12 GiB binds before stage 1 (13 layers) at 11.33 GiB:
        // 12 / 14 < 11.33 / 13.
        let g = 1u64 << 30;
        let by_rank = [(3, 11 * g + g / 3), (0, 12 * g)];
        assert_eq!(pp_binding_budget(&by_rank, 27, 2, 2), Some(12 * g));
        assert_eq!(pp_binding_budget(&[], 27, 2, 2), None);
    }

    #[test]
    fn default_sequences_follow_the_gpu() {
        // arg_utils.py: 1024 on >= 70 GiB GPUs other than A100, else 256.
        assert_eq!(default_max_num_seqs(80 << 30, "h100-sxm"), 1024);
        assert_eq!(default_max_num_seqs(80 << 30, "a100-80gb"), 256);
        assert_eq!(default_max_num_seqs(24 << 30, "l4"), 256);
    }

    #[test]
    fn capture_sizes_follow_the_default_list() {
        // vLLM's default: [1, 2, 4] + range(8, 513, 8) = 67 sizes for max_num_seqs >= 256.
        let s = capture_sizes(1024);
        assert_eq!(s.len(), 67);
        assert_eq!(*s.last().unwrap(), 512);
        assert_eq!(capture_sizes(4), vec![1, 2, 4, 8]);
    }

    #[test]
    fn eager_and_old_versions_hold_no_graph_memory() {
        let m = registry::find("llama3-8b").unwrap();
        let mut o = EngineOptions::default();
        let graphs =
            |o: &EngineOptions| reserve(&m, 1, 8192, 80 << 30, "h100-sxm", o).components[3].bytes;
        assert!(graphs(&o) > 0);
        o.enforce_eager = true;
        assert_eq!(graphs(&o), 0);
        o.enforce_eager = false;
        o.version = Some(Version::new(0, 19));
        assert_eq!(graphs(&o), 0);
    }

    #[test]
    fn dense_forward_is_hidden_and_mlp_per_token() {
        // Llama-3.1-8B, 8192 tokens, tp 1: (2 x 4096 + 3 x 14336) x 2 B = 102,400 B/token;
        // x 8192 = 800 MiB. Sampler at 1024 sequences: 1024 x 128,256 x 12 B = 1.47 GiB.
        let m = registry::find("llama3-8b").unwrap();
        let r = reserve(&m, 1, 8192, 80 << 30, "h100-sxm", &EngineOptions::default());
        assert_eq!(r.components[0].bytes, 8192 * 102_400);
        assert_eq!(r.components[1].bytes, 1024 * m.vocab as u64 * 12);
        let mut o = EngineOptions::default();
        o.overrides.activation = Some(1 << 30);
        let r = reserve(&m, 1, 8192, 80 << 30, "h100-sxm", &o);
        assert_eq!(r.components[0].bytes, 1 << 30);
        assert!(r.components[0].rule.contains("--reserve-activation"));
    }
}
