//! Roofline bounds: decode tokens/s from bandwidth, prefill time from compute.
//!
//! Both are bounds, not predictions: decode cannot beat reading the active weights and the
//! KV cache once per step at peak bandwidth; prefill cannot beat the matmul FLOPs at the
//! peak dense tensor rate.

use serde::Serialize;

use crate::gpu::GpuSpec;
use crate::parallel::distinct_experts;
use crate::prefill::PrefillCost;
use crate::registry::ModelInfo;

/// Upper bound on decode speed and lower bound on prefill time for one deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bounds {
    /// Bytes one decode step must read on the GPUs a token passes through: the weights
    /// share of each stage and, with the batch pipelined over pp stages, batch x KV / pp.
    pub step_bytes_per_gpu: u64,
    /// Lower bound on one decode step, ms.
    pub decode_step_ms_min: f64,
    /// Upper bound on decode tokens/s of the whole deployment (all replicas).
    pub decode_tokens_per_s_max: f64,
    /// FLOPs of prefilling one prompt.
    pub prefill_flops: f64,
    /// Lower bound on TTFT for one prompt of the asked length, ms.
    pub ttft_ms_min: f64,
    /// Which tensor rate the TTFT bound uses ("fp16" or "fp8").
    pub rate: &'static str,
}

/// Inputs of the bounds that the capacity step already worked out.
#[derive(Debug, Clone, Copy)]
pub struct BoundsInput<'a> {
    pub model: &'a ModelInfo,
    pub gpu: &'a GpuSpec,
    pub tp: u32,
    pub pp: u32,
    pub replicas: u32,
    /// Bits per weight.
    pub weight_bits: f64,
    /// Use the FP8 rate for prefill (weights stored in FP8 and the GPU has it).
    pub fp8: bool,
    /// KV bytes one sequence holds on one GPU at the asked context, summed over all stages.
    pub kv_bytes_per_seq_per_gpu: u64,
    /// Sequences decoded together per attention group.
    pub batch: u32,
    /// Prompt tokens (prefill) and context (decode).
    pub tokens: u32,
    /// Expert-parallel ranks (1: routed experts sliced by tp).
    pub ep: u32,
    /// Data-parallel attention groups per replica (1: off); their batches meet in the MoE.
    pub attention_groups: u32,
}

/// Prefill FLOPs of one prompt, by the planner's one prefill model ([`PrefillCost`]).
pub fn prefill_flops(model: &ModelInfo, tokens: u32) -> f64 {
    PrefillCost::of_model(model).flops(tokens as u64)
}

/// Weight bytes one decode step reads on one GPU. Dense: the active weights / tp. MoE: the
/// routed experts a step's tokens touch — E (1 - (1 - k/E)^B) distinct experts per MoE layer
/// for B tokens, not the k of one token — over the ep ranks (or sliced by tp), the other
/// active weights / tp.
pub fn weight_bytes_per_step(input: &BoundsInput) -> f64 {
    let tp = input.tp.max(1) as f64;
    let bytes = input.weight_bits / 8.0;
    let Some(moe) = input.model.moe else {
        return input.model.active_params * bytes / tp;
    };
    let tokens = input.batch.saturating_mul(input.attention_groups.max(1));
    let expert = moe.layers as f64 * moe.expert_params;
    let other = (input.model.active_params - expert * moe.per_token as f64).max(0.0);
    let touched = expert * distinct_experts(moe.experts, moe.per_token, tokens.max(1));
    let expert_split = if input.ep > 1 { input.ep as f64 } else { tp };
    (other / tp + touched / expert_split) * bytes
}

/// Works out the bounds for one deployment.
pub fn bounds(input: &BoundsInput) -> Bounds {
    let tp = input.tp.max(1) as f64;
    let weights_per_gpu = weight_bytes_per_step(input);
    // A token passes every pipeline stage in turn, so its step reads every stage's weights;
    // with the batch split into pp micro-batches (perfect pipelining, the most optimistic
    // case) each stage reads only its micro-batch's KV of its own layers: batch x KV / pp.
    let pp = input.pp.max(1) as f64;
    let step_bytes =
        weights_per_gpu + input.batch as f64 * input.kv_bytes_per_seq_per_gpu as f64 / pp;
    let bandwidth = input.gpu.bandwidth_gbps * 1e9;
    let step_s = step_bytes / bandwidth;
    let (rate_tflops, rate) = match (input.fp8, input.gpu.fp8_tflops) {
        (true, Some(fp8)) => (fp8, "fp8"),
        _ => (input.gpu.fp16_tflops, "fp16"),
    };
    let flops = prefill_flops(input.model, input.tokens);
    let ttft_s = flops / (tp * rate_tflops * 1e12);
    let groups = input.attention_groups.max(1) as f64;
    Bounds {
        step_bytes_per_gpu: step_bytes.round() as u64,
        decode_step_ms_min: step_s * 1e3,
        decode_tokens_per_s_max: input.batch as f64 * groups / step_s * input.replicas as f64,
        prefill_flops: flops,
        ttft_ms_min: ttft_s * 1e3,
        rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{gpu, registry};

    #[test]
    fn llama3_8b_decode_bound_is_bandwidth_over_weights() {
        // Batch 1, tiny context: one H100 reads 8.03e9 x 2 bytes per token at 3.35 TB/s:
        // 16.06 GB / 3350 GB/s = 4.794 ms, so at most ~208.6 tokens/s.
        let model = registry::find("llama3-8b").unwrap();
        let gpu = gpu::find("h100").unwrap();
        let b = bounds(&BoundsInput {
            model: &model,
            gpu: &gpu,
            tp: 1,
            pp: 1,
            replicas: 1,
            weight_bits: 16.0,
            fp8: false,
            kv_bytes_per_seq_per_gpu: 0,
            batch: 1,
            tokens: 1,
            ep: 1,
            attention_groups: 1,
        });
        assert!(
            (b.decode_step_ms_min - 4.794).abs() < 0.001,
            "{}",
            b.decode_step_ms_min
        );
        assert!((b.decode_tokens_per_s_max - 208.6).abs() < 0.1);
    }

    #[test]
    fn pipelining_splits_the_kv_read_not_the_weights() {
        // Llama-3-70B over tp 4 x pp 2, batch 8, 1 GB of KV per sequence per GPU (all layers):
        // a step reads 70.55e9 x 2 / 4 B of weights and 8 x 1e9 / 2 B of KV.
        let model = registry::find("llama3-70b").unwrap();
        let gpu = gpu::find("h100").unwrap();
        let b = bounds(&BoundsInput {
            model: &model,
            gpu: &gpu,
            tp: 4,
            pp: 2,
            replicas: 1,
            weight_bits: 16.0,
            fp8: false,
            kv_bytes_per_seq_per_gpu: 1_000_000_000,
            batch: 8,
            tokens: 1,
            ep: 1,
            attention_groups: 1,
        });
        assert_eq!(b.step_bytes_per_gpu, 35_275_000_000 + 4_000_000_000);
        let step_ms = 39_275_000_000.0 / 3350e9 * 1e3;
        assert!((b.decode_step_ms_min - step_ms).abs() < 1e-9);
        assert!((b.decode_tokens_per_s_max - 8.0 / (step_ms / 1e3)).abs() < 1e-6);
    }

    #[test]
    fn prefill_flops_are_twice_params_per_token_plus_attention() {
        // Llama-2-7B, 1000 tokens: 2 x (6.74e9 - 2 x 32000 x 4096) x 1000 + 32 layers x
        // 2 x 32 heads x (128 + 128) x (1000 x 1001 / 2) pairs.
        let model = registry::find("llama2-7b").unwrap();
        let linear = 2.0 * (6.74e9 - 2.0 * 32_000.0 * 4096.0) * 1000.0;
        let expect = linear + 32.0 * 2.0 * 32.0 * 256.0 * 500_500.0;
        assert!((prefill_flops(&model, 1000) / expect - 1.0).abs() < 1e-12);
    }

    #[test]
    fn moe_decode_reads_the_distinct_experts_of_the_batch() {
        // Mixtral-8x7B, bf16, tp 1: an expert is 3 x 4096 x 14336 = 176.2M parameters, 32
        // MoE layers. Batch 1 reads the 2 routed experts (the active 12.9B); batch 16 reads
        // 8 (1 - (6/8)^16) = 7.920 experts a layer.
        let model = registry::find("mixtral-8x7b").unwrap();
        let gpu = gpu::find("h100").unwrap();
        let input = |batch| BoundsInput {
            model: &model,
            gpu: &gpu,
            tp: 1,
            pp: 1,
            replicas: 1,
            weight_bits: 16.0,
            fp8: false,
            kv_bytes_per_seq_per_gpu: 0,
            batch,
            tokens: 1,
            ep: 1,
            attention_groups: 1,
        };
        let expert = 32.0 * 3.0 * 4096.0 * 14336.0;
        assert!((weight_bytes_per_step(&input(1)) - model.active_params * 2.0).abs() < 1.0);
        let touched = 8.0 * (1.0 - 0.75f64.powi(16));
        let other = model.active_params - 2.0 * expert;
        let want = (other + touched * expert) * 2.0;
        assert!((weight_bytes_per_step(&input(16)) - want).abs() < 1.0);
        // Never more than all experts: at batch 1000 every expert is read.
        let all = (other + 8.0 * expert) * 2.0;
        assert!((weight_bytes_per_step(&input(1000)) - all).abs() / all < 1e-9);
    }
}
