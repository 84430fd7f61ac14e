//! How `kvbench plan` shows its plans: a detailed table for one plan, a summary table for a
//! sweep, and csv/json/markdown rows for machines.

use kvbench_bench::export;
use kvbench_planner::deploy::WindowRule;
use kvbench_planner::plan::Plan;
use kvbench_planner::units::{format_bytes, format_count};
use serde_json::Value;
use tabled::builder::Builder;
use tabled::settings::Style;

use super::Format;

/// Rows of named values as csv, json or markdown (the export layer's serializers).
pub fn render_rows(rows: &[Vec<(String, Value)>], format: Format) -> String {
    let format = match format {
        Format::Table | Format::Csv => export::Format::Csv,
        Format::Json => export::Format::Json,
        Format::Jsonl => export::Format::Jsonl,
        Format::Md => export::Format::Markdown,
    };
    export::rows::render(rows, format)
}

fn bytes(b: u64) -> String {
    format!("{} ({} B)", format_bytes(b as f64), format_count(b))
}

/// One plan, figure by figure, with human units and what each figure assumes.
/// ", 36 chunked-attention layers (chunks of 8192)" for a model with chunked layers.
fn chunk_note(p: &Plan) -> String {
    match p.chunk_tokens {
        Some(chunk) if p.chunked_layers > 0 => format!(
            ", {} chunked-attention layers (chunks of {chunk})",
            p.chunked_layers
        ),
        _ => String::new(),
    }
}

pub(super) fn detail_table(p: &Plan) -> String {
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
        ) + &chunk_note(p)
            + &layer_note(p),
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
            "{} ({} per layer; {} vs MHA)",
            format_bytes(p.bytes_per_token),
            format_bytes(p.bytes_per_token_per_layer),
            vs_mha(p.saving_vs_mha)
        ),
    );
    let window_note = if p.sliding_layers > 0 {
        format!(", sliding layers capped by rule '{}'", p.window_rule.name())
    } else if p.chunked_layers > 0 {
        ", chunked layers holding one chunk".to_string()
    } else {
        String::new()
    };
    add(
        &format!("one sequence, {} tokens", format_count(p.seq as u64)),
        format!("{}{window_note}", bytes(p.seq_bytes)),
    );
    if p.state_layers > 0 {
        add(
            "state per sequence",
            format!(
                "{} (conv {} + ssm {}; {} x {} layers, {}; fixed whatever the context; vLLM MambaStateShapeCalculator)",
                bytes(p.state_bytes_per_seq),
                format_bytes(p.state_conv_bytes_per_seq as f64),
                format_bytes(p.state_ssm_bytes_per_seq as f64),
                p.state_layers,
                p.state_mixer.as_deref().unwrap_or(""),
                p.state_dtype.as_deref().unwrap_or("")
            ),
        );
        add(
            &format!("KV + state, {} tokens", format_count(p.seq as u64)),
            bytes(p.seq_total_bytes),
        );
    }
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
            add(
                "weights per GPU",
                if c.weights_expert_bytes_per_gpu > 0 {
                    format!(
                        "{} (routed experts {} + the rest {}) — {}",
                        bytes(c.weights_bytes_per_gpu),
                        format_bytes(c.weights_expert_bytes_per_gpu as f64),
                        format_bytes(
                            (c.weights_bytes_per_gpu - c.weights_expert_bytes_per_gpu) as f64
                        ),
                        c.weights_source
                    )
                } else {
                    format!("{} — {}", bytes(c.weights_bytes_per_gpu), c.weights_source)
                },
            );
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
            for part in c.reserve_detail.iter().flat_map(|r| &r.components) {
                add(
                    &format!("  reserve: {}", part.name),
                    format!("{} — {}", format_bytes(part.bytes as f64), part.rule),
                );
            }
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
            if c.kv_cache_groups > 1 {
                format!(
                    "{} tokens ({} blocks of {} over {} KV cache groups of {} layers)",
                    format_count(c.token_capacity),
                    format_count(c.blocks),
                    format_bytes(c.block_bytes as f64),
                    c.kv_cache_groups,
                    c.layers_per_group
                )
            } else {
                format!(
                    "{} tokens ({} blocks of {})",
                    format_count(c.token_capacity),
                    format_count(c.blocks),
                    format_bytes(c.block_bytes as f64)
                )
            },
        );
        add("allocator rule", allocator_text(c));
        if c.kv_cache_groups > 1 {
            add(
                "token capacity as vLLM > 0.19 logs it",
                format!(
                    "{} tokens (int(max concurrency x {}); vLLM <= 0.19 logs the figure above)",
                    format_count(c.token_capacity_vllm_new),
                    format_count(p.seq as u64)
                ),
            );
        }
        add(
            &format!("max sequences of {} tokens", format_count(p.seq as u64)),
            if c.attention_groups > 1 || c.replicas > 1 {
                format!(
                    "{} per attention group x {} group(s) x {} replica(s) = {} per deployment (true per-sequence figure, {:.2}x per group, window rule '{}')",
                    format_count(c.max_seqs),
                    c.attention_groups,
                    c.replicas,
                    format_count(c.max_seqs_per_deployment),
                    c.concurrency,
                    p.window_rule.name()
                )
            } else {
                format!(
                    "{} (true per-sequence figure, {:.2}x, window rule '{}')",
                    format_count(c.max_seqs),
                    c.concurrency,
                    p.window_rule.name()
                )
            },
        );
        if let Some(f) = &p.shared_prefix_fit {
            add(
                &format!("max sequences sharing {} prefix tokens", format_count(f.prefix as u64)),
                format!(
                    "{} per group ({} per deployment) vs {} unshared: the prefix's {} blocks held once, {} of each sequence's own (prefix caching)",
                    count_or_unbounded(f.max_seqs),
                    count_or_unbounded(f.max_seqs_per_deployment),
                    format_count(c.max_seqs),
                    format_count(f.shared_blocks),
                    format_count(f.own_blocks)
                ),
            );
        }
        add(
            "vLLM's maximum concurrency",
            if p.sliding_layers > 0 {
                format!(
                    "{:.2}x (as vLLM logs it: sliding groups count window - 1 + max-batched-tokens)",
                    c.vllm_concurrency
                )
            } else if p.chunked_layers > 0 && c.kv_cache_groups > 1 {
                format!(
                    "{:.2}x (as vLLM logs it: chunked groups count chunk + max-batched-tokens)",
                    c.vllm_concurrency
                )
            } else {
                format!("{:.2}x (as vLLM logs it)", c.vllm_concurrency)
            },
        );
        add(
            &format!("what fits at batch {}", p.batch),
            c.max_context_at_batch
                .map_or("any context (no layer keeps every token)".to_string(), |t| {
                    // The search stops at u32::MAX tokens: more fits than it looks at.
                    let at_least = if t >= u32::MAX as u64 { "at least " } else { "" };
                    let longest = if p.max_context > 0 && t > p.max_context as u64 {
                        format!(
                            "longest context {at_least}{} tokens (beyond the model's {}-token maximum)",
                            format_count(t),
                            format_count(p.max_context as u64)
                        )
                    } else {
                        format!("longest context {at_least}{} tokens", format_count(t))
                    };
                    format!(
                        "{longest}; at {} tokens the largest batch is {}",
                        format_count(p.seq as u64),
                        format_count(c.max_seqs)
                    )
                }),
        );
        if let Some(note) = &c.node_note {
            add("note", note.clone());
        }
    }
    if let Some(b) = &p.bounds {
        match &p.capacity {
            Some(c) if !c.batch_fits => add(
                "decode bound (bandwidth)",
                format!(
                    "not given: a batch of {} does not fit at {} tokens; the largest that does is {}",
                    p.batch,
                    format_count(p.seq as u64),
                    format_count(c.max_seqs)
                ),
            ),
            _ => add(
                "decode bound (bandwidth)",
                format!(
                    "<= {:.0} tokens/s (step >= {:.2} ms reading {} per GPU)",
                    b.decode_tokens_per_s_max,
                    b.decode_step_ms_min,
                    format_bytes(b.step_bytes_per_gpu as f64)
                ),
            ),
        }
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

/// ", 12 of 48 layers keep KV, 36 keep a gated-delta-net state" for models where not every
/// layer keeps KV; empty otherwise.
fn layer_note(p: &Plan) -> String {
    let mut parts = Vec::new();
    if p.kv_layers < p.layers {
        parts.push(format!("{} of {} layers keep KV", p.kv_layers, p.layers));
    }
    if p.state_layers > 0 {
        parts.push(format!(
            "{} keep a {} state",
            p.state_layers,
            p.state_mixer.as_deref().unwrap_or("recurrent")
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

/// Block size and the allocator rule the capacity follows.
fn allocator_text(c: &kvbench_planner::deploy::Capacity) -> String {
    if c.state_bytes_per_seq_per_gpu > 0 {
        format!(
            "attention blocks of {} tokens; {} of state per sequence per GPU; {}",
            c.block_size,
            format_bytes(c.state_bytes_per_seq_per_gpu as f64),
            c.allocator_rule
        )
    } else {
        format!("blocks of {} tokens; {}", c.block_size, c.allocator_rule)
    }
}

fn count_or_unbounded(n: u64) -> String {
    if n == u64::MAX {
        "unbounded by blocks".to_string()
    } else {
        format_count(n)
    }
}

/// A saving against MHA as a signed percentage ("-87.5%"; "0%" for MHA itself).
fn vs_mha(saving: f64) -> String {
    if saving.abs() < 5e-4 {
        "0%".to_string()
    } else {
        format!("{:.1}%", -100.0 * saving)
    }
}

/// Many plans, one line each, the key figures in human units.
pub(super) fn summary_table(plans: &[Plan]) -> String {
    let deploy = plans.iter().any(|p| p.capacity.is_some());
    let mut header = vec![
        "model",
        "attention",
        "vs MHA",
        "dtype",
        "seq",
        "batch",
        "KV/token",
        "sequence",
        "batch KV",
        "paged",
    ];
    let shared = plans.iter().any(|p| p.shared_prefix > 0);
    if shared {
        header.push("paged, prefix shared");
    }
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
            vs_mha(p.saving_vs_mha),
            p.cache_dtype.clone(),
            format_count(p.seq as u64),
            p.batch.to_string(),
            format_bytes(p.bytes_per_token),
            format_bytes(p.seq_bytes as f64),
            format_bytes(p.batch_bytes as f64),
            p.paged_bytes
                .map_or("n/a".to_string(), |x| format_bytes(x as f64)),
        ];
        if shared {
            row.push(
                p.shared_prefix_paged_bytes
                    .map_or("n/a".to_string(), |x| format_bytes(x as f64)),
            );
        }
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
                    // No decode bound for a batch that does not fit.
                    match (&p.bounds, c.batch_fits) {
                        (Some(b), true) => format!("{:.0}", b.decode_tokens_per_s_max),
                        (Some(_), false) => "batch does not fit".to_string(),
                        (None, _) => String::new(),
                    },
                ]),
                None => row.extend(std::iter::repeat_n(String::new(), 7)),
            }
        }
        b.push_record(row);
    }
    let mut text = b.build().with(Style::sharp()).to_string() + "\n";
    // What the figures assume, once for the whole table.
    let mut notes = vec![format!("paged: blocks of {} tokens", plans[0].block_size)];
    if shared {
        notes.push(format!(
            "prefix: first {} tokens shared by the batch",
            plans[0].shared_prefix
        ));
    }
    if plans.iter().any(|p| p.sliding_layers > 0) {
        notes.push(format!(
            "sliding layers hold: {}",
            match plans[0].window_rule {
                WindowRule::Window => "their window",
                WindowRule::Vllm => "window - 1 + max-batched-tokens (vLLM)",
            }
        ));
    }
    if deploy {
        notes.push("decode tok/s is an upper bound from bandwidth".to_string());
    }
    text.push_str(&notes.join("; "));
    text.push('\n');
    text
}
