//! Cache dtypes and their exact storage cost (the storage contract shared with `workloads`).
//!
//! A cache stores one *head vector* (head_dim elements) per token, per KV head, for K and for V.
//! Quantized dtypes store packed codes plus, per group of `group_size` elements, a scale
//! (`scale_bytes`) and, when asymmetric, a zero point of the same width. Groups run along the
//! head vector (`GroupAxis::Token`: one token's channels) or, KIVI-style for keys, along the
//! token axis (`GroupAxis::Channel`: one channel over `group_size` consecutive tokens).
//! With `residual > 0` the most recent tokens stay in f16 (see [`residual_split`]).

use serde::{Deserialize, Serialize};

/// The element format of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DtypeKind {
    F32,
    F16,
    Bf16,
    Fp8E4m3,
    Fp8E5m2,
    Int8,
    Int4,
    Nf4,
    Int2,
}

impl DtypeKind {
    /// Bits of one stored code, before any scale overhead.
    pub fn code_bits(self) -> u32 {
        match self {
            DtypeKind::F32 => 32,
            DtypeKind::F16 | DtypeKind::Bf16 => 16,
            DtypeKind::Fp8E4m3 | DtypeKind::Fp8E5m2 | DtypeKind::Int8 => 8,
            DtypeKind::Int4 | DtypeKind::Nf4 => 4,
            DtypeKind::Int2 => 2,
        }
    }

    /// Plain floating-point storage that needs no scales.
    pub fn is_float(self) -> bool {
        matches!(self, DtypeKind::F32 | DtypeKind::F16 | DtypeKind::Bf16)
    }

    /// The canonical name used in the CLI and CSV.
    pub fn name(self) -> &'static str {
        match self {
            DtypeKind::F32 => "f32",
            DtypeKind::F16 => "f16",
            DtypeKind::Bf16 => "bf16",
            DtypeKind::Fp8E4m3 => "fp8-e4m3",
            DtypeKind::Fp8E5m2 => "fp8-e5m2",
            DtypeKind::Int8 => "int8",
            DtypeKind::Int4 => "int4",
            DtypeKind::Nf4 => "nf4",
            DtypeKind::Int2 => "int2",
        }
    }
}

/// Which axis a quantization group runs along.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupAxis {
    /// Consecutive channels of one token's head vector.
    Token,
    /// One channel over consecutive tokens (KIVI keys).
    Channel,
}

/// A cache dtype with its full storage layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheDtype {
    pub kind: DtypeKind,
    /// Elements per scale group; `None` means one group per head vector (head_dim elements).
    pub group_size: Option<u32>,
    /// Bytes of one scale (2 = f16, 4 = f32); 0 for float kinds.
    pub scale_bytes: u32,
    /// Asymmetric quantization: a zero point of `scale_bytes` per group as well.
    pub zero_point: bool,
    pub axis: GroupAxis,
    /// Most recent tokens kept in f16 (KIVI residual); 0 = none.
    pub residual: u32,
}

impl CacheDtype {
    /// The default layout kvbench stores for a kind:
    /// - f32/f16/bf16: no scales;
    /// - fp8-e4m3/e5m2, int8: symmetric, one f32 scale per head vector (per token, per head);
    /// - int4, int2: asymmetric, f16 scale + f16 zero point per group of 32 channels;
    /// - nf4: absmax f16 scale per group of 64 (QLoRA's block size).
    pub fn new(kind: DtypeKind) -> Self {
        let (group_size, scale_bytes, zero_point) = match kind {
            DtypeKind::F32 | DtypeKind::F16 | DtypeKind::Bf16 => (None, 0, false),
            DtypeKind::Fp8E4m3 | DtypeKind::Fp8E5m2 | DtypeKind::Int8 => (None, 4, false),
            DtypeKind::Int4 | DtypeKind::Int2 => (Some(32), 2, true),
            DtypeKind::Nf4 => (Some(64), 2, false),
        };
        CacheDtype {
            kind,
            group_size,
            scale_bytes,
            zero_point,
            axis: GroupAxis::Token,
            residual: 0,
        }
    }

    /// llama.cpp `q8_0`: 32 int8 + one f16 scale = 34 bytes per 32 values (8.5 bits).
    pub fn q8_0() -> Self {
        CacheDtype {
            group_size: Some(32),
            scale_bytes: 2,
            ..Self::new(DtypeKind::Int8)
        }
    }

    /// llama.cpp `q4_0`: 16 bytes of nibbles + one f16 scale = 18 bytes per 32 values (4.5 bits).
    pub fn q4_0() -> Self {
        CacheDtype {
            group_size: Some(32),
            scale_bytes: 2,
            zero_point: false,
            ..Self::new(DtypeKind::Int4)
        }
    }

    /// KIVI (Liu et al. 2024): asymmetric `bits` (2 or 4), group 32, f16 scale and zero point,
    /// keys grouped per channel, values per token, the last `residual` tokens in f16.
    /// Returns (key dtype, value dtype).
    pub fn kivi(kind: DtypeKind, residual: u32) -> (Self, Self) {
        let v = CacheDtype {
            group_size: Some(32),
            scale_bytes: 2,
            zero_point: true,
            residual,
            ..Self::new(kind)
        };
        let k = CacheDtype {
            axis: GroupAxis::Channel,
            ..v
        };
        (k, v)
    }

    /// Group size in elements for a given head_dim.
    pub fn group_len(&self, head_dim: u32) -> u32 {
        self.group_size.unwrap_or(head_dim)
    }

    /// Scale (+ zero point) bytes per group.
    pub fn group_overhead_bytes(&self) -> u32 {
        if self.zero_point {
            2 * self.scale_bytes
        } else {
            self.scale_bytes
        }
    }

    /// Storage bits per element including scale/zero-point overhead (residual excluded).
    pub fn bits_per_element(&self, head_dim: u32) -> f64 {
        let g = self.group_len(head_dim) as f64;
        self.kind.code_bits() as f64 + 8.0 * self.group_overhead_bytes() as f64 / g
    }

    /// Exact bytes to store `tokens` tokens of one head (head_dim channels) in this dtype,
    /// all quantized (no residual). For `GroupAxis::Channel`, `tokens` must be a multiple of
    /// the group size (partial groups live in the residual).
    pub fn quantized_bytes(&self, tokens: u64, head_dim: u32) -> u64 {
        let elems = tokens * head_dim as u64;
        let code_bytes = (elems * self.kind.code_bits() as u64).div_ceil(8);
        if self.kind.is_float() {
            return code_bytes;
        }
        let groups = elems.div_ceil(self.group_len(head_dim) as u64);
        code_bytes + groups * self.group_overhead_bytes() as u64
    }

    /// Bytes of `tokens` tokens of one head held in the f16 residual.
    pub fn residual_bytes(tokens: u64, head_dim: u32) -> u64 {
        tokens * head_dim as u64 * 2
    }
}

/// How `len` stored tokens split between the quantized store and the f16 residual.
///
/// Rule: new tokens enter the residual; once it holds `residual` tokens, the next token
/// flushes its oldest `group` tokens (for `GroupAxis::Channel`, `group` = group size; for
/// `GroupAxis::Token`, 1) into the quantized store. Returns (quantized, residual).
pub fn residual_split(dtype: &CacheDtype, len: u64, head_dim: u32) -> (u64, u64) {
    let r = dtype.residual as u64;
    if r == 0 || dtype.kind.is_float() {
        return (len, 0);
    }
    let g = match dtype.axis {
        GroupAxis::Channel => dtype.group_len(head_dim) as u64,
        GroupAxis::Token => 1,
    };
    if len <= r {
        return (0, len);
    }
    let quantized = (len - r).div_ceil(g) * g;
    (quantized, len - quantized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_block_sizes() {
        // q8_0: 34 bytes per 32 values; q4_0: 18 bytes per 32 values.
        assert_eq!(CacheDtype::q8_0().quantized_bytes(1, 32), 34);
        assert_eq!(CacheDtype::q4_0().quantized_bytes(1, 32), 18);
        assert_eq!(CacheDtype::q8_0().bits_per_element(128), 8.5);
        assert_eq!(CacheDtype::q4_0().bits_per_element(128), 4.5);
    }

    #[test]
    fn residual_flushes_whole_groups() {
        let (k, _) = CacheDtype::kivi(DtypeKind::Int4, 128);
        assert_eq!(residual_split(&k, 100, 128), (0, 100));
        assert_eq!(residual_split(&k, 128, 128), (0, 128));
        assert_eq!(residual_split(&k, 129, 128), (32, 97));
        assert_eq!(residual_split(&k, 160, 128), (32, 128));
        assert_eq!(residual_split(&k, 161, 128), (64, 97));
    }
}
