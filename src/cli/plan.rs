//! `kvbench plan`: size a model's KV cache and a deployment's capacity.
//!
//! Parses flags, builds the cross product of requests, asks the planner, and prints the rows
//! (a table on a terminal; csv/json/md for machines). No sizing math here.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use kvbench_planner::columns::plan_row;
use kvbench_planner::deploy::{Deployment, WeightDtype, WindowRule};
use kvbench_planner::dtype::{parse_kv_dtypes, parse_side, KvDtypes};
use kvbench_planner::fits::SeqArg;
use kvbench_planner::plan::{longest_seq, plan, AttentionOverride, Plan, PlanRequest};
use kvbench_planner::request::{self, CheckedFlags, PlanFlags};
use kvbench_planner::state::StateDtype;
use kvbench_planner::weights::{self, Weights};
use kvbench_planner::{find_model, gpu, parse_config, ModelInfo};

mod checkpoint;
mod engine_args;
mod hf;
mod log_check;
mod render;
mod tiers;

pub use render::render_rows;
use render::{detail_table, summary_table};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table (human units).
    Table,
    /// One row per combination, columns with units in their names (results/plan-csv.md).
    Csv,
    /// A JSON array of rows with the CSV's column names.
    Json,
    /// One JSON object per row and line.
    Jsonl,
    /// A markdown table with the CSV's columns.
    Md,
}

/// Sliding-window reservation rule (CLI spelling of `WindowRule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WindowRuleArg {
    /// A sliding layer holds exactly its window.
    Window,
    /// vLLM's reservation: window - 1 + --max-batched-tokens, capped at the sequence.
    Vllm,
}

/// Size the KV cache of a model and the capacity of a GPU deployment.
///
/// Every flag marked "list" takes comma-separated values; the output has one row per
/// combination (cross product).
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Registry model(s), forgiving names (list), e.g. llama3-70b,meta-llama/Llama-3.1-8B.
    /// `kvbench models` lists them. Default: llama3-70b when no --config is given.
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<String>,
    /// A Hugging Face config.json (or a model directory holding one) to size instead of, or
    /// besides, registry models; repeat the flag for several.
    #[arg(long, value_name = "PATH")]
    pub config: Vec<std::path::PathBuf>,
    /// Tokens per sequence (context length) (list); `max`: the longest context that fits
    /// the deployment at --batch (needs --gpu or --kv-budget).
    #[arg(long, value_delimiter = ',', default_value = "4096")]
    pub seq: Vec<String>,
    /// Sequences in the batch (list).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<u32>,
    /// Cache flags (dtypes, layout, windows).
    #[command(flatten)]
    pub cache: Box<CacheArgs>,
    /// Deployment flags (GPU capacity and bounds).
    #[command(flatten)]
    pub deploy: Box<DeployArgs>,
    /// Memory tiers (--tiers) and reload-versus-recompute break-even.
    #[command(flatten)]
    pub tiers: Box<tiers::TierArgs>,
    /// Serving engine flags (reserve rule, --vllm-log check).
    #[command(flatten)]
    pub engine: Box<engine_args::EngineArgs>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table", help_heading = "Output")]
    pub format: Format,
    /// Refuse a sweep whose cross product has more rows than this.
    #[arg(long, default_value_t = request::MAX_ROWS, value_name = "N", help_heading = "Output")]
    pub max_rows: u64,
}

/// How the cache is stored.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cache")]
pub struct CacheArgs {
    /// Cache dtype for keys and values together (list): f32, f16, bf16, fp8-e4m3, fp8-e5m2,
    /// int8, int4, nf4, int2, q8_0, q4_0, kivi2, kivi4; `/gN` sets the group size
    /// (int4/g64), `/tensor` one scale per tensor (fp8-e4m3/tensor, as vLLM's fp8 cache),
    /// `/rN` the KIVI f16 residual (kivi2/r64).
    #[arg(long, value_delimiter = ',', default_value = "f16")]
    pub cache_dtype: Vec<String>,
    /// Key dtype (list), overriding --cache-dtype for keys.
    #[arg(long, value_delimiter = ',')]
    pub k_dtype: Vec<String>,
    /// Value dtype (list), overriding --cache-dtype for values.
    #[arg(long, value_delimiter = ',')]
    pub v_dtype: Vec<String>,
    /// What-if attention (list): mha, mqa or gqa:N sizes the model as if it had these KV
    /// heads; `model` keeps its own. E.g. --attention model,mha,mqa shows the savings side by side.
    #[arg(long, value_delimiter = ',')]
    pub attention: Vec<String>,
    /// Tokens per block of the paged layout (default: vLLM's 16, SGLang's page size 1).
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Leading tokens shared by every sequence of the batch (paged prefix sharing).
    #[arg(long, default_value_t = 0)]
    pub shared_prefix: u32,
    /// What a sliding-window layer holds per sequence.
    #[arg(long, value_enum, default_value = "window")]
    pub window_rule: WindowRuleArg,
    /// vLLM's max_num_batched_tokens: sizes the activation reserve and the vllm window rule.
    #[arg(long, default_value_t = 8192)]
    pub max_batched_tokens: u32,
    /// SSM/recurrent state dtype of Mamba and linear-attention layers (vLLM's
    /// mamba_ssm_cache_dtype): auto (the model dtype), float32, bfloat16, float16.
    #[arg(long, default_value = "auto")]
    pub state_dtype: String,
}

/// Where the model is served; any of --gpu or --kv-budget turns capacity sizing on.
#[derive(Debug, Args)]
#[command(next_help_heading = "Deployment")]
pub struct DeployArgs {
    /// GPU(s) to size a deployment on (list), e.g. h100, h200, a100-80gb, mi300x.
    /// `kvbench models --gpus` lists them.
    #[arg(long, value_delimiter = ',')]
    pub gpu: Vec<String>,
    /// GPUs in the deployment (default tp x pp); more GPUs than tp x pp are data-parallel replicas.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Tensor-parallel degree (list); default: --gpus / --pp, else 1.
    #[arg(long, value_delimiter = ',')]
    pub tp: Vec<u32>,
    /// Pipeline-parallel degree (layers split across stages).
    #[arg(long, default_value_t = 1)]
    pub pp: u32,
    /// Weight precision (list), overriding what the checkpoint says: f32, bf16, f16, fp8,
    /// int8, int4 (4.25 bits with group scales), mxfp4, nf4. Default: the safetensors
    /// headers of a --config directory, else its quantization_config, else bf16.
    #[arg(long, value_delimiter = ',')]
    pub weights_dtype: Vec<String>,
    /// Fraction of GPU memory the engine may use (vLLM's gpu_memory_utilization, default
    /// 0.9; SGLang's mem_fraction_static, default by tp).
    #[arg(long)]
    pub mem_util: Option<f64>,
    /// Memory per GPU held back for activations and runtime, e.g. 3GiB (default: estimated
    /// as vLLM's profiling would find it; the estimate is shown).
    #[arg(long)]
    pub reserve: Option<String>,
    /// KV memory per GPU known in advance, e.g. 58.5GiB: capacity without weight arithmetic.
    #[arg(long)]
    pub kv_budget: Option<String>,
    /// A GPU outside the registry (list): a JSON file (name, memory_bytes, bandwidth_gbps,
    /// fp16_tflops, fp8_tflops, interconnect_gbps[, node_gpus]) or inline
    /// name=x,memory=80GiB,bandwidth=3350,fp16=989,fp8=1979,interconnect=900.
    #[arg(long, value_name = "FILE.json|k=v,...")]
    pub gpu_spec: Vec<String>,
    /// Data-parallel attention (SGLang/vLLM DP attention): N groups of tp / N GPUs, each
    /// holding only its own requests' KV; without N, one group per GPU (N = tp).
    #[arg(long, value_name = "N", num_args = 0..=1)]
    pub dp_attention: Option<Option<u32>>,
    /// Expert parallelism: routed experts split across N ranks (N must divide the experts).
    #[arg(long, value_name = "N")]
    pub ep: Option<u32>,
}

/// A model's config.json text and directory (for its safetensors headers).
#[derive(Debug, Clone)]
struct Checkpoint {
    config: String,
    /// Where its safetensors may be (None: a registry model's published config).
    dir: Option<std::path::PathBuf>,
}

impl Checkpoint {
    /// A registry model's published checkpoint, when it is stored quantized.
    fn published(m: &ModelInfo) -> Option<Checkpoint> {
        kvbench_planner::registry::published_config(&m.key).map(|c| Checkpoint {
            config: c.to_string(),
            dir: None,
        })
    }
}

/// The models asked for: registry names, then config.json files.
fn models(args: &PlanArgs) -> anyhow::Result<Vec<ModelInfo>> {
    Ok(models_with_checkpoints(args)?
        .into_iter()
        .map(|m| m.0)
        .collect())
}

/// The models asked for, each with its checkpoint when it came from a config.json.
fn models_with_checkpoints(
    args: &PlanArgs,
) -> anyhow::Result<Vec<(ModelInfo, Option<Checkpoint>)>> {
    let mut out = Vec::new();
    for name in &args.model {
        match find_model(name) {
            Ok(m) => {
                let published = Checkpoint::published(&m);
                out.push((m, published))
            }
            // org/name outside the registry: the local Hugging Face cache may hold it.
            Err(e) if name.contains('/') => {
                let (text, path) =
                    hf::cached_config(name).map_err(|h| anyhow::anyhow!("{e}; {h}"))?;
                let info =
                    parse_config(&text, name).with_context(|| format!("in {}", path.display()))?;
                let dir = path
                    .parent()
                    .map_or_else(|| std::path::PathBuf::from("."), |p| p.to_path_buf());
                out.push((
                    info,
                    Some(Checkpoint {
                        config: text,
                        dir: Some(dir),
                    }),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    for given in &args.config {
        // A model directory (as downloaded from the Hub) holds its config.json.
        let path = if given.is_dir() {
            given.join("config.json")
        } else {
            given.clone()
        };
        let path = &path;
        let text =
            kvbench_bench::input::read_text(path, kvbench_bench::input::CONFIG_CAP, "config.json")
                .context("in --config")?;
        // models/Qwen3-8B/config.json is "Qwen3-8B"; gemma3-27b.json is "gemma3-27b".
        let stem = path.file_stem().map(|n| n.to_string_lossy().to_string());
        let dir = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string());
        let name = match (stem, dir) {
            (Some(s), Some(d)) if s == "config" && !d.is_empty() => d,
            (Some(s), _) if !s.is_empty() => s,
            _ => path.display().to_string(),
        };
        let info = parse_config(&text, &name)
            .with_context(|| format!("in --config {}", path.display()))?;
        // config.json in the current directory has an empty parent.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        out.push((
            info,
            Some(Checkpoint {
                config: text,
                dir: Some(dir),
            }),
        ));
    }
    if out.is_empty() {
        out.push((find_model("llama3-70b")?, None));
    }
    Ok(out)
}

/// The weights of a model under a --weights-dtype choice (None = what the checkpoint says):
/// safetensors headers, else quantization_config, else (registry models) None = params x
/// the dtype.
fn weights_for(
    checkpoint: Option<&Checkpoint>,
    choice: Option<WeightDtype>,
) -> anyhow::Result<Option<Weights>> {
    let Some(c) = checkpoint else {
        return Ok(None);
    };
    let context = || match &c.dir {
        Some(dir) => format!("weights of {}", dir.display()),
        None => "weights of the published checkpoint".to_string(),
    };
    let headers = match &c.dir {
        Some(dir) => checkpoint::header_weights(dir).with_context(context)?,
        None => None,
    };
    match (choice, headers) {
        (Some(w), _) => Ok(Some(
            weights::from_config(&c.config, Some((w.name, w.bits))).with_context(context)?,
        )),
        (None, Some(w)) => Ok(Some(w)),
        (None, None) => Ok(Some(
            weights::from_config(&c.config, None).with_context(context)?,
        )),
    }
}

/// The (K, V) dtype pairs asked for.
fn dtype_pairs(args: &PlanArgs) -> anyhow::Result<Vec<KvDtypes>> {
    let mut out: Vec<KvDtypes> = Vec::new();
    for name in &args.cache.cache_dtype {
        let pair = parse_kv_dtypes(name).context("in --cache-dtype")?;
        let ks = if args.cache.k_dtype.is_empty() {
            vec![pair.k]
        } else {
            args.cache
                .k_dtype
                .iter()
                .map(|k| parse_side(k, true).context("in --k-dtype"))
                .collect::<anyhow::Result<_>>()?
        };
        let vs = if args.cache.v_dtype.is_empty() {
            vec![pair.v]
        } else {
            args.cache
                .v_dtype
                .iter()
                .map(|v| parse_side(v, false).context("in --v-dtype"))
                .collect::<anyhow::Result<_>>()?
        };
        for k in &ks {
            for v in &vs {
                let p = KvDtypes { k: *k, v: *v };
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
    }
    Ok(out)
}

/// The flags' raw values, for the planner's one check.
fn flags(args: &PlanArgs) -> PlanFlags<'_> {
    PlanFlags {
        seq: &args.seq,
        batch: &args.batch,
        tp: &args.deploy.tp,
        pp: args.deploy.pp,
        gpus: args.deploy.gpus,
        mem_util: args.deploy.mem_util,
        weights_dtype: &args.deploy.weights_dtype,
        reserve: args.deploy.reserve.as_deref(),
        kv_budget: args.deploy.kv_budget.as_deref(),
        block_size: args.cache.block_size,
        max_batched_tokens: args.cache.max_batched_tokens,
        prefill_tflops: args.tiers.prefill_tflops,
        tier_latency_ms: args.tiers.tier_latency_ms,
    }
}

/// The deployments asked for (None: no --gpu and no --kv-budget), each with the
/// --weights-dtype choice it was made for (None: what the checkpoint says).
type Deployments = (Vec<Option<Deployment>>, Vec<Option<WeightDtype>>);

fn deployments(args: &PlanArgs, checked: &CheckedFlags) -> anyhow::Result<Deployments> {
    let mut weight_pick = Vec::new();
    if args.deploy.gpu.is_empty()
        && args.deploy.gpu_spec.is_empty()
        && args.deploy.kv_budget.is_none()
    {
        if args.deploy.gpus.is_some() || !args.deploy.tp.is_empty() || args.deploy.reserve.is_some()
        {
            bail!("--gpus, --tp and --reserve size a deployment: also name a GPU (--gpu h100) or a KV budget (--kv-budget 58.5GiB)");
        }
        return Ok((vec![None], vec![None]));
    }
    // None: what the checkpoint says (bf16 for registry models).
    let weight_choices: Vec<Option<WeightDtype>> = if checked.weights.is_empty() {
        vec![None]
    } else {
        checked.weights.iter().copied().map(Some).collect()
    };
    let engine = args.engine.options()?;
    let (reserve, kv_budget) = (checked.reserve, checked.kv_budget);
    let mut gpus: Vec<Option<gpu::GpuSpec>> = args
        .deploy
        .gpu
        .iter()
        .map(|g| gpu::find(g).map(Some))
        .collect::<Result<_, _>>()?;
    for spec in &args.deploy.gpu_spec {
        gpus.push(Some(gpu_spec(spec)?));
    }
    if gpus.is_empty() {
        gpus.push(None);
    }
    let tps = if !args.deploy.tp.is_empty() {
        args.deploy.tp.clone()
    } else {
        vec![args.deploy.gpus.map_or(1, |g| (g / args.deploy.pp).max(1))]
    };
    let mut out = Vec::new();
    for g in &gpus {
        for &tp in &tps {
            for choice in &weight_choices {
                out.push(Some(Deployment {
                    gpu: g.clone(),
                    gpus: args
                        .deploy
                        .gpus
                        .unwrap_or(tp.saturating_mul(args.deploy.pp)),
                    tp,
                    pp: args.deploy.pp,
                    weights: choice.unwrap_or_else(|| "bf16".parse().expect("bf16 is known")),
                    mem_util: args
                        .deploy
                        .mem_util
                        .unwrap_or_else(|| engine_args::default_mem_util(engine.engine, tp)),
                    reserve,
                    kv_budget,
                    block_size: block_size(args),
                    max_batched_tokens: args.cache.max_batched_tokens,
                    window_rule: window_rule(args.cache.window_rule),
                    // Bare --dp-attention: one attention group per GPU.
                    dp_attention: match args.deploy.dp_attention {
                        Some(None) => tp,
                        Some(Some(n)) => n,
                        None => 1,
                    },
                    ep: args.deploy.ep.unwrap_or(1),
                    engine,
                    weights_detail: None,
                }));
                weight_pick.push(*choice);
            }
        }
    }
    Ok((out, weight_pick))
}

/// Tokens per block: --block-size, else the engine's default.
fn block_size(args: &PlanArgs) -> u32 {
    args.cache.block_size.unwrap_or(match args.engine.engine {
        engine_args::EngineArg::Vllm => 16,
        engine_args::EngineArg::Sglang => kvbench_planner::engine::sglang::DEFAULT_PAGE_SIZE,
    })
}

/// A `--gpu-spec`: a JSON file when one exists at that path (or it ends in .json), else
/// the inline key=value form.
fn gpu_spec(spec: &str) -> anyhow::Result<gpu::GpuSpec> {
    let path = std::path::Path::new(spec);
    if path.is_file() || spec.ends_with(".json") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --gpu-spec {spec}"))?;
        return Ok(gpu::parse_spec_json(&text, spec)?);
    }
    Ok(gpu::parse_spec_inline(spec)?)
}

fn window_rule(arg: WindowRuleArg) -> WindowRule {
    match arg {
        WindowRuleArg::Window => WindowRule::Window,
        WindowRuleArg::Vllm => WindowRule::Vllm,
    }
}

/// Every plan of the cross product, in a stable order.
pub fn plans(args: &PlanArgs) -> anyhow::Result<Vec<Plan>> {
    let checked = request::check(&flags(args))?;
    let attentions: Vec<Option<AttentionOverride>> = if args.cache.attention.is_empty() {
        vec![None]
    } else {
        args.cache
            .attention
            .iter()
            .map(|a| match a.trim() {
                "model" | "as-is" => Ok(None),
                other => other.parse().map(Some).context("in --attention"),
            })
            .collect::<anyhow::Result<_>>()?
    };
    let models = models_with_checkpoints(args)?;
    let pairs = dtype_pairs(args)?;
    let (deps, picks) = deployments(args, &checked)?;
    let seqs: &[SeqArg] = &checked.seqs;
    let state_dtype: Option<StateDtype> = match args.cache.state_dtype.trim() {
        "auto" => None,
        other => Some(other.parse().context("in --state-dtype")?),
    };
    request::bounded_rows(
        &[
            models.len(),
            attentions.len(),
            seqs.len(),
            args.batch.len(),
            pairs.len(),
            deps.len(),
        ],
        args.max_rows,
    )?;
    let mut results = Vec::new();
    for (model, ckpt) in &models {
        // The checkpoint's weights, once per --weights-dtype choice.
        let deps: Vec<Option<Deployment>> = deps
            .iter()
            .zip(&picks)
            .map(|(d, pick)| {
                d.clone()
                    .map(|mut d| -> anyhow::Result<Deployment> {
                        d.weights_detail = weights_for(ckpt.as_ref(), *pick)?;
                        Ok(d)
                    })
                    .transpose()
            })
            .collect::<anyhow::Result<_>>()?;
        for &attention in &attentions {
            for &seq_arg in seqs {
                for &batch in &args.batch {
                    for kv in &pairs {
                        for dep in &deps {
                            let mut req = PlanRequest {
                                model: model.clone(),
                                kv: *kv,
                                attention,
                                seq: 1,
                                batch,
                                block_size: block_size(args),
                                shared_prefix: args.cache.shared_prefix,
                                window_rule: window_rule(args.cache.window_rule),
                                max_batched_tokens: args.cache.max_batched_tokens,
                                deployment: dep.clone(),
                                state_dtype,
                            };
                            let seq = match seq_arg {
                                SeqArg::Tokens(n) => Ok(n),
                                SeqArg::Max => longest_seq(&req),
                            };
                            let seq_text = match seq_arg {
                                SeqArg::Tokens(n) => n.to_string(),
                                SeqArg::Max => "max".to_string(),
                            };
                            let what = format!(
                                "{} at --seq {seq_text} --batch {batch} with {}{}",
                                model.shape.name,
                                kv.label(),
                                dep.as_ref()
                                    .map(|d| format!(
                                        " on {} x{} (tp {}, pp {})",
                                        d.gpu.as_ref().map_or("a KV budget", |g| g.key.as_ref()),
                                        d.gpus,
                                        d.tp,
                                        d.pp
                                    ))
                                    .unwrap_or_default()
                            );
                            let planned = seq.and_then(|seq| {
                                req.seq = seq;
                                plan(&req)
                            });
                            results.push(planned.with_context(|| what));
                        }
                    }
                }
            }
        }
    }
    keep_fitting(results)
}

/// A single combination fails loudly; in a sweep, combinations that cannot be planned (a tp
/// that does not suit one model, a model too big for one GPU) are skipped with a note on
/// stderr, and only a sweep where nothing can be planned fails.
fn keep_fitting(results: Vec<anyhow::Result<Plan>>) -> anyhow::Result<Vec<Plan>> {
    if results.is_empty() {
        bail!("nothing to plan: give at least one --model or --config, --seq and --batch");
    }
    if results.len() == 1 {
        return results.into_iter().next().into_iter().collect();
    }
    let mut plans = Vec::new();
    let mut first_error = None;
    for r in results {
        match r {
            Ok(p) => plans.push(p),
            Err(e) => {
                super::out::say!("skipped: {e:#}");
                first_error.get_or_insert(e);
            }
        }
    }
    match (plans.is_empty(), first_error) {
        (true, Some(e)) => Err(e.context("no combination of the sweep could be planned")),
        _ => Ok(plans),
    }
}

pub fn run(args: PlanArgs) -> anyhow::Result<std::process::ExitCode> {
    // Every flag is checked once, whichever path uses it.
    request::check(&flags(&args))?;
    if let Some(log) = &args.engine.vllm_log {
        log_check::run(&args, log)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.tiers.tiers.is_some() && args.format != Format::Table {
        bail!("--tiers prints tables: leave out --format (or --tiers)");
    }
    // Every flag is checked (and the plans made) before anything is printed.
    let plans = plans(&args)?;
    // Tiers size fixed contexts; `--seq max` is resolved per plan.
    let tier_seqs: Vec<u32> = request::check(&flags(&args))?
        .seqs
        .iter()
        .filter_map(|s| match s {
            SeqArg::Tokens(n) => Some(*n),
            SeqArg::Max => None,
        })
        .collect();
    let tiers = tiers::render(
        &args.tiers,
        &models(&args)?,
        &dtype_pairs(&args)?,
        &tier_seqs,
        &args.deploy.gpu,
        &args.deploy.tp,
    )?;
    let text = match args.format {
        Format::Table if plans.len() == 1 => detail_table(&plans[0]),
        Format::Table => summary_table(&plans),
        other => render_rows(&plans.iter().map(plan_row).collect::<Vec<_>>(), other),
    };
    super::out::print(&(text + &tiers.unwrap_or_default()))?;
    Ok(std::process::ExitCode::SUCCESS)
}
