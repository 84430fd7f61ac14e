//! `kvbench models`: the built-in model (or GPU) registry with shapes and sources.

use clap::Args;
use kvbench_planner::dtype::{CacheDtype, DtypeKind};
use kvbench_planner::layout::bytes_per_token;
use kvbench_planner::units::{format_bytes, format_count};
use kvbench_planner::{gpu, registry, AttentionKind, ModelInfo};
use serde_json::{json, Value};
use tabled::builder::Builder;
use tabled::settings::Style;

use super::plan::{render_rows, Format};

/// List the built-in model registry with shapes (or, with --gpus, the GPU registry).
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// List the GPU registry (memory, bandwidth, dense FP16/FP8 rates, sources) instead.
    #[arg(long)]
    pub gpus: bool,
    /// Only entries whose name contains this text (case-insensitive).
    #[arg(long)]
    pub filter: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Layers that keep state or no KV of their own: "12 full / 36 gated-delta-net",
/// "44 full + 44 mamba2 state", "4 full / 16 sliding 512 / 15 shared-kv".
fn hybrid_label(m: &ModelInfo) -> Option<String> {
    let s = &m.shape;
    let shared = s
        .layer_kinds
        .iter()
        .filter(|k| matches!(k, AttentionKind::SharedKv { .. }))
        .count();
    if s.state.is_none() && shared == 0 {
        return None;
    }
    let count = |f: &dyn Fn(&AttentionKind) -> bool| s.layer_kinds.iter().filter(|k| f(k)).count();
    let full = count(&|k| matches!(k, AttentionKind::Full | AttentionKind::Mla { .. }));
    let mut parts = vec![format!("{full} full")];
    let sliding: Vec<u32> = s
        .layer_kinds
        .iter()
        .filter_map(|k| match k {
            AttentionKind::Sliding { window } => Some(*window),
            _ => None,
        })
        .collect();
    if let Some(w) = sliding.first() {
        parts.push(format!("{} sliding {w}", sliding.len()));
    }
    if shared > 0 {
        parts.push(format!("{shared} shared-kv"));
    }
    let mut label = parts.join(" / ");
    if let Some(st) = &s.state {
        let no_attn = count(&|k| *k == AttentionKind::NoAttention);
        let mixer = st.mixer.name();
        if no_attn == 0 {
            label.push_str(&format!(" + {} {mixer} state", st.layers.len()));
        } else {
            label.push_str(&format!(" / {} {mixer}", st.layers.len()));
            let plain = no_attn.saturating_sub(st.layers.len());
            if plain > 0 {
                label.push_str(&format!(" / {plain} mlp-only"));
            }
        }
    }
    Some(label)
}

/// How a model's layers attend, in a few words.
fn layers_label(m: &ModelInfo) -> String {
    if let Some(label) = hybrid_label(m) {
        return label;
    }
    let kinds = &m.shape.layer_kinds;
    let sizes = |pick: fn(&AttentionKind) -> Option<u32>| -> Vec<u32> {
        kinds.iter().filter_map(pick).collect()
    };
    let sliding = sizes(|k| match k {
        AttentionKind::Sliding { window } => Some(*window),
        _ => None,
    });
    let chunked = sizes(|k| match k {
        AttentionKind::Chunked { chunk } => Some(*chunk),
        _ => None,
    });
    match kinds.first() {
        Some(AttentionKind::Mla {
            kv_lora_rank,
            rope_dim,
        }) => format!("mla {kv_lora_rank}+{rope_dim}"),
        _ if sliding.len() == kinds.len() => format!("sliding {}", sliding[0]),
        _ if !sliding.is_empty() => format!(
            "{} sliding {} / {} full",
            sliding.len(),
            sliding[0],
            kinds.len() - sliding.len()
        ),
        _ if !chunked.is_empty() => format!(
            "{} chunked {} / {} full",
            chunked.len(),
            chunked[0],
            kinds.len() - chunked.len()
        ),
        _ => "full".to_string(),
    }
}

fn attention_label(m: &ModelInfo) -> String {
    let s = &m.shape;
    if matches!(s.layer_kinds.first(), Some(AttentionKind::Mla { .. })) {
        "mla".to_string()
    } else if s.kv_heads == s.q_heads {
        "mha".to_string()
    } else if s.kv_heads == 1 {
        "mqa".to_string()
    } else {
        "gqa".to_string()
    }
}

fn model_row(m: &ModelInfo) -> Vec<(String, Value)> {
    let f16 = CacheDtype::new(DtypeKind::F16);
    let s = &m.shape;
    vec![
        ("model".into(), json!(m.key)),
        ("name".into(), json!(s.name)),
        ("attention".into(), json!(attention_label(m))),
        ("layers".into(), json!(s.layers)),
        ("layer_kinds".into(), json!(layers_label(m))),
        ("q_heads".into(), json!(s.q_heads)),
        ("kv_heads".into(), json!(s.kv_heads)),
        ("head_dim".into(), json!(s.head_dim)),
        ("hidden".into(), json!(s.hidden)),
        ("params".into(), json!(m.params)),
        ("active_params".into(), json!(m.active_params)),
        (
            "kv_bytes_per_token_f16".into(),
            json!(bytes_per_token(s, &f16, &f16)),
        ),
        ("max_context_tokens".into(), json!(m.max_context)),
        ("hf_id".into(), json!(m.hf_id)),
        ("source".into(), json!(m.source)),
    ]
}

fn gpu_row(g: &gpu::GpuSpec) -> Vec<(String, Value)> {
    vec![
        ("gpu".into(), json!(g.key)),
        ("name".into(), json!(g.name)),
        ("memory_gb".into(), json!(g.memory_gb)),
        ("usable_bytes".into(), json!(g.usable_bytes)),
        ("bandwidth_gbps".into(), json!(g.bandwidth_gbps)),
        ("fp16_dense_tflops".into(), json!(g.fp16_tflops)),
        ("fp8_dense_tflops".into(), json!(g.fp8_tflops)),
        ("usable_source".into(), json!(g.usable_source)),
        ("source".into(), json!(g.source)),
    ]
}

fn params(p: f64) -> String {
    if p >= 1e9 {
        format!("{:.1}B", p / 1e9)
    } else {
        format!("{:.0}M", p / 1e6)
    }
}

fn model_table(models: &[ModelInfo]) -> String {
    let f16 = CacheDtype::new(DtypeKind::F16);
    let mut b = Builder::default();
    b.push_record([
        "model",
        "attention",
        "layers",
        "layer kinds",
        "q",
        "kv",
        "head_dim",
        "hidden",
        "params",
        "KV/token f16",
        "max ctx",
        "source (config.json)",
    ]);
    for m in models {
        let s = &m.shape;
        let p = if m.active_params < m.params {
            format!("{} ({} active)", params(m.params), params(m.active_params))
        } else {
            params(m.params)
        };
        b.push_record([
            m.key.clone(),
            attention_label(m),
            s.layers.to_string(),
            layers_label(m),
            s.q_heads.to_string(),
            s.kv_heads.to_string(),
            s.head_dim.to_string(),
            s.hidden.to_string(),
            p,
            format_bytes(bytes_per_token(s, &f16, &f16)),
            format_count(m.max_context as u64),
            format!("hf.co/{}", m.hf_id),
        ]);
    }
    b.build().with(Style::sharp()).to_string() + "\n"
}

fn gpu_table(gpus: &[gpu::GpuSpec]) -> String {
    let mut b = Builder::default();
    b.push_record([
        "gpu",
        "name",
        "memory",
        "usable",
        "bandwidth",
        "FP16 dense",
        "FP8 dense",
        "source",
    ]);
    for g in gpus {
        b.push_record([
            g.key.to_string(),
            g.name.to_string(),
            format!("{} GB", g.memory_gb),
            format_bytes(g.usable_bytes as f64),
            format!("{} GB/s", g.bandwidth_gbps),
            format!("{} TFLOPS", g.fp16_tflops),
            g.fp8_tflops
                .map_or("-".to_string(), |f| format!("{f} TFLOPS")),
            g.source.to_string(),
        ]);
    }
    b.build().with(Style::sharp()).to_string() + "\n"
}

pub fn run(args: ModelsArgs) -> anyhow::Result<std::process::ExitCode> {
    let wanted = args.filter.as_deref().map(str::to_ascii_lowercase);
    let keep = |names: &[&str]| {
        wanted
            .as_deref()
            .is_none_or(|w| names.iter().any(|n| n.to_ascii_lowercase().contains(w)))
    };
    let text = if args.gpus {
        let gpus: Vec<_> = gpu::all()
            .into_iter()
            .filter(|g| keep(&[g.key.as_ref(), g.name.as_ref()]))
            .collect();
        if gpus.is_empty() {
            anyhow::bail!(
                "no GPU matches --filter '{}'; run `kvbench models --gpus` to list all",
                args.filter.unwrap_or_default()
            );
        }
        match args.format {
            Format::Table => gpu_table(&gpus),
            f => render_rows(&gpus.iter().map(gpu_row).collect::<Vec<_>>(), f),
        }
    } else {
        let models: Vec<_> = registry::all()
            .into_iter()
            .filter(|m| keep(&[&m.key, &m.hf_id, &m.shape.name]))
            .collect();
        if models.is_empty() {
            anyhow::bail!(
                "no model matches --filter '{}'; run `kvbench models` to list all",
                args.filter.unwrap_or_default()
            );
        }
        match args.format {
            Format::Table => model_table(&models),
            f => render_rows(&models.iter().map(model_row).collect::<Vec<_>>(), f),
        }
    };
    super::out::print(&text)?;
    Ok(std::process::ExitCode::SUCCESS)
}
