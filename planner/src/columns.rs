//! A plan as one flat row of named columns (units in the names): the plan CSV/JSON contract,
//! documented in results/plan-csv.md.

use serde_json::{json, Value};

use crate::plan::Plan;

/// The fixed columns of a plan row, in order (extra sections append their own).
pub const PLAN_COLUMNS: &[&str] = &[
    "model",
    "attention",
    "layers",
    "q_heads",
    "kv_heads",
    "head_dim",
    "sliding_layers",
    "cache_dtype",
    "k_bits_per_element",
    "v_bits_per_element",
    "kv_bytes_per_token",
    "kv_bytes_per_token_per_layer",
    "kv_saving_vs_mha",
    "seq_tokens",
    "batch",
    "seq_bytes",
    "batch_bytes",
    "block_size_tokens",
    "paged_bytes",
    "paged_waste_bytes",
    "shared_prefix_tokens",
    "shared_prefix_paged_bytes",
    "window_rule",
    "gpu",
    "gpus",
    "tp",
    "pp",
    "weights_dtype",
    "weights_bytes_per_gpu",
    "usable_bytes_per_gpu",
    "reserve_bytes_per_gpu",
    "kv_budget_bytes_per_gpu",
    "kv_heads_per_gpu",
    "kv_heads_replicated",
    "block_bytes",
    "kv_cache_groups",
    "blocks_per_gpu",
    "token_capacity",
    "max_seqs",
    "concurrency",
    "max_context_tokens_at_batch",
    "decode_step_ms_min",
    "decode_tokens_per_s_max",
    "ttft_ms_min",
    "kv_layers",
    "state_layers",
    "state_bytes_per_seq",
    "seq_total_bytes",
    "pool_block_size_tokens",
    "weights_expert_bytes_per_gpu",
    "attention_groups",
    "max_seqs_per_deployment",
    "max_seqs_shared_prefix",
    "batch_fits",
    "weights_source",
    "reserve_rule",
    "reserve_activation_bytes",
    "reserve_sampler_bytes",
    "reserve_non_torch_bytes",
    "reserve_cuda_graph_bytes",
    "reserve_runtime_bytes",
];

/// The reserve component a column holds, by the name the engine module gives it.
const RESERVE_COLUMNS: &[(&str, &str)] = &[
    ("reserve_activation_bytes", "peak activation"),
    ("reserve_sampler_bytes", "sampler"),
    ("reserve_non_torch_bytes", "non-torch"),
    ("reserve_cuda_graph_bytes", "CUDA graphs"),
    ("reserve_runtime_bytes", "runtime"),
];

fn opt<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

/// The row of one plan; absent figures (no deployment, unpaged dtype) are null.
pub fn plan_row(p: &Plan) -> Vec<(String, Value)> {
    let c = p.capacity.as_ref();
    let b = p.bounds.as_ref();
    let fits = c.is_none_or(|c| c.batch_fits);
    let values: Vec<Value> = vec![
        json!(p.model),
        json!(p.attention),
        json!(p.layers),
        json!(p.q_heads),
        json!(p.kv_heads),
        json!(p.head_dim),
        json!(p.sliding_layers),
        json!(p.cache_dtype),
        json!(p.k_bits_per_element),
        json!(p.v_bits_per_element),
        json!(p.bytes_per_token),
        json!(p.bytes_per_token_per_layer),
        json!(p.saving_vs_mha),
        json!(p.seq),
        json!(p.batch),
        json!(p.seq_bytes),
        json!(p.batch_bytes),
        json!(p.block_size),
        opt(p.paged_bytes),
        opt(p.paged_waste_bytes),
        json!(p.shared_prefix),
        opt(p.shared_prefix_paged_bytes),
        json!(p.window_rule.name()),
        opt(p.gpu.clone()),
        opt(p.gpus),
        opt(p.tp),
        opt(p.pp),
        opt(p.weights_dtype.clone()),
        opt(c.map(|c| c.weights_bytes_per_gpu)),
        opt(c.map(|c| c.usable_bytes_per_gpu)),
        opt(c.map(|c| c.reserve_bytes_per_gpu)),
        opt(c.map(|c| c.kv_budget_bytes_per_gpu)),
        opt(c.map(|c| c.kv_heads_per_gpu)),
        opt(c.map(|c| c.kv_heads_replicated)),
        opt(c.map(|c| c.block_bytes)),
        opt(c.map(|c| c.kv_cache_groups)),
        opt(c.map(|c| c.blocks)),
        opt(c.map(|c| c.token_capacity)),
        opt(c.map(|c| c.max_seqs)),
        opt(c.map(|c| c.concurrency)),
        opt(c.and_then(|c| c.max_context_at_batch)),
        // Decode bounds only for a batch that fits.
        opt(b.filter(|_| fits).map(|b| b.decode_step_ms_min)),
        opt(b.filter(|_| fits).map(|b| b.decode_tokens_per_s_max)),
        opt(b.map(|b| b.ttft_ms_min)),
        json!(p.kv_layers),
        json!(p.state_layers),
        json!(p.state_bytes_per_seq),
        json!(p.seq_total_bytes),
        opt(c.map(|c| c.block_size)),
        opt(c.map(|c| c.weights_expert_bytes_per_gpu)),
        opt(c.map(|c| c.attention_groups)),
        opt(c.map(|c| c.max_seqs_per_deployment)),
        // Without a shared prefix, the unshared figure.
        opt(c.map(|c| {
            p.shared_prefix_fit
                .map_or(c.max_seqs_per_deployment, |f| f.max_seqs_per_deployment)
        })),
        opt(c.map(|c| c.batch_fits)),
        opt(c.map(|c| c.weights_source.clone())),
        opt(c.map(|c| match &c.reserve_detail {
            Some(r) => r.follows.clone(),
            None => c.reserve_note.clone(),
        })),
    ];
    // A component the engine's rule does not have (or a given --reserve) is empty.
    let component = |name: &str| {
        c.and_then(|c| c.reserve_detail.as_ref())
            .and_then(|r| r.components.iter().find(|x| x.name == name))
            .map(|x| x.bytes)
    };
    let values: Vec<Value> = values
        .into_iter()
        .chain(RESERVE_COLUMNS.iter().map(|(_, name)| opt(component(name))))
        .collect();
    let mut row: Vec<(String, Value)> = PLAN_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .zip(values)
        .collect();
    for section in &p.extra {
        for (name, value) in &section.rows {
            row.push((name.clone(), json!(value)));
        }
    }
    row
}

/// A cell as CSV/markdown text: null is empty, numbers and strings as written.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::{Deployment, WindowRule};
    use crate::plan::{plan, PlanRequest};
    use crate::{find_model, parse_kv_dtypes};

    #[test]
    fn every_column_has_a_value() {
        let req = PlanRequest {
            model: find_model("llama3-8b").unwrap(),
            kv: parse_kv_dtypes("f16").unwrap(),
            attention: None,
            seq: 1024,
            batch: 2,
            block_size: 16,
            shared_prefix: 0,
            window_rule: WindowRule::Window,
            max_batched_tokens: 8192,
            deployment: Some(Deployment {
                gpu: Some(crate::gpu::find("h100").unwrap()),
                gpus: 1,
                tp: 1,
                pp: 1,
                weights: "bf16".parse().unwrap(),
                mem_util: 0.9,
                reserve: None,
                kv_budget: None,
                block_size: 16,
                max_batched_tokens: 8192,
                window_rule: WindowRule::Window,
                dp_attention: 1,
                ep: 1,
                engine: Default::default(),
                weights_detail: None,
            }),
            state_dtype: None,
        };
        let row = plan_row(&plan(&req).unwrap());
        assert_eq!(row.len(), PLAN_COLUMNS.len());
        // With a GPU every figure is present (max context is bounded for full attention),
        // but SGLang's one runtime reserve, which vLLM's rule splits into components.
        for (name, value) in &row {
            assert_eq!(value.is_null(), name == "reserve_runtime_bytes", "{name}");
        }
        let get = |n: &str| row.iter().find(|(k, _)| k == n).unwrap().1.clone();
        // The component columns are the reserve, part by part.
        let parts: u64 = RESERVE_COLUMNS
            .iter()
            .filter_map(|(c, _)| get(c).as_u64())
            .sum();
        assert_eq!(json!(parts), get("reserve_bytes_per_gpu"));
        assert_eq!(get("reserve_rule"), json!("vLLM 0.21"));
        assert_eq!(get("weights_source"), json!("parameters x bf16 (16 bits)"));
        assert_eq!(get("kv_saving_vs_mha"), json!(0.75));
        assert_eq!(get("batch_bytes"), json!(2u64 * 1024 * 131_072));
    }
}
