//! What each run-CSV column is to a comparison: part of the workload key, a machine
//! fingerprint, or a metric compared exactly, within a tolerance, or as timing.
//!
//! Known columns are listed (bench/src/record.rs); columns added later are classed by their
//! unit suffix, so a new measurement column never silently becomes part of the key.

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Smaller is better (times, errors).
    Lower,
    /// Larger is better (throughput, bandwidth, cosine similarity).
    Higher,
}

/// Where a timing metric's measured spread comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spread {
    /// A column holding the spread in the metric's own unit (`ttft_mad_ms` for `ttft_ms`).
    Absolute(String),
    /// A rate derived from a time: its relative spread is `mad / of` of that time
    /// (tokens/s = batch / TPOT, so its relative spread is TPOT's).
    RelativeOf {
        /// The spread column of the underlying time.
        mad: String,
        /// The underlying time column.
        of: String,
        /// When the time is a mean: its median column (see `MeanOf`).
        median: Option<String>,
    },
    /// A mean of samples whose MAD and median are recorded. One descheduled step moves the
    /// mean but not the median, so the spread is `MAD + |mean − median|`.
    MeanOf {
        /// The samples' MAD column.
        mad: String,
        /// The samples' median column.
        median: String,
    },
    /// No spread recorded: only the threshold applies.
    Unknown,
}

/// The role of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Who, when and with what build a run was made; neither key nor compared.
    RunIdentity,
    /// Identifies the machine: timing is only comparable when these all match.
    Fingerprint,
    /// How a run was made (repetitions, warm-up): does not change what the workload is.
    RunSetting,
    /// Part of the workload key: rows match when every key column matches.
    Key,
    /// Must be equal in both runs (bytes, bits per element, verification outcome).
    Exact,
    /// Numerical error: compared against a tolerance.
    Error(Better),
    /// A timing metric: compared as a ratio beyond spread and threshold, same machine only.
    Timing {
        /// Which way it improves.
        better: Better,
        /// Where its spread comes from.
        spread: Spread,
    },
    /// Measured but not gated (peak RSS, outlier counts, spreads, machine limits).
    Info,
}

/// Columns that identify the machine (host names differ between CI runners of one kind).
pub const FINGERPRINT: &[&str] = &["cpu", "cores", "gpu", "threads"];

/// The role of a column, from its name.
pub fn role(column: &str) -> Role {
    let abs = |c: &str| Spread::Absolute(c.to_string());
    let rel = |mad: &str, of: &str, median: Option<&str>| Spread::RelativeOf {
        mad: mad.to_string(),
        of: of.to_string(),
        median: median.map(str::to_string),
    };
    let timing = |better, spread| Role::Timing { better, spread };
    match column {
        "schema_version" | "kvbench_version" | "git_commit" | "timestamp" | "host"
        | "mem_bytes" | "os" | "shard" | "calibration" => Role::RunIdentity,
        c if FINGERPRINT.contains(&c) => Role::Fingerprint,
        // sweep_index moves whenever the sweep gains a workload; it is not what one is.
        "repetitions" | "warmup" | "sweep_index" => Role::RunSetting,
        "bits_per_element"
        | "kv_bytes_used"
        | "kv_bytes_allocated"
        | "kv_bytes_predicted"
        | "verified"
        | "status"
        | "kv_bytes_read_last_step"
        | "prefill_flops"
        // A block that came back from a tier with another hash is a correctness failure.
        | "tier_hash_failures" => Role::Exact,
        "rel_error" | "error_bound" => Role::Error(Better::Lower),
        "cosine" => Role::Error(Better::Higher),
        "ttft_ms" => timing(Better::Lower, abs("ttft_mad_ms")),
        "itl_p50_ms" | "itl_p90_ms" | "itl_p99_ms" => timing(Better::Lower, abs("itl_mad_ms")),
        "tpot_ms" => timing(
            Better::Lower,
            Spread::MeanOf {
                mad: "itl_mad_ms".into(),
                median: "itl_p50_ms".into(),
            },
        ),
        // Rates from the mean decode step (tokens/s = batch / TPOT).
        "tokens_per_s" | "achieved_gbps" | "pct_of_limit" | "decode_gflops"
        | "decode_pct_of_limit" => timing(
            Better::Higher,
            rel("itl_mad_ms", "tpot_ms", Some("itl_p50_ms")),
        ),
        "achieved_gflops" | "prefill_tokens_per_s" | "prefill_pct_of_limit" => {
            timing(Better::Higher, rel("ttft_mad_ms", "ttft_ms", None))
        }
        "outliers" | "peak_rss_bytes" | "device_bytes" | "weights_bytes" | "limit_gbps"
        | "limit_gflops" | "detail" | "ttft_samples" | "itl_samples" => Role::Info,
        // Whether the percentages are plain ones follows from the rates and the machine.
        "cache_resident" | "limit_exceeded" | "limit_note" | "verify_ms" => Role::Info,
        // Offload traffic depends on eviction timing and on faults the run recovered from.
        "tier_blocks_stored"
        | "tier_blocks_loaded"
        | "tier_fallbacks"
        | "tier_recomputed_blocks" => Role::Info,
        c => by_suffix(c),
    }
}

/// Classes a column this build does not know by its unit suffix.
fn by_suffix(c: &str) -> Role {
    if c.contains("_mad") || c.ends_with("_samples") || c.contains("_bytes") {
        Role::Info
    } else if let Some(stem) = c.strip_suffix("_ms") {
        Role::Timing {
            better: Better::Lower,
            spread: Spread::Absolute(format!("{stem}_mad_ms")),
        }
    } else if c.ends_with("_per_s")
        || c.ends_with("_gbps")
        || c.ends_with("_gflops")
        || c.contains("pct_of_limit")
    {
        Role::Timing {
            better: Better::Higher,
            spread: Spread::Unknown,
        }
    } else if c.ends_with("_error") {
        Role::Error(Better::Lower)
    } else {
        Role::Key
    }
}

/// The workload-key columns of a header, in header order.
pub fn key_columns(columns: &[String]) -> Vec<String> {
    columns
        .iter()
        .filter(|c| role(c) == Role::Key)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    /// Every Record field, by name, via the CSV header serde writes.
    fn record_columns() -> Vec<String> {
        let mut w = csv::Writer::from_writer(vec![]);
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
    fn the_workload_key_is_what_describes_the_workload() {
        let key = key_columns(&record_columns());
        assert_eq!(
            key,
            [
                "backend",
                "workload",
                "model",
                "layers",
                "q_heads",
                "kv_heads",
                "head_dim",
                "hidden",
                "strategy",
                "k_dtype",
                "v_dtype",
                "batch",
                "prompt",
                "gen",
                "block_size",
                "shared_prefix",
                "window",
                "intermediate",
                "mlp",
                "residual",
                "seed",
                "cache_dtype",
                "prefill",
                "tier",
            ]
        );
    }

    #[test]
    fn every_timing_spread_column_exists_in_the_record() {
        let cols = record_columns();
        for c in &cols {
            match role(c) {
                Role::Timing {
                    spread: Spread::Absolute(m),
                    ..
                } => assert!(cols.contains(&m), "{c}: {m}"),
                Role::Timing {
                    spread: Spread::RelativeOf { mad, of, median },
                    ..
                } => {
                    assert!(cols.contains(&mad) && cols.contains(&of), "{c}");
                    assert!(median.is_none_or(|m| cols.contains(&m)), "{c}");
                }
                Role::Timing {
                    spread: Spread::MeanOf { mad, median },
                    ..
                } => assert!(cols.contains(&mad) && cols.contains(&median), "{c}"),
                _ => {}
            }
        }
    }

    #[test]
    fn unknown_columns_are_classed_by_unit() {
        assert!(matches!(
            role("decode_ms"),
            Role::Timing { better: Better::Lower, spread: Spread::Absolute(s) } if s == "decode_mad_ms"
        ));
        assert!(matches!(
            role("prefill_tokens_per_s"),
            Role::Timing {
                better: Better::Higher,
                ..
            }
        ));
        assert_eq!(role("tier_bytes"), Role::Info);
        assert_eq!(role("max_abs_error"), Role::Error(Better::Lower));
        assert_eq!(role("tier"), Role::Key);
    }
}
