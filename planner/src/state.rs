//! Per-sequence recurrent state of Mamba and gated delta-net (linear attention) layers.
//!
//! Such a layer keeps no K and V per token: it keeps a convolution state (the last
//! `conv_kernel - 1` inputs of its causal conv1d) and a recurrent/SSM state, both fixed in
//! size whatever the context. Shapes follow vLLM's `MambaStateShapeCalculator`
//! (vllm/model_executor/layers/mamba/mamba_utils.py), tensor-parallel split included;
//! dtypes follow its `MambaStateDtypeCalculator`: the conv state in the model dtype, the
//! SSM state in `mamba_ssm_cache_dtype` when set (`--state-dtype`), else the model dtype.

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

/// The mixer of a state layer, with the dimensions its state depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mixer")]
pub enum StateMixer {
    /// Mamba-1 (Jamba): `intermediate` = mamba_expand x hidden_size.
    Mamba1 {
        intermediate: u32,
        state_size: u32,
        conv_kernel: u32,
    },
    /// Mamba-2 (Nemotron-H, Falcon-H1, Granite-4): heads of `head_dim` with `n_groups`
    /// shared B/C groups; `intermediate` = heads x head_dim.
    Mamba2 {
        intermediate: u32,
        n_groups: u32,
        heads: u32,
        head_dim: u32,
        state_size: u32,
        conv_kernel: u32,
    },
    /// Lightning (linear) attention of MiniMax-Text-01 / MiniMax-M1: one `head_dim` x
    /// `head_dim` state per head, no convolution (vLLM's `linear_attention_state_shape`).
    Lightning { heads: u32, head_dim: u32 },
    /// Gated delta-net (Qwen3-Next, Qwen3.5 `linear_attention` layers).
    GatedDeltaNet {
        key_heads: u32,
        value_heads: u32,
        key_head_dim: u32,
        value_head_dim: u32,
        conv_kernel: u32,
    },
}

impl StateMixer {
    /// Short name for output ("mamba1", "mamba2", "gated-delta-net", "lightning").
    pub fn name(&self) -> &'static str {
        match self {
            StateMixer::Mamba1 { .. } => "mamba1",
            StateMixer::Mamba2 { .. } => "mamba2",
            StateMixer::GatedDeltaNet { .. } => "gated-delta-net",
            StateMixer::Lightning { .. } => "lightning",
        }
    }
}

/// A state dtype (vLLM's `mamba_cache_dtype` / `mamba_ssm_cache_dtype` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateDtype {
    F32,
    Bf16,
    F16,
}

impl StateDtype {
    pub fn bytes(self) -> u64 {
        match self {
            StateDtype::F32 => 4,
            StateDtype::Bf16 | StateDtype::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StateDtype::F32 => "float32",
            StateDtype::Bf16 => "bfloat16",
            StateDtype::F16 => "float16",
        }
    }

    /// A `torch_dtype` / `dtype` string of a config.json, if it names one of these.
    pub fn from_config(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl std::str::FromStr for StateDtype {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, PlanError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "float32" | "f32" | "fp32" => Ok(StateDtype::F32),
            "bfloat16" | "bf16" => Ok(StateDtype::Bf16),
            "float16" | "f16" | "fp16" | "half" => Ok(StateDtype::F16),
            _ => Err(PlanError::InvalidValue {
                what: "state dtype".to_string(),
                value: text.to_string(),
                fix: "use float32, bfloat16 or float16 (vLLM's mamba_ssm_cache_dtype), or auto for the model dtype".to_string(),
            }),
        }
    }
}

/// The state layers of a model: which layers keep a state, of what mixer, in what dtypes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurrentState {
    pub mixer: StateMixer,
    /// Indices of the layers that keep a state (Falcon-H1: every layer, beside attention).
    pub layers: Vec<u32>,
    /// The conv state's dtype: the model dtype (vLLM's mamba_cache_dtype "auto").
    pub conv_dtype: StateDtype,
    /// The SSM/recurrent state's dtype: mamba_ssm_cache_dtype, else the model dtype.
    pub ssm_dtype: StateDtype,
}

/// Bytes of one layer's state for one sequence on one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StateBytes {
    pub conv: u64,
    pub ssm: u64,
}

impl StateBytes {
    pub fn total(&self) -> u64 {
        self.conv + self.ssm
    }
}

/// `a / tp`, refusing a tp that does not split `what` evenly (vLLM's `divide` asserts).
fn divide(a: u32, tp: u32, what: &str) -> Result<u64, PlanError> {
    if tp == 0 || !a.is_multiple_of(tp) {
        return Err(PlanError::InvalidValue {
            what: "tp".to_string(),
            value: tp.to_string(),
            fix: format!("the state layers' {what} = {a} must split evenly across tp ranks; pick a tp that divides {a}"),
        });
    }
    Ok((a / tp) as u64)
}

/// Extra B/C groups vLLM adds so every head shard carries its groups
/// (`extra_groups_for_head_shards`): 0 when tp divides n_groups, else tp - n_groups.
fn extra_groups(n_groups: u32, tp: u32) -> u32 {
    if n_groups.is_multiple_of(tp) {
        0
    } else {
        tp.saturating_sub(n_groups)
    }
}

/// Elements of (conv state, SSM state) of one layer on one of `tp` ranks, as vLLM's
/// `MambaStateShapeCalculator` shapes them (no speculative-decoding slots).
pub fn state_elements(mixer: &StateMixer, tp: u32) -> Result<(u64, u64), PlanError> {
    match *mixer {
        StateMixer::Mamba1 {
            intermediate,
            state_size,
            conv_kernel,
        } => {
            // conv (intermediate/tp, k-1); ssm (intermediate/tp, state_size).
            let d = divide(intermediate, tp, "intermediate size")?;
            Ok((
                d * conv_kernel.saturating_sub(1) as u64,
                d * state_size as u64,
            ))
        }
        StateMixer::Mamba2 {
            intermediate,
            n_groups,
            heads,
            head_dim,
            state_size,
            conv_kernel,
        } => {
            // conv (k-1, (intermediate + 2 x groups x state)/tp); ssm (heads/tp, head_dim, state).
            let groups = n_groups + extra_groups(n_groups, tp);
            let conv_dim = intermediate as u64 + 2 * groups as u64 * state_size as u64;
            if tp == 0 || !conv_dim.is_multiple_of(tp as u64) {
                return Err(PlanError::InvalidValue {
                    what: "tp".to_string(),
                    value: tp.to_string(),
                    fix: format!(
                        "the Mamba-2 conv width {conv_dim} must split evenly across tp ranks"
                    ),
                });
            }
            let h = divide(heads, tp, "Mamba heads")?;
            Ok((
                conv_dim / tp as u64 * conv_kernel.saturating_sub(1) as u64,
                h * head_dim as u64 * state_size as u64,
            ))
        }
        StateMixer::Lightning { heads, head_dim } => {
            // ssm (heads/tp, head_dim, head_dim); no conv state.
            let h = divide(heads, tp, "lightning-attention heads")?;
            Ok((0, h * head_dim as u64 * head_dim as u64))
        }
        StateMixer::GatedDeltaNet {
            key_heads,
            value_heads,
            key_head_dim,
            value_head_dim,
            conv_kernel,
        } => {
            // conv ((2 x k_dim x k_heads + v_dim x v_heads)/tp, k-1); ssm (v_heads/tp, v_dim, k_dim).
            let conv_dim = 2 * key_head_dim as u64 * key_heads as u64
                + value_head_dim as u64 * value_heads as u64;
            if tp == 0 || !conv_dim.is_multiple_of(tp as u64) {
                return Err(PlanError::InvalidValue {
                    what: "tp".to_string(),
                    value: tp.to_string(),
                    fix: format!("the gated delta-net conv width {conv_dim} must split evenly across tp ranks"),
                });
            }
            let v = divide(value_heads, tp, "linear value heads")?;
            Ok((
                conv_dim / tp as u64 * conv_kernel.saturating_sub(1) as u64,
                v * value_head_dim as u64 * key_head_dim as u64,
            ))
        }
    }
}

/// Bytes one sequence's state takes in one state layer on one of `tp` ranks.
pub fn layer_state_bytes(state: &RecurrentState, tp: u32) -> Result<StateBytes, PlanError> {
    let (conv, ssm) = state_elements(&state.mixer, tp)?;
    Ok(StateBytes {
        conv: conv * state.conv_dtype.bytes(),
        ssm: ssm * state.ssm_dtype.bytes(),
    })
}

/// Bytes one sequence's state takes over `layers` state layers on one of `tp` ranks.
pub fn sequence_state_bytes(
    state: &RecurrentState,
    tp: u32,
    layers: u64,
) -> Result<StateBytes, PlanError> {
    let one = layer_state_bytes(state, tp)?;
    Ok(StateBytes {
        conv: one.conv * layers,
        ssm: one.ssm * layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen3_next() -> RecurrentState {
        RecurrentState {
            mixer: StateMixer::GatedDeltaNet {
                key_heads: 16,
                value_heads: 32,
                key_head_dim: 128,
                value_head_dim: 128,
                conv_kernel: 4,
            },
            layers: (0..48).filter(|i| (i + 1) % 4 != 0).collect(),
            conv_dtype: StateDtype::Bf16,
            ssm_dtype: StateDtype::Bf16,
        }
    }

    #[test]
    fn gated_delta_net_state_follows_vllm_shapes() {
        // Qwen3-Next-80B-A3B by gated_delta_net_state_shape: conv (2x128x16 + 128x32 = 8192,
        // 3) = 24,576 elements; ssm (32, 128, 128) = 524,288; bf16: 1,097,728 B per layer.
        let s = qwen3_next();
        assert_eq!(state_elements(&s.mixer, 1).unwrap(), (24_576, 524_288));
        assert_eq!(layer_state_bytes(&s, 1).unwrap().total(), 1_097_728);
        // tp 4 splits both; tp 3 divides neither.
        assert_eq!(state_elements(&s.mixer, 4).unwrap(), (6_144, 131_072));
        let e = state_elements(&s.mixer, 3).unwrap_err().to_string();
        assert!(e.contains("tp = 3"), "{e}");
    }

    #[test]
    fn mamba2_state_adds_group_shards_like_vllm() {
        // Nemotron-H-8B: 128 heads x 64, 8 groups, state 128, conv 4 (intermediate 8192):
        // conv (3, 8192 + 2x8x128 = 10,240) = 30,720; ssm 128x64x128 = 1,048,576.
        let m = StateMixer::Mamba2 {
            intermediate: 8192,
            n_groups: 8,
            heads: 128,
            head_dim: 64,
            state_size: 128,
            conv_kernel: 4,
        };
        assert_eq!(state_elements(&m, 1).unwrap(), (30_720, 1_048_576));
        // Falcon-H1-style single group at tp 2: groups become 1 + (2 - 1) = 2.
        let one_group = StateMixer::Mamba2 {
            intermediate: 3072,
            n_groups: 1,
            heads: 24,
            head_dim: 128,
            state_size: 256,
            conv_kernel: 4,
        };
        // (3072 + 2x2x256) / 2 = 2048 per rank x 3.
        assert_eq!(state_elements(&one_group, 2).unwrap().0, 2048 * 3);
    }

    #[test]
    fn mamba1_state_and_the_ssm_dtype_override() {
        // Jamba-1.5-Mini: intermediate 2 x 4096, state 16, conv 4: conv 8192x3, ssm 8192x16.
        let mut s = RecurrentState {
            mixer: StateMixer::Mamba1 {
                intermediate: 8192,
                state_size: 16,
                conv_kernel: 4,
            },
            layers: vec![0],
            conv_dtype: StateDtype::Bf16,
            ssm_dtype: StateDtype::Bf16,
        };
        assert_eq!(
            layer_state_bytes(&s, 1).unwrap(),
            StateBytes {
                conv: 49_152,
                ssm: 262_144
            }
        );
        s.ssm_dtype = "float32".parse().unwrap();
        assert_eq!(layer_state_bytes(&s, 1).unwrap().ssm, 524_288);
        assert!("int3".parse::<StateDtype>().is_err());
    }
}
