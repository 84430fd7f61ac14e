//! `kvbench plan` flags of the serving engine: whose reserve rule applies, how it runs, and
//! the log to check against. Validation lives in the planner (sizes, versions).

use anyhow::Context;
use clap::{Args, ValueEnum};
use kvbench_planner::engine::{sglang, Engine, EngineOptions, ReserveOverrides};
use kvbench_planner::units::parse_size;

/// The engine whose memory rules a deployment follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// vLLM (v1 engine): profiling reserve, gpu_memory_utilization of total memory.
    Vllm,
    /// SGLang: mem_fraction_static of total memory minus weights.
    Sglang,
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
        let size = |v: &Option<String>, flag: &str| {
            v.as_deref()
                .map(parse_size)
                .transpose()
                .with_context(|| format!("in {flag}"))
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
