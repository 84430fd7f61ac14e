//! Runs one workload: check it fits, build, verify against the reference, warm up, time
//! prefill and every decode step, and turn the samples into a [`Record`].

use crate::calibrate::Calibration;
use crate::env::{self, Environment};
use crate::export::Samples;
use crate::matrix::{backend_name, is_paged, kind_name, strategy_name, Shard};
use crate::memory::{predicted_kv_bytes, MemoryNeed};
use crate::note::Note;
use crate::record::{status, Status};
use crate::stats::Summary;
use crate::{Record, SCHEMA_VERSION};
use kvbench_planner::dtype::KvDtypes;
use kvbench_workloads::{Interrupt, Workload, WorkloadError, WorkloadSpec};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Builds a workload from its spec (`kvbench_workloads::build` in the binary, fakes in tests).
pub type BuildFn<'a> =
    dyn Fn(&WorkloadSpec) -> Result<Box<dyn Workload>, WorkloadError> + Sync + 'a;

/// How each workload is timed.
#[derive(Debug, Clone, PartialEq)]
pub struct TimingOptions {
    /// Untimed full runs (prefill + all decode steps) before timing.
    pub warmup: u32,
    /// Timed full runs; each gives one TTFT sample and `gen` ITL samples.
    pub repetitions: u32,
    /// Threads of the pool the workload runs in (recorded in every row).
    pub threads: u32,
}

/// The machine's limits to report achieved rates against, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub calibration: Calibration,
    /// A file path, or `short` for a calibration measured at the start of the run.
    pub source: String,
}

/// A finished workload: its row, its raw samples, and notes for the user (outliers, errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub record: Record,
    pub samples: Samples,
    pub notes: Vec<Note>,
}

/// Everything the runner needs besides the workload itself.
pub struct Runner<'a> {
    pub timing: TimingOptions,
    pub env: Environment,
    pub limits: Option<Limits>,
    pub shard: Option<Shard>,
    pub build: &'a BuildFn<'a>,
    /// Memory available for a workload, asked before each one (a function so tests can pin it).
    pub available_memory: &'a (dyn Fn() -> u64 + Sync + 'a),
    /// Set by Ctrl-C: stop at the next decode step, or inside a row's tuning, verification
    /// or prompt, at the workload's next check ([`Workload::watch`]).
    pub stop: &'static AtomicBool,
}

/// Why a workload's timing stopped early.
enum Stop {
    Interrupted,
    Error(WorkloadError),
}

impl From<WorkloadError> for Stop {
    fn from(e: WorkloadError) -> Self {
        match e {
            WorkloadError::Interrupted => Stop::Interrupted,
            e => Stop::Error(e),
        }
    }
}

impl Runner<'_> {
    /// Run one workload (`sweep_index` is its place in the whole sweep). `None` when the user
    /// interrupted it: an unfinished workload leaves no row.
    pub fn run_one(&self, sweep_index: usize, spec: &WorkloadSpec) -> Option<Outcome> {
        let mut record = self.base_record(sweep_index, spec);
        let mut notes = Vec::new();
        let predicted = match predicted_kv_bytes(spec) {
            Ok(b) => b,
            Err(e) => return Some(finish(record, status::ERROR, e.to_string(), notes)),
        };
        record.kv_bytes_predicted = predicted;
        let need = MemoryNeed::of(spec, predicted);
        record.weights_bytes = need.weights;
        if let Err(why) = need.check((self.available_memory)()) {
            return Some(finish(record, status::REFUSED, why, notes));
        }

        env::reset_peak_rss();
        let mut workload = match (self.build)(spec) {
            Ok(w) => w,
            Err(e) => return Some(finish(record, status::ERROR, e.to_string(), notes)),
        };
        if workload.prefill_fills() {
            record.prefill = "fill".into();
        }
        workload.watch(Interrupt::new(self.stop));
        // Tuned before it is verified, so that what is timed is what was checked.
        match workload.tune() {
            Ok(Some(detail)) => notes.push(Note::Tuned {
                workload: crate::matrix::describe(spec),
                detail,
            }),
            Ok(None) => {}
            Err(WorkloadError::Interrupted) => return None,
            Err(e) => return Some(finish(record, status::ERROR, e.to_string(), notes)),
        }
        self.check_stop().ok()?;
        let verify_start = Instant::now();
        let verified = workload.verify();
        record.verify_ms = verify_start.elapsed().as_secs_f64() * 1e3;
        match verified {
            Ok(v) => {
                record.verified = v.passed;
                record.rel_error = v.rel_error;
                record.cosine = v.cosine;
                record.error_bound = v.bound;
                if !v.passed {
                    let detail = if v.detail.is_empty() {
                        format!(
                            "rel_error {:.3e} exceeds bound {:.3e}",
                            v.rel_error, v.bound
                        )
                    } else {
                        v.detail
                    };
                    return Some(finish(record, status::FAILED, detail, notes));
                }
            }
            Err(WorkloadError::Interrupted) => return None,
            Err(e) => return Some(finish(record, status::ERROR, e.to_string(), notes)),
        }

        let timed = match self.time(workload.as_mut()) {
            Ok(t) => t,
            Err(Stop::Interrupted) => return None,
            Err(Stop::Error(e)) => {
                return Some(finish(record, status::ERROR, e.to_string(), notes))
            }
        };
        let memory = workload.memory();
        record.kv_bytes_used = memory.kv_bytes_used;
        record.kv_bytes_allocated = memory.kv_bytes_allocated;
        record.kv_bytes_read_last_step = workload.kv_bytes_read_last_step();
        record.prefill_flops = workload.prefill_flops();
        record.peak_rss_bytes = env::peak_rss_bytes();
        if let Some(t) = workload.tier_report() {
            record.tier = t.tier.to_string();
            record.tier_blocks_stored = t.blocks_stored;
            record.tier_blocks_loaded = t.blocks_loaded;
            record.tier_load_gbps = t.load_gbps;
            record.tier_hash_failures = t.hash_failures;
            record.tier_fallbacks = t.fallbacks;
            record.tier_recomputed_blocks = t.recomputed_blocks;
            if let Some(e) = t.first_error {
                notes.push(Note::TierFallback {
                    workload: crate::matrix::describe(spec),
                    tier: t.tier.to_string(),
                    recomputed_blocks: t.recomputed_blocks,
                    error: e.to_string(),
                });
            }
        }
        drop(workload);

        self.fill_timing(&mut record, &timed, spec);
        let outliers: Vec<String> = [("TTFT", &timed.ttft), ("ITL", &timed.itl)]
            .iter()
            .filter_map(|(what, s)| s.outlier_note(what))
            .collect();
        if !outliers.is_empty() {
            notes.push(Note::Outliers {
                workload: crate::matrix::describe(spec),
                detail: outliers.join("; "),
            });
        }
        // An offload run's pool holds only part of the cache by design (the rest is in the tier).
        let offloads = matches!(spec.strategy, kvbench_workloads::Strategy::Offload(_));
        if record.kv_bytes_allocated != record.kv_bytes_predicted && !offloads {
            notes.push(Note::LayoutMismatch {
                workload: crate::matrix::describe(spec),
                allocated: record.kv_bytes_allocated,
                predicted: record.kv_bytes_predicted,
            });
        }
        let status = Status::timed(&record);
        Some(Outcome {
            samples: timed.samples,
            ..finish(record, status, String::new(), notes)
        })
    }

    /// Warm up, then time `repetitions` full runs; clocks are read only after `synchronize`.
    fn time(&self, w: &mut dyn Workload) -> Result<Timed, Stop> {
        let gen = w.spec().gen;
        for _ in 0..self.timing.warmup {
            w.reset()?;
            w.prefill()?;
            for _ in 0..gen {
                self.check_stop()?;
                w.decode_step()?;
            }
            w.synchronize()?;
        }
        let mut samples = Samples::default();
        let (mut bytes_read, mut decode_flops, mut decode_s) = (0u64, 0f64, 0f64);
        for _ in 0..self.timing.repetitions.max(1) {
            self.check_stop()?;
            w.reset()?;
            w.synchronize()?;
            let t = Instant::now();
            w.prefill()?;
            w.synchronize()?;
            samples.ttft_ms.push(t.elapsed().as_secs_f64() * 1e3);
            for _ in 0..gen {
                self.check_stop()?;
                let t = Instant::now();
                w.decode_step()?;
                w.synchronize()?;
                let dt = t.elapsed().as_secs_f64();
                samples.itl_ms.push(dt * 1e3);
                decode_s += dt;
                bytes_read += w.kv_bytes_read_last_step();
                decode_flops += w.decode_flops_last_step();
            }
        }
        Ok(Timed {
            ttft: Summary::of(&samples.ttft_ms),
            itl: Summary::of(&samples.itl_ms),
            samples,
            bytes_read,
            decode_flops,
            decode_s,
        })
    }

    fn check_stop(&self) -> Result<(), Stop> {
        if self.stop.load(Ordering::Relaxed) {
            Err(Stop::Interrupted)
        } else {
            Ok(())
        }
    }

    /// TTFT, ITL percentiles, TPOT, tokens/s and achieved rates against the limits.
    fn fill_timing(&self, r: &mut Record, t: &Timed, spec: &WorkloadSpec) {
        r.ttft_ms = t.ttft.median;
        r.ttft_mad_ms = t.ttft.mad;
        r.itl_p50_ms = t.itl.p50;
        r.itl_p90_ms = t.itl.p90;
        r.itl_p99_ms = t.itl.p99;
        r.itl_mad_ms = t.itl.mad;
        r.tpot_ms = t.itl.mean;
        r.ttft_samples = t.ttft.count as u32;
        r.itl_samples = t.itl.count as u32;
        r.outliers = (t.ttft.outliers + t.itl.outliers) as u32;
        r.tokens_per_s = per_second(spec.batch as f64, t.itl.mean);
        r.prefill_tokens_per_s = per_second(spec.batch as f64 * spec.prompt as f64, t.ttft.median);
        r.achieved_gbps = if t.decode_s > 0.0 {
            t.bytes_read as f64 / t.decode_s / 1e9
        } else {
            0.0
        };
        r.decode_gflops = if t.decode_s > 0.0 {
            t.decode_flops / t.decode_s / 1e9
        } else {
            0.0
        };
        r.achieved_gflops = if t.ttft.median > 0.0 {
            r.prefill_flops / (t.ttft.median / 1e3) / 1e9
        } else {
            0.0
        };
        let limits = self.limits.as_ref().and_then(|l| {
            l.calibration
                .limits_for(spec.backend, self.timing.threads)
                .map(|lim| (l.source.clone(), lim))
        });
        if let Some((source, (gbps, gflops))) = limits {
            r.calibration = source;
            r.limit_gbps = gbps;
            r.limit_gflops = gflops;
            r.pct_of_limit = percent(r.achieved_gbps, r.limit_gbps);
            r.prefill_pct_of_limit = percent(r.achieved_gflops, r.limit_gflops);
            r.decode_pct_of_limit = percent(r.decode_gflops, r.limit_gflops);
            let llc = self.limits.as_ref().map_or(0, |l| l.calibration.llc_bytes);
            crate::flags::apply(r, llc, spec.backend == kvbench_workloads::Backend::Cpu);
        }
    }

    /// The identity and workload-key columns of a row.
    fn base_record(&self, sweep_index: usize, spec: &WorkloadSpec) -> Record {
        let e = &self.env;
        let s = &spec.shape;
        let head_dim = s.head_dim;
        Record {
            schema_version: SCHEMA_VERSION,
            kvbench_version: e.kvbench_version.clone(),
            git_commit: e.git_commit.clone(),
            timestamp: env::timestamp_now(),
            host: e.host.clone(),
            cpu: e.cpu.clone(),
            cores: e.cores,
            mem_bytes: e.mem_bytes,
            os: e.os.clone(),
            gpu: match spec.backend {
                kvbench_workloads::Backend::Cuda => e.gpu.clone(),
                kvbench_workloads::Backend::Cpu => String::new(),
            },
            backend: backend_name(spec.backend).into(),
            threads: self.timing.threads,
            workload: kind_name(spec.kind).into(),
            model: s.name.clone(),
            layers: s.layers,
            q_heads: s.q_heads,
            kv_heads: s.kv_heads,
            head_dim,
            hidden: s.hidden,
            intermediate: s.intermediate,
            strategy: strategy_name(spec.strategy),
            k_dtype: spec.k_dtype.to_string(),
            v_dtype: spec.v_dtype.to_string(),
            cache_dtype: dtype_pair_label(spec),
            // Until built: the workload says whether it fills (`--prefill fill`).
            prefill: "compute".into(),
            bits_per_element: (spec.k_dtype.bits_per_element(head_dim)
                + spec.v_dtype.bits_per_element(head_dim))
                / 2.0,
            batch: spec.batch,
            prompt: spec.prompt,
            gen: spec.gen,
            block_size: if is_paged(spec.strategy) {
                spec.block_size
            } else {
                0
            },
            shared_prefix: spec.shared_prefix,
            window: spec.window.unwrap_or(0),
            repetitions: self.timing.repetitions,
            warmup: self.timing.warmup,
            mlp: spec.mlp,
            residual: spec.k_dtype.residual.max(spec.v_dtype.residual),
            seed: spec.seed,
            shard: self.shard.map(|s| s.to_string()).unwrap_or_default(),
            sweep_index: sweep_index as u32,
            ..Record::default()
        }
    }
}

/// Label of a spec's dtypes as one string (`f16`, `kivi4/r128`, `k=int8,v=f16`).
pub fn dtype_pair_label(spec: &WorkloadSpec) -> String {
    KvDtypes {
        k: spec.k_dtype,
        v: spec.v_dtype,
    }
    .label()
}

struct Timed {
    ttft: Summary,
    itl: Summary,
    samples: Samples,
    bytes_read: u64,
    /// Attention FLOPs of the timed decode steps.
    decode_flops: f64,
    decode_s: f64,
}

fn finish(mut record: Record, st: Status, detail: String, notes: Vec<Note>) -> Outcome {
    record.status = st;
    record.detail = detail;
    Outcome {
        record,
        samples: Samples::default(),
        notes,
    }
}

/// `count` per second given milliseconds; 0 when nothing was timed.
fn per_second(count: f64, ms: f64) -> f64 {
    if ms > 0.0 {
        count / (ms / 1e3)
    } else {
        0.0
    }
}

fn percent(achieved: f64, limit: f64) -> f64 {
    if limit > 0.0 {
        100.0 * achieved / limit
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{csv::read_records, ExportManager, Format, Target};
    use crate::session::run_sweep;
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
    use kvbench_workloads::{
        Backend, MemoryUse, OffloadConfig, Strategy, Verification, WorkloadKind,
    };
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;
    use std::time::Duration;

    /// Calls the runner made, shared between a fake workload and its test.
    #[derive(Default)]
    struct Calls {
        verify: AtomicU32,
        /// Units of verification work done (see `Fake::ctrl_c_in_verify`).
        verify_units: AtomicU32,
        prefill: AtomicU32,
        decode: AtomicU32,
        reset: AtomicU32,
    }

    /// A workload that sleeps a fixed time per phase and reports fixed bytes and flops.
    struct Fake {
        spec: WorkloadSpec,
        calls: Arc<Calls>,
        pass: bool,
        step: Duration,
        /// Set the stop flag after this many decode calls (simulated Ctrl-C).
        stop_after: Option<(u32, &'static AtomicBool)>,
        /// Set the stop flag at the start of the verification, which then does up to
        /// `VERIFY_UNITS` units of work, checking the interrupt it watches before each.
        ctrl_c_in_verify: Option<&'static AtomicBool>,
        interrupt: Interrupt,
    }

    const VERIFY_UNITS: u32 = 1000;

    const STEP_BYTES: u64 = 3_000_000;
    const FLOPS: f64 = 5e6;
    const STEP_FLOPS: f64 = 4e7;

    impl Workload for Fake {
        fn spec(&self) -> &WorkloadSpec {
            &self.spec
        }
        fn watch(&mut self, interrupt: Interrupt) {
            self.interrupt = interrupt;
        }
        fn verify(&mut self) -> Result<Verification, WorkloadError> {
            self.calls.verify.fetch_add(1, Ordering::SeqCst);
            if let Some(flag) = self.ctrl_c_in_verify {
                flag.store(true, Ordering::SeqCst);
                for _ in 0..VERIFY_UNITS {
                    self.interrupt.check()?;
                    self.calls.verify_units.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(Verification {
                passed: self.pass,
                rel_error: if self.pass { 1e-7 } else { 0.5 },
                cosine: 0.99,
                bound: 1e-5,
                detail: String::new(),
            })
        }
        fn reset(&mut self) -> Result<(), WorkloadError> {
            self.calls.reset.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        /// Paged rows have something to choose; says whether it came before the verification.
        fn tune(&mut self) -> Result<Option<String>, WorkloadError> {
            let verified = self.calls.verify.load(Ordering::SeqCst);
            Ok((self.spec.strategy == Strategy::Paged)
                .then(|| format!("chose a tile with {verified} verifications done")))
        }
        fn prefill(&mut self) -> Result<(), WorkloadError> {
            self.calls.prefill.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(2 * self.step);
            Ok(())
        }
        fn decode_step(&mut self) -> Result<(), WorkloadError> {
            let n = self.calls.decode.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some((after, flag)) = self.stop_after {
                if n >= after {
                    flag.store(true, Ordering::SeqCst);
                }
            }
            std::thread::sleep(self.step);
            Ok(())
        }
        fn memory(&self) -> MemoryUse {
            MemoryUse {
                kv_bytes_used: 1000,
                kv_bytes_allocated: predicted_kv_bytes(&self.spec).unwrap(),
            }
        }
        fn kv_bytes_read_last_step(&self) -> u64 {
            STEP_BYTES
        }
        fn prefill_flops(&self) -> f64 {
            FLOPS
        }
        fn decode_flops_last_step(&self) -> f64 {
            STEP_FLOPS
        }
    }

    fn spec(strategy: Strategy, prompt: u32) -> WorkloadSpec {
        WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cpu,
            shape: ModelShape::uniform("tiny", 2, 4, 2, 16, 64, 128),
            strategy,
            k_dtype: CacheDtype::new(DtypeKind::F16),
            v_dtype: CacheDtype::new(DtypeKind::F16),
            batch: 4,
            prompt,
            gen: 5,
            block_size: 16,
            shared_prefix: 0,
            window: None,
            mlp: false,
            seed: 7,
            offload: OffloadConfig::default(),
        }
    }

    fn calibration() -> Calibration {
        Calibration {
            host: "h".into(),
            cpu: "c".into(),
            cpu_flags: vec![],
            cores: 2,
            threads: 2,
            timestamp: String::new(),
            kvbench_version: String::new(),
            method: "full".into(),
            llc_bytes: 0,
            buffer_bytes: 0,
            read_gbps_1t: 10.0,
            read_gbps: 20.0,
            copy_gbps: 15.0,
            gemm_gflops_1t: 50.0,
            gemm_gflops: 100.0,
            gemm_n: 0,
            fingerprint: Default::default(),
            read_methods: vec![],
            gemm_methods: vec![],
            tile_prefetch: None,
            fma_peak: None,
            scaling: None,
            gpu: None,
        }
    }

    /// When the fake's simulated Ctrl-C comes.
    #[derive(Clone, Copy, PartialEq)]
    enum CtrlC {
        Never,
        /// After this many decode calls.
        AfterDecodes(u32),
        /// At the start of the first verification.
        InVerify,
    }

    fn with_runner<T>(
        pass: bool,
        available: u64,
        ctrl_c: CtrlC,
        f: impl FnOnce(&Runner, &Arc<Calls>) -> T,
    ) -> T {
        // Leaked so the fake can hold a 'static reference to it; a few bytes per test.
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let calls = Arc::new(Calls::default());
        let c = calls.clone();
        let build = move |s: &WorkloadSpec| -> Result<Box<dyn Workload>, WorkloadError> {
            Ok(Box::new(Fake {
                spec: s.clone(),
                calls: c.clone(),
                pass,
                step: Duration::from_millis(2),
                stop_after: match ctrl_c {
                    CtrlC::AfterDecodes(n) => Some((n, stop)),
                    _ => None,
                },
                ctrl_c_in_verify: (ctrl_c == CtrlC::InVerify).then_some(stop),
                interrupt: Interrupt::default(),
            }))
        };
        let avail = move || available;
        let runner = Runner {
            timing: TimingOptions {
                warmup: 1,
                repetitions: 3,
                threads: 2,
            },
            env: Environment::capture(),
            limits: Some(Limits {
                calibration: calibration(),
                source: "test.json".into(),
            }),
            shard: None,
            build: &build,
            available_memory: &avail,
            stop,
        };
        f(&runner, &calls)
    }

    #[test]
    fn timing_counts_and_derived_rates() {
        let out = with_runner(true, u64::MAX, CtrlC::Never, |r, calls| {
            let out = r.run_one(11, &spec(Strategy::Paged, 20)).unwrap();
            // 1 verify; 1 warm-up + 3 timed runs, each a prefill and 5 decode steps.
            assert_eq!(calls.verify.load(Ordering::SeqCst), 1);
            assert_eq!(calls.prefill.load(Ordering::SeqCst), 4);
            assert_eq!(calls.decode.load(Ordering::SeqCst), 20);
            assert_eq!(calls.reset.load(Ordering::SeqCst), 4);
            out
        });
        let rec = &out.record;
        assert_eq!(rec.status, "ok");
        assert!(rec.verified);
        assert_eq!(out.samples.ttft_ms.len(), 3);
        assert_eq!(out.samples.itl_ms.len(), 15);
        assert_eq!((rec.ttft_samples, rec.itl_samples), (3, 15));
        // Sleeps bound the samples from below.
        assert!(out.samples.itl_ms.iter().all(|&t| t >= 2.0));
        assert!(rec.ttft_ms >= 4.0);
        // TPOT is the mean ITL; tokens/s = batch / TPOT.
        let mean = out.samples.itl_ms.iter().sum::<f64>() / 15.0;
        assert!((rec.tpot_ms - mean).abs() < 1e-9);
        assert!((rec.tokens_per_s - 4.0 / (mean / 1e3)).abs() < 1e-6);
        // Achieved bandwidth = bytes read / decode time, against the 2-thread limit.
        let gbps = STEP_BYTES as f64 / (mean / 1e3) / 1e9;
        assert!((rec.achieved_gbps - gbps).abs() < 1e-9 * gbps.max(1.0));
        assert_eq!(rec.limit_gbps, 20.0);
        assert!((rec.pct_of_limit - 100.0 * gbps / 20.0).abs() < 1e-6);
        let gflops = FLOPS / (rec.ttft_ms / 1e3) / 1e9;
        assert!((rec.achieved_gflops - gflops).abs() < 1e-9);
        assert_eq!(rec.limit_gflops, 100.0);
        // The decode steps' FLOPs over the same time, against the same GEMM limit.
        let decode_gflops = STEP_FLOPS / (mean / 1e3) / 1e9;
        assert!((rec.decode_gflops - decode_gflops).abs() < 1e-9);
        assert!((rec.decode_pct_of_limit - decode_gflops).abs() < 1e-6);
        assert_eq!(rec.calibration, "test.json");
        // Prediction from the planner, equal to what the fake allocated.
        // paged block 16: 25 tokens → 2 blocks; 4 seqs × 2 layers × 2 blocks × 2 heads × 32 tok·B
        assert_eq!(rec.kv_bytes_predicted, 4 * 2 * 2 * (2 * 16 * 16 * 2) * 2);
        assert_eq!(rec.kv_bytes_allocated, rec.kv_bytes_predicted);
        assert_eq!(rec.block_size, 16);
        assert_eq!(rec.sweep_index, 11);
        assert_eq!(rec.bits_per_element, 16.0);
        assert_eq!(rec.prefill, "compute");
        assert!(rec.peak_rss_bytes > 0);
        // The test calibration knows no cache size: nothing to flag by it; the fake's few
        // bytes per step stay far under the 20 GB/s limit.
        assert_eq!(rec.working_set_bytes, STEP_BYTES);
        assert!(!rec.cache_resident && !rec.limit_exceeded && rec.limit_note.is_empty());
    }

    #[test]
    fn what_a_workload_tuned_is_a_note_and_comes_before_its_verification() {
        let (paged, contiguous) = with_runner(true, u64::MAX, CtrlC::Never, |r, _| {
            (
                r.run_one(0, &spec(Strategy::Paged, 8)).unwrap(),
                r.run_one(1, &spec(Strategy::Contiguous, 8)).unwrap(),
            )
        });
        let said: Vec<String> = paged.notes.iter().map(|n| n.to_string()).collect();
        assert!(
            said.iter()
                .any(|n| n.ends_with(": chose a tile with 0 verifications done")),
            "{said:?}"
        );
        assert!(!contiguous
            .notes
            .iter()
            .any(|n| matches!(n, Note::Tuned { .. })));
    }

    #[test]
    fn a_step_that_fits_in_the_cache_is_flagged() {
        let rec = with_runner(true, u64::MAX, CtrlC::Never, |r, _| {
            let mut r2 = Runner {
                timing: r.timing.clone(),
                env: r.env.clone(),
                limits: r.limits.clone(),
                shard: None,
                build: r.build,
                available_memory: r.available_memory,
                stop: r.stop,
            };
            r2.limits.as_mut().unwrap().calibration.llc_bytes = 32 << 20;
            r2.run_one(0, &spec(Strategy::Contiguous, 8))
                .unwrap()
                .record
        });
        assert!(rec.cache_resident && rec.llc_bytes == 32 << 20, "{rec:?}");
        assert!(rec.limit_note.contains("32 MiB last-level cache"));
    }

    #[test]
    fn cuda_rows_use_the_gpu_limits_or_none() {
        let mut cuda = spec(Strategy::Contiguous, 8);
        cuda.backend = Backend::Cuda;
        let (without, with) = with_runner(true, u64::MAX, CtrlC::Never, |r, _| {
            let without = r.run_one(0, &cuda).unwrap().record;
            let mut r2 = Runner {
                timing: r.timing.clone(),
                env: Environment {
                    gpu: "Test GPU".into(),
                    ..r.env.clone()
                },
                limits: r.limits.clone(),
                shard: None,
                build: r.build,
                available_memory: r.available_memory,
                stop: r.stop,
            };
            if let Some(l) = r2.limits.as_mut() {
                l.calibration.gpu = Some(crate::calibrate::GpuLimits {
                    device: "Test GPU".into(),
                    copy_gbps: 3000.0,
                    gemm_f32_gflops: 50_000.0,
                    gemm_f16_gflops: 500_000.0,
                });
            }
            (without, r2.run_one(0, &cuda).unwrap().record)
        });
        // A CPU-only calibration says nothing about a GPU: no limit, no percentage.
        assert_eq!((without.limit_gbps, without.pct_of_limit), (0.0, 0.0));
        assert_eq!(without.gpu, "");
        assert_eq!(with.limit_gbps, 3000.0);
        assert_eq!(with.limit_gflops, 50_000.0);
        assert!((with.pct_of_limit - 100.0 * with.achieved_gbps / 3000.0).abs() < 1e-9);
        assert_eq!(with.gpu, "Test GPU");
        assert_eq!(with.backend, "cuda");
    }

    #[test]
    fn failed_verification_is_recorded_and_not_timed() {
        let out = with_runner(false, u64::MAX, CtrlC::Never, |r, calls| {
            let out = r.run_one(0, &spec(Strategy::Contiguous, 8)).unwrap();
            assert_eq!(calls.prefill.load(Ordering::SeqCst), 0);
            assert_eq!(calls.decode.load(Ordering::SeqCst), 0);
            out
        });
        assert_eq!(out.record.status, "failed");
        assert!(!out.record.verified);
        assert_eq!(out.record.rel_error, 0.5);
        assert!(
            out.record.detail.contains("exceeds bound"),
            "{}",
            out.record.detail
        );
        assert_eq!(out.record.tokens_per_s, 0.0);
        assert!(out.samples.itl_ms.is_empty());
        assert_eq!(out.record.block_size, 0, "block size only applies to paged");
    }

    #[test]
    fn a_workload_that_cannot_fit_is_refused_before_building() {
        let out = with_runner(true, 1000, CtrlC::Never, |r, calls| {
            let out = r.run_one(0, &spec(Strategy::Contiguous, 8)).unwrap();
            assert_eq!(calls.verify.load(Ordering::SeqCst), 0);
            out
        });
        assert_eq!(out.record.status, "refused");
        assert!(
            out.record.detail.contains("available"),
            "{}",
            out.record.detail
        );
        assert!(out.record.kv_bytes_predicted > 0);
    }

    #[test]
    fn interrupt_mid_sweep_keeps_finished_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.csv");
        // 3 workloads × (1 warm-up + 3 reps) × 5 steps = 20 decode calls each; stop in the second.
        let specs = vec![
            spec(Strategy::Contiguous, 8),
            spec(Strategy::Paged, 8),
            spec(Strategy::Concat, 8),
        ];
        let result = with_runner(true, u64::MAX, CtrlC::AfterDecodes(27), |r, _| {
            let mut ex =
                ExportManager::new(vec![(Format::Csv, Target::File(path.clone()))]).unwrap();
            run_sweep(r, &specs, None, &mut ex, false).unwrap()
        });
        assert!(result.interrupted);
        assert_eq!(result.records.len(), 1);
        assert_eq!(result.not_run, 2);
        let back = read_records(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].strategy, "contiguous");
        assert_eq!(back[0].status, "ok");
    }

    #[test]
    fn ctrl_c_during_a_verification_stops_it_at_its_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.csv");
        let specs = vec![spec(Strategy::Contiguous, 8), spec(Strategy::Paged, 8)];
        let (result, calls) = with_runner(true, u64::MAX, CtrlC::InVerify, |r, calls| {
            let mut ex =
                ExportManager::new(vec![(Format::Csv, Target::File(path.clone()))]).unwrap();
            (
                run_sweep(r, &specs, None, &mut ex, false).unwrap(),
                calls.clone(),
            )
        });
        // The verification saw the interrupt before its first unit of work, nothing was
        // timed after it, and the row it was in is not written.
        assert_eq!(calls.verify_units.load(Ordering::SeqCst), 0);
        assert_eq!(calls.verify.load(Ordering::SeqCst), 1);
        assert_eq!(calls.prefill.load(Ordering::SeqCst), 0);
        assert_eq!(calls.decode.load(Ordering::SeqCst), 0);
        assert!(result.interrupted);
        assert!(result.records.is_empty());
        assert_eq!(result.not_run, 2);
    }

    #[test]
    fn shards_run_their_slice_only() {
        let specs: Vec<_> = (1..=5).map(|p| spec(Strategy::Contiguous, p)).collect();
        let shard: Shard = "2/2".parse().unwrap();
        let result = with_runner(true, u64::MAX, CtrlC::Never, |r, _| {
            run_sweep(
                r,
                &specs,
                Some(shard),
                &mut ExportManager::new(vec![]).unwrap(),
                false,
            )
            .unwrap()
        });
        // 5 workloads in 2 shards: positions 0..2 and 2..5.
        let idx: Vec<u32> = result.records.iter().map(|r| r.sweep_index).collect();
        assert_eq!(idx, [2, 3, 4]);
        let prompts: Vec<u32> = result.records.iter().map(|r| r.prompt).collect();
        assert_eq!(prompts, [3, 4, 5]);
    }
}
