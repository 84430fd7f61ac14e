//! `kvbench plan`: size a model's KV cache and a deployment's capacity.
//!
//! Parses flags, builds the cross product of requests, asks the planner, and prints the rows
//! (a table on a terminal; csv/json/md for machines). No sizing math here.

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use kvbench_planner::columns::{cell_text, plan_row};
use kvbench_planner::deploy::{Deployment, WeightDtype, WindowRule};
use kvbench_planner::dtype::{parse_kv_dtypes, parse_side, KvDtypes};
use kvbench_planner::plan::{plan, AttentionOverride, Plan, PlanRequest};
use kvbench_planner::units::{format_bytes, format_count, parse_size};
use kvbench_planner::{find_model, gpu, parse_config, ModelInfo};
use serde_json::Value;
use tabled::builder::Builder;
use tabled::settings::Style;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table (human units).
    Table,
    /// One row per combination, columns with units in their names (results/plan-csv.md).
    Csv,
    /// A JSON array of rows with the CSV's column names.
    Json,
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
    /// A Hugging Face config.json to size instead of (or besides) registry models.
    #[arg(long, value_name = "PATH")]
    pub config: Vec<std::path::PathBuf>,
    /// Tokens per sequence (context length) (list).
    #[arg(long, value_delimiter = ',', default_value = "4096")]
    pub seq: Vec<u32>,
    /// Sequences in the batch (list).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<u32>,
    /// Cache flags (dtypes, layout, windows).
    #[command(flatten)]
    pub cache: Box<CacheArgs>,
    /// Deployment flags (GPU capacity and bounds).
    #[command(flatten)]
    pub deploy: Box<DeployArgs>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// How the cache is stored.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cache")]
pub struct CacheArgs {
    /// Cache dtype for keys and values together (list): f32, f16, bf16, fp8-e4m3, fp8-e5m2,
    /// int8, int4, nf4, int2, q8_0, q4_0, kivi2, kivi4; `/gN` sets the group size
    /// (int4/g64), `/rN` the KIVI f16 residual (kivi2/r64).
    #[arg(long, value_delimiter = ',', default_value = "f16")]
    pub cache_dtype: Vec<String>,
    /// Key dtype (list), overriding --cache-dtype for keys.
    #[arg(long, value_delimiter = ',')]
    pub k_dtype: Vec<String>,
    /// Value dtype (list), overriding --cache-dtype for values.
    #[arg(long, value_delimiter = ',')]
    pub v_dtype: Vec<String>,
    /// What-if attention: mha, mqa or gqa:N — size the model as if it had these KV heads.
    #[arg(long)]
    pub attention: Option<String>,
    /// Tokens per block of the paged layout (vLLM's default is 16).
    #[arg(long, default_value_t = 16)]
    pub block_size: u32,
    /// Leading tokens shared by every sequence of the batch (paged prefix sharing).
    #[arg(long, default_value_t = 0)]
    pub shared_prefix: u32,
    /// What a sliding-window layer holds per sequence.
    #[arg(long, value_enum, default_value = "window")]
    pub window_rule: WindowRuleArg,
    /// vLLM's max_num_batched_tokens: sizes the activation reserve and the vllm window rule.
    #[arg(long, default_value_t = 8192)]
    pub max_batched_tokens: u32,
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
    /// Weight precision: f32, bf16, f16, fp8, int8, int4 (4.25 bits with group scales),
    /// mxfp4, nf4.
    #[arg(long, default_value = "bf16")]
    pub weights_dtype: String,
    /// Fraction of GPU memory the engine may use (vLLM's gpu_memory_utilization).
    #[arg(long, default_value_t = 0.9)]
    pub mem_util: f64,
    /// Memory per GPU held back for activations and runtime, e.g. 3GiB (default: estimated
    /// as vLLM's profiling would find it; the estimate is shown).
    #[arg(long)]
    pub reserve: Option<String>,
    /// KV memory per GPU known in advance, e.g. 58.5GiB: capacity without weight arithmetic.
    #[arg(long)]
    pub kv_budget: Option<String>,
}

/// The models asked for: registry names, then config.json files.
fn models(args: &PlanArgs) -> anyhow::Result<Vec<ModelInfo>> {
    let mut out = Vec::new();
    for name in &args.model {
        out.push(find_model(name)?);
    }
    for path in &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        let name = path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .filter(|n| !n.is_empty() && n != ".")
            .unwrap_or_else(|| path.display().to_string());
        out.push(
            parse_config(&text, &name)
                .with_context(|| format!("in --config {}", path.display()))?,
        );
    }
    if out.is_empty() {
        out.push(find_model("llama3-70b")?);
    }
    Ok(out)
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

/// The deployments asked for (None: no --gpu and no --kv-budget).
fn deployments(args: &PlanArgs) -> anyhow::Result<Vec<Option<Deployment>>> {
    if args.deploy.gpu.is_empty() && args.deploy.kv_budget.is_none() {
        if args.deploy.gpus.is_some() || !args.deploy.tp.is_empty() || args.deploy.reserve.is_some()
        {
            bail!("--gpus, --tp and --reserve size a deployment: also name a GPU (--gpu h100) or a KV budget (--kv-budget 58.5GiB)");
        }
        return Ok(vec![None]);
    }
    if args.deploy.pp == 0 {
        bail!("--pp 0 is invalid: give at least 1 pipeline stage");
    }
    let weights: WeightDtype = args
        .deploy
        .weights_dtype
        .parse()
        .context("in --weights-dtype")?;
    let reserve = args
        .deploy
        .reserve
        .as_deref()
        .map(parse_size)
        .transpose()
        .context("in --reserve")?;
    let kv_budget = args
        .deploy
        .kv_budget
        .as_deref()
        .map(parse_size)
        .transpose()
        .context("in --kv-budget")?;
    let gpus: Vec<Option<gpu::GpuSpec>> = if args.deploy.gpu.is_empty() {
        vec![None]
    } else {
        args.deploy
            .gpu
            .iter()
            .map(|g| gpu::find(g).map(Some))
            .collect::<Result<_, _>>()?
    };
    let tps = if !args.deploy.tp.is_empty() {
        args.deploy.tp.clone()
    } else {
        vec![args.deploy.gpus.map_or(1, |g| (g / args.deploy.pp).max(1))]
    };
    let mut out = Vec::new();
    for g in &gpus {
        for &tp in &tps {
            out.push(Some(Deployment {
                gpu: g.clone(),
                gpus: args
                    .deploy
                    .gpus
                    .unwrap_or(tp.saturating_mul(args.deploy.pp)),
                tp,
                pp: args.deploy.pp,
                weights,
                mem_util: args.deploy.mem_util,
                reserve,
                kv_budget,
                block_size: args.cache.block_size,
                max_batched_tokens: args.cache.max_batched_tokens,
                window_rule: window_rule(args.cache.window_rule),
            }));
        }
    }
    Ok(out)
}

fn window_rule(arg: WindowRuleArg) -> WindowRule {
    match arg {
        WindowRuleArg::Window => WindowRule::Window,
        WindowRuleArg::Vllm => WindowRule::Vllm,
    }
}

/// Every plan of the cross product, in a stable order.
pub fn plans(args: &PlanArgs) -> anyhow::Result<Vec<Plan>> {
    let attention: Option<AttentionOverride> = args
        .cache
        .attention
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("in --attention")?;
    let models = models(args)?;
    let pairs = dtype_pairs(args)?;
    let deps = deployments(args)?;
    let mut results = Vec::new();
    for model in &models {
        for &seq in &args.seq {
            for &batch in &args.batch {
                for kv in &pairs {
                    for dep in &deps {
                        let req = PlanRequest {
                            model: model.clone(),
                            kv: *kv,
                            attention,
                            seq,
                            batch,
                            block_size: args.cache.block_size,
                            shared_prefix: args.cache.shared_prefix,
                            window_rule: window_rule(args.cache.window_rule),
                            max_batched_tokens: args.cache.max_batched_tokens,
                            deployment: dep.clone(),
                        };
                        let what = format!(
                            "{} at --seq {seq} --batch {batch} with {}{}",
                            model.shape.name,
                            kv.label(),
                            dep.as_ref()
                                .map(|d| format!(
                                    " on {} x{} (tp {}, pp {})",
                                    d.gpu.as_ref().map_or("a KV budget", |g| g.key),
                                    d.gpus,
                                    d.tp,
                                    d.pp
                                ))
                                .unwrap_or_default()
                        );
                        results.push(plan(&req).with_context(|| what));
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
    if results.len() == 1 {
        return results.into_iter().next().into_iter().collect();
    }
    let mut plans = Vec::new();
    let mut first_error = None;
    for r in results {
        match r {
            Ok(p) => plans.push(p),
            Err(e) => {
                eprintln!("skipped: {e:#}");
                first_error.get_or_insert(e);
            }
        }
    }
    match (plans.is_empty(), first_error) {
        (true, Some(e)) => Err(e.context("no combination of the sweep could be planned")),
        _ => Ok(plans),
    }
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let plans = plans(&args)?;
    let text = match args.format {
        Format::Table if plans.len() == 1 => detail_table(&plans[0]),
        Format::Table => summary_table(&plans),
        other => render_rows(&plans.iter().map(plan_row).collect::<Vec<_>>(), other)?,
    };
    print!("{text}");
    Ok(())
}

/// Rows of named values as csv, json or markdown (the machine formats).
pub fn render_rows(rows: &[Vec<(String, Value)>], format: Format) -> anyhow::Result<String> {
    let header: Vec<String> = rows
        .first()
        .map(|r| r.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    match format {
        Format::Csv | Format::Table => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(&header)?;
            for row in rows {
                w.write_record(row.iter().map(|(_, v)| cell_text(v)))?;
            }
            Ok(String::from_utf8(w.into_inner()?)?)
        }
        Format::Json => {
            let array: Vec<serde_json::Map<String, Value>> =
                rows.iter().map(|r| r.iter().cloned().collect()).collect();
            Ok(serde_json::to_string_pretty(&array)? + "\n")
        }
        Format::Md => {
            let mut b = Builder::default();
            b.push_record(header);
            for row in rows {
                b.push_record(row.iter().map(|(_, v)| cell_text(v)));
            }
            Ok(b.build().with(Style::markdown()).to_string() + "\n")
        }
    }
}

fn bytes(b: u64) -> String {
    format!("{} ({} B)", format_bytes(b as f64), format_count(b))
}

/// One plan, figure by figure, with human units and what each figure assumes.
fn detail_table(p: &Plan) -> String {
    let mut rows: Vec<[String; 2]> = Vec::new();
    let mut add = |k: &str, v: String| rows.push([k.to_string(), v]);
    add(
        "model",
        format!(
            "{} — {} layers, {} query heads, {} KV heads, head_dim {}, {}{}",
            p.model,
            p.layers,
            p.q_heads,
            p.kv_heads,
            p.head_dim,
            p.attention,
            if p.sliding_layers > 0 {
                format!(", {} sliding-window layers", p.sliding_layers)
            } else {
                String::new()
            }
        ),
    );
    add(
        "cache dtype",
        format!(
            "{} (K {:.3} bits/element, V {:.3})",
            p.cache_dtype, p.k_bits_per_element, p.v_bits_per_element
        ),
    );
    add(
        "KV per token",
        format!(
            "{} ({} per layer)",
            format_bytes(p.bytes_per_token),
            format_bytes(p.bytes_per_token_per_layer)
        ),
    );
    let window_note = if p.sliding_layers > 0 {
        format!(", sliding layers capped by rule '{}'", p.window_rule.name())
    } else {
        String::new()
    };
    add(
        &format!("one sequence, {} tokens", format_count(p.seq as u64)),
        format!("{}{window_note}", bytes(p.seq_bytes)),
    );
    add(&format!("batch of {}", p.batch), bytes(p.batch_bytes));
    match (p.paged_bytes, p.paged_waste_bytes) {
        (Some(paged), Some(waste)) => add(
            &format!("paged, blocks of {}", p.block_size),
            format!(
                "{} (round-up waste {})",
                bytes(paged),
                format_bytes(waste as f64)
            ),
        ),
        _ => add("paged", "n/a: an f16 residual cannot be paged".to_string()),
    }
    if p.shared_prefix > 0 {
        if let (Some(shared), Some(paged)) = (p.shared_prefix_paged_bytes, p.paged_bytes) {
            add(
                &format!("paged, {} prefix tokens shared", p.shared_prefix),
                format!(
                    "{} (saves {})",
                    bytes(shared),
                    format_bytes((paged - shared) as f64)
                ),
            );
        }
    }
    if let Some(c) = &p.capacity {
        add(
            "deployment",
            format!(
                "{} x{} (tp {}, pp {}, {} replica(s)), weights {}",
                p.gpu.as_deref().unwrap_or("KV budget"),
                p.gpus.unwrap_or(0),
                p.tp.unwrap_or(0),
                p.pp.unwrap_or(0),
                c.replicas,
                p.weights_dtype.as_deref().unwrap_or("")
            ),
        );
        if c.usable_bytes_per_gpu > 0 {
            add("weights per GPU", bytes(c.weights_bytes_per_gpu));
            add(
                "usable per GPU (total x mem-util)",
                bytes(c.usable_bytes_per_gpu),
            );
            add(
                "reserve per GPU",
                format!(
                    "{} — {}",
                    format_bytes(c.reserve_bytes_per_gpu as f64),
                    c.reserve_note
                ),
            );
        }
        add("KV memory per GPU", bytes(c.kv_budget_bytes_per_gpu));
        add(
            "KV heads per GPU",
            format!(
                "{}{} over {} layers",
                c.kv_heads_per_gpu,
                if c.kv_heads_replicated {
                    " (replicated: tp > KV heads)"
                } else {
                    ""
                },
                c.layers_per_gpu
            ),
        );
        add(
            "token capacity",
            format!(
                "{} tokens ({} blocks of {})",
                format_count(c.token_capacity),
                format_count(c.blocks),
                format_bytes(c.block_bytes as f64)
            ),
        );
        add(
            &format!("max sequences of {} tokens", format_count(p.seq as u64)),
            format!(
                "{} per replica (vLLM concurrency {:.2}x)",
                format_count(c.max_seqs),
                c.concurrency
            ),
        );
        add(
            &format!("max context at batch {}", p.batch),
            c.max_context_at_batch
                .map_or("unbounded (every layer slides)".to_string(), |t| {
                    format!("{} tokens", format_count(t))
                }),
        );
    }
    if let Some(b) = &p.bounds {
        add(
            "decode bound (bandwidth)",
            format!(
                "<= {:.0} tokens/s (step >= {:.2} ms reading {} per GPU)",
                b.decode_tokens_per_s_max,
                b.decode_step_ms_min,
                format_bytes(b.step_bytes_per_gpu as f64)
            ),
        );
        add(
            "prefill bound (compute)",
            format!(
                "TTFT >= {:.1} ms for {} tokens at the {} dense rate",
                b.ttft_ms_min,
                format_count(p.seq as u64),
                b.rate
            ),
        );
    }
    for section in &p.extra {
        for (k, v) in &section.rows {
            add(&format!("{}: {k}", section.title), v.clone());
        }
    }
    let mut b = Builder::default();
    b.push_record(["figure", "value"]);
    for r in rows {
        b.push_record(r);
    }
    b.build().with(Style::sharp()).to_string() + "\n"
}

/// Many plans, one line each, the key figures in human units.
fn summary_table(plans: &[Plan]) -> String {
    let deploy = plans.iter().any(|p| p.capacity.is_some());
    let mut header = vec![
        "model",
        "attention",
        "dtype",
        "seq",
        "batch",
        "KV/token",
        "sequence",
        "batch KV",
        "paged",
    ];
    if deploy {
        header.extend([
            "gpu",
            "tp",
            "KV/GPU",
            "tokens",
            "max seqs",
            "max ctx",
            "decode tok/s ≤",
        ]);
    }
    let mut b = Builder::default();
    b.push_record(header);
    for p in plans {
        let mut row = vec![
            p.model.clone(),
            p.attention.clone(),
            p.cache_dtype.clone(),
            format_count(p.seq as u64),
            p.batch.to_string(),
            format_bytes(p.bytes_per_token),
            format_bytes(p.seq_bytes as f64),
            format_bytes(p.batch_bytes as f64),
            p.paged_bytes
                .map_or("n/a".to_string(), |x| format_bytes(x as f64)),
        ];
        if deploy {
            match &p.capacity {
                Some(c) => row.extend([
                    p.gpu.clone().unwrap_or_else(|| "budget".to_string()),
                    p.tp.unwrap_or(0).to_string(),
                    format_bytes(c.kv_budget_bytes_per_gpu as f64),
                    format_count(c.token_capacity),
                    format_count(c.max_seqs),
                    c.max_context_at_batch
                        .map_or("unbounded".to_string(), format_count),
                    p.bounds.as_ref().map_or(String::new(), |b| {
                        format!("{:.0}", b.decode_tokens_per_s_max)
                    }),
                ]),
                None => row.extend(std::iter::repeat_n(String::new(), 7)),
            }
        }
        b.push_record(row);
    }
    b.build().with(Style::sharp()).to_string() + "\n"
}
