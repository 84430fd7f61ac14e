//! Deployment capacity: weights per GPU, KV budget, token and sequence capacity.
//!
//! Follows vLLM's v1 arithmetic: available = total x gpu_memory_utilization - reserve - weights
//! per GPU, cut into whole pool blocks (see [`crate::pool`]: `block_size` tokens of every layer
//! of a KV cache group); token capacity = blocks // groups x block_size.

use serde::Serialize;

use crate::dtype::KvDtypes;
use crate::engine::{self, Engine, EngineOptions, Reserve};
use crate::error::PlanError;
use crate::gpu::GpuSpec;
use crate::layout::{allocated_bytes, LayoutKind, LayoutQuery};
use crate::parallel;
use crate::pool::{blocks_per_request, pool_with_state, vllm_blocks_per_request, HYBRID_RULE};
use crate::registry::ModelInfo;
use crate::shape::{AttentionKind, ModelShape};
use crate::span::Span;
use crate::state::{layer_state_bytes, sequence_state_bytes};
use crate::weights::{TensorClass, Weights};

const GIB: u64 = 1 << 30;

/// How much a sliding-window layer reserves per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowRule {
    /// Exactly the window (what the layer can ever attend to).
    Window,
    /// vLLM's reservation: window - 1 + max_num_batched_tokens, capped at the sequence.
    Vllm,
}

impl WindowRule {
    /// The name used in the CLI and output.
    pub fn name(self) -> &'static str {
        match self {
            WindowRule::Window => "window",
            WindowRule::Vllm => "vllm",
        }
    }
}

/// Precision of the stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WeightDtype {
    pub name: &'static str,
    /// Bits per parameter including any per-group scales.
    pub bits: f64,
}

/// Accepted weight dtypes and their bits per parameter.
const WEIGHT_DTYPES: &[(&str, f64)] = &[
    ("f32", 32.0),
    ("bf16", 16.0),
    ("f16", 16.0),
    ("fp8", 8.0),
    ("int8", 8.0),
    // 4-bit codes with an f16 scale and zero point per 128 weights (AWQ/GPTQ g128).
    ("int4", 4.25),
    // OCP MX: 4-bit codes with one 8-bit scale per 32 weights.
    ("mxfp4", 4.25),
    // QLoRA NF4 with double quantization: 4-bit codes, an 8-bit absmax per 64 weights and an
    // f32 scale per 256 absmaxes: 4 + 8/64 + 32/16384 = 4.127 bits.
    ("nf4", 4.127),
];

impl std::str::FromStr for WeightDtype {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, PlanError> {
        let lower = text.trim().to_ascii_lowercase();
        let canonical = match lower.as_str() {
            "fp16" | "float16" | "half" => "f16",
            "bfloat16" => "bf16",
            "fp32" | "float32" => "f32",
            "fp8-e4m3" | "e4m3" | "fp8_e4m3" => "fp8",
            "awq" | "gptq" => "int4",
            other => other,
        };
        WEIGHT_DTYPES
            .iter()
            .find(|(name, _)| *name == canonical)
            .map(|(name, bits)| WeightDtype { name, bits: *bits })
            .ok_or_else(|| PlanError::InvalidValue {
                what: "weights dtype".to_string(),
                value: text.to_string(),
                fix: format!(
                    "use one of {}",
                    WEIGHT_DTYPES
                        .iter()
                        .map(|w| w.0)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

/// Where and how a model is served.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// The GPU (None when only a KV budget is given).
    pub gpu: Option<GpuSpec>,
    pub gpus: u32,
    pub tp: u32,
    pub pp: u32,
    pub weights: WeightDtype,
    /// Fraction of GPU memory the engine may use (vLLM's gpu_memory_utilization).
    pub mem_util: f64,
    /// Per-GPU bytes held back for activations and runtime; None = estimate.
    pub reserve: Option<u64>,
    /// Per-GPU KV memory known in advance; replaces the memory arithmetic.
    pub kv_budget: Option<u64>,
    pub block_size: u32,
    /// vLLM's max_num_batched_tokens (activation profiling, sliding-window reservation).
    pub max_batched_tokens: u32,
    pub window_rule: WindowRule,
    /// Data-parallel attention groups per replica (SGLang `--enable-dp-attention --dp N`,
    /// vLLM DP attention): each group of tp / N GPUs holds only its own requests' KV.
    /// 1 = off.
    pub dp_attention: u32,
    /// Expert-parallel ranks the routed experts are split across (1 = off: experts follow tp).
    pub ep: u32,
    /// The serving engine and how it runs (its reserve rule, version, max_num_seqs).
    pub engine: EngineOptions,
    /// Weights per tensor class from the checkpoint; None = params x `weights`.
    pub weights_detail: Option<Weights>,
}

/// What one GPU of a deployment holds and how much fits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// Copies of the model (gpus / (tp x pp)).
    pub replicas: u32,
    /// Layers on the most loaded pipeline stage.
    pub layers_per_gpu: u32,
    /// KV heads each GPU caches (an MLA latent counts as 1).
    pub kv_heads_per_gpu: u32,
    /// tp exceeds the KV heads, so each head is cached on several GPUs.
    pub kv_heads_replicated: bool,
    pub weights_bytes_per_gpu: u64,
    /// Where the weight figure comes from (safetensors headers, quantization_config, or
    /// params x dtype).
    pub weights_source: String,
    /// total x mem_util (0 with a KV budget).
    pub usable_bytes_per_gpu: u64,
    pub reserve_bytes_per_gpu: u64,
    /// How the reserve was obtained.
    pub reserve_note: String,
    /// The engine's reserve component by component (None when --reserve or a KV budget is
    /// given).
    pub reserve_detail: Option<Reserve>,
    /// Bytes left for the KV cache on each GPU.
    pub kv_budget_bytes_per_gpu: u64,
    /// Bytes of one pool block: block_size tokens of every layer of a KV cache group
    /// (of every layer on the GPU when the model has one attention kind).
    pub block_bytes: u64,
    /// vLLM's KV cache groups on a GPU (1 unless the model mixes attention kinds).
    pub kv_cache_groups: u64,
    /// Layers per group (padding included).
    pub layers_per_group: u64,
    /// Pool blocks per GPU.
    pub blocks: u64,
    /// blocks // groups x block_size: vLLM's "GPU KV cache size: N tokens" up to 0.19
    /// (SGLang's max_total_num_tokens with block_size = its page size).
    pub token_capacity: u64,
    /// "GPU KV cache size" as vLLM after 0.19 logs it: int(vllm_concurrency x context)
    /// (vLLM issue #40691). Equal to `token_capacity` (up to block rounding) for models with
    /// one attention kind.
    pub token_capacity_vllm_new: u64,
    /// vLLM's logged "Maximum concurrency" at the asked context: blocks / the blocks its rule
    /// counts for one request (sliding groups: window - 1 + max_num_batched_tokens, + 1).
    pub vllm_concurrency: f64,
    /// Bytes one sequence of the asked context holds on a GPU (whole blocks, windows applied).
    pub seq_bytes_per_gpu: u64,
    /// Whole sequences of the asked context that fit at once (per replica).
    pub max_seqs: u64,
    /// The true per-sequence figure: blocks / blocks one request of the context holds under
    /// the window rule asked (equals `vllm_concurrency` for full attention).
    pub concurrency: f64,
    /// Longest context at the asked batch (None: unbounded, every layer is a sliding window).
    pub max_context_at_batch: Option<u64>,
    /// Tokens per attention block the pool uses (the asked block size, or larger when state
    /// layers share the pool).
    pub block_size: u32,
    /// Bytes one sequence's recurrent state takes on a GPU (0 without state layers).
    pub state_bytes_per_seq_per_gpu: u64,
    /// The allocator rule the pool figures follow.
    pub allocator_rule: String,
    /// Whether the asked batch fits at the asked context (per attention group).
    pub batch_fits: bool,
    /// Of the weights per GPU, the routed experts' share (split over ep ranks or by tp).
    pub weights_expert_bytes_per_gpu: u64,
    /// Attention data-parallel groups per replica (1 without --dp-attention); `max_seqs`
    /// is per group.
    pub attention_groups: u32,
    /// Sequences of the asked context the whole deployment holds at once: max_seqs x
    /// attention groups x replicas.
    pub max_seqs_per_deployment: u64,
    /// A note when tp spans more GPUs than one node of this GPU has.
    pub node_note: Option<String>,
}

/// GPUs whose KV heads are split by tp in attention: tp / dp-attention.
pub fn attention_tp(dep: &Deployment) -> u32 {
    (dep.tp / dep.dp_attention.max(1)).max(1)
}

/// A note when tp exceeds the GPUs one node of the deployment's GPU holds (tp traffic then
/// crosses the slower inter-node network).
fn node_note(dep: &Deployment) -> Option<String> {
    let gpu = dep.gpu.as_ref()?;
    (dep.tp > gpu.node_gpus).then(|| {
        format!(
            "tp {} spans more than one node ({} x {} per node): tensor-parallel all-reduces cross the inter-node network; prefer tp <= {} with pp or dp across nodes",
            dep.tp, gpu.key, gpu.node_gpus, gpu.node_gpus
        )
    })
}

/// Checks a tp degree against the model's heads; returns (KV heads per GPU, replicated).
pub fn split_heads(shape: &ModelShape, tp: u32) -> Result<(u32, bool), PlanError> {
    if tp == 0 {
        return Err(PlanError::InvalidValue {
            what: "tp".to_string(),
            value: "0".to_string(),
            fix: "give at least 1".to_string(),
        });
    }
    let hint = |count: u32| {
        (1..=count)
            .filter(|d| count.is_multiple_of(*d))
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !shape.q_heads.is_multiple_of(tp) {
        return Err(PlanError::TpNotDivisor {
            tp,
            what: "attention heads".to_string(),
            count: shape.q_heads,
            hint: hint(shape.q_heads),
        });
    }
    if shape
        .layer_kinds
        .iter()
        .all(|k| matches!(k, AttentionKind::Mla { .. }))
    {
        // The MLA latent is shared by all heads: every rank keeps it whole.
        return Ok((1, tp > 1));
    }
    let kv = shape.kv_heads;
    if kv >= tp {
        if !kv.is_multiple_of(tp) {
            return Err(PlanError::TpNotDivisor {
                tp,
                what: "KV heads".to_string(),
                count: kv,
                hint: hint(kv),
            });
        }
        Ok((kv / tp, false))
    } else {
        if !tp.is_multiple_of(kv) {
            // Each KV head must be copied to the same number of ranks.
            let fits: Vec<String> = (1..=shape.q_heads)
                .filter(|t| {
                    shape.q_heads.is_multiple_of(*t)
                        && (t.is_multiple_of(kv) || kv.is_multiple_of(*t))
                })
                .map(|t| t.to_string())
                .collect();
            return Err(PlanError::InvalidValue {
                what: "tp".to_string(),
                value: tp.to_string(),
                fix: format!(
                    "above the model's {kv} KV heads, tp must be a multiple of {kv} so every head is replicated evenly; valid: {}",
                    fits.join(", ")
                ),
            });
        }
        Ok((1, true))
    }
}

/// The cache shape one GPU holds: the largest pipeline stage, its KV heads split by tp.
pub fn per_gpu_shape(
    shape: &ModelShape,
    tp: u32,
    pp: u32,
) -> Result<(ModelShape, bool), PlanError> {
    let (kv_per_gpu, replicated) = split_heads(shape, tp)?;
    if pp == 0 || pp > shape.layers {
        return Err(PlanError::PpTooLarge {
            pp,
            layers: shape.layers,
        });
    }
    let stage_layers = shape.layers.div_ceil(pp);
    let mut gpu = shape.clone();
    gpu.kv_heads = kv_per_gpu;
    gpu.layers = stage_layers;
    gpu.layer_kinds.truncate(stage_layers as usize);
    if let Some(state) = &mut gpu.state {
        state.layers.retain(|l| *l < stage_layers);
    }
    Ok((gpu, replicated))
}

/// The shape with each sliding window widened to what `rule` reserves.
pub fn apply_window_rule(
    shape: &ModelShape,
    rule: WindowRule,
    max_batched_tokens: u32,
) -> ModelShape {
    let mut out = shape.clone();
    if rule == WindowRule::Vllm {
        for kind in &mut out.layer_kinds {
            if let AttentionKind::Sliding { window } = kind {
                *window = window.saturating_sub(1).saturating_add(max_batched_tokens);
            }
        }
    }
    out
}

/// Paged bytes one sequence of `len` tokens holds on one GPU.
fn seq_bytes(shape: &ModelShape, kv: &KvDtypes, block: u32, len: u64) -> Result<u64, PlanError> {
    allocated_bytes(&LayoutQuery {
        shape,
        k: kv.k,
        v: kv.v,
        kind: LayoutKind::Paged { block_size: block },
        batch: 1,
        max_len: len.min(u32::MAX as u64) as u32,
        shared_prefix: 0,
        window: None,
    })
}

/// A fraction as the user would write it, in exponent form when tiny or huge (1e-300 would
/// otherwise print 300 digits).
fn fraction(v: f64) -> String {
    match v.abs() {
        a if a != 0.0 && !(1e-3..1e6).contains(&a) => format!("{v:e}"),
        _ => v.to_string(),
    }
}

fn human(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB as f64)
}

/// Sizes a deployment for sequences of `context` tokens in batches of `batch`; a budget
/// that holds no whole sequence of `context` tokens is an error saying what does fit.
pub fn capacity(
    model: &ModelInfo,
    kv: &KvDtypes,
    dep: &Deployment,
    context: u32,
    batch: u32,
) -> Result<Capacity, PlanError> {
    size_deployment(model, kv, dep, context, batch, true)
}

/// Sizes a deployment as the engine does at startup, even when no whole sequence of
/// `context` tokens fits (`max_seqs` 0): vLLM before its null-block check logged
/// concurrencies below 1x when it cached chunked layers as full attention, since it checked
/// the memory against the chunked specs and sized the pool from the unified ones.
pub fn capacity_as_logged(
    model: &ModelInfo,
    kv: &KvDtypes,
    dep: &Deployment,
    context: u32,
    batch: u32,
) -> Result<Capacity, PlanError> {
    size_deployment(model, kv, dep, context, batch, false)
}

/// [`capacity`] and [`capacity_as_logged`]; `refuse_none` refuses a budget that holds no
/// whole sequence of `context` tokens.
fn size_deployment(
    model: &ModelInfo,
    kv: &KvDtypes,
    dep: &Deployment,
    context: u32,
    batch: u32,
    refuse_none: bool,
) -> Result<Capacity, PlanError> {
    let bad = |what: &str, value: String, fix: &str| PlanError::InvalidValue {
        what: what.to_string(),
        value,
        fix: fix.to_string(),
    };
    if dep.gpus == 0 {
        return Err(bad("gpus", "0".into(), "give at least 1"));
    }
    // Heads and layers first: their errors say more than a GPU count that does not add up.
    parallel::validate(model, dep)?;
    let attn_tp = attention_tp(dep);
    let (gpu_shape, replicated) = per_gpu_shape(&model.shape, attn_tp, dep.pp)?;
    // Layers the engine does not group apart are cached as full attention.
    let (gpu_shape, cache_rule) = engine::cache_shape(&gpu_shape, &dep.engine);
    let per_replica = dep.tp.saturating_mul(dep.pp);
    if per_replica == 0 || !dep.gpus.is_multiple_of(per_replica) {
        return Err(bad(
            "gpus",
            dep.gpus.to_string(),
            &format!("it must be a multiple of tp x pp = {per_replica}"),
        ));
    }
    if !(dep.mem_util > 0.0 && dep.mem_util <= 1.0) {
        return Err(bad(
            "mem-util",
            fraction(dep.mem_util),
            "give a fraction in (0, 1], e.g. 0.9",
        ));
    }
    if context == 0 || batch == 0 {
        return Err(bad("context or batch", "0".into(), "give at least 1"));
    }
    if dep.engine.max_num_seqs == Some(0) {
        return Err(bad(
            "max-num-seqs",
            "0".into(),
            "give at least 1 (vLLM's default: 1024 on GPUs with >= 70 GiB, else 256)",
        ));
    }
    let gpu_shape = apply_window_rule(&gpu_shape, dep.window_rule, dep.max_batched_tokens);
    let split = parallel::weights_per_gpu(model, dep);
    let splits_by_role = dep.dp_attention > 1 || dep.ep > 1;
    let dtype_source = format!(
        "parameters x {} ({} bits)",
        dep.weights.name, dep.weights.bits
    );
    // A checkpoint's figure, per role: its routed experts and everything else each at their
    // own bytes per parameter (gpt-oss: MXFP4 experts, bf16 rest), so the expert share and
    // the --ep / --dp-attention split follow what is stored.
    let (experts_bytes, weights, weights_source) = match &dep.weights_detail {
        Some(w) => {
            let bpp = dep.weights.bits / 8.0;
            let params = parallel::param_split(model);
            let stored_experts: f64 = w
                .classes
                .iter()
                .filter(|c| c.class == TensorClass::RoutedExperts)
                .map(|c| c.bytes)
                .sum();
            let per = |stored: f64, params: f64| match params > 0.0 {
                true => stored / (params * bpp),
                false => 1.0,
            };
            let expert_scale = per(stored_experts, params.routed_experts);
            let other_scale = per(
                w.total_bytes() - stored_experts,
                params.attention + params.rest,
            );
            let experts = (split.experts as f64 * expert_scale).round() as u64;
            if splits_by_role {
                let other = (split.other as f64 * other_scale).round() as u64;
                (
                    experts,
                    experts + other,
                    format!("{}, split by --ep/--dp-attention", w.source.describe()),
                )
            } else {
                // Whole classes per stage (embeddings first, lm_head last), as vLLM loads.
                let total = w.per_gpu_bytes(dep.tp, dep.pp);
                (experts.min(total), total, w.source.describe())
            }
        }
        None if splits_by_role => (split.experts, split.total(), dtype_source),
        None => (
            split.experts,
            (model.params * dep.weights.bits / 8.0 / per_replica as f64).round() as u64,
            dtype_source,
        ),
    };

    let mut detail = None;
    let (usable, reserve, note, budget) = match (dep.kv_budget, &dep.gpu) {
        (Some(budget), _) => (0, 0, "none (KV budget given)".to_string(), budget),
        (None, Some(gpu)) => {
            let usable = (gpu.usable_bytes as f64 * dep.mem_util) as u64;
            let (reserve, note) = match dep.reserve {
                Some(r) => (r, "given (--reserve)".to_string()),
                None => {
                    let r = match dep.engine.engine {
                        Engine::Vllm => engine::vllm::reserve(
                            model,
                            dep.tp,
                            dep.max_batched_tokens,
                            gpu.usable_bytes,
                            &gpu.key,
                            &dep.engine,
                        ),
                        Engine::Sglang => engine::sglang::reserve(dep.tp, &dep.engine),
                    };
                    let out = (r.total(), r.note());
                    detail = Some(r);
                    out
                }
            };
            let held = weights.saturating_add(reserve);
            if held >= usable {
                return Err(PlanError::NoCapacity(format!(
                    "no room for the KV cache on {}: weights {} + reserve {} per GPU exceed {} usable ({} x mem-util {}); use more GPUs (--tp), a smaller --weights-dtype, or a higher --mem-util",
                    gpu.key,
                    human(weights),
                    human(reserve),
                    human(usable),
                    human(gpu.usable_bytes),
                    fraction(dep.mem_util)
                )));
            }
            (usable, reserve, note, usable - held)
        }
        (None, None) => {
            return Err(PlanError::InvalidValue {
                what: "deployment".to_string(),
                value: "no --gpu and no --kv-budget".to_string(),
                fix: "name a GPU (--gpu h100) or give the KV memory per GPU (--kv-budget 58.5GiB)"
                    .to_string(),
            })
        }
    };

    // Paged storage must suit the dtypes (a KIVI residual cannot be paged): ask the layout.
    seq_bytes(&gpu_shape, kv, dep.block_size, context as u64)?;
    let (state_page, state_per_seq) = match &gpu_shape.state {
        Some(state) => (
            layer_state_bytes(state, attn_tp)?.total(),
            sequence_state_bytes(state, attn_tp, state.layers.len() as u64)?.total(),
        ),
        None => (0, 0),
    };
    let pool = pool_with_state(&gpu_shape, kv, dep.block_size, budget, state_page)?;
    let block = pool.block_size;
    let per_request = blocks_per_request(&gpu_shape, block, context as u64);
    let per_seq = per_request * pool.block_bytes;
    let max_seqs = pool.blocks / per_request;
    let max_context_at_batch = max_context(&gpu_shape, block, batch, pool.blocks);
    if max_seqs == 0 && refuse_none {
        // Say what does fit: the longest context for the asked batch and for one sequence.
        let longest = |b: u32| match max_context(&gpu_shape, block, b, pool.blocks) {
            Some(0) => "none".to_string(),
            Some(t) => format!("{t} tokens"),
            None => "any length".to_string(),
        };
        let fits = if batch > 1 {
            format!(
                "{} at batch {batch}, {} at batch 1",
                longest(batch),
                longest(1)
            )
        } else {
            longest(1)
        };
        return Err(PlanError::NoCapacity(format!(
            "the KV budget of {} per GPU fits 0 sequences of {context} tokens (one needs {}); longest context that fits: {fits}; shorten --seq (or --seq max), add GPUs (--tp), or pick a smaller cache dtype",
            human(budget),
            human(per_seq),
        )));
    }
    let mut allocator_rule = if gpu_shape.state_layers() > 0 {
        HYBRID_RULE.to_string()
    } else if pool.groups > 1 {
        "vLLM v1 KV cache groups (one block table per group of same-kind layers)".to_string()
    } else {
        "vLLM v1 paged KV cache (one group of all layers)".to_string()
    };
    if let Some(rule) = cache_rule {
        allocator_rule = format!("{allocator_rule}; {rule}");
    }
    let concurrency = pool.blocks as f64 / per_request as f64;
    // vLLM's own count uses the unwidened windows of the model's shape.
    let (raw_shape, _) = per_gpu_shape(&model.shape, dep.tp, dep.pp)?;
    let (raw_shape, _) = engine::cache_shape(&raw_shape, &dep.engine);
    let vllm_per_request =
        vllm_blocks_per_request(&raw_shape, block, context as u64, dep.max_batched_tokens).max(1);
    let vllm_concurrency = pool.blocks as f64 / vllm_per_request as f64;
    Ok(Capacity {
        replicas: dep.gpus / per_replica,
        layers_per_gpu: gpu_shape.layers,
        kv_heads_per_gpu: gpu_shape.kv_heads,
        kv_heads_replicated: replicated,
        weights_bytes_per_gpu: if dep.kv_budget.is_some() { 0 } else { weights },
        weights_source,
        usable_bytes_per_gpu: usable,
        reserve_bytes_per_gpu: reserve,
        reserve_note: note,
        reserve_detail: detail,
        kv_budget_bytes_per_gpu: budget,
        block_bytes: pool.block_bytes,
        kv_cache_groups: pool.groups,
        layers_per_group: pool.group_size,
        blocks: pool.blocks,
        token_capacity: pool.token_capacity,
        token_capacity_vllm_new: (vllm_concurrency * context as f64) as u64,
        vllm_concurrency,
        seq_bytes_per_gpu: per_seq,
        max_seqs,
        concurrency,
        max_context_at_batch,
        block_size: block,
        state_bytes_per_seq_per_gpu: state_per_seq,
        allocator_rule,
        batch_fits: batch as u64 <= max_seqs,
        weights_expert_bytes_per_gpu: if dep.kv_budget.is_some() {
            0
        } else {
            experts_bytes
        },
        attention_groups: dep.dp_attention,
        max_seqs_per_deployment: max_seqs
            .saturating_mul(dep.dp_attention as u64)
            .saturating_mul((dep.gpus / per_replica) as u64),
        node_note: node_note(dep),
    })
}

/// Longest context whose `batch` sequences fit in `blocks` pool blocks (binary search over
/// whole tokens, up to u32::MAX); None when any length fits because no layer keeps every
/// token (all slide, attend in chunks, or keep a state).
pub fn max_context(shape: &ModelShape, block: u32, batch: u32, blocks: u64) -> Option<u64> {
    let fits =
        |len: u64| blocks_per_request(shape, block, len).saturating_mul(batch as u64) <= blocks;
    const LIMIT: u64 = u32::MAX as u64;
    if fits(LIMIT) {
        let grows = shape
            .layer_kinds
            .iter()
            .any(|k| Span::of(*k) == Some(Span::All));
        return grows.then_some(LIMIT);
    }
    let (mut lo, mut hi) = (0u64, LIMIT);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}
