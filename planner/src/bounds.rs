//! Roofline bounds: decode tokens/s from bandwidth, prefill time from compute.
//!
//! Both are bounds, not predictions: decode cannot beat reading the active weights and the
//! KV cache once per step at peak bandwidth; prefill cannot beat the matmul FLOPs at the
//! peak dense tensor rate.

use serde::Serialize;

use crate::gpu::GpuSpec;
use crate::registry::ModelInfo;
use crate::shape::AttentionKind;

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
    pub batch: u32,
    /// Prompt tokens (prefill) and context (decode).
    pub tokens: u32,
}

/// Prefill FLOPs of one prompt: 2 x active parameters per token for the matmuls, plus
/// attention's QK^T and PV (2 x 2 x head_dim per query head per attended pair; causal, so
/// L^2 / 2 pairs, or L x window for sliding layers).
pub fn prefill_flops(model: &ModelInfo, tokens: u32) -> f64 {
    let s = &model.shape;
    let l = tokens as f64;
    let attention: f64 = s
        .layer_kinds
        .iter()
        .map(|kind| {
            let pairs = match kind {
                AttentionKind::Sliding { window } if (*window as f64) < l => l * *window as f64,
                _ => l * l / 2.0,
            };
            4.0 * s.q_heads as f64 * s.head_dim as f64 * pairs
        })
        .sum();
    2.0 * model.active_params * l + attention
}

/// Works out the bounds for one deployment.
pub fn bounds(input: &BoundsInput) -> Bounds {
    let tp = input.tp.max(1) as f64;
    let weights_per_gpu = input.model.active_params * input.weight_bits / 8.0 / tp;
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
    Bounds {
        step_bytes_per_gpu: step_bytes.round() as u64,
        decode_step_ms_min: step_s * 1e3,
        decode_tokens_per_s_max: input.batch as f64 / step_s * input.replicas as f64,
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
        });
        assert_eq!(b.step_bytes_per_gpu, 35_275_000_000 + 4_000_000_000);
        let step_ms = 39_275_000_000.0 / 3350e9 * 1e3;
        assert!((b.decode_step_ms_min - step_ms).abs() < 1e-9);
        assert!((b.decode_tokens_per_s_max - 8.0 / (step_ms / 1e3)).abs() < 1e-6);
    }

    #[test]
    fn prefill_flops_are_twice_params_per_token_plus_attention() {
        // Llama-2-7B, 1000 tokens: 2 x 6.74e9 x 1000 + 32 layers x 4 x 32 x 128 x 1000^2 / 2.
        let model = registry::find("llama2-7b").unwrap();
        let expect = 2.0 * 6.74e9 * 1000.0 + 32.0 * 4.0 * 32.0 * 128.0 * 500_000.0;
        assert!((prefill_flops(&model, 1000) / expect - 1.0).abs() < 1e-12);
    }
}
