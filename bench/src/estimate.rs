//! How long a run will take, before it starts: each row's bytes and FLOPs from the planner,
//! over the calibrated bandwidth and GEMM rate. The figure is a floor (kernels at the
//! limit), so refusing a run because of it never refuses one that would have fitted.

use crate::calibrate::Calibration;
use crate::memory::{predicted_kv_bytes, weights_bytes, MemoryNeed};
use crate::runner::TimingOptions;
use kvbench_workloads::attention::PrefillMode;
use kvbench_workloads::cpu::prefill::{prefill_flops, PrefillShape};
use kvbench_workloads::{Strategy, WorkloadKind, WorkloadSpec};

/// A run that would take longer than `--max-minutes`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "this run would take at least {minutes:.1} minutes ({rows} rows; the longest, {longest}, \
     {longest_minutes:.1}) at this machine's calibrated limits, over --max-minutes {max}; \
     raise --max-minutes, or shorten it (--prompt, --gen, --layers, --repetitions, \
     --prefill fill)"
)]
pub struct TooLong {
    pub minutes: f64,
    pub rows: usize,
    pub longest: String,
    pub longest_minutes: f64,
    pub max: f64,
}

/// Seconds of one row at the limits: verification (one untimed run plus the f64 reference),
/// `warmup + repetitions` timed runs of prefill and every decode step, and an attention
/// row's tuning.
pub fn row_seconds(
    spec: &WorkloadSpec,
    prefill: PrefillMode,
    cal: &Calibration,
    timing: &TimingOptions,
) -> f64 {
    let (gbps, gflops) = cal
        .limits_for(spec.backend, timing.threads)
        .filter(|(b, g)| *b > 0.0 && *g > 0.0)
        .unwrap_or((cal.read_gbps.max(1.0), cal.gemm_gflops.max(1.0)));
    let kv = predicted_kv_bytes(spec).unwrap_or(0) as f64;
    let weights = weights_bytes(spec) as f64;
    let batch = spec.batch as f64;
    // Attention of every layer over the prompt, causally (the CPU kernel's own count).
    let s = &spec.shape;
    let attention_flops = s.layers as f64
        * batch
        * prefill_flops(
            &PrefillShape {
                q_heads: s.q_heads as usize,
                kv_heads: s.kv_heads as usize,
                head_dim: s.head_dim as usize,
                window: spec.window.map(|w| w as usize),
            },
            spec.prompt as usize,
        );
    // A decoder's projections: 2 FLOP per weight per token.
    let weight_flops = |tokens: f64| 2.0 * weights / 4.0 * tokens * batch;
    let fills = spec.kind == WorkloadKind::Attention && prefill == PrefillMode::Fill;
    let prefill_s = if fills {
        // Writing the cache (and reading the rows it is written from).
        2.0 * kv / (cal.copy_gbps.max(1.0) * 1e9)
    } else {
        (attention_flops + weight_flops(spec.prompt as f64)) / (gflops * 1e9)
    };
    // Every decode step reads the cache (at most its final size) and the weights; `none`
    // recomputes every earlier token's K/V instead, as its prefill would.
    let step_s = if spec.strategy == Strategy::None {
        prefill_s.max((kv + weights) / (gbps * 1e9))
    } else {
        ((kv + weights) / (gbps * 1e9)).max(weight_flops(1.0) / (gflops * 1e9))
    };
    let run_s = prefill_s + spec.gen as f64 * step_s;
    // The reference reads each cached element once more, in f64.
    let reference_s = 4.0 * kv / (gbps * 1e9);
    let runs = 1 + timing.warmup + timing.repetitions.max(1);
    // An attention row whose steps read past the last-level cache (unknown: assume they
    // do) is tuned: twice the prompt filled in and up to 12 decode steps timed, for the
    // tile and for the prefetch.
    let tunes = spec.kind == WorkloadKind::Attention
        && spec.gen >= 4
        && kvbench_workloads::cpu::reads_past_cache(kv as u64, cal.llc_bytes);
    let tune_s = match tunes {
        true => {
            2.0 * (2.0 * kv / (cal.copy_gbps.max(1.0) * 1e9) + spec.gen.min(12) as f64 * step_s)
        }
        false => 0.0,
    };
    runs as f64 * run_s + reference_s + tune_s
}

/// Seconds of every row, summed; `Err` when over `max_minutes`. A row that will be refused
/// because it cannot fit in `available` bytes costs nothing.
pub fn check(
    specs: &[WorkloadSpec],
    prefill: PrefillMode,
    cal: &Calibration,
    timing: &TimingOptions,
    max_minutes: f64,
    available: u64,
) -> Result<f64, TooLong> {
    let fits = |s: &WorkloadSpec| {
        predicted_kv_bytes(s).is_ok_and(|kv| MemoryNeed::of(s, kv).check(available).is_ok())
    };
    let secs: Vec<f64> = specs
        .iter()
        .map(|s| {
            if fits(s) {
                row_seconds(s, prefill, cal, timing)
            } else {
                0.0
            }
        })
        .collect();
    let total: f64 = secs.iter().sum();
    if total / 60.0 <= max_minutes {
        return Ok(total);
    }
    let (i, longest) =
        secs.iter().enumerate().fold(
            (0, 0.0),
            |best, (i, &s)| if s > best.1 { (i, s) } else { best },
        );
    Err(TooLong {
        minutes: total / 60.0,
        rows: specs.len(),
        longest: crate::matrix::describe(&specs[i]),
        longest_minutes: longest / 60.0,
        max: max_minutes,
    })
}

/// `--max-minutes`, validated: a positive number of minutes.
pub fn parse_max_minutes(v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!(
            "--max-minutes {v}: give a positive number of minutes (default 30)"
        ))
    }
}

/// `--prefill compute|fill`.
pub fn parse_prefill(name: &str) -> Result<PrefillMode, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "compute" | "attention" => Ok(PrefillMode::Attention),
        "fill" => Ok(PrefillMode::Fill),
        other => Err(format!(
            "--prefill {other:?} is not known; valid: compute (causal attention over the \
             prompt), fill (write the prompt's K/V only)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
    use kvbench_workloads::{Backend, OffloadConfig};

    fn cal() -> Calibration {
        serde_json::from_str(
            r#"{"host":"t","cpu":"t","cpu_flags":[],"cores":2,"threads":2,"timestamp":"",
            "kvbench_version":"","method":"full","llc_bytes":0,"buffer_bytes":0,
            "read_gbps_1t":10.0,"read_gbps":20.0,"copy_gbps":10.0,"gemm_gflops_1t":50.0,
            "gemm_gflops":100.0,"gemm_n":0}"#,
        )
        .unwrap()
    }

    fn spec(prompt: u32, gen: u32) -> WorkloadSpec {
        WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cpu,
            shape: ModelShape::uniform("t", 1, 8, 8, 64, 512, 1408),
            strategy: Strategy::Contiguous,
            k_dtype: CacheDtype::new(DtypeKind::F16),
            v_dtype: CacheDtype::new(DtypeKind::F16),
            batch: 1,
            prompt,
            gen,
            block_size: 16,
            shared_prefix: 0,
            window: None,
            mlp: false,
            seed: 0,
            offload: OffloadConfig::default(),
        }
    }

    #[test]
    fn the_estimate_is_bytes_over_bandwidth_and_flops_over_gemm() {
        let timing = TimingOptions {
            warmup: 1,
            repetitions: 3,
            threads: 2,
        };
        // 8192 + 8 tokens × 2 KiB (8 heads × 64 × 2 × 2 bytes) = 16 793 600 bytes of KV.
        let s = spec(8192, 8);
        let kv = 8200.0 * 2048.0;
        // fill: 2 × kv at 10 GB/s copy; 8 steps of kv at 20 GB/s; 5 runs; reference 4 × kv;
        // tuning (no cache size known, so past it): twice one more fill and the 8 steps.
        let run = 2.0 * kv / 10e9 + 8.0 * kv / 20e9;
        let want = 5.0 * run + 4.0 * kv / 20e9 + 2.0 * run;
        let got = row_seconds(&s, PrefillMode::Fill, &cal(), &timing);
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
        // compute: 4 · hq · d · Σ(i+1) = 4 · 512 · 8192·8193/2 FLOP at 100 GFLOP/s.
        let flops = 4.0 * 512.0 * (8192.0 * 8193.0 / 2.0);
        let want = 5.0 * (flops / 100e9 + 8.0 * kv / 20e9) + 4.0 * kv / 20e9 + 2.0 * run;
        let got = row_seconds(&s, PrefillMode::Attention, &cal(), &timing);
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        // Inside a last-level cache there is nothing to tune.
        let cached = Calibration {
            llc_bytes: 32 << 20,
            ..cal()
        };
        let want = 5.0 * run + 4.0 * kv / 20e9;
        let got = row_seconds(&s, PrefillMode::Fill, &cached, &timing);
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
        // Over the ceiling: refused with the figure.
        let many = vec![s; 1000];
        let e = check(
            &many,
            PrefillMode::Attention,
            &cal(),
            &timing,
            1.0,
            u64::MAX,
        )
        .unwrap_err();
        assert!(e.minutes > 1.0 && e.rows == 1000);
        assert!(e.to_string().contains("--max-minutes 1"), "{e}");
        assert!(check(
            &many[..1],
            PrefillMode::Fill,
            &cal(),
            &timing,
            1.0,
            u64::MAX
        )
        .is_ok());
        // Rows refused for memory are not run, so they cost no time.
        assert_eq!(
            check(&many, PrefillMode::Attention, &cal(), &timing, 1.0, 1 << 20),
            Ok(0.0)
        );
    }

    #[test]
    fn flags_parse_or_say_what_is_valid() {
        assert_eq!(parse_prefill("fill"), Ok(PrefillMode::Fill));
        assert_eq!(parse_prefill("Compute"), Ok(PrefillMode::Attention));
        assert!(parse_prefill("auto")
            .unwrap_err()
            .contains("valid: compute"));
        assert!(parse_max_minutes(0.0)
            .unwrap_err()
            .contains("--max-minutes 0"));
        assert_eq!(parse_max_minutes(30.0), Ok(30.0));
    }
}
