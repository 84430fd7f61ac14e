//! What fits: the longest context a deployment holds (`--seq max`, vLLM's "estimated maximum
//! model length") and how many more sequences fit when they share a prefix.

use serde::Serialize;

use crate::deploy::{apply_window_rule, attention_tp, per_gpu_shape, Capacity, Deployment};
use crate::error::PlanError;
use crate::pool::shared_prefix_blocks;
use crate::shape::ModelShape;

/// A `--seq` value: a token count, or `max` for the longest context that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqArg {
    Tokens(u32),
    Max,
}

impl std::str::FromStr for SeqArg {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, PlanError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(SeqArg::Max);
        }
        t.parse::<u32>()
            .map(SeqArg::Tokens)
            .map_err(|_| PlanError::InvalidValue {
                what: "seq".to_string(),
                value: text.to_string(),
                fix: "give a token count (e.g. 4096) or max for the longest context that fits (needs --gpu or --kv-budget)".to_string(),
            })
    }
}

/// The longest context `capacity` at one token reports for the asked batch, capped at the
/// model's own maximum (`max_context`, 0 = not stated).
pub fn longest_context(cap: &Capacity, max_context: u32) -> Result<u32, PlanError> {
    let cap_at = |t: u64| {
        if max_context > 0 {
            t.min(max_context as u64)
        } else {
            t
        }
    };
    match cap.max_context_at_batch {
        Some(0) => Err(PlanError::NoCapacity(
            "not one token of the asked batch fits; lower --batch, add GPUs or pick a smaller cache dtype".to_string(),
        )),
        Some(t) => Ok(cap_at(t).min(u32::MAX as u64) as u32),
        None if max_context > 0 => Ok(max_context),
        None => Err(PlanError::InvalidValue {
            what: "seq".to_string(),
            value: "max".to_string(),
            fix: "every layer slides and the model states no maximum context, so any length fits; give a token count".to_string(),
        }),
    }
}

/// Capacity when every sequence shares its first `prefix` tokens (prefix caching): the
/// whole blocks of the prefix in full-attention groups are held once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SharedPrefixFit {
    pub prefix: u32,
    /// Pool blocks the prefix takes once for all sequences.
    pub shared_blocks: u64,
    /// Pool blocks each sequence still takes of its own.
    pub own_blocks: u64,
    /// Sequences of the asked context that fit at once per attention group.
    pub max_seqs: u64,
    /// Deployment-wide (all attention groups and replicas).
    pub max_seqs_per_deployment: u64,
}

/// The shared-prefix capacity of a deployment whose capacity `cap` was sized for `attended`
/// (the model's shape as served) at `context` tokens.
pub fn shared_prefix_fit(
    attended: &ModelShape,
    dep: &Deployment,
    cap: &Capacity,
    prefix: u32,
) -> Result<Option<SharedPrefixFit>, PlanError> {
    if prefix == 0 || cap.block_bytes == 0 {
        return Ok(None);
    }
    let (gpu_shape, _) = per_gpu_shape(attended, attention_tp(dep), dep.pp)?;
    let gpu_shape = apply_window_rule(&gpu_shape, dep.window_rule, dep.max_batched_tokens);
    let per_request = cap.seq_bytes_per_gpu / cap.block_bytes;
    let shared = shared_prefix_blocks(&gpu_shape, cap.block_size, prefix as u64).min(per_request);
    let own = per_request - shared;
    let max_seqs = match (cap.blocks.checked_sub(shared), own) {
        (None, _) => 0,
        // Everything a sequence holds is shared: the pool's limit is not blocks.
        (Some(_), 0) => u64::MAX,
        (Some(left), own) => left / own,
    };
    let groups = cap.max_seqs_per_deployment / cap.max_seqs.max(1);
    Ok(Some(SharedPrefixFit {
        prefix,
        shared_blocks: shared,
        own_blocks: own,
        max_seqs,
        max_seqs_per_deployment: max_seqs.saturating_mul(groups),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_takes_a_count_or_max() {
        assert_eq!("4096".parse::<SeqArg>().unwrap(), SeqArg::Tokens(4096));
        assert_eq!(" MAX ".parse::<SeqArg>().unwrap(), SeqArg::Max);
        let e = "lots".parse::<SeqArg>().unwrap_err().to_string();
        assert!(e.contains("seq = lots") && e.contains("max"), "{e}");
    }
}
