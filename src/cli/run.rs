//! `kvbench run`: parse the sweep, wire the runner, exporters, calibration and Ctrl-C.

use super::out;
use anyhow::{bail, Context, Result};
use clap::Args;
use kvbench_bench::calibrate;
use kvbench_bench::env::{self, Environment};
use kvbench_bench::export::{ExportManager, Format, Target};
use kvbench_bench::matrix::Shard;
use kvbench_bench::options::{self, defaults};
use kvbench_bench::run_flags::RunFlags;
use kvbench_bench::runner::{Runner, TimingOptions};
use kvbench_bench::{estimate, session, sizing, suite, Status};
use kvbench_workloads::attention::PrefillMode;
use kvbench_workloads::{Backend, BuildOptions, Strategy, WorkloadSpec};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

const AFTER_HELP: &str = "\
Every axis takes a comma list; the run is their cross product (as llama-bench).
With no sweep flags, `kvbench run` runs the default suite (small shapes, under two minutes
on two cores): cache vs none, paged vs contiguous, quantized memory vs error, GQA vs MHA.

Each workload is verified against an f64 reference first (failures are recorded with
status `failed` and not timed), warmed up, then timed: TTFT = prefill, every decode step an
ITL sample, TPOT = mean ITL, tokens/s = batch / TPOT. A workload the planner says would not
fit in available memory is refused (status `refused`) with its figure.

Examples:
  kvbench run
  kvbench run --model llama3-8b --layers 2 --strategy contiguous,paged --cache-dtype f16,int8 \\
      --prompt 512,2048 --gen 64 --batch 1,8 -o results/runs/llama.csv --format table,json,md
  kvbench run --workload attention --q-heads 32 --kv-heads 32,8,1 --head-dim 128 \\
      --prompt 4096 --gen 32 --prefill fill
  kvbench run --shard 2/4   # the second of four disjoint slices (merge with `kvbench report`)

Exit status: 0 when every row is ok or refused, 1 when a workload failed verification or
could not run, 130 when interrupted (Ctrl-C; the CSV keeps every finished row).";

/// Set by Ctrl-C (the handler is installed by `main`); the runner stops at the next decode step.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Run verified workloads and time them. Every axis takes a comma list and the run is their
/// cross product (as llama-bench). With no sweep flags at all, runs the default suite (small
/// shapes, under two minutes on two cores): cache vs none, paged vs contiguous, quantized
/// dtypes' memory vs error, GQA vs MHA.
#[derive(Debug, Args)]
pub struct RunArgs {
    // Boxed: the options are large and live in an enum of subcommands.
    #[command(flatten)]
    pub options: Box<RunOptions>,
}

/// Every flag of `kvbench run`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct RunOptions {
    /// Registry models (forgiving names, see `kvbench models`), e.g. llama3-8b.
    #[arg(long, value_delimiter = ',', value_name = "NAMES", conflicts_with_all = ["q_heads", "kv_heads", "head_dim", "hidden"])]
    pub model: Option<Vec<String>>,
    /// Hugging Face config.json files to take shapes from (with or instead of --model).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PATHS",
        conflicts_with = "q_heads"
    )]
    pub config: Option<Vec<PathBuf>>,
    /// Layers of each shape, a comma list (a registry model keeps its first N)
    /// [default: all of a registry model's layers, 1 for an explicit shape; attention rows
    /// then grow until a decode step reads more than 4 × the last-level cache].
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub layers: Option<Vec<u32>>,
    /// Explicit shape: query heads (with --kv-heads, --head-dim).
    #[arg(long, value_delimiter = ',', value_name = "N,..", requires_all = ["kv_heads", "head_dim"])]
    pub q_heads: Option<Vec<u32>>,
    /// Explicit shape: KV heads (< q-heads for GQA, 1 for MQA).
    #[arg(long, value_delimiter = ',', value_name = "N,..", requires = "q_heads")]
    pub kv_heads: Option<Vec<u32>>,
    /// Explicit shape: channels per head.
    #[arg(long, value_delimiter = ',', value_name = "N,..", requires = "q_heads")]
    pub head_dim: Option<Vec<u32>>,
    /// Explicit shape: model width [default: q-heads × head-dim, as Llama].
    #[arg(long, value_delimiter = ',', value_name = "N,..", requires = "q_heads")]
    pub hidden: Option<Vec<u32>>,
    /// Explicit shape: MLP inner width [default: 3.5 × hidden rounded to 64].
    #[arg(long, value_name = "N", requires = "q_heads")]
    pub intermediate: Option<u32>,
    /// Workload level: decoder (whole synthetic decoder) or attention (cache write + attention)
    /// [default: decoder; attention when every strategy is offload, which runs at attention
    /// level].
    #[arg(long, value_delimiter = ',', value_name = "KINDS")]
    pub workload: Option<Vec<String>>,
    /// Cache strategies: none, concat, contiguous, paged, offload (with --tier).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub strategy: Option<Vec<String>>,
    /// Cache dtypes for K and V: f32, f16, bf16, fp8-e4m3, fp8-e5m2, int8, int4, nf4, int2,
    /// q8_0, q4_0, kivi2, kivi4 (suffix /gN for group size, kivi /rN for its residual).
    #[arg(long, value_delimiter = ',', value_name = "DTYPES")]
    pub cache_dtype: Option<Vec<String>>,
    /// Key dtypes, when keys and values differ (crossed with --v-dtype).
    #[arg(long, value_delimiter = ',', value_name = "DTYPES")]
    pub k_dtype: Option<Vec<String>>,
    /// Value dtypes, when keys and values differ (crossed with --k-dtype).
    #[arg(long, value_delimiter = ',', value_name = "DTYPES")]
    pub v_dtype: Option<Vec<String>>,
    /// Prompt tokens per sequence (prefill; its time is TTFT) [default: 512, or the
    /// --shared-prefix length when that is longer].
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub prompt: Option<Vec<u32>>,
    /// Generated tokens per sequence (decode steps; each an ITL sample) [default: 128].
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub gen: Option<Vec<u32>>,
    /// Sequences per batch [default: 1].
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub batch: Option<Vec<u32>>,
    /// Tokens per block for paged/offload layouts [default: 16].
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub block_size: Option<Vec<u32>>,
    /// Leading prompt tokens shared by every sequence of a batch (paged prefix sharing).
    #[arg(long, value_name = "N")]
    pub shared_prefix: Option<u32>,
    /// Sliding window for every layer (ring buffer / blocks freed as they slide out)
    /// [default: the model's own].
    #[arg(long, value_name = "N")]
    pub window: Option<u32>,
    /// Keep the most recent N tokens in f16 for quantized dtypes (KIVI residual).
    #[arg(long, value_name = "N")]
    pub residual: Option<u32>,
    /// Skip the MLP in decoder workloads.
    #[arg(long)]
    pub no_mlp: bool,
    /// Where workloads run: cpu, cuda.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub backend: Option<Vec<String>>,
    /// Offload tiers for --strategy offload: host, disk, redis.
    #[arg(long, value_delimiter = ',', value_name = "TIERS")]
    pub tier: Option<Vec<String>>,
    /// Directory for the disk tier's block file (on a real disk, not tmpfs, for honest reads).
    #[arg(long, value_name = "DIR", default_value = "results/runs/tier")]
    pub tier_dir: Option<PathBuf>,
    /// Redis (or Valkey) server for the redis tier.
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: Option<String>,
    /// Threads of the one rayon pool every workload runs in [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Timed runs per workload (each: one TTFT sample, --gen ITL samples); at least 1.
    #[arg(short = 'r', long, default_value_t = defaults::REPETITIONS, value_name = "N")]
    pub repetitions: u32,
    /// Untimed runs per workload before timing.
    #[arg(long, default_value_t = defaults::WARMUP, value_name = "N")]
    pub warmup: u32,
    /// Refuse a sweep whose cross product has more rows than this.
    #[arg(long, default_value_t = defaults::MAX_ROWS, value_name = "N")]
    pub max_rows: u64,
    /// Seed of weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CSV file to write (rewritten whole after every finished row; `-` prints it at the end)
    /// [default: results/runs/<time>-<host>.csv].
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Extra outputs: table (stdout), json (raw samples, next to the CSV), jsonl (one result a
    /// line, next to the CSV), md (next to the CSV); csv and none add nothing.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "table",
        value_name = "FORMATS"
    )]
    pub format: Vec<String>,
    /// Run only the i-th of n disjoint slices of the sweep (1 <= i <= n), e.g. 2/4.
    #[arg(long, value_name = "i/n")]
    pub shard: Option<Shard>,
    /// Prefill of attention workloads: compute (causal attention over the prompt, timed as
    /// TTFT) or fill (only write the prompt's K/V rows, to reach long contexts quickly)
    /// [default: compute; fill for the default suite].
    #[arg(long, value_name = "MODE")]
    pub prefill: Option<String>,
    /// Keep attention rows at the layers given, even when a decode step then fits in the
    /// last-level cache (a cache-resident measurement; such rows are flagged `cache_resident`).
    #[arg(long)]
    pub cache_resident: bool,
    /// Refuse a run whose estimated duration exceeds this (fills, references and step
    /// arithmetic timed on a small sample of each format first; memory at the calibrated
    /// limits).
    #[arg(
        long,
        default_value_t = 30.0,
        value_name = "MINUTES",
        allow_negative_numbers = true
    )]
    pub max_minutes: f64,
    /// Calibration file with this machine's limits
    /// [default: results/calibration-<host>.json if present, else a short calibration now].
    #[arg(long, value_name = "PATH")]
    pub calibration: Option<PathBuf>,
}

/// The outputs asked for: the CSV, then each `--format`, with where each goes. Nothing is
/// written here; the export manager checks every target first.
fn outputs(names: &[String], csv: &Path) -> Result<Vec<(Format, Target)>> {
    let csv_target = Target::parse(csv);
    let mut outputs = vec![(Format::Csv, csv_target.clone())];
    for name in names {
        if matches!(name.trim().to_ascii_lowercase().as_str(), "none" | "csv") {
            continue;
        }
        let format = Format::parse(name).with_context(|| {
            format!(
                "--format {name:?} is not known; valid: {}, none",
                Format::NAMES
            )
        })?;
        let target = match (format, &csv_target) {
            (Format::Table, _) => Target::Stdout,
            (_, Target::File(p)) => Target::File(p.with_extension(format.extension())),
            (_, Target::Stdout) => bail!(
                "--format {name}: with -o - the CSV goes to stdout, so {name} has no file to \
                 go next to; give -o PATH"
            ),
        };
        // With the CSV on stdout, the table would be mixed into it.
        let table_into_csv = format == Format::Table && csv_target == Target::Stdout;
        let again = outputs.iter().any(|(f, _)| *f == format);
        if !(table_into_csv || again) {
            outputs.push((format, target));
        }
    }
    Ok(outputs)
}

impl RunOptions {
    /// The sweep flags, as given, for the one conversion in `kvbench_bench::run_flags`.
    fn flags(&self) -> RunFlags {
        RunFlags {
            model: self.model.clone(),
            config: self.config.clone(),
            layers: self.layers.clone(),
            q_heads: self.q_heads.clone(),
            kv_heads: self.kv_heads.clone(),
            head_dim: self.head_dim.clone(),
            hidden: self.hidden.clone(),
            intermediate: self.intermediate,
            workload: self.workload.clone(),
            strategy: self.strategy.clone(),
            cache_dtype: self.cache_dtype.clone(),
            k_dtype: self.k_dtype.clone(),
            v_dtype: self.v_dtype.clone(),
            prompt: self.prompt.clone(),
            gen: self.gen.clone(),
            batch: self.batch.clone(),
            block_size: self.block_size.clone(),
            shared_prefix: self.shared_prefix,
            window: self.window,
            residual: self.residual,
            no_mlp: self.no_mlp,
            backend: self.backend.clone(),
            tier: self.tier.clone(),
            tier_dir: self.tier_dir.clone(),
            redis_url: self.redis_url.clone(),
            seed: self.seed,
            max_rows: self.max_rows,
            prefill: self.prefill.clone(),
        }
    }
}

fn default_output(shard: Option<Shard>) -> PathBuf {
    let mut name = format!("{}-{}", env::file_stamp(env::unix_now()), env::host_name());
    if let Some(s) = shard {
        name.push_str(&format!("-shard{}of{}", s.index, s.count));
    }
    PathBuf::from("results/runs").join(name + ".csv")
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let args = *args.options;
    // Every option is checked before anything runs or is written.
    options::positive(
        "--repetitions",
        args.repetitions,
        "time each workload at least once (-r 1)",
    )?;
    let threads = options::threads(args.threads, options::available_cores())?;
    let csv_path = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(args.shard));
    let mut exports = ExportManager::new(outputs(&args.format, &csv_path)?)?;
    let flags = args.flags();
    let sweep = flags.sweep()?;
    // A sweep that asks for the GPU finds it first: without one, one line and nothing
    // written, rather than a file of error rows.
    let gpu = match sweep.specs.iter().any(|s| s.backend == Backend::Cuda) {
        true => Some(kvbench_workloads::cuda::device_info()?.label()),
        false => None,
    };
    for s in &sweep.skipped {
        out::say!("note: skipped {}: {}", s.workload, s.why);
    }
    let prefill = match &args.prefill {
        Some(name) => estimate::parse_prefill(name).map_err(anyhow::Error::msg)?,
        None if flags.is_default_suite() => suite::PREFILL,
        None => PrefillMode::Attention,
    };
    let max_minutes = estimate::parse_max_minutes(args.max_minutes).map_err(anyhow::Error::msg)?;
    let (limits, notes) = calibrate::limits_for_run(args.calibration.as_deref(), threads)?;
    for n in notes {
        out::say!("note: {n}");
    }
    // The decode kernels prefetch as the calibration measured best on this machine; an
    // attention row past the cache times it on its own steps too (`Workload::tune`).
    if let Some(p) = &limits.calibration.tile_prefetch {
        p.apply();
        if !(p.contiguous.on && p.paged.on) {
            out::say!(
                "note: decode kernels' next-tile prefetch: {} ({})",
                p.describe(),
                limits.source
            );
        }
    }
    // Paged heads are read together only when a step reads past this machine's LLC.
    kvbench_workloads::cpu::set_cache_bytes(limits.calibration.llc_bytes);
    let mut sweep = sweep;
    if args.layers.is_none() && !args.cache_resident {
        let llc = limits.calibration.llc_bytes;
        for n in sizing::grow_attention_rows(&mut sweep.specs, llc, env::available_memory()) {
            out::say!("note: {n}");
        }
    }
    let timing = TimingOptions {
        warmup: args.warmup,
        repetitions: args.repetitions,
        threads: threads as u32,
    };
    let mine: Vec<WorkloadSpec> = match args.shard {
        Some(s) => s.select(&sweep.specs).into_iter().map(|(_, s)| s).collect(),
        None => sweep.specs.clone(),
    };
    kvbench_bench::memory::check_countable(&mine).map_err(anyhow::Error::msg)?;
    let secs = estimate::check_probed(
        &mine,
        prefill,
        &limits.calibration,
        &timing,
        max_minutes,
        env::available_memory(),
    )?;
    out::say!(
        "estimate: about {} for {} rows (fills, references and step arithmetic as timed on a \
         sample of each format here, memory traffic at this machine's limits; --max-minutes \
         {max_minutes})",
        estimate::duration(secs),
        mine.len()
    );

    let build_options = BuildOptions {
        prefill: Some(prefill),
    };
    let build = |spec: &WorkloadSpec| kvbench_workloads::build_with(spec, build_options);
    let mut environment = Environment::capture();
    if let Some(label) = gpu {
        environment.gpu = label;
    }
    let available = env::available_memory;
    let runner = Runner {
        timing,
        env: environment,
        limits: Some(limits),
        shard: args.shard,
        build: &build,
        available_memory: &available,
        stop: &STOP,
    };
    if flags.is_default_suite() {
        let parts: Vec<&str> = suite::default_suite(args.seed)
            .iter()
            .map(|(question, _)| *question)
            .collect();
        out::say!(
            "default suite (give any sweep flag to choose your own): {}",
            parts.join("; ")
        );
    }
    let result = session::run_sweep(
        &runner,
        &sweep.specs,
        args.shard,
        &mut exports,
        std::io::stderr().is_terminal(),
    )?;
    // A closed stdout (`kvbench run … | head`) must not cost the files below.
    out::print_unless_closed(&exports.finish(result.interrupted)?)?;

    // Outliers are counted per row in the `outliers` column; on screen one summary line is
    // enough, while every other note is printed as it is.
    let (outlier_notes, other_notes): (Vec<_>, Vec<_>) =
        result.notes.iter().partition(|n| n.is_outliers());
    for note in other_notes {
        out::say!("note: {note}");
    }
    if !outlier_notes.is_empty() {
        out::say!(
            "note: {} of {} workloads had timing outliers (counted in the CSV's `outliers` column); {}",
            outlier_notes.len(),
            result.records.len(),
            kvbench_bench::stats::OUTLIER_ADVICE
        );
    }
    // The prefix-reuse scenario of this shard's offload workloads (tiers module).
    let scenario =
        kvbench_bench::offload::from_specs(&mine, args.repetitions).filter(|_| !result.interrupted);
    if let (Some(scenario), Target::File(_)) = (scenario, Target::parse(&csv_path)) {
        let rows = kvbench_bench::offload::run_prefix_reuse(&scenario)?;
        out::print_unless_closed(&format!("{}\n", kvbench_bench::offload::render(&rows)))?;
        let path = csv_path.with_extension("prefix-reuse.csv");
        kvbench_bench::offload::write_csv(&rows, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        out::say!("wrote {}", path.display());
    }
    if mine
        .iter()
        .any(|s| s.strategy == Strategy::Offload(kvbench_workloads::Tier::Redis))
    {
        // Content-keyed blocks are shared by later runs on purpose; say how long they stay.
        out::say!(
            "note: the redis tier leaves its blocks in {} under kvbench:blk:* with a TTL of {} s \
             (delete them sooner with redis-cli --scan --pattern 'kvbench:blk:*' | xargs redis-cli del)",
            args.redis_url.as_deref().unwrap_or_default(),
            kvbench_workloads::tier::redis_store::DEFAULT_TTL_S
        );
    }
    for r in result.records.iter().filter(|r| r.status != Status::Ok) {
        out::say!(
            "{}: {} {} {} {}: {}",
            r.status,
            r.model,
            r.workload,
            r.strategy,
            r.k_dtype,
            r.detail
        );
    }
    // An interrupted run with no finished row leaves the previous files as they were.
    let kept = result.interrupted && result.records.is_empty();
    for path in exports.files() {
        match kept {
            true => out::say!("left {} as it was (no row finished)", path.display()),
            false => out::say!("wrote {} ({} rows)", path.display(), result.records.len()),
        }
    }
    if result.interrupted {
        out::say!(
            "interrupted: {} workloads not run; the files keep every finished row",
            result.not_run
        );
        return Ok(ExitCode::from(130));
    }
    let bad = result
        .records
        .iter()
        .filter(|r| r.status.is_failure())
        .count();
    if bad > 0 {
        bail!(
            "{bad} of {} workloads failed verification or could not run; see the status and \
             detail columns of {}",
            result.records.len(),
            csv_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
