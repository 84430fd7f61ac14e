//! `kvbench plan` flags of the serving engine: whose reserve rule applies, how it runs, and
//! the log to check against. Validation lives in the planner (sizes, versions).

use anyhow::Context;
use clap::{Args, ValueEnum};
use kvbench_planner::engine::{sglang, Engine, EngineOptions, HybridCache, ReserveOverrides};
use kvbench_planner::request::component_size;

/// The engine whose memory rules a deployment follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// vLLM (v1 engine): profiling reserve, gpu_memory_utilization of total memory.
    Vllm,
    /// SGLang: mem_fraction_static of total memory minus weights.
    Sglang,
}

/// How vLLM caches chunked local-attention layers (Llama-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChunkedKvArg {
    /// In KV cache groups of their own, each holding its newest chunk
    /// (VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1).
    Grouped,
    /// As full attention, every token of every layer (=0; vLLM then turns its hybrid KV
    /// cache manager off).
    Full,
}

/// Serving engine flags.
#[derive(Debug, Args)]
#[command(next_help_heading = "Engine")]
pub struct EngineArgs {
    /// Whose startup arithmetic the capacity follows.
    #[arg(long, value_enum, default_value = "vllm")]
    pub engine: EngineArg,
    /// Engine version whose rules apply, e.g. 0.19 (vLLM counts CUDA graphs from 0.21 and
    /// logs hybrid token capacity differently after 0.19). Default: the latest kvbench knows.
    #[arg(long)]
    pub engine_version: Option<String>,
    /// vLLM's max_num_seqs (sizes the sampler and CUDA-graph reserve). Default: vLLM's, 1024
    /// on GPUs with >= 70 GiB, else 256.
    #[arg(long)]
    pub max_num_seqs: Option<u32>,
    /// No CUDA graphs (vLLM --enforce-eager): no graph memory in the reserve.
    #[arg(long)]
    pub enforce_eager: bool,
    /// As vLLM's --disable-hybrid-kv-cache-manager: sliding-window and chunked layers are
    /// cached as full attention.
    #[arg(long)]
    pub disable_hybrid_kv_cache_manager: bool,
    /// How vLLM caches chunked local-attention layers (Llama-4), as
    /// VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE sets it. Default: the engine
    /// version's (grouped from 0.14, full from 0.10.1 to 0.13).
    #[arg(long, value_enum, value_name = "HOW")]
    pub chunked_kv: Option<ChunkedKvArg>,
    /// Override the reserve's peak activation, e.g. 1.2GiB.
    #[arg(long, value_name = "SIZE")]
    pub reserve_activation: Option<String>,
    /// Override the reserve's sampler (logits) memory.
    #[arg(long, value_name = "SIZE")]
    pub reserve_sampler: Option<String>,
    /// Override the reserve's non-torch memory (NCCL, all-reduce, CUDA context for SGLang).
    #[arg(long, value_name = "SIZE")]
    pub reserve_non_torch: Option<String>,
    /// Override the reserve's CUDA-graph memory.
    #[arg(long, value_name = "SIZE")]
    pub reserve_cuda_graph: Option<String>,
    /// Check kvbench against a vLLM server log: size the deployment it describes and print
    /// each logged figure beside kvbench's, with the difference and what explains it.
    #[arg(long, value_name = "FILE")]
    pub vllm_log: Option<std::path::PathBuf>,
}

impl EngineArgs {
    /// The planner's engine options from the flags.
    pub fn options(&self) -> anyhow::Result<EngineOptions> {
        let size = |v: &Option<String>, flag: &'static str| {
            v.as_deref().map(|t| component_size(flag, t)).transpose()
        };
        Ok(EngineOptions {
            engine: match self.engine {
                EngineArg::Vllm => Engine::Vllm,
                EngineArg::Sglang => Engine::Sglang,
            },
            version: self
                .engine_version
                .as_deref()
                .map(str::parse)
                .transpose()
                .context("in --engine-version")?,
            max_num_seqs: self.max_num_seqs,
            enforce_eager: self.enforce_eager,
            hybrid: HybridCache {
                disabled: self.disable_hybrid_kv_cache_manager,
                chunked: self.chunked_kv.map(|c| c == ChunkedKvArg::Grouped),
            },
            overrides: ReserveOverrides {
                activation: size(&self.reserve_activation, "--reserve-activation")?,
                sampler: size(&self.reserve_sampler, "--reserve-sampler")?,
                non_torch: size(&self.reserve_non_torch, "--reserve-non-torch")?,
                cuda_graph: size(&self.reserve_cuda_graph, "--reserve-cuda-graph")?,
            },
        })
    }
}

/// --mem-util's default: vLLM's gpu_memory_utilization 0.9, SGLang's mem_fraction_static
/// by tp.
pub fn default_mem_util(engine: Engine, tp: u32) -> f64 {
    match engine {
        Engine::Vllm => 0.9,
        Engine::Sglang => sglang::default_mem_fraction_static(tp),
    }
}
