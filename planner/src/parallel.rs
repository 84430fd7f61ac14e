//! How a deployment splits a model over its GPUs beyond tp x pp: data-parallel attention
//! (each attention group holds only its own requests' KV) and expert parallelism (routed
//! experts split across ranks, the other weights by the tp/pp rule).
//!
//! Follows SGLang's `--enable-dp-attention` (attention runs data-parallel over `dp` groups of
//! tp / dp GPUs, the MoE layers tensor- or expert-parallel over all tp GPUs) and vLLM's
//! `--enable-expert-parallel` (experts sharded over the EP ranks instead of sliced by tp).

use serde::Serialize;

use crate::deploy::Deployment;
use crate::error::PlanError;
use crate::registry::ModelInfo;
use crate::shape::{AttentionKind, ModelShape};

/// Where a model's parameters sit, for splitting them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ParamSplit {
    /// Routed experts (all of them).
    pub routed_experts: f64,
    /// Attention projections (Q, K, V, O or the MLA projections), an estimate from the shape.
    pub attention: f64,
    /// Everything else: embeddings, dense MLPs, shared experts, norms, state mixers.
    pub rest: f64,
}

/// Attention parameters of one layer, from the shape: Q, K, V, O projections; an MLA layer
/// as down-projection to the latent, up-projections of K and V from it, O, and Q through a
/// low-rank factor of 3 x kv_lora_rank (DeepSeek-V2/V3: q_lora_rank 1536 = 3 x 512).
fn attention_params_per_layer(shape: &ModelShape, kind: &AttentionKind) -> f64 {
    let h = shape.hidden as f64;
    let (q, kv, d) = (
        shape.q_heads as f64,
        shape.kv_heads as f64,
        shape.head_dim as f64,
    );
    match *kind {
        AttentionKind::Mla {
            kv_lora_rank,
            rope_dim,
        } => {
            let rank = kv_lora_rank as f64;
            let v = d - rope_dim as f64;
            let q_rank = 3.0 * rank;
            h * (rank + rope_dim as f64)
                + rank * q * (d - rope_dim as f64 + v)
                + h * q_rank
                + q_rank * q * d
                + q * v * h
        }
        AttentionKind::NoAttention => 0.0,
        _ => h * d * (2.0 * q + 2.0 * kv),
    }
}

/// The model's parameters split into routed experts, attention and the rest.
pub fn param_split(model: &ModelInfo) -> ParamSplit {
    let s = &model.shape;
    // The routed experts are exact from the config; the attention estimate gives way.
    let routed = model
        .moe
        .map_or(0.0, |m| m.routed_params())
        .min(model.params);
    let attention: f64 = s
        .layer_kinds
        .iter()
        .map(|k| attention_params_per_layer(s, k))
        .sum::<f64>()
        .min(model.params - routed);
    ParamSplit {
        routed_experts: routed,
        attention,
        rest: model.params - attention - routed,
    }
}

/// Weights one GPU holds, in two parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WeightsPerGpu {
    /// Routed experts on this GPU (split over ep ranks, or sliced by tp).
    pub experts: u64,
    /// Everything else (attention by attention-tp, the rest by tp; all by pp).
    pub other: u64,
}

impl WeightsPerGpu {
    pub fn total(&self) -> u64 {
        self.experts + self.other
    }
}

fn invalid(what: &str, value: u32, fix: String) -> PlanError {
    PlanError::InvalidValue {
        what: what.to_string(),
        value: value.to_string(),
        fix,
    }
}

/// Checks `--dp-attention` and `--ep` against the model and the deployment.
pub fn validate(model: &ModelInfo, dep: &Deployment) -> Result<(), PlanError> {
    if dep.dp_attention == 0 {
        return Err(invalid(
            "dp-attention",
            0,
            "give the number of attention data-parallel groups (1 = off), e.g. --dp-attention 8"
                .to_string(),
        ));
    }
    if !dep.tp.is_multiple_of(dep.dp_attention) {
        return Err(invalid(
            "dp-attention",
            dep.dp_attention,
            format!(
                "it must divide tp = {} (each attention group is tp / dp-attention GPUs); e.g. --dp-attention {}",
                dep.tp, dep.tp
            ),
        ));
    }
    if dep.ep == 0 {
        return Err(invalid(
            "ep",
            0,
            "give the expert-parallel ranks (1 = off), e.g. --ep 8".to_string(),
        ));
    }
    if dep.ep > 1 {
        let Some(moe) = model.moe else {
            return Err(invalid(
                "ep",
                dep.ep,
                format!(
                    "{} has no routed experts to split; leave out --ep",
                    model.shape.name
                ),
            ));
        };
        if !moe.experts.is_multiple_of(dep.ep) {
            let fits: Vec<String> = (1..=moe.experts.min(dep.gpus.max(1)))
                .filter(|d| moe.experts.is_multiple_of(*d))
                .map(|d| d.to_string())
                .collect();
            return Err(invalid(
                "ep",
                dep.ep,
                format!(
                    "it must divide the {} routed experts of {}; valid up to the GPUs: {}",
                    moe.experts,
                    model.shape.name,
                    fits.join(", ")
                ),
            ));
        }
        let per_stage = dep.gpus / dep.pp.max(1);
        if dep.ep > per_stage {
            return Err(invalid(
                "ep",
                dep.ep,
                format!(
                    "it cannot exceed the {per_stage} GPUs of a pipeline stage (--gpus / --pp)"
                ),
            ));
        }
    }
    Ok(())
}

/// Weights per GPU: routed experts over `ep` ranks (or sliced by tp), attention over
/// tp / dp-attention (each attention group keeps a whole copy), the rest over tp; all over pp.
pub fn weights_per_gpu(model: &ModelInfo, dep: &Deployment) -> WeightsPerGpu {
    let split = param_split(model);
    let bytes = dep.weights.bits / 8.0;
    let pp = dep.pp.max(1) as f64;
    let tp = dep.tp.max(1) as f64;
    let attn_tp = (dep.tp / dep.dp_attention.max(1)).max(1) as f64;
    let experts = if dep.ep > 1 {
        split.routed_experts / dep.ep as f64
    } else {
        split.routed_experts / tp
    };
    WeightsPerGpu {
        experts: (experts / pp * bytes).round() as u64,
        other: ((split.attention / attn_tp + split.rest / tp) / pp * bytes).round() as u64,
    }
}

/// Expected distinct experts `batch` tokens touch in one MoE layer, each routed to `k` of
/// `e` experts uniformly: E (1 - (1 - k/E)^B).
pub fn distinct_experts(e: u32, k: u32, batch: u32) -> f64 {
    let e = e as f64;
    let miss = 1.0 - (k as f64 / e).min(1.0);
    e * (1.0 - miss.powi(batch.min(i32::MAX as u32) as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;

    #[test]
    fn distinct_experts_grow_from_k_to_e() {
        // One token touches exactly k; DeepSeek-V3 (256, 8) at batch 32:
        // 256 (1 - (248/256)^32) = 256 x (1 - 0.36205) = 163.3.
        assert!((distinct_experts(256, 8, 1) - 8.0).abs() < 1e-9);
        let b32 = distinct_experts(256, 8, 32);
        assert!((b32 - 256.0 * (1.0 - (248.0f64 / 256.0).powi(32))).abs() < 1e-9);
        assert!((b32 - 163.3).abs() < 0.05, "{b32}");
        assert!(distinct_experts(8, 2, 10_000) <= 8.0);
    }

    #[test]
    fn routed_experts_are_most_of_deepseek_v3() {
        // 58 MoE layers x 256 experts x 3 x 7168 x 2048 = 654.1B of the 671B.
        let m = registry::find("deepseek-v3").unwrap();
        let s = param_split(&m);
        assert!((s.routed_experts - 58.0 * 256.0 * 3.0 * 7168.0 * 2048.0).abs() < 1.0);
        assert!(s.rest > 0.0 && s.attention > 0.0);
    }
}
