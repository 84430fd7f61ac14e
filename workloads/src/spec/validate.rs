//! Every rule a workload must meet to run on any backend, written once. The sweep matrix, `build`,
//! the offload workload and the CUDA plan all call [`WorkloadSpec::validate`]; backends add only
//! what they themselves cannot run (see `cuda::plan`).

use super::{Strategy, WorkloadKind, WorkloadSpec};
use kvbench_planner::dtype::KvDtypes;
use kvbench_planner::{AttentionKind, CacheDtype, GroupAxis, ModelShape};

/// Why a workload cannot run, with the offending value and the way out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("shape {shape}: {what} is 0; every size must be at least 1")]
    ZeroSize { shape: String, what: &'static str },
    #[error(
        "shape {shape}: q_heads {q_heads} is not a multiple of kv_heads {kv_heads}; each KV head \
         serves a whole group of query heads (use kv_heads = q_heads for MHA, a divisor for GQA, \
         1 for MQA)"
    )]
    PartialGroup {
        shape: String,
        q_heads: u32,
        kv_heads: u32,
    },
    #[error(
        "shape {shape}: head_dim {head_dim} is odd; RoPE rotates channel pairs, so head_dim must \
         be even"
    )]
    OddHeadDim { shape: String, head_dim: u32 },
    #[error(
        "shape {shape}: {kinds} layer kinds for {layers} layers; give one attention kind per layer"
    )]
    LayerKinds {
        shape: String,
        kinds: usize,
        layers: u32,
    },
    #[error(
        "shape {shape} has hidden 0; the decoder needs a hidden size (give --hidden, or run \
         --workload attention)"
    )]
    DecoderWithoutHidden { shape: String },
    #[error("shape {shape} has intermediate size 0; give one or run with --no-mlp")]
    MlpWithoutIntermediate { shape: String },
    #[error("--prompt 0: the prompt needs at least one token")]
    ZeroPrompt,
    #[error("--batch 0: the batch needs at least one sequence")]
    ZeroBatch,
    #[error(
        "block size 0 (--block-size 0) holds no tokens; give at least 1 token per block (vLLM's \
         default is 16)"
    )]
    ZeroBlockSize,
    #[error("a sliding window of 0 tokens attends to nothing; use --window 1 or more")]
    ZeroWindow,
    #[error(
        "--shared-prefix {shared_prefix} is longer than --prompt {prompt}; the shared prefix is \
         part of the prompt, so lower --shared-prefix to at most {prompt} or raise --prompt"
    )]
    SharedPrefixTooLong { shared_prefix: u32, prompt: u32 },
    #[error(
        "--residual {residual} is not allowed: {dtype} groups keys over {group} tokens, so its \
         f16 residual must hold at least {group} tokens (e.g. {preset}/r{group})"
    )]
    ResidualShorterThanGroup {
        residual: u32,
        dtype: String,
        group: u32,
        preset: String,
    },
    #[error("dtypes with an f16 residual (KIVI) are not paged; use contiguous or concat")]
    ResidualPaged,
    #[error(
        "KIVI dtypes with an f16 residual cannot be combined with a sliding window; drop \
         --window or --residual"
    )]
    ResidualWindow,
    #[error(
        "keys grouped over {group} tokens need a block size that is a multiple of {group} \
         (block size {block_size})"
    )]
    BlockSplitsGroup { group: u32, block_size: u32 },
    #[error(
        "the offload strategy runs attention workloads (cache write + attention per layer); add \
         --workload attention"
    )]
    OffloadDecoder,
    /// The K or V dtype cannot be stored at this head_dim (the codec's own rule).
    #[error("{side}: {cause}")]
    Codec {
        side: &'static str,
        cause: crate::codec::CodecError,
    },
}

impl SpecError {
    /// A combination of values each valid alone (a sweep skips it with a note); every other
    /// error is a value no combination can run (a sweep refuses it).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            SpecError::ResidualPaged
                | SpecError::ResidualWindow
                | SpecError::BlockSplitsGroup { .. }
                | SpecError::OffloadDecoder
                // A group size that does not divide this shape's head_dim: another shape of
                // the sweep may take it.
                | SpecError::Codec {
                    cause: crate::codec::CodecError::GroupDoesNotDivide { .. },
                    ..
                }
        )
    }
}

impl WorkloadSpec {
    /// Refuse a workload no backend can run: a shape, lengths, dtypes or a strategy that do not
    /// fit together. Value errors come before combination errors, so a sweep refuses a bad
    /// value even where it also meets a combination it would skip.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_shape(&self.shape, self.kind, self.mlp)?;
        self.check_lengths()?;
        check_residual(&self.k_dtype, &self.v_dtype)?;
        self.check_codecs()?;
        self.check_combination()
    }

    /// A dtype's groups fit this head_dim, by the codec's own rule (else `build` would
    /// refuse the row only after the sweep started). The codec's other refusals are about
    /// the dtype alone and are met by the rules above or where the dtype is parsed.
    fn check_codecs(&self) -> Result<(), SpecError> {
        use crate::codec::{Codec, CodecError};
        for (side, d) in [("keys", self.k_dtype), ("values", self.v_dtype)] {
            match Codec::new(d, self.shape.head_dim) {
                Err(cause @ CodecError::GroupDoesNotDivide { .. }) => {
                    return Err(SpecError::Codec { side, cause })
                }
                _ => continue,
            }
        }
        Ok(())
    }

    fn check_lengths(&self) -> Result<(), SpecError> {
        if self.prompt == 0 {
            return Err(SpecError::ZeroPrompt);
        }
        if self.batch == 0 {
            return Err(SpecError::ZeroBatch);
        }
        if self.strategy.is_paged() && self.block_size == 0 {
            return Err(SpecError::ZeroBlockSize);
        }
        let layer_window_zero = self
            .shape
            .layer_kinds
            .contains(&AttentionKind::Sliding { window: 0 });
        if self.window == Some(0) || (self.window.is_none() && layer_window_zero) {
            return Err(SpecError::ZeroWindow);
        }
        if self.shared_prefix > self.prompt {
            return Err(SpecError::SharedPrefixTooLong {
                shared_prefix: self.shared_prefix,
                prompt: self.prompt,
            });
        }
        Ok(())
    }

    /// Storage-contract rules between strategy, dtype and block size, and strategy and kind.
    fn check_combination(&self) -> Result<(), SpecError> {
        if matches!(self.strategy, Strategy::Offload(_)) && self.kind == WorkloadKind::Decoder {
            return Err(SpecError::OffloadDecoder);
        }
        let residual = [&self.k_dtype, &self.v_dtype]
            .iter()
            .any(|d| d.residual > 0 && !d.kind.is_float());
        if !self.strategy.is_paged() {
            // The residual ring keeps the newest tokens; a window would drop them first.
            return match residual && self.has_window_below(self.max_len()) {
                true => Err(SpecError::ResidualWindow),
                false => Ok(()),
            };
        }
        if residual {
            return Err(SpecError::ResidualPaged);
        }
        for d in [&self.k_dtype, &self.v_dtype] {
            if d.axis == GroupAxis::Channel && !d.kind.is_float() {
                let group = d.group_len(self.shape.head_dim);
                if !self.block_size.is_multiple_of(group) {
                    return Err(SpecError::BlockSplitsGroup {
                        group,
                        block_size: self.block_size,
                    });
                }
            }
        }
        Ok(())
    }
}

impl WorkloadSpec {
    /// Whether some layer attends to fewer than `len` tokens (`--window` overrides the
    /// window of every attention layer, as the cache geometry reads it).
    fn has_window_below(&self, len: u32) -> bool {
        self.shape
            .layer_kinds
            .iter()
            .any(|k| match (k, self.window) {
                (AttentionKind::Full | AttentionKind::Sliding { .. }, Some(w)) => w < len,
                (AttentionKind::Sliding { window }, None) => *window < len,
                _ => false,
            })
    }
}

impl Strategy {
    /// Paged layouts (and offload, which pages its working pool) keep blocks of `block_size`.
    pub fn is_paged(self) -> bool {
        matches!(self, Strategy::Paged | Strategy::Offload(_))
    }
}

/// A shape that no workload of `kind` can run.
fn check_shape(shape: &ModelShape, kind: WorkloadKind, mlp: bool) -> Result<(), SpecError> {
    let name = || shape.name.clone();
    for (what, v) in [
        ("layers", shape.layers),
        ("q_heads", shape.q_heads),
        ("kv_heads", shape.kv_heads),
        ("head_dim", shape.head_dim),
    ] {
        if v == 0 {
            return Err(SpecError::ZeroSize {
                shape: name(),
                what,
            });
        }
    }
    if !shape.q_heads.is_multiple_of(shape.kv_heads) {
        return Err(SpecError::PartialGroup {
            shape: name(),
            q_heads: shape.q_heads,
            kv_heads: shape.kv_heads,
        });
    }
    if !shape.head_dim.is_multiple_of(2) {
        return Err(SpecError::OddHeadDim {
            shape: name(),
            head_dim: shape.head_dim,
        });
    }
    if shape.layer_kinds.len() != shape.layers as usize {
        return Err(SpecError::LayerKinds {
            shape: name(),
            kinds: shape.layer_kinds.len(),
            layers: shape.layers,
        });
    }
    if kind == WorkloadKind::Decoder {
        if shape.hidden == 0 {
            return Err(SpecError::DecoderWithoutHidden { shape: name() });
        }
        if mlp && shape.intermediate == 0 {
            return Err(SpecError::MlpWithoutIntermediate { shape: name() });
        }
    }
    Ok(())
}

/// Keys grouped per channel (KIVI) flush whole groups of tokens out of the f16 residual, so
/// the residual must hold at least one group.
fn check_residual(k: &CacheDtype, v: &CacheDtype) -> Result<(), SpecError> {
    if k.kind.is_float() || k.axis != GroupAxis::Channel || k.residual == 0 {
        return Ok(());
    }
    // Channel groups run over tokens, so the group length does not depend on head_dim.
    let group = k.group_len(0);
    if k.residual < group {
        let dtype = KvDtypes { k: *k, v: *v }.label();
        let preset = dtype.split('/').next().unwrap_or("kivi").to_string();
        return Err(SpecError::ResidualShorterThanGroup {
            residual: k.residual,
            dtype,
            group,
            preset,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Backend, OffloadConfig, Tier};
    use kvbench_planner::DtypeKind;

    fn spec() -> WorkloadSpec {
        WorkloadSpec {
            kind: WorkloadKind::Decoder,
            backend: Backend::Cpu,
            shape: ModelShape::uniform("tiny", 2, 4, 2, 16, 64, 128),
            strategy: Strategy::Paged,
            k_dtype: CacheDtype::new(DtypeKind::F16),
            v_dtype: CacheDtype::new(DtypeKind::F16),
            batch: 2,
            prompt: 8,
            gen: 4,
            block_size: 16,
            shared_prefix: 0,
            window: None,
            mlp: true,
            seed: 1,
            offload: OffloadConfig::default(),
        }
    }

    fn err(f: impl FnOnce(&mut WorkloadSpec)) -> SpecError {
        let mut s = spec();
        f(&mut s);
        s.validate().unwrap_err()
    }

    #[test]
    fn a_sound_spec_passes() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn shape_errors_name_the_value() {
        // 6 query heads cannot split into 4 KV groups (6 mod 4 = 2).
        let e = err(|s| s.shape = ModelShape::uniform("odd", 2, 6, 4, 16, 64, 128)).to_string();
        assert!(
            e.contains("q_heads 6 is not a multiple of kv_heads 4"),
            "{e}"
        );
        let e = err(|s| s.shape = ModelShape::uniform("z", 0, 4, 4, 16, 64, 128)).to_string();
        assert!(e.contains("layers is 0"), "{e}");
        let e = err(|s| s.shape.head_dim = 15).to_string();
        assert!(e.contains("head_dim 15 is odd"), "{e}");
        let e = err(|s| {
            s.shape.layer_kinds.pop();
        })
        .to_string();
        assert!(e.contains("1 layer kinds for 2 layers"), "{e}");
        assert!(!err(|s| s.shape.hidden = 0).is_conflict());
        let e = err(|s| s.shape.intermediate = 0).to_string();
        assert!(e.contains("--no-mlp"), "{e}");
        // An attention workload uses neither the hidden size nor the MLP.
        let mut s = spec();
        s.kind = WorkloadKind::Attention;
        s.shape.hidden = 0;
        s.shape.intermediate = 0;
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn length_errors_name_the_flag() {
        assert_eq!(err(|s| s.prompt = 0), SpecError::ZeroPrompt);
        assert_eq!(err(|s| s.batch = 0), SpecError::ZeroBatch);
        assert_eq!(err(|s| s.block_size = 0), SpecError::ZeroBlockSize);
        assert_eq!(err(|s| s.window = Some(0)), SpecError::ZeroWindow);
        let e = err(|s| s.shared_prefix = 9).to_string();
        assert!(
            e.contains("--shared-prefix 9 is longer than --prompt 8"),
            "{e}"
        );
        // Contiguous layouts have no blocks: their block size is not read.
        let mut s = spec();
        s.strategy = Strategy::Contiguous;
        s.block_size = 0;
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn a_dtype_the_codec_cannot_store_at_this_head_dim_is_refused_before_building() {
        // KIVI-4 stores values per token in int4 groups of 32: head_dim 16 cannot hold one
        // (a row of the property test once ran into the codec instead).
        let (k, v) = CacheDtype::kivi(kvbench_planner::DtypeKind::Int4, 128);
        let e = err(|s| {
            s.k_dtype = k;
            s.v_dtype = v;
            s.shape = ModelShape::uniform("t", 1, 4, 2, 16, 64, 64);
        });
        assert!(e.is_conflict(), "{e}");
        assert!(
            e.to_string()
                .contains("groups of 32 do not divide head_dim 16"),
            "{e}"
        );
    }

    #[test]
    fn kivi_residual_must_hold_a_key_group() {
        // KIVI groups keys per channel over 32 tokens (Liu et al. 2024, group size 32); its
        // values are grouped per token in 32s, so head_dim 32 holds one group.
        let mut s = spec();
        s.shape = ModelShape::uniform("tiny", 2, 4, 2, 32, 128, 128);
        s.strategy = Strategy::Contiguous;
        (s.k_dtype, s.v_dtype) = CacheDtype::kivi(DtypeKind::Int2, 16);
        let e = s.validate().unwrap_err();
        assert!(!e.is_conflict());
        let e = e.to_string();
        assert!(
            e.contains("--residual 16") && e.contains("at least 32"),
            "{e}"
        );
        assert!(e.contains("kivi2/r32"), "{e}");
        (s.k_dtype, s.v_dtype) = CacheDtype::kivi(DtypeKind::Int2, 32);
        assert_eq!(s.validate(), Ok(()));
        s.strategy = Strategy::Paged;
        assert_eq!(s.validate(), Err(SpecError::ResidualPaged));
    }

    #[test]
    fn combinations_are_conflicts() {
        // Channel-grouped keys without a residual: a 16-token block would split a 32-token group.
        let mut s = spec();
        s.k_dtype = CacheDtype {
            axis: GroupAxis::Channel,
            ..CacheDtype::new(DtypeKind::Int4)
        };
        let e = s.validate().unwrap_err();
        assert!(e.is_conflict(), "{e}");
        assert!(
            e.to_string().contains("multiple of 32 (block size 16)"),
            "{e}"
        );
        s.block_size = 64;
        assert_eq!(s.validate(), Ok(()));
        // KIVI contiguous with a window shorter than prompt + gen (12 tokens here), at a
        // head_dim its value groups of 32 fit.
        let mut s = spec();
        s.shape = ModelShape::uniform("tiny", 2, 4, 2, 32, 128, 128);
        s.strategy = Strategy::Contiguous;
        (s.k_dtype, s.v_dtype) = CacheDtype::kivi(DtypeKind::Int4, 32);
        s.window = Some(11);
        assert_eq!(s.validate(), Err(SpecError::ResidualWindow));
        s.window = Some(12);
        assert_eq!(s.validate(), Ok(()));
        let e = err(|s| s.strategy = Strategy::Offload(Tier::Host));
        assert!(e.is_conflict() && e.to_string().contains("--workload attention"));
    }
}
