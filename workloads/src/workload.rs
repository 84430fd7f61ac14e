//! The one small API the runner drives every workload through, whatever its backend.

use crate::spec::WorkloadSpec;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

/// The user's request to stop (Ctrl-C), as a workload's long untimed phases see it: its
/// tuning, and the fill and f64 reference of its verification, which at a long context take
/// seconds to minutes each and would otherwise run to their end before a stop is honoured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Interrupt(Option<&'static AtomicBool>);

impl Interrupt {
    /// Watch `flag`, which is set once the user asks to stop.
    pub fn new(flag: &'static AtomicBool) -> Self {
        Interrupt(Some(flag))
    }

    /// Whether the user has asked to stop.
    pub fn requested(&self) -> bool {
        self.0.is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// `Err(Interrupted)` once the user has asked to stop.
    pub fn check(&self) -> Result<(), crate::WorkloadError> {
        match self.requested() {
            true => Err(crate::WorkloadError::Interrupted),
            false => Ok(()),
        }
    }
}

/// Result of comparing a workload's outputs with the f64 reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub passed: bool,
    /// ‖out − ref‖ / ‖ref‖ of the attention output.
    pub rel_error: f64,
    /// Cosine similarity of the final hidden states (decoder) or attention output.
    pub cosine: f64,
    /// The bound `rel_error` had to stay within for this dtype.
    pub bound: f64,
    /// Empty when passed; otherwise what went wrong.
    pub detail: String,
}

/// Exact memory accounting of a layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryUse {
    /// Tokens stored × bytes per token.
    pub kv_bytes_used: u64,
    /// What the layout holds (capacity); allocated − used is waste.
    pub kv_bytes_allocated: u64,
}

/// A built workload: a cache, inputs and weights, ready to verify and time.
pub trait Workload {
    fn spec(&self) -> &WorkloadSpec;
    /// Stop its untimed phases (tuning, verification) with `Err(Interrupted)` once
    /// `interrupt` is requested; a workload whose phases are short may ignore it.
    fn watch(&mut self, _interrupt: Interrupt) {}
    /// Run the whole workload once and compare with the f64 reference (never timed).
    fn verify(&mut self) -> Result<Verification, crate::WorkloadError>;
    /// Empty the cache and rewind to before the prompt.
    fn reset(&mut self) -> Result<(), crate::WorkloadError>;
    /// Process the prompt of every sequence (the TTFT phase).
    fn prefill(&mut self) -> Result<(), crate::WorkloadError>;
    /// Generate one token for every sequence (one ITL sample).
    fn decode_step(&mut self) -> Result<(), crate::WorkloadError>;
    /// Choose, by timing a few of its own decode steps, how the kernels run this workload on
    /// this machine, before it is verified and timed; says what was chosen and on what
    /// figures. `None`: nothing to choose. Leaves the workload reset.
    fn tune(&mut self) -> Result<Option<String>, crate::WorkloadError> {
        Ok(None)
    }
    /// Wait for queued device work (no-op on the CPU); called before reading clocks.
    fn synchronize(&mut self) -> Result<(), crate::WorkloadError> {
        Ok(())
    }
    /// Memory of the cache now.
    fn memory(&self) -> MemoryUse;
    /// KV bytes the last decode step read (for achieved bandwidth).
    fn kv_bytes_read_last_step(&self) -> u64;
    /// Floating-point operations of the prefill (for achieved GFLOP/s).
    fn prefill_flops(&self) -> f64;
    /// Floating-point operations of the last decode step's attention (scores and values,
    /// 4 · q_heads · head_dim per key attended), for the step's GFLOP/s: at MQA and wide
    /// groups decode is bound by compute, not bytes. 0 where not counted.
    fn decode_flops_last_step(&self) -> f64 {
        0.0
    }
    /// Whether the prefill only writes the prompt's K/V to the cache (`--prefill fill`)
    /// rather than computing it (the `prefill` column).
    fn prefill_fills(&self) -> bool {
        false
    }
    /// Device time of the last prefill or decode step measured with GPU events, in ms
    /// (CUDA); `None` where the wall clock is the only clock (CPU).
    fn device_time_ms(&self) -> Option<f64> {
        None
    }
    /// Device memory the workload holds, from `mem_get_info` before and after building it
    /// (CUDA); `None` on the CPU.
    fn device_bytes(&self) -> Option<u64> {
        None
    }
    /// The device it runs on, for the `gpu` column (CUDA: name, driver and CUDA versions,
    /// SMs, memory); `None` on the CPU.
    fn device_label(&self) -> Option<String> {
        None
    }
    /// What the offload tier did, for workloads that offload (`None` for the others).
    fn tier_report(&self) -> Option<crate::tier::TierReport> {
        None
    }
}
