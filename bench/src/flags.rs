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
    // Compute rates are bound by the cores wherever the data sits: no cache excuses them.
    let over_gemm = r.limit_gflops > 0.0 && r.achieved_gflops > r.limit_gflops;
    let decode_over_gemm = r.limit_gflops > 0.0 && r.decode_gflops > r.limit_gflops;
    // From memory and still above the read limit: the limit is wrong, not the cache.
    let over_from_memory = over_bandwidth && !r.cache_resident;
    r.limit_exceeded = over_from_memory || over_gemm || decode_over_gemm;
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
        let what = if over_from_memory {
            format!(
                "{:.1} GB/s exceeds the {:.1} GB/s limit",
                r.achieved_gbps, r.limit_gbps
            )
        } else if over_gemm {
            format!(
                "prefill {:.1} GFLOP/s exceeds the {:.1} GFLOP/s limit",
                r.achieved_gflops, r.limit_gflops
            )
        } else {
            format!(
                "decode {:.1} GFLOP/s exceeds the {:.1} GFLOP/s limit",
                r.decode_gflops, r.limit_gflops
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

/// A decode row's share of its roofline, labelled: the bytes' share of the read limit, or,
/// where the step's FLOPs are the nearer limit (MQA, wide groups), their share of the GEMM
/// limit marked `GEMM`. Flagged rows say their flag.
pub fn roofline_label(r: &Record) -> String {
    if r.pct_is_plain() && r.decode_pct_of_limit > r.pct_of_limit {
        format!("{:.1}% GEMM", r.decode_pct_of_limit)
    } else {
        pct_label(r, r.pct_of_limit)
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

    #[test]
    fn compute_bound_decode_is_read_against_the_gemm_limit() {
        // MQA, 32 query heads × 128, 32K keys: 537 MFLOP and 16.8 MB a layer; 1.89 ms a
        // layer is 284 GFLOP/s and 8.9 GB/s (a Zen 5 guest, 2 threads).
        let flops = 4.0 * 32.0 * 128.0 * 32_784.0;
        let mut r = row(28 * 16_785_408, 8.9, 0.0);
        r.decode_gflops = flops / 1.89e-3 / 1e9;
        (r.limit_gbps, r.limit_gflops) = (48.6, 381.7);
        r.pct_of_limit = 100.0 * r.achieved_gbps / r.limit_gbps;
        r.decode_pct_of_limit = 100.0 * r.decode_gflops / r.limit_gflops;
        apply(&mut r, 32 << 20, true);
        assert!(r.pct_is_plain(), "{}", r.limit_note);
        assert_eq!(roofline_label(&r), "74.5% GEMM");
        // Against a GEMM limit measured while a core was held (216.6), the same step is
        // above it: flagged, whatever its bytes say.
        r.limit_gflops = 216.6;
        r.decode_pct_of_limit = 100.0 * r.decode_gflops / r.limit_gflops;
        apply(&mut r, 32 << 20, true);
        assert!(r.limit_exceeded, "{r:?}");
        assert!(r
            .limit_note
            .starts_with("decode 284.2 GFLOP/s exceeds the 216.6 GFLOP/s limit"));
        assert_eq!(roofline_label(&r), ">limit");
        // A memory-bound row keeps its bytes' share.
        let mut r = row(1 << 30, 35.5, 0.0);
        (r.limit_gbps, r.pct_of_limit) = (47.1, 75.4);
        (r.decode_gflops, r.decode_pct_of_limit) = (35.3, 9.2);
        apply(&mut r, 32 << 20, true);
        assert_eq!(roofline_label(&r), "75.4%");
    }
}
