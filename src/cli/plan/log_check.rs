//! `kvbench plan --vllm-log FILE`: size the deployment a vLLM server log describes and set
//! kvbench's figures beside the logged ones. Reading files here; parsing and arithmetic in
//! the planner.

use anyhow::{bail, Context};
use kvbench_planner::deploy::{capacity_as_logged, Capacity, Deployment, WindowRule};
use kvbench_planner::engine::{vllm, Engine, Version};
use kvbench_planner::vllm_log::{self, CheckRow, LoggedRun, Predicted};
use kvbench_planner::{find_model, gpu, parse_config, parse_kv_dtypes, ModelInfo};
use tabled::builder::Builder;
use tabled::settings::Style;

use super::{checkpoint, weights_for, Checkpoint, PlanArgs};

/// The model the log names: --config, else the registry, else the local Hugging Face cache.
fn model(args: &PlanArgs, log: &LoggedRun) -> anyhow::Result<(ModelInfo, Option<Checkpoint>)> {
    if !args.config.is_empty() || !args.model.is_empty() {
        let mut m = super::models_with_checkpoints(args)?;
        return Ok(m.swap_remove(0));
    }
    let Some(name) = log.model.as_deref() else {
        bail!("the log does not name its model (no non-default args or engine config line); pass --model or --config");
    };
    // A local path names the model by its last component; a quantized variant's KV cache
    // is its base model's (its weights come from --weights-dtype or the log's name).
    let last = name.rsplit('/').next().unwrap_or(name);
    let base = [
        "-FP8",
        "-fp8",
        "-AWQ",
        "-awq",
        "-quantized.w8a8",
        "-GPTQ-Int4",
    ]
    .iter()
    .find_map(|s| last.strip_suffix(s))
    .unwrap_or(last);
    for candidate in [name, last, base] {
        if let Ok(m) = find_model(candidate) {
            let published = Checkpoint::published(&m);
            return Ok((m, published));
        }
    }
    let Some(path) = checkpoint::hf_cache_config(name) else {
        bail!("model '{name}' of the log is not in kvbench's registry nor in the local Hugging Face cache; pass --config path/to/config.json");
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let info = parse_config(&text, name).with_context(|| format!("in {}", path.display()))?;
    let dir = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    Ok((
        info,
        Some(Checkpoint {
            config: text,
            dir: Some(dir),
        }),
    ))
}

/// The figures kvbench predicts for the logged deployment, from GPU + checkpoint alone, and
/// its token capacity given the logged KV budget.
struct Sizing {
    free: Capacity,
    given_budget: Option<Capacity>,
    /// How the given budget was read (one line, or the binding pipeline stage).
    given_from: String,
}

fn size(
    args: &PlanArgs,
    log: &LoggedRun,
    model: &ModelInfo,
    ckpt: Option<&Checkpoint>,
) -> anyhow::Result<(Sizing, Deployment, u32)> {
    let gpu_spec = match (args.deploy.gpu.first(), log.gpu_name.as_deref()) {
        (Some(g), _) => gpu::find(g)?,
        (None, Some(name)) => gpu::find(name)
            .with_context(|| format!("the log's GPU '{name}'; pass --gpu to name it"))?,
        (None, None) => bail!("the log does not name its GPU; pass --gpu (e.g. --gpu h100)"),
    };
    let mut engine = args.engine.options()?;
    engine.engine = Engine::Vllm;
    if engine.version.is_none() {
        engine.version = log.rules_version().and_then(|v| v.parse().ok());
    }
    engine.max_num_seqs = engine.max_num_seqs.or(log.max_num_seqs);
    engine.enforce_eager = engine.enforce_eager || log.enforce_eager == Some(true);
    // What the log says of the hybrid KV cache manager outranks the version's default.
    engine.hybrid.disabled |= log.hybrid_kv_disabled;
    if log.chunked_kv_full {
        engine.hybrid.chunked.get_or_insert(false);
    }
    let tp = args.deploy.tp.first().copied().or(log.tp).unwrap_or(1);
    let pp = log.pp.unwrap_or(args.deploy.pp);
    // vLLM's server default: 8192 batched tokens on >= 70 GiB GPUs (other than A100), else 2048.
    let mnbt = log.max_num_batched_tokens.unwrap_or(
        if gpu_spec.usable_bytes >= 70 << 30 && !gpu_spec.key.starts_with("a100") {
            8192
        } else {
            2048
        },
    );
    // vLLM's default max_model_len is the model's max_position_embeddings.
    let context = log.max_model_len.unwrap_or(if model.max_context > 0 {
        model.max_context
    } else {
        args.seq
            .first()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096)
    });
    let named = log.model.as_deref().unwrap_or("").to_ascii_lowercase();
    let choice = match args.deploy.weights_dtype.first() {
        Some(w) => Some(w.parse().context("in --weights-dtype")?),
        // A registry model served from a quantized checkpoint: its name says the precision.
        None if ckpt.is_none() && named.contains("fp8") => Some("fp8".parse()?),
        None if ckpt.is_none() && (named.contains("awq") || named.contains("int4")) => {
            Some("int4".parse()?)
        }
        None if ckpt.is_none() && named.contains("w8a8") => Some("int8".parse()?),
        None => None,
    };
    let mut dep = Deployment {
        gpu: Some(gpu_spec),
        // Saturating: a huge tp or pp is refused by the sizing, in words, not by overflow.
        gpus: tp.saturating_mul(pp),
        tp,
        pp,
        weights: choice.unwrap_or_else(|| "bf16".parse().expect("bf16 is known")),
        mem_util: args
            .deploy
            .mem_util
            .or(log.gpu_memory_utilization)
            .unwrap_or(0.9),
        reserve: args
            .deploy
            .reserve
            .as_deref()
            .map(kvbench_planner::units::parse_size)
            .transpose()
            .context("in --reserve")?,
        kv_budget: None,
        block_size: args.cache.block_size.unwrap_or(16),
        max_batched_tokens: mnbt,
        window_rule: WindowRule::Vllm,
        dp_attention: 1,
        ep: 1,
        engine,
        weights_detail: weights_for(ckpt, choice)?,
    };
    // The log's kv_cache_dtype; a log without it takes --cache-dtype.
    let kv = match (&log.kv_cache_dtype, args.cache.cache_dtype.first()) {
        (Some(d), _) => parse_kv_dtypes(vllm_log::cache_dtype_name(Some(d))?)?,
        (None, Some(given)) => parse_kv_dtypes(given).context("in --cache-dtype")?,
        (None, None) => parse_kv_dtypes("bf16")?,
    };
    let free = capacity_as_logged(model, &kv, &dep, context, 1)?;
    let bytes = |gib: f64| (gib * (1u64 << 30) as f64) as u64;
    // With pp > 1 each stage logs its own budget; the stage with the least per layer binds.
    let by_rank: Vec<(u32, u64)> = log
        .available_kv_by_rank
        .iter()
        .map(|&(rank, gib)| (rank, bytes(gib)))
        .collect();
    let pp_budget = (pp > 1)
        .then(|| vllm::pp_binding_budget(&by_rank, model.shape.layers, tp, pp))
        .flatten();
    let given_budget = match log.available_kv_gib {
        Some(gib) => {
            let mut d = dep.clone();
            d.kv_budget = Some(pp_budget.unwrap_or_else(|| bytes(gib)));
            Some(capacity_as_logged(model, &kv, &d, context, 1)?)
        }
        None => None,
    };
    dep.kv_budget = None;
    let given_from = match pp_budget {
        Some(b) => format!(
            "pp {pp}: stages of {:?} layers, the stage with the least logged KV memory per layer binds ({:.2} GiB over the largest stage)",
            vllm::pp_stage_layers(model.shape.layers, pp),
            b as f64 / (1u64 << 30) as f64
        ),
        None => "the first logged line".to_string(),
    };
    Ok((
        Sizing {
            free,
            given_budget,
            given_from,
        },
        dep,
        context,
    ))
}

/// The token capacity as the log's vLLM version reports it, and the rule's name.
fn logged_tokens(c: &Capacity, version: Option<Version>) -> (u64, String) {
    let old = version.is_some_and(|v| v <= Version::new(0, 19));
    if c.kv_cache_groups <= 1 {
        (c.token_capacity, "blocks x block_size".to_string())
    } else if old {
        (
            c.token_capacity,
            "vLLM <= 0.19: blocks // groups x block_size".to_string(),
        )
    } else {
        (
            c.token_capacity_vllm_new,
            "vLLM > 0.19: int(max concurrency x max_model_len)".to_string(),
        )
    }
}

pub fn run(args: &PlanArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --vllm-log {}", path.display()))?;
    let log =
        vllm_log::parse(&text).with_context(|| format!("in --vllm-log {}", path.display()))?;
    let (model, ckpt) = model(args, &log)?;
    let (sizing, dep, context) = size(args, &log, &model, ckpt.as_ref())?;
    let version = dep.engine.version;
    let c = &sizing.free;
    let (tokens, rule) = logged_tokens(c, version);
    let predicted = Predicted {
        weights_bytes: c.weights_bytes_per_gpu,
        weights_source: c.weights_source.clone(),
        kv_budget_bytes: c.kv_budget_bytes_per_gpu,
        reserve_note: c.reserve_note.clone(),
        kv_tokens: tokens,
        token_rule: rule.clone(),
        concurrency: c.vllm_concurrency,
        allocator_rule: c.allocator_rule.clone(),
    };
    let mut rows = vllm_log::compare(&log, &predicted);
    if let (Some(given), Some(t)) = (&sizing.given_budget, log.kv_tokens) {
        let (k, _) = logged_tokens(given, version);
        rows.push(CheckRow {
            figure: "GPU KV cache size, from the logged KV memory",
            logged: t.to_string(),
            kvbench: k.to_string(),
            diff: (t > 0).then(|| (k as f64 - t as f64) / t as f64),
            explained_by: format!(
                "block rounding only ({rule}); KV memory from {}",
                sizing.given_from
            ),
        });
    }
    if args.format != super::Format::Table {
        let table: Vec<Vec<(String, serde_json::Value)>> = rows
            .iter()
            .map(|r| {
                vec![
                    ("model".to_string(), model.shape.name.clone().into()),
                    ("figure".to_string(), r.figure.into()),
                    ("logged".to_string(), r.logged.clone().into()),
                    ("kvbench".to_string(), r.kvbench.clone().into()),
                    ("diff".to_string(), r.diff.into()),
                    ("explained_by".to_string(), r.explained_by.clone().into()),
                ]
            })
            .collect();
        crate::cli::out::print(&super::render_rows(&table, args.format))?;
        return Ok(());
    }
    let mut b = Builder::default();
    b.push_record([
        "figure",
        "vLLM logged",
        "kvbench",
        "difference",
        "explained by",
    ]);
    for r in &rows {
        b.push_record([
            r.figure.to_string(),
            r.logged.clone(),
            r.kvbench.clone(),
            r.diff
                .map_or("n/a".to_string(), |d| format!("{:+.2}%", 100.0 * d)),
            r.explained_by.clone(),
        ]);
    }
    let mut text = format!(
        "{} on {} (tp {}, pp {}, gpu_memory_utilization {}, max_model_len {context}, max_num_batched_tokens {}), log of vLLM {}; rules follow vLLM {}",
        model.shape.name,
        dep.gpu.as_ref().map_or("?", |g| g.key.as_ref()),
        dep.tp,
        dep.pp,
        dep.mem_util,
        dep.max_batched_tokens,
        log.version.as_deref().unwrap_or("(version not logged)"),
        version.unwrap_or(vllm::LATEST),
    );
    text.push('\n');
    text.push_str(&b.build().with(Style::sharp()).to_string());
    text.push('\n');
    let missing = log.missing();
    if !missing.is_empty() {
        text.push_str(&format!("the log lacks: {}\n", missing.join("; ")));
    }
    if let Some(v) = version {
        if v < Version::new(0, 8) {
            text.push_str(&format!(
                "note: vLLM {v} predates the V1 engine whose rules kvbench follows\n"
            ));
        }
    }
    crate::cli::out::print(&text)?;
    Ok(())
}
