//! What one workload is: strategy × dtype × shape × lengths × backend, validated.

use kvbench_planner::{CacheDtype, ModelShape};
use serde::{Deserialize, Serialize};

mod validate;
pub use validate::SpecError;

/// How the KV cache is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// No cache: every step recomputes K/V of all earlier tokens (`use_cache=False`).
    None,
    /// Grow by reallocating and copying (a naive `torch.cat` cache).
    Concat,
    /// Preallocated to the maximum length.
    Contiguous,
    /// Fixed-size blocks from a pool, one block table per sequence.
    Paged,
    /// Paged, with blocks evicted (LRU) to a slower tier and brought back on use.
    Offload(Tier),
}

/// Where offloaded blocks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    Host,
    Disk,
    Redis,
}

/// The two levels of workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// The whole synthetic decoder (norm, projections, RoPE, attention, MLP).
    Decoder,
    /// Only attention over a cache (cache write + attention), per layer.
    Attention,
}

/// Where a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Cpu,
    Cuda,
}

/// Everything needed to build and run one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    pub kind: WorkloadKind,
    pub backend: Backend,
    /// Shape actually run (layers already reduced to what `--layers` asked for).
    pub shape: ModelShape,
    pub strategy: Strategy,
    pub k_dtype: CacheDtype,
    pub v_dtype: CacheDtype,
    pub batch: u32,
    /// Prompt tokens per sequence (prefill).
    pub prompt: u32,
    /// Generated tokens per sequence (decode steps).
    pub gen: u32,
    /// Tokens per block for paged layouts.
    pub block_size: u32,
    /// Leading prompt tokens shared by every sequence of the batch (paged prefix sharing).
    pub shared_prefix: u32,
    /// Sliding window override; `None` follows the shape's own layer kinds.
    pub window: Option<u32>,
    /// Run the MLP in decoder workloads.
    pub mlp: bool,
    pub seed: u64,
    /// Where offloaded blocks go (only for `Strategy::Offload`).
    pub offload: OffloadConfig,
}

/// Settings of the offload tiers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OffloadConfig {
    /// Directory for the disk tier's file.
    pub tier_dir: Option<std::path::PathBuf>,
    /// Redis URL for the redis tier, e.g. `redis://127.0.0.1:6379/`.
    pub redis_url: Option<String>,
    /// Blocks the working pool holds before it evicts (LRU) to the tier; 0 = automatic.
    pub pool_blocks: u32,
}

impl WorkloadSpec {
    /// Longest sequence the workload reaches.
    pub fn max_len(&self) -> u32 {
        // Saturating: a sum past u32 is refused by the sizing that uses it, never wrapped.
        self.prompt.saturating_add(self.gen)
    }
}
