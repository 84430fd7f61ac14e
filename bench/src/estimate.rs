//! How long a run will take, before it starts. Memory traffic and computed prefills are each
//! row's bytes and FLOPs from the planner over the calibrated bandwidth and GEMM rate.
//! Writing a prompt into the cache, the f64 reference and a decode step's arithmetic are our
//! own code, which neither limit bounds: on a Zen 3 (docs/performance.md, sixteenth round)
//! making and encoding the synthetic rows cost an f16 MHA prompt at 32K 7× its bytes over the
//! copy bandwidth, the reference 12× its bytes over the read bandwidth, and an MQA step 5×
//! its bytes. So those are timed on a small workload of each row's format ([`probe`]) and
//! scaled to the row's bytes; a step is never less than its bytes at the bandwidth.

use crate::calibrate::Calibration;
use crate::memory::{predicted_kv_bytes, weights_bytes, MemoryNeed};
use crate::runner::TimingOptions;
use kvbench_planner::ModelShape;
use kvbench_workloads::attention::PrefillMode;
use kvbench_workloads::cpu::prefill::{prefill_flops, PrefillShape};
use kvbench_workloads::{Backend, BuildOptions, Strategy, WorkloadKind, WorkloadSpec};
use std::collections::HashMap;
use std::time::Instant;

/// A run that would take longer than `--max-minutes`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "this run would take about {minutes:.1} minutes ({rows} rows; the longest, {longest}, \
     {longest_minutes:.1}), over --max-minutes {max}; raise --max-minutes, or shorten it \
     (--prompt, --gen, --layers, --repetitions, --prefill fill)"
)]
pub struct TooLong {
    pub minutes: f64,
    pub rows: usize,
    pub longest: String,
    pub longest_minutes: f64,
    pub max: f64,
}

/// Seconds our own code spends per byte of KV cache where no limit of the machine bounds
/// it, as [`probe`] timed them on a small workload of a row's format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probed {
    /// Writing the prompt: the synthetic K/V rows made and encoded into the cache.
    pub fill_s_per_byte: f64,
    /// The f64 reference: the rows made again and every query head attended in f64.
    pub reference_s_per_byte: f64,
    /// A decode step over a cache that fits in the last-level cache: what the kernels'
    /// arithmetic costs (quantized formats decode every element; MQA is bound by its
    /// FLOPs), which a step from memory cannot beat either.
    pub step_s_per_byte: f64,
}

/// Bytes of cache a probe fills: large enough that the per-row costs dominate its fixed
/// ones, small enough that probing every format of a sweep takes well under a second.
const PROBE_BYTES: u64 = 8 << 20;

/// Time a fill, decode steps and a verification of a one-sequence workload with `spec`'s
/// heads, head size, cache formats and layout, about [`PROBE_BYTES`] of cache, on the
/// current rayon pool (the run's threads, kept warm from one probe to the next): each the
/// fastest of three, so that the first fill's page faults do not count. `None` for a row
/// that has no fill (decoders, no cache, offload tiers, CUDA) or a probe that fails (its row
/// then counts at the limits only).
pub fn probe(spec: &WorkloadSpec) -> Option<Probed> {
    let fills = spec.kind == WorkloadKind::Attention
        && spec.backend == Backend::Cpu
        && !matches!(spec.strategy, Strategy::None | Strategy::Offload(_));
    if !fills {
        return None;
    }
    let s = &spec.shape;
    let mut small = spec.clone();
    // Enough layers that the reference, parallel over layers and KV heads, has a task for
    // every thread, as the row's own has unless it is that small too.
    let layers = (rayon::current_num_threads() as u32)
        .div_ceil(s.kv_heads.max(1))
        .clamp(1, s.layers.max(1));
    small.shape = ModelShape::uniform(
        &s.name,
        layers,
        s.q_heads,
        s.kv_heads,
        s.head_dim,
        s.hidden,
        s.intermediate,
    );
    small.batch = 1;
    small.gen = 2;
    small.window = None;
    small.shared_prefix = 0;
    // Bytes a token (whole paged blocks and quantization groups, over many tokens).
    small.prompt = 4095;
    let per_token = predicted_kv_bytes(&small).ok()? / 4096;
    small.prompt = (PROBE_BYTES / per_token.max(1)).clamp(16, spec.prompt.max(16) as u64) as u32;
    let bytes = predicted_kv_bytes(&small).ok()? as f64;
    let options = BuildOptions {
        prefill: Some(PrefillMode::Fill),
    };
    let mut w = kvbench_workloads::build_with(&small, options).ok()?;
    let (mut fill, mut step, mut verify) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..3 {
        w.reset().ok()?;
        let t = Instant::now();
        w.prefill().ok()?;
        fill = fill.min(t.elapsed().as_secs_f64());
        for _ in 0..2 {
            let t = Instant::now();
            w.decode_step().ok()?;
            step = step.min(t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        w.verify().ok()?;
        verify = verify.min(t.elapsed().as_secs_f64());
    }
    // A verification fills the prompt again, decodes one step (in cache here: next to
    // nothing) and computes the reference.
    Some(Probed {
        fill_s_per_byte: fill / bytes,
        reference_s_per_byte: (verify - fill).max(0.0) / bytes,
        step_s_per_byte: step / bytes,
    })
}

/// Seconds of one row: verification (a fill, one decode step and the f64 reference),
/// `warmup + repetitions` timed runs of prefill and every decode step, and an attention
/// row's tuning. Fills, the reference and a step's arithmetic take `probed`'s rates where
/// there are some, and never less than their bytes at the limits; memory traffic and
/// computed prefills are at the limits.
pub fn row_seconds(
    spec: &WorkloadSpec,
    prefill: PrefillMode,
    cal: &Calibration,
    timing: &TimingOptions,
    probed: Option<Probed>,
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
    // Writing the cache (and reading the rows it is written from), at least.
    let fill_s = (2.0 * kv / (cal.copy_gbps.max(1.0) * 1e9))
        .max(probed.map_or(0.0, |p| kv * p.fill_s_per_byte));
    let attention = spec.kind == WorkloadKind::Attention;
    let prefill_s = match (attention, prefill) {
        (true, PrefillMode::Fill) => fill_s,
        (true, PrefillMode::Attention) => fill_s + attention_flops / (gflops * 1e9),
        (false, _) => (attention_flops + weight_flops(spec.prompt as f64)) / (gflops * 1e9),
    };
    // Every decode step reads the cache (at most its final size) and the weights, and
    // attends every query head to every cached token (4 FLOP per head, token and channel:
    // MQA is bound by these, not by its bytes); `none` recomputes every earlier token's K/V
    // instead, as its prefill would.
    let context = spec
        .window
        .map_or(spec.max_len(), |w| w.min(spec.max_len())) as f64;
    let decode_flops =
        4.0 * s.layers as f64 * s.q_heads as f64 * s.head_dim as f64 * context * batch;
    let step_s = if spec.strategy == Strategy::None {
        prefill_s.max((kv + weights) / (gbps * 1e9))
    } else {
        ((kv + weights) / (gbps * 1e9))
            .max((weight_flops(1.0) + decode_flops) / (gflops * 1e9))
            .max(probed.map_or(0.0, |p| kv * p.step_s_per_byte))
    };
    let run_s = prefill_s + spec.gen as f64 * step_s;
    // The reference reads each cached element once more, in f64, at least; an attention
    // row's verification fills the cache and decodes one step before it.
    let reference_s =
        (4.0 * kv / (gbps * 1e9)).max(probed.map_or(0.0, |p| kv * p.reference_s_per_byte));
    let verify_s = match (attention, prefill, spec.gen) {
        (true, PrefillMode::Attention, 0) => prefill_s + reference_s,
        (true, _, _) => fill_s + step_s + reference_s,
        (false, _, _) => reference_s,
    };
    let runs = timing.warmup + timing.repetitions.max(1);
    // An attention row whose steps read past the last-level cache (unknown: assume they
    // do) is tuned: twice the prompt filled in and up to 12 decode steps timed, for the
    // tile and for the prefetch.
    let tunes = attention
        && spec.gen >= 4
        && kvbench_workloads::cpu::reads_past_cache(kv as u64, cal.llc_bytes);
    let tune_s = match tunes {
        true => 2.0 * (fill_s + spec.gen.min(12) as f64 * step_s),
        false => 0.0,
    };
    runs as f64 * run_s + verify_s + tune_s
}

/// Seconds of every row, summed; `Err` when over `max_minutes`. A row that will be refused
/// because it cannot fit in `available` bytes costs nothing. `probe` gives a row's own rates
/// ([`probe`]; `|_| None` for the limits alone); it is asked once per format and shape.
pub fn check(
    specs: &[WorkloadSpec],
    prefill: PrefillMode,
    cal: &Calibration,
    timing: &TimingOptions,
    max_minutes: f64,
    available: u64,
    probe: &dyn Fn(&WorkloadSpec) -> Option<Probed>,
) -> Result<f64, TooLong> {
    let fits = |s: &WorkloadSpec| {
        predicted_kv_bytes(s).is_ok_and(|kv| MemoryNeed::of(s, kv).check(available).is_ok())
    };
    let mut probed: HashMap<String, Option<Probed>> = HashMap::new();
    let secs: Vec<f64> = specs
        .iter()
        .map(|s| {
            if !fits(s) {
                return 0.0;
            }
            // Rows that differ only in length, layers or batch share their rates.
            let key = format!(
                "{:?} {:?} {} {} {} {} {:?} {:?} {}",
                s.kind,
                s.backend,
                s.shape.q_heads,
                s.shape.kv_heads,
                s.shape.head_dim,
                crate::runner::dtype_pair_label(s),
                s.strategy,
                s.offload,
                s.block_size
            );
            let rates = *probed.entry(key).or_insert_with(|| probe(s));
            row_seconds(s, prefill, cal, timing, rates)
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

/// [`check`] with each format's rates [`probe`]d first, on `timing.threads` threads (one
/// pool for every probe, warm from one to the next).
pub fn check_probed(
    specs: &[WorkloadSpec],
    prefill: PrefillMode,
    cal: &Calibration,
    timing: &TimingOptions,
    max_minutes: f64,
    available: u64,
) -> Result<f64, TooLong> {
    let probed = |pool: &rayon::ThreadPool| {
        pool.install(|| check(specs, prefill, cal, timing, max_minutes, available, &probe))
    };
    match rayon::ThreadPoolBuilder::new()
        .num_threads(timing.threads.max(1) as usize)
        .build()
    {
        Ok(pool) => probed(&pool),
        // No pool: the limits alone.
        Err(_) => check(specs, prefill, cal, timing, max_minutes, available, &|_| {
            None
        }),
    }
}

/// Seconds as a person reads them: "40 s", "6.2 minutes".
pub fn duration(secs: f64) -> String {
    match secs {
        s if s < 60.0 => format!("{:.0} s", s.max(1.0)),
        s => format!("{:.1} minutes", s / 60.0),
    }
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
        let kv: f64 = 8200.0 * 2048.0;
        // A step: kv at 20 GB/s, or its 4 · 8 heads · 64 · 8200 FLOP at 100 GFLOP/s if more.
        let step: f64 = (kv / 20e9).max(4.0 * 512.0 * 8200.0 / 100e9);
        assert_eq!(step, kv / 20e9);
        // fill: 2 × kv at 10 GB/s copy; 4 timed runs (1 warm-up + 3) of the fill and 8 steps;
        // verification: a fill, one step and the reference (4 × kv at 20 GB/s); tuning (no
        // cache size known, so past it): twice a fill and the 8 steps.
        let fill = 2.0 * kv / 10e9;
        let run = fill + 8.0 * step;
        let verify = fill + step + 4.0 * kv / 20e9;
        let want = 4.0 * run + verify + 2.0 * run;
        let got = row_seconds(&s, PrefillMode::Fill, &cal(), &timing, None);
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
        // compute: the fill, then 4 · hq · d · Σ(i+1) = 4 · 512 · 8192·8193/2 FLOP at
        // 100 GFLOP/s.
        let flops = 4.0 * 512.0 * (8192.0 * 8193.0 / 2.0);
        let want = 4.0 * (fill + flops / 100e9 + 8.0 * step) + verify + 2.0 * run;
        let got = row_seconds(&s, PrefillMode::Attention, &cal(), &timing, None);
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        // Inside a last-level cache there is nothing to tune.
        let cached = Calibration {
            llc_bytes: 32 << 20,
            ..cal()
        };
        let want = 4.0 * run + verify;
        let got = row_seconds(&s, PrefillMode::Fill, &cached, &timing, None);
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
        // Rates a probe timed replace the limits where they are slower, never where faster.
        let probed = Probed {
            fill_s_per_byte: 1e-9,
            reference_s_per_byte: 3e-9,
            step_s_per_byte: 1e-12,
        };
        let (fill, reference) = (kv * 1e-9, kv * 3e-9);
        assert!(fill > 2.0 * kv / 10e9 && reference > 4.0 * kv / 20e9 && kv * 1e-12 < step);
        let run = fill + 8.0 * step;
        let want = 4.0 * run + (fill + step + reference);
        let got = row_seconds(&s, PrefillMode::Fill, &cached, &timing, Some(probed));
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
        let slow_steps = Probed {
            step_s_per_byte: 1e-9,
            ..probed
        };
        let run = fill + 8.0 * kv * 1e-9;
        let want = 4.0 * run + (fill + kv * 1e-9 + reference);
        let got = row_seconds(&s, PrefillMode::Fill, &cached, &timing, Some(slow_steps));
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
        // Over the ceiling: refused with the figure.
        let many = vec![s; 1000];
        let none = |_: &WorkloadSpec| None;
        let e = check(
            &many,
            PrefillMode::Attention,
            &cal(),
            &timing,
            1.0,
            u64::MAX,
            &none,
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
            u64::MAX,
            &none
        )
        .is_ok());
        // Rows refused for memory are not run, so they cost no time.
        assert_eq!(
            check(
                &many,
                PrefillMode::Attention,
                &cal(),
                &timing,
                1.0,
                1 << 20,
                &none
            ),
            Ok(0.0)
        );
    }

    #[test]
    fn rows_of_one_format_are_probed_once() {
        let timing = TimingOptions {
            warmup: 0,
            repetitions: 1,
            threads: 1,
        };
        let asked = std::cell::Cell::new(0);
        let probe = |_: &WorkloadSpec| {
            asked.set(asked.get() + 1);
            None
        };
        let mut int8 = spec(64, 2);
        int8.k_dtype = CacheDtype::new(DtypeKind::Int8);
        int8.v_dtype = int8.k_dtype;
        let rows = [spec(64, 2), spec(4096, 8), int8.clone(), int8];
        check(
            &rows,
            PrefillMode::Fill,
            &cal(),
            &timing,
            30.0,
            u64::MAX,
            &probe,
        )
        .unwrap();
        assert_eq!(asked.get(), 2);
    }

    #[test]
    fn a_probe_times_a_small_workload_of_the_rows_format() {
        // 8 KV heads × 64 × f16: 2 KiB a token, so a 32K prompt is probed at 4096 tokens.
        let p = probe(&spec(32768, 4)).expect("an attention row is probed");
        for rate in [p.fill_s_per_byte, p.reference_s_per_byte, p.step_s_per_byte] {
            assert!(rate.is_finite() && rate > 0.0, "{p:?}");
        }
        // Neither a decoder nor a row without a cache fills one.
        let decoder = WorkloadSpec {
            kind: WorkloadKind::Decoder,
            ..spec(256, 4)
        };
        assert_eq!(probe(&decoder), None);
        let none = WorkloadSpec {
            strategy: Strategy::None,
            ..spec(256, 4)
        };
        assert_eq!(probe(&none), None);
    }

    #[test]
    fn durations_read_as_seconds_then_minutes() {
        assert_eq!(duration(0.2), "1 s");
        assert_eq!(duration(42.4), "42 s");
        assert_eq!(duration(372.0), "6.2 minutes");
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
