//! One plan: a model's cache sized for a sequence, a batch, a paged layout and, optionally,
//! a GPU deployment with its capacity and roofline bounds.

use serde::Serialize;

use crate::bounds::{bounds, Bounds, BoundsInput};
use crate::deploy::{
    apply_window_rule, attention_tp, capacity, per_gpu_shape, Capacity, Deployment, WindowRule,
};
use crate::dtype::KvDtypes;
use crate::error::PlanError;
use crate::fits::{longest_context, shared_prefix_fit, SharedPrefixFit};
use crate::layout::{allocated_bytes, bytes_per_token, used_bytes, LayoutKind, LayoutQuery};
use crate::registry::ModelInfo;
use crate::shape::{AttentionKind, ModelShape};
use crate::state::{sequence_state_bytes, StateDtype};

/// A what-if change of the model's KV heads (`--attention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AttentionOverride {
    /// One KV head per query head.
    Mha,
    /// One KV head for all query heads.
    Mqa,
    /// This many KV heads.
    Gqa(u32),
}

impl std::str::FromStr for AttentionOverride {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, PlanError> {
        let lower = text.trim().to_ascii_lowercase();
        let bad = || PlanError::InvalidValue {
            what: "attention".to_string(),
            value: text.to_string(),
            fix: "use mha, mqa or gqa:N (N KV heads, e.g. gqa:8), or model for the model's own"
                .to_string(),
        };
        match lower.as_str() {
            "mha" => Ok(Self::Mha),
            "mqa" => Ok(Self::Mqa),
            other => match other.strip_prefix("gqa:").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => Ok(Self::Gqa(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl AttentionOverride {
    /// The shape as if its KV heads were different; MLA layers become standard attention.
    pub fn apply(self, shape: &ModelShape) -> Result<ModelShape, PlanError> {
        let kv = match self {
            Self::Mha => shape.q_heads,
            Self::Mqa => 1,
            Self::Gqa(n) => n,
        };
        if kv > shape.q_heads || !shape.q_heads.is_multiple_of(kv) {
            return Err(PlanError::InvalidValue {
                what: "attention".to_string(),
                value: format!("gqa:{kv}"),
                fix: format!(
                    "the KV heads must divide the {} query heads of {}",
                    shape.q_heads, shape.name
                ),
            });
        }
        let mut out = shape.clone();
        out.kv_heads = kv;
        for kind in &mut out.layer_kinds {
            if let AttentionKind::Mla { .. } = kind {
                *kind = AttentionKind::Full;
            }
        }
        Ok(out)
    }
}

/// Everything a plan is asked.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub model: ModelInfo,
    pub kv: KvDtypes,
    pub attention: Option<AttentionOverride>,
    /// Tokens per sequence (context).
    pub seq: u32,
    pub batch: u32,
    pub block_size: u32,
    /// Leading tokens shared by the whole batch (paged prefix sharing).
    pub shared_prefix: u32,
    pub window_rule: WindowRule,
    pub max_batched_tokens: u32,
    pub deployment: Option<Deployment>,
    /// SSM/recurrent state dtype of state layers (vLLM's mamba_ssm_cache_dtype); None = the
    /// model dtype.
    pub state_dtype: Option<StateDtype>,
}

/// A titled list of extra figures (how later planners, e.g. memory tiers, add output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanSection {
    pub title: String,
    /// (column name with unit, value) pairs; names become CSV/JSON columns.
    pub rows: Vec<(String, String)>,
}

/// The answer to a [`PlanRequest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub model: String,
    /// Attention as sized: "mha", "gqa", "mqa", "mla", with a what-if note when overridden.
    pub attention: String,
    pub layers: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Layers with a sliding window.
    pub sliding_layers: u32,
    /// Layers with chunked local attention, and their chunk (Llama-4).
    pub chunked_layers: u32,
    pub chunk_tokens: Option<u32>,
    /// The cache dtypes as one label (e.g. `f16`, `kivi2/r128`).
    pub cache_dtype: String,
    pub k_bits_per_element: f64,
    pub v_bits_per_element: f64,
    pub bytes_per_token: f64,
    /// Bytes per token of one KV-storing layer (average).
    pub bytes_per_token_per_layer: f64,
    /// Layers that store KV per token (layers without attention or reading another layer's
    /// KV do not).
    pub kv_layers: u32,
    /// Layers that keep a recurrent state per sequence (Mamba, gated delta-net).
    pub state_layers: u32,
    /// The state layers' mixer ("mamba2", "gated-delta-net"), if any.
    pub state_mixer: Option<String>,
    /// State dtypes as "conv <dtype>, ssm <dtype>".
    pub state_dtype: Option<String>,
    /// Conv-state bytes of one sequence (all state layers, one GPU's worth at tp 1).
    pub state_conv_bytes_per_seq: u64,
    /// SSM/recurrent-state bytes of one sequence.
    pub state_ssm_bytes_per_seq: u64,
    /// One sequence's state: conv + SSM, fixed whatever the context.
    pub state_bytes_per_seq: u64,
    /// One sequence at `seq` tokens: KV (contiguous) plus state.
    pub seq_total_bytes: u64,
    /// Fraction of the bytes per token saved against the same model with MHA (one KV head
    /// per query head, same dtypes): 0.875 for 8 KV heads of 64.
    pub saving_vs_mha: f64,
    /// The model's longest context (`max_position_embeddings`; 0 = not stated).
    pub max_context: u32,
    pub seq: u32,
    pub batch: u32,
    /// One sequence at `seq` tokens, contiguous (sliding layers capped by the window rule).
    pub seq_bytes: u64,
    /// The batch, contiguous.
    pub batch_bytes: u64,
    pub block_size: u32,
    /// The batch in a paged layout (whole blocks); residual dtypes cannot be paged (None).
    pub paged_bytes: Option<u64>,
    /// Paged bytes minus bytes of the stored tokens.
    pub paged_waste_bytes: Option<u64>,
    pub shared_prefix: u32,
    /// The batch paged with its first `shared_prefix` tokens held once.
    pub shared_prefix_paged_bytes: Option<u64>,
    pub window_rule: WindowRule,
    pub gpu: Option<String>,
    pub gpus: Option<u32>,
    pub tp: Option<u32>,
    pub pp: Option<u32>,
    pub weights_dtype: Option<String>,
    pub capacity: Option<Capacity>,
    /// Capacity when the batch shares its first `shared_prefix` tokens (prefix caching).
    pub shared_prefix_fit: Option<SharedPrefixFit>,
    /// Decode and prefill bounds; the decode figures hold only when the batch fits
    /// (`capacity.batch_fits`).
    pub bounds: Option<Bounds>,
    /// Further sections added by other planners.
    pub extra: Vec<PlanSection>,
}

fn attention_label(shape: &ModelShape, overridden: Option<AttentionOverride>) -> String {
    let base = if shape
        .layer_kinds
        .iter()
        .any(|k| matches!(k, AttentionKind::Mla { .. }))
    {
        "mla".to_string()
    } else if shape.kv_heads == shape.q_heads {
        "mha".to_string()
    } else if shape.kv_heads == 1 {
        "mqa".to_string()
    } else {
        format!("gqa:{}", shape.kv_heads)
    };
    match overridden {
        Some(_) => format!("{base} (what-if)"),
        None => base,
    }
}

/// The model's shape as the request serves it: the what-if attention and the state dtype
/// applied (windows as trained).
fn served_shape(req: &PlanRequest) -> Result<ModelShape, PlanError> {
    let mut attended = match req.attention {
        Some(a) => a.apply(&req.model.shape)?,
        None => req.model.shape.clone(),
    };
    if let (Some(dtype), Some(state)) = (req.state_dtype, attended.state.as_mut()) {
        state.ssm_dtype = dtype;
    }
    Ok(attended)
}

/// The longest context the request's deployment holds at its batch (`--seq max`), capped
/// at the model's maximum; `req.seq` is ignored.
pub fn longest_seq(req: &PlanRequest) -> Result<u32, PlanError> {
    let Some(dep) = &req.deployment else {
        return Err(PlanError::InvalidValue {
            what: "seq".to_string(),
            value: "max".to_string(),
            fix: "the longest context depends on the memory: also give --gpu or --kv-budget"
                .to_string(),
        });
    };
    let mut model = req.model.clone();
    model.shape = served_shape(req)?;
    let cap = capacity(&model, &req.kv, dep, 1, req.batch)?;
    longest_context(&cap, req.model.max_context)
}

/// Sizes one request.
pub fn plan(req: &PlanRequest) -> Result<Plan, PlanError> {
    // `attended`: what the model attends to (windows as trained); `shape`: what the cache
    // reserves under the window rule.
    let attended = served_shape(req)?;
    let shape = apply_window_rule(&attended, req.window_rule, req.max_batched_tokens);
    let state_bytes = match &shape.state {
        Some(st) => Some(sequence_state_bytes(st, 1, st.layers.len() as u64)?),
        None => None,
    };
    let kv_layers = shape.kv_layers();
    let q = |kind: LayoutKind, batch: u32, shared_prefix: u32| LayoutQuery {
        shape: &shape,
        k: req.kv.k,
        v: req.kv.v,
        kind,
        batch,
        max_len: req.seq,
        shared_prefix,
        window: None,
    };
    let seq_bytes = allocated_bytes(&q(LayoutKind::Contiguous, 1, 0))?;
    let batch_bytes = allocated_bytes(&q(LayoutKind::Contiguous, req.batch, 0))?;
    let paged = LayoutKind::Paged {
        block_size: req.block_size,
    };
    let pageable = req.kv.k.residual == 0 && req.kv.v.residual == 0;
    let (paged_bytes, paged_waste_bytes, shared_prefix_paged_bytes) = if pageable {
        let alloc = allocated_bytes(&q(paged, req.batch, 0))?;
        let used = used_bytes(&q(paged, req.batch, 0))?;
        let shared = allocated_bytes(&q(paged, req.batch, req.shared_prefix))?;
        (Some(alloc), Some(alloc - used), Some(shared))
    } else {
        (None, None, None)
    };
    let per_token = bytes_per_token(&shape, &req.kv.k, &req.kv.v);
    let mha = AttentionOverride::Mha.apply(&shape)?;
    let mha_per_token = bytes_per_token(&mha, &req.kv.k, &req.kv.v);
    let mut out = Plan {
        model: req.model.shape.name.clone(),
        attention: attention_label(&shape, req.attention),
        layers: shape.layers,
        q_heads: shape.q_heads,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        sliding_layers: shape
            .layer_kinds
            .iter()
            .filter(|k| matches!(k, AttentionKind::Sliding { .. }))
            .count() as u32,
        chunked_layers: shape
            .layer_kinds
            .iter()
            .filter(|k| matches!(k, AttentionKind::Chunked { .. }))
            .count() as u32,
        chunk_tokens: shape.layer_kinds.iter().find_map(|k| match k {
            AttentionKind::Chunked { chunk } => Some(*chunk),
            _ => None,
        }),
        cache_dtype: req.kv.label(),
        k_bits_per_element: req.kv.k.bits_per_element(shape.head_dim),
        v_bits_per_element: req.kv.v.bits_per_element(shape.head_dim),
        bytes_per_token: per_token,
        bytes_per_token_per_layer: per_token / kv_layers.max(1) as f64,
        kv_layers,
        state_layers: shape.state_layers(),
        state_mixer: shape.state.as_ref().map(|s| s.mixer.name().to_string()),
        state_dtype: shape
            .state
            .as_ref()
            .map(|s| format!("conv {}, ssm {}", s.conv_dtype.name(), s.ssm_dtype.name())),
        state_conv_bytes_per_seq: state_bytes.map_or(0, |b| b.conv),
        state_ssm_bytes_per_seq: state_bytes.map_or(0, |b| b.ssm),
        state_bytes_per_seq: state_bytes.map_or(0, |b| b.total()),
        seq_total_bytes: seq_bytes + state_bytes.map_or(0, |b| b.total()),
        saving_vs_mha: 1.0 - per_token / mha_per_token,
        max_context: req.model.max_context,
        seq: req.seq,
        batch: req.batch,
        seq_bytes,
        batch_bytes,
        block_size: req.block_size,
        paged_bytes,
        paged_waste_bytes,
        shared_prefix: req.shared_prefix,
        shared_prefix_paged_bytes,
        window_rule: req.window_rule,
        gpu: None,
        gpus: None,
        tp: None,
        pp: None,
        weights_dtype: None,
        capacity: None,
        shared_prefix_fit: None,
        bounds: None,
        extra: Vec::new(),
    };
    if let Some(dep) = &req.deployment {
        let mut model = req.model.clone();
        // capacity() applies the window rule itself.
        model.shape = attended.clone();
        let cap = capacity(&model, &req.kv, dep, req.seq, req.batch)?;
        out.gpu = dep.gpu.as_ref().map(|g| g.key.to_string());
        out.gpus = Some(dep.gpus);
        out.tp = Some(dep.tp);
        out.pp = Some(dep.pp);
        out.weights_dtype = Some(dep.weights.name.to_string());
        if let Some(gpu) = &dep.gpu {
            // KV each GPU reads per step for one sequence: its heads, all layers (all stages).
            // A decode step reads what attention attends to, not what the engine reserves.
            let (tp_shape, _) = per_gpu_shape(&attended, attention_tp(dep), 1)?;
            let kv_read = used_bytes(&LayoutQuery {
                shape: &tp_shape,
                k: req.kv.k,
                v: req.kv.v,
                kind: LayoutKind::Contiguous,
                batch: 1,
                max_len: req.seq,
                shared_prefix: 0,
                window: None,
            })?;
            out.bounds = Some(bounds(&BoundsInput {
                model: &model,
                gpu,
                tp: dep.tp,
                pp: dep.pp,
                replicas: cap.replicas,
                weight_bits: dep.weights.bits,
                fp8: dep.weights.bits <= 8.0 && dep.weights.name == "fp8",
                // A decode step also reads (and writes back) each sequence's state.
                kv_bytes_per_seq_per_gpu: kv_read + cap.state_bytes_per_seq_per_gpu,
                batch: req.batch,
                tokens: req.seq,
                ep: dep.ep,
                attention_groups: dep.dp_attention,
            }));
        }
        out.shared_prefix_fit = shared_prefix_fit(&attended, dep, &cap, req.shared_prefix)?;
        out.capacity = Some(cap);
    }
    Ok(out)
}
