//! How `kvbench plan` shows its plans: a detailed table for one plan, a summary table for a
//! sweep, and csv/json/markdown rows for machines.

use kvbench_planner::columns::cell_text;
use kvbench_planner::deploy::WindowRule;
use kvbench_planner::plan::Plan;
use kvbench_planner::units::{format_bytes, format_count};
use serde_json::Value;
use tabled::builder::Builder;
use tabled::settings::Style;

use super::Format;

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
            "{} ({} per layer; {} vs MHA)",
            format_bytes(p.bytes_per_token),
            format_bytes(p.bytes_per_token_per_layer),
            vs_mha(p.saving_vs_mha)
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
            add(
                "weights per GPU",
                format!("{} — {}", bytes(c.weights_bytes_per_gpu), c.weights_source),
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
            format!(
                "{} per replica, true per-sequence figure ({:.2}x, window rule '{}')",
                format_count(c.max_seqs),
                c.concurrency,
                p.window_rule.name()
            ),
        );
        add(
            "vLLM's maximum concurrency",
            if p.sliding_layers > 0 {
                format!(
                    "{:.2}x (as vLLM logs it: sliding groups count window - 1 + max-batched-tokens)",
                    c.vllm_concurrency
                )
            } else {
                format!("{:.2}x (as vLLM logs it)", c.vllm_concurrency)
            },
        );
        add(
            &format!("max context at batch {}", p.batch),
            c.max_context_at_batch
                .map_or("unbounded (every layer slides)".to_string(), |t| {
                    if p.max_context > 0 && t > p.max_context as u64 {
                        format!(
                            "{} tokens (beyond the model's {}-token maximum)",
                            format_count(t),
                            format_count(p.max_context as u64)
                        )
                    } else {
                        format!("{} tokens", format_count(t))
                    }
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
                    p.bounds.as_ref().map_or(String::new(), |b| {
                        format!("{:.0}", b.decode_tokens_per_s_max)
                    }),
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
