//! One CSV row: a workload, where it ran, and what was measured. This is the CSV contract
//! (documented column by column in results/README.md). Add columns freely; renaming or
//! removing one bumps `SCHEMA_VERSION`.

use serde::{Deserialize, Serialize};

/// Version of the run CSV schema.
pub const SCHEMA_VERSION: u32 = 1;

/// One row per workload per run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    // --- identity of the run
    pub schema_version: u32,
    pub kvbench_version: String,
    pub git_commit: String,
    pub timestamp: String,
    pub host: String,
    pub cpu: String,
    pub cores: u32,
    pub mem_bytes: u64,
    pub os: String,
    pub gpu: String,
    pub backend: String,
    pub threads: u32,
    // --- the workload key
    pub workload: String,
    pub model: String,
    pub layers: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub hidden: u32,
    pub strategy: String,
    pub k_dtype: String,
    pub v_dtype: String,
    pub bits_per_element: f64,
    pub batch: u32,
    pub prompt: u32,
    pub gen: u32,
    pub block_size: u32,
    pub shared_prefix: u32,
    pub window: u32,
    pub repetitions: u32,
    // --- verification
    pub verified: bool,
    pub status: Status,
    pub rel_error: f64,
    pub cosine: f64,
    pub error_bound: f64,
    // --- timing
    pub ttft_ms: f64,
    pub ttft_mad_ms: f64,
    pub itl_p50_ms: f64,
    pub itl_p90_ms: f64,
    pub itl_p99_ms: f64,
    pub itl_mad_ms: f64,
    pub tpot_ms: f64,
    pub tokens_per_s: f64,
    pub outliers: u32,
    // --- memory
    pub kv_bytes_used: u64,
    pub kv_bytes_allocated: u64,
    pub kv_bytes_predicted: u64,
    pub peak_rss_bytes: u64,
    pub device_bytes: u64,
    // --- against the machine's limit
    pub achieved_gbps: f64,
    pub limit_gbps: f64,
    pub achieved_gflops: f64,
    pub limit_gflops: f64,
    pub pct_of_limit: f64,
    // --- added in schema 1 (appended; see results/README.md)
    /// Why a row is not `ok` (verification detail, refusal figure, error); empty when ok.
    pub detail: String,
    /// `i/n` when the run was one shard of a sweep; empty for a whole sweep.
    pub shard: String,
    /// Position of this workload in the whole (unsharded) sweep, from 0.
    pub sweep_index: u32,
    pub intermediate: u32,
    pub mlp: bool,
    /// Most recent tokens kept in f16 (KIVI residual); 0 = none.
    pub residual: u32,
    pub seed: u64,
    pub warmup: u32,
    pub ttft_samples: u32,
    pub itl_samples: u32,
    /// Prompt tokens of the whole batch per second of prefill.
    pub prefill_tokens_per_s: f64,
    /// KV bytes the last decode step read (the longest context).
    pub kv_bytes_read_last_step: u64,
    pub prefill_flops: f64,
    /// achieved_gflops / limit_gflops × 100 (prefill); `pct_of_limit` is the decode figure.
    pub prefill_pct_of_limit: f64,
    /// Model weights the workload holds (f32), as estimated before running.
    pub weights_bytes: u64,
    /// Where limit_* came from: a calibration file path, `short` (measured at run start) or empty.
    pub calibration: String,
    /// K and V dtypes as one `--cache-dtype` name: `f16`, `kivi4/r128`, or `k=int8,v=f16`.
    pub cache_dtype: String,
    /// What TTFT timed: `compute` (the prompt run through the model or attention) or `fill`
    /// (CPU attention workloads above 8192 prompt tokens only write the prompt's K/V rows).
    pub prefill: String,
    // --- offload tiers (empty / 0 unless the strategy is offload); counted over the whole run
    /// `host`, `disk` or `redis`.
    pub tier: String,
    /// Blocks evicted to the tier and written.
    pub tier_blocks_stored: u64,
    /// Blocks loaded back from the tier, each verified bit-exact by hash.
    pub tier_blocks_loaded: u64,
    /// Bytes loaded / seconds in the tier's reads.
    pub tier_load_gbps: f64,
    /// Loaded blocks whose hash did not match (each one made the run fall back).
    pub tier_hash_failures: u64,
    /// Tier faults (write failure, server gone, corrupted or missing block) after which the
    /// run recomputed instead of loading.
    pub tier_fallbacks: u64,
    /// Blocks recomputed because the tier could not give them back.
    pub tier_recomputed_blocks: u64,
    // --- whether the percentages mean what they say
    /// Bytes one decode step touched (the KV of every layer at the longest context).
    pub working_set_bytes: u64,
    /// Last-level cache the working set was compared with (from the calibration).
    pub llc_bytes: u64,
    /// The decode step's working set was under 4 × the last-level cache: it was timed from
    /// cache, not memory, and `pct_of_limit` is not a share of the memory limit.
    pub cache_resident: bool,
    /// Achieved bandwidth or GEMM rate above the calibrated limit: the limit is not one.
    pub limit_exceeded: bool,
    /// Why a row is flagged and what to do, one line; empty when neither flag is set.
    pub limit_note: String,
    /// Wall time of the verification against the f64 reference (one untimed run plus the
    /// reference), to compare with the timed part.
    pub verify_ms: f64,
    /// Attention FLOPs of every timed decode step / their total time (GFLOP/s); 0 where
    /// the workload does not count them (decoder, offload, CUDA).
    pub decode_gflops: f64,
    /// `100 × decode_gflops / limit_gflops`: the compute side of the decode step's
    /// roofline, the side that binds at MQA and wide groups (`pct_of_limit` is the bytes').
    pub decode_pct_of_limit: f64,
}

impl Record {
    /// Whether `pct_of_limit` / `prefill_pct_of_limit` may be read as a plain share of the
    /// machine's limit (no flag set).
    pub fn pct_is_plain(&self) -> bool {
        !self.cache_resident && !self.limit_exceeded
    }
}

/// Values of the `status` column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Verified, then timed.
    #[default]
    Ok,
    /// Verified and timed, but an offload tier failed during the run and blocks were
    /// recomputed instead of loaded: the timing is not the tier's (`tier_fallbacks` > 0).
    Fallback,
    /// Verification against the f64 reference failed; not timed.
    Failed,
    /// Would not fit in available memory; not built.
    Refused,
    /// Building or running returned an error.
    Error,
}

impl Status {
    /// The status of a workload that was verified and timed.
    pub fn timed(record: &Record) -> Status {
        if record.tier_fallbacks > 0 {
            Status::Fallback
        } else {
            Status::Ok
        }
    }

    /// The word in the CSV.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fallback => "fallback",
            Status::Failed => "failed",
            Status::Refused => "refused",
            Status::Error => "error",
        }
    }

    /// The status a CSV word names; `None` for any other text.
    pub fn from_word(word: &str) -> Option<Status> {
        [
            Status::Ok,
            Status::Fallback,
            Status::Failed,
            Status::Refused,
            Status::Error,
        ]
        .into_iter()
        .find(|s| s.word() == word.trim())
    }

    /// Timing figures are in the row (ok or fallback).
    pub fn is_timed(self) -> bool {
        matches!(self, Status::Ok | Status::Fallback)
    }

    /// The run exits non-zero for this row.
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Failed | Status::Error)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.word() == *other
    }
}

/// The status values by their old constant names.
pub mod status {
    use super::Status;
    pub const OK: Status = Status::Ok;
    pub const FAILED: Status = Status::Failed;
    pub const REFUSED: Status = Status::Refused;
    pub const ERROR: Status = Status::Error;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CSV column names, in order, from serializing a record.
    fn columns() -> Vec<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(Record::default()).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        text.lines()
            .next()
            .unwrap()
            .split(',')
            .map(String::from)
            .collect()
    }

    #[test]
    fn every_column_is_documented_in_results_readme() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../results/README.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let missing: Vec<String> = columns()
            .into_iter()
            .filter(|c| !doc.contains(&format!("`{c}`")))
            .collect();
        assert!(missing.is_empty(), "undocumented columns: {missing:?}");
    }

    #[test]
    fn a_tier_that_fell_back_marks_the_row_and_statuses_round_trip() {
        // Issue 10: a Redis tier that fell back mid-run was recorded as `ok`.
        let mut r = Record::default();
        assert_eq!(Status::timed(&r), Status::Ok);
        r.tier_fallbacks = 1;
        assert_eq!(Status::timed(&r), Status::Fallback);
        for s in [
            Status::Ok,
            Status::Fallback,
            Status::Failed,
            Status::Refused,
            Status::Error,
        ] {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.serialize(Record {
                status: s,
                ..Record::default()
            })
            .unwrap();
            let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
            let back: Record = csv::Reader::from_reader(text.as_bytes())
                .deserialize()
                .next()
                .unwrap()
                .unwrap();
            assert_eq!(back.status, s);
            assert_eq!(Status::from_word(s.word()), Some(s));
            assert!(text.contains(&format!(",{},", s.word())));
        }
    }

    #[test]
    fn the_contract_starts_with_the_identity_columns() {
        // Readers match by name, but the first columns are what a person sees first.
        assert_eq!(
            columns()[..4],
            [
                "schema_version",
                "kvbench_version",
                "git_commit",
                "timestamp"
            ]
        );
        assert_eq!(SCHEMA_VERSION, 1);
    }
}
