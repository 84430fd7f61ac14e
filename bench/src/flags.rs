//! Whether a row's share of the machine's limit means what it says. A decode step whose
//! working set fits in the last-level cache is timed from cache, so its GB/s is no share of
//! the memory limit (`cache_resident`); a row above its limit shows the limit is not one
//! (`limit_exceeded`). Either way the row says why and what to do, in one line.

use crate::record::Record;

/// A decode step must touch this many times the last-level cache to be memory-bound: a
/// cache's replacement keeps part of a working set only a little larger than itself (the
/// same rule as STREAM's "4 × the caches").
pub const LLC_FACTOR: u64 = 4;

/// Bytes one decode step of the row touched: the KV it read, and the weights a decoder
/// reads again every step.
pub fn working_set(r: &Record) -> u64 {
    r.kv_bytes_read_last_step + r.weights_bytes
}

/// Set `working_set_bytes`, `llc_bytes`, `cache_resident`, `limit_exceeded` and `limit_note`
/// of a timed row whose limits are filled. `on_cpu`: the last-level cache is the CPU's, so
/// only CPU rows can be cache-resident by it.
pub fn apply(r: &mut Record, llc_bytes: u64, on_cpu: bool) {
    r.working_set_bytes = working_set(r);
    r.llc_bytes = llc_bytes;
    r.cache_resident = on_cpu && llc_bytes > 0 && r.working_set_bytes < LLC_FACTOR * llc_bytes;
    let over_bandwidth = r.limit_gbps > 0.0 && r.achieved_gbps > r.limit_gbps;
    let over_gemm = r.limit_gflops > 0.0 && r.achieved_gflops > r.limit_gflops;
    // From memory and still above the read limit: the limit is wrong, not the cache.
    let over_from_memory = over_bandwidth && !r.cache_resident;
    r.limit_exceeded = over_from_memory || over_gemm;
    r.limit_note = if r.cache_resident {
        format!(
            "a decode step touches {} MiB, under {LLC_FACTOR} × the {} MiB last-level cache, \
             so it is timed from cache, not memory: raise --layers or --prompt for a \
             memory-bound figure",
            r.working_set_bytes >> 20,
            llc_bytes >> 20
        )
    } else {
        String::new()
    };
    if r.limit_exceeded {
        let what = if !over_from_memory {
            format!(
                "prefill {:.1} GFLOP/s exceeds the {:.1} GFLOP/s limit",
                r.achieved_gflops, r.limit_gflops
            )
        } else {
            format!(
                "{:.1} GB/s exceeds the {:.1} GB/s limit",
                r.achieved_gbps, r.limit_gbps
            )
        };
        let note = format!(
            "{what} of calibration {}: it understates this machine; run `kvbench calibrate` \
             here and run again",
            if r.calibration.is_empty() {
                "(none)"
            } else {
                &r.calibration
            }
        );
        r.limit_note = if r.limit_note.is_empty() {
            note
        } else {
            format!("{}; {note}", r.limit_note)
        };
    }
}

/// The `% of limit` a person reads: the percentage when it is a plain share of the limit,
/// otherwise what the flag says (`cache`, `>limit`).
pub fn pct_label(r: &Record, pct: f64) -> String {
    if r.cache_resident {
        "cache".into()
    } else if r.limit_exceeded {
        ">limit".into()
    } else {
        format!("{pct:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kv_read: u64, gbps: f64, gflops: f64) -> Record {
        Record {
            kv_bytes_read_last_step: kv_read,
            achieved_gbps: gbps,
            limit_gbps: 20.0,
            achieved_gflops: gflops,
            limit_gflops: 300.0,
            calibration: "cal.json".into(),
            ..Record::default()
        }
    }

    #[test]
    fn small_working_sets_are_cache_resident() {
        // The case: 256 MiB of KV against a 260 MiB L3 read at 189 % of the limit.
        let mut r = row(256 << 20, 37.8, 0.0);
        apply(&mut r, 260 << 20, true);
        assert!(r.cache_resident && !r.limit_exceeded);
        assert!(r.limit_note.contains("256 MiB") && r.limit_note.contains("--layers"));
        assert_eq!(pct_label(&r, 189.0), "cache");
        // 4 × 260 MiB is the threshold: one byte more is memory-bound.
        let mut r = row(((4 * 260) << 20) + 1, 18.0, 0.0);
        apply(&mut r, 260 << 20, true);
        assert!(!r.cache_resident && r.limit_note.is_empty() && r.pct_is_plain());
        assert_eq!(pct_label(&r, 90.0), "90.0%");
        // GPU rows are not judged by the CPU's cache; unknown LLC judges nothing.
        let mut r = row(1 << 20, 1.0, 0.0);
        apply(&mut r, 260 << 20, false);
        assert!(!r.cache_resident);
        apply(&mut r, 0, true);
        assert!(!r.cache_resident);
    }

    #[test]
    fn rates_above_the_limit_are_flagged_with_what_to_do() {
        // 26.8 GB/s (the PyTorch read) against a 21.4 GB/s limit, from DRAM.
        let mut r = row(1 << 30, 26.8, 0.0);
        r.limit_gbps = 21.4;
        apply(&mut r, 32 << 20, true);
        assert!(r.limit_exceeded && !r.cache_resident);
        assert!(r.limit_note.contains("26.8 GB/s") && r.limit_note.contains("kvbench calibrate"));
        assert_eq!(pct_label(&r, 125.2), ">limit");
        // Prefill above the GEMM limit is flagged whatever the working set.
        let mut r = row(1 << 20, 1.0, 319.0);
        apply(&mut r, 32 << 20, true);
        assert!(r.limit_exceeded && r.cache_resident);
        assert!(r.limit_note.contains("319.0 GFLOP/s"), "{}", r.limit_note);
    }
}
