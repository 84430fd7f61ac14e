//! `kvbench run`: parse the sweep, wire the runner, exporters, calibration and Ctrl-C.

use anyhow::{bail, Context, Result};
use clap::Args;
use kvbench_bench::axes;
use kvbench_bench::calibrate;
use kvbench_bench::env::{self, Environment};
use kvbench_bench::export::{
    csv::CsvExporter, json::JsonExporter, markdown::MarkdownExporter, table, Exporter,
};
use kvbench_bench::matrix::{Matrix, Shard, Sweep};
use kvbench_bench::record::status;
use kvbench_bench::runner::{Runner, TimingOptions};
use kvbench_bench::{estimate, session, sizing, suite};
use kvbench_planner::dtype::{parse_kv_dtypes, parse_side, KvDtypes};
use kvbench_planner::ModelShape;
use kvbench_workloads::attention::PrefillMode;
use kvbench_workloads::{Backend, BuildOptions, OffloadConfig, Strategy, WorkloadSpec};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Set by Ctrl-C; the runner stops at the next decode step.
static STOP: AtomicBool = AtomicBool::new(false);

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
    /// Timed runs per workload (each: one TTFT sample, --gen ITL samples).
    #[arg(short = 'r', long, default_value_t = 3, value_name = "N")]
    pub repetitions: u32,
    /// Untimed runs per workload before timing.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub warmup: u32,
    /// Seed of weights and inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CSV file to write (always written, row by row)
    /// [default: results/runs/<time>-<host>.csv].
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Extra outputs: table (stdout), json (raw samples, next to the CSV), md (next to the CSV).
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
    /// Refuse a run whose estimated duration (at the calibrated limits) exceeds this.
    #[arg(long, default_value_t = 30.0, value_name = "MINUTES")]
    pub max_minutes: f64,
    /// Calibration file with this machine's limits
    /// [default: results/calibration-<host>.json if present, else a short calibration now].
    #[arg(long, value_name = "PATH")]
    pub calibration: Option<PathBuf>,
}

/// Requested output formats besides the CSV.
#[derive(Debug, Default)]
struct Formats {
    table: bool,
    json: bool,
    md: bool,
}

fn parse_formats(names: &[String]) -> Result<Formats> {
    let mut f = Formats::default();
    for n in names {
        match n.trim().to_ascii_lowercase().as_str() {
            "table" => f.table = true,
            "json" => f.json = true,
            "md" | "markdown" => f.md = true,
            "csv" => {} // always written
            "none" => {}
            other => bail!("--format {other:?} is not known; valid: table, json, md, csv, none"),
        }
    }
    Ok(f)
}

impl RunOptions {
    /// No axis of the sweep was given: run the default suite.
    fn is_default_suite(&self) -> bool {
        self.model.is_none()
            && self.config.is_none()
            && self.q_heads.is_none()
            && self.workload.is_none()
            && self.strategy.is_none()
            && self.cache_dtype.is_none()
            && self.k_dtype.is_none()
            && self.v_dtype.is_none()
            && self.prompt.is_none()
            && self.gen.is_none()
            && self.batch.is_none()
            && self.block_size.is_none()
            && self.shared_prefix.is_none()
            && self.window.is_none()
            && self.residual.is_none()
            && self.backend.is_none()
            && self.tier.is_none()
            && self.layers.is_none()
            && self.prefill.is_none()
            && !self.no_mlp
    }

    fn shapes(&self) -> Result<Vec<ModelShape>> {
        // One entry per --layers value; `None` = each shape's own (1 for an explicit one).
        let layer_list: Vec<Option<u32>> = match &self.layers {
            Some(v) => v.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let mut shapes = Vec::new();
        if let Some(q_heads) = &self.q_heads {
            let (kv, hd) = (
                self.kv_heads.as_deref().unwrap_or_default(),
                self.head_dim.as_deref().unwrap_or_default(),
            );
            for &layers in &layer_list {
                for &q in q_heads {
                    for &k in kv {
                        for &d in hd {
                            // Llama's width is q_heads × head_dim unless given.
                            let hidden = self.hidden.clone().unwrap_or_else(|| vec![q * d]);
                            for h in hidden {
                                // Llama's MLP is about 3.5 × hidden; round to a multiple of 64.
                                let inter =
                                    self.intermediate.unwrap_or(((h * 7 / 2).div_ceil(64)) * 64);
                                let name = format!("q{q}-kv{k}-d{d}-h{h}");
                                shapes.push(ModelShape::uniform(
                                    &name,
                                    layers.unwrap_or(1),
                                    q,
                                    k,
                                    d,
                                    h,
                                    inter,
                                ));
                            }
                        }
                    }
                }
            }
            return Ok(shapes);
        }
        for &layers in &layer_list {
            for name in self.model.iter().flatten() {
                shapes.push(axes::registry_shape(name, layers)?);
            }
            for path in self.config.iter().flatten() {
                shapes.push(axes::config_shape(path, layers)?);
            }
        }
        if shapes.is_empty() {
            for &layers in &layer_list {
                let mut s = suite::mini_shape(2);
                if let Some(n) = layers {
                    axes::cut_layers(&mut s, n)?;
                }
                shapes.push(s);
            }
        }
        Ok(shapes)
    }

    fn dtypes(&self) -> Result<Vec<KvDtypes>> {
        let mut pairs = if self.k_dtype.is_some() || self.v_dtype.is_some() {
            let fallback = self
                .cache_dtype
                .clone()
                .unwrap_or_else(|| vec!["f16".into()]);
            let ks = self.k_dtype.as_ref().unwrap_or(&fallback);
            let vs = self.v_dtype.as_ref().unwrap_or(&fallback);
            let mut pairs = Vec::new();
            for k in ks {
                for v in vs {
                    pairs.push(KvDtypes {
                        k: parse_side(k, true).with_context(|| format!("--k-dtype {k}"))?,
                        v: parse_side(v, false).with_context(|| format!("--v-dtype {v}"))?,
                    });
                }
            }
            pairs
        } else {
            let names = self
                .cache_dtype
                .clone()
                .unwrap_or_else(|| vec!["f16".into()]);
            names
                .iter()
                .map(|n| parse_kv_dtypes(n).with_context(|| format!("--cache-dtype {n}")))
                .collect::<Result<_>>()?
        };
        if let Some(r) = self.residual {
            for p in &mut pairs {
                for d in [&mut p.k, &mut p.v] {
                    if !d.kind.is_float() {
                        d.residual = r;
                    }
                }
            }
        }
        Ok(pairs)
    }

    fn matrix(&self) -> Result<Matrix> {
        let list = |v: &Option<Vec<String>>, default: &str| {
            v.clone().unwrap_or_else(|| vec![default.to_string()])
        };
        let tiers = match &self.tier {
            Some(t) => t
                .iter()
                .map(|n| axes::parse_tier(n))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let strategies = axes::parse_strategies(&list(&self.strategy, "contiguous"), &tiers)?;
        // Offload runs at attention level only, so a sweep of offload strategies alone
        // defaults to it rather than refusing the default decoder.
        let only_offload = strategies.iter().all(|s| matches!(s, Strategy::Offload(_)));
        let default_kind = if only_offload { "attention" } else { "decoder" };
        // The shared prefix is part of the prompt: without --prompt the whole prompt is shared.
        let default_prompt = 512.max(self.shared_prefix.unwrap_or(0));
        Ok(Matrix {
            shapes: self.shapes()?,
            kinds: list(&self.workload, default_kind)
                .iter()
                .map(|n| axes::parse_kind(n))
                .collect::<Result<_, _>>()?,
            backends: list(&self.backend, "cpu")
                .iter()
                .map(|n| axes::parse_backend(n))
                .collect::<Result<_, _>>()?,
            strategies,
            dtypes: self.dtypes()?,
            prompts: self.prompt.clone().unwrap_or_else(|| vec![default_prompt]),
            gens: self.gen.clone().unwrap_or_else(|| vec![128]),
            batches: self.batch.clone().unwrap_or_else(|| vec![1]),
            block_sizes: self.block_size.clone().unwrap_or_else(|| vec![16]),
            shared_prefix: self.shared_prefix.unwrap_or(0),
            window: self.window,
            mlp: !self.no_mlp,
            seed: self.seed,
            offload: OffloadConfig {
                tier_dir: self.tier_dir.clone(),
                redis_url: self.redis_url.clone(),
                pool_blocks: 0,
            },
        })
    }

    fn sweep(&self) -> Result<Sweep> {
        if self.is_default_suite() {
            return Ok(suite::default_sweep(self.seed)?);
        }
        Ok(self.matrix()?.expand()?)
    }
}

fn default_output(shard: Option<Shard>) -> PathBuf {
    let mut name = format!("{}-{}", env::file_stamp(env::unix_now()), env::host_name());
    if let Some(s) = shard {
        name.push_str(&format!("-shard{}of{}", s.index, s.count));
    }
    PathBuf::from("results/runs").join(name + ".csv")
}

pub fn run(args: RunArgs) -> Result<()> {
    let args = *args.options;
    let formats = parse_formats(&args.format)?;
    let sweep = args.sweep()?;
    for s in &sweep.skipped {
        eprintln!("note: skipped {}: {}", s.workload, s.why);
    }
    let threads = match args.threads {
        Some(0) => bail!("--threads 0: give at least 1 (or leave it out to use every core)"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let (limits, notes) = calibrate::limits_for_run(args.calibration.as_deref(), threads)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    let prefill = match &args.prefill {
        Some(name) => estimate::parse_prefill(name).map_err(anyhow::Error::msg)?,
        None if args.is_default_suite() => suite::PREFILL,
        None => PrefillMode::Attention,
    };
    let max_minutes = estimate::parse_max_minutes(args.max_minutes).map_err(anyhow::Error::msg)?;
    let mut sweep = sweep;
    if args.layers.is_none() && !args.cache_resident {
        let llc = limits.calibration.llc_bytes;
        for n in sizing::grow_attention_rows(&mut sweep.specs, llc, env::available_memory()) {
            eprintln!("note: {n}");
        }
    }
    let timing = TimingOptions {
        warmup: args.warmup,
        repetitions: args.repetitions.max(1),
        threads: threads as u32,
    };
    let mine: Vec<WorkloadSpec> = match args.shard {
        Some(s) => s.select(&sweep.specs).into_iter().map(|(_, s)| s).collect(),
        None => sweep.specs.clone(),
    };
    let secs = estimate::check(
        &mine,
        prefill,
        &limits.calibration,
        &timing,
        max_minutes,
        env::available_memory(),
    )?;
    eprintln!(
        "estimate: at least {:.1} minutes for {} rows at this machine's limits (--max-minutes {max_minutes})",
        secs / 60.0,
        mine.len()
    );
    let csv_path = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(args.shard));
    let mut exporters: Vec<Box<dyn Exporter>> = vec![Box::new(CsvExporter::create(&csv_path)?)];
    if formats.json {
        exporters.push(Box::new(JsonExporter::create(
            &csv_path.with_extension("json"),
        )?));
    }
    if formats.md {
        exporters.push(Box::new(MarkdownExporter::create(
            &csv_path.with_extension("md"),
        )?));
    }

    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: the user does not want to wait for the current step.
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current step (Ctrl-C again to quit now)…");
    })
    .context("cannot install the Ctrl-C handler")?;

    let build_options = BuildOptions {
        prefill: Some(prefill),
    };
    let build = |spec: &WorkloadSpec| kvbench_workloads::build_with(spec, build_options);
    let mut environment = Environment::capture();
    if sweep.specs.iter().any(|s| s.backend == Backend::Cuda) {
        // Name the GPU in CUDA rows; when there is none, each row says why in `detail`.
        if let Ok(info) = kvbench_workloads::cuda::device_info() {
            environment.gpu = info.label();
        }
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
    if args.is_default_suite() {
        let parts: Vec<&str> = suite::default_suite(args.seed)
            .iter()
            .map(|(question, _)| *question)
            .collect();
        eprintln!(
            "default suite (give any sweep flag to choose your own): {}",
            parts.join("; ")
        );
    }
    let result = session::run_sweep(
        &runner,
        &sweep.specs,
        args.shard,
        &mut exporters,
        std::io::stderr().is_terminal(),
    )?;

    if formats.table {
        println!("{}", table::render(&result.records, table::Style::Terminal));
    }
    // Outliers are counted per row in the `outliers` column; on screen one summary line is
    // enough, while every other note is printed as it is.
    let (outlier_notes, other_notes): (Vec<_>, Vec<_>) = result
        .notes
        .iter()
        .partition(|n| n.contains("statistical outliers"));
    for note in other_notes {
        eprintln!("note: {note}");
    }
    if !outlier_notes.is_empty() {
        eprintln!(
            "note: {} of {} workloads had timing outliers (counted in the CSV's `outliers` column); {}",
            outlier_notes.len(),
            result.records.len(),
            kvbench_bench::stats::OUTLIER_ADVICE
        );
    }
    // The prefix-reuse scenario of this shard's offload workloads (tiers module).
    let scenario =
        kvbench_bench::offload::from_specs(&mine, args.repetitions).filter(|_| !result.interrupted);
    if let Some(scenario) = scenario {
        let rows = kvbench_bench::offload::run_prefix_reuse(&scenario)?;
        println!("{}", kvbench_bench::offload::render(&rows));
        let path = csv_path.with_extension("prefix-reuse.csv");
        kvbench_bench::offload::write_csv(&rows, &path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    for r in result.records.iter().filter(|r| r.status != status::OK) {
        eprintln!(
            "{}: {} {} {} {}: {}",
            r.status, r.model, r.workload, r.strategy, r.k_dtype, r.detail
        );
    }
    eprintln!(
        "wrote {} ({} rows)",
        csv_path.display(),
        result.records.len()
    );
    for ex in exporters.iter().skip(1) {
        eprintln!("wrote {}", ex.path().display());
    }
    if result.interrupted {
        eprintln!(
            "interrupted: {} workloads not run; the CSV keeps every finished row",
            result.not_run
        );
        std::process::exit(130);
    }
    let bad = result
        .records
        .iter()
        .filter(|r| r.status == status::FAILED || r.status == status::ERROR)
        .count();
    if bad > 0 {
        bail!(
            "{bad} of {} workloads failed verification or could not run; see the status and \
             detail columns of {}",
            result.records.len(),
            csv_path.display()
        );
    }
    Ok(())
}
