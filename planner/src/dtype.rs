//! Cache dtypes and their exact storage cost (the storage contract shared with `workloads`).
//!
//! A cache stores one *head vector* (head_dim elements) per token, per KV head, for K and for V.
//! Quantized dtypes store packed codes plus, per group of `group_size` elements, a scale
//! (`scale_bytes`) and, when asymmetric, a zero point of the same width. Groups run along the
//! head vector (`GroupAxis::Token`: one token's channels) or, KIVI-style for keys, along the
//! token axis (`GroupAxis::Channel`: one channel over `group_size` consecutive tokens).
//! With `residual > 0` the most recent tokens stay in f16 (see [`residual_split`]).

use serde::{Deserialize, Serialize};

use crate::error::PlanError;

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
    /// - fp8-e4m3/e5m2: one scale per tensor, so exactly 8.00 bits per element — what vLLM
    ///   (`k_scale`/`v_scale` per layer), SGLang and TensorRT-LLM store; `/token` gives the
    ///   per-token layout (one f32 scale per head vector, 8.25 bits at head_dim 128);
    /// - int8: symmetric, one f32 scale per head vector (per token, per head);
    /// - int4, int2: asymmetric, f16 scale + f16 zero point per group of 32 channels;
    /// - nf4: absmax f16 scale per group of 64 (QLoRA's block size).
    pub fn new(kind: DtypeKind) -> Self {
        let (group_size, scale_bytes, zero_point) = match kind {
            DtypeKind::F32 | DtypeKind::F16 | DtypeKind::Bf16 => (None, 0, false),
            DtypeKind::Fp8E4m3 | DtypeKind::Fp8E5m2 => (None, 0, false),
            DtypeKind::Int8 => (None, 4, false),
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

/// Canonical cache dtype names accepted by [`CacheDtype::from_str`] (and `--cache-dtype`).
pub const DTYPE_NAMES: &[&str] = &[
    "f32", "f16", "bf16", "fp8-e4m3", "fp8-e5m2", "int8", "int4", "nf4", "int2", "q8_0", "q4_0",
];

/// Names of the KIVI (K, V) presets accepted by [`parse_kv_dtypes`].
pub const KIVI_NAMES: &[&str] = &["kivi2", "kivi4"];

/// KIVI's residual when none is given: the 128 recent tokens of the paper's main runs and of
/// Hugging Face's quantized cache default.
pub const KIVI_DEFAULT_RESIDUAL: u32 = 128;

/// Every accepted spelling of a base dtype (lower case, `_` and `-` both allowed) and what it means.
fn base_dtype(name: &str) -> Option<CacheDtype> {
    let kind = match name {
        "f32" | "fp32" | "float32" | "float" => DtypeKind::F32,
        "f16" | "fp16" | "float16" | "half" => DtypeKind::F16,
        "bf16" | "bfloat16" => DtypeKind::Bf16,
        "fp8-e4m3" | "fp8" | "e4m3" | "fp8-e4m3fn" => DtypeKind::Fp8E4m3,
        "fp8-e5m2" | "e5m2" => DtypeKind::Fp8E5m2,
        "int8" | "i8" => DtypeKind::Int8,
        "int4" | "i4" => DtypeKind::Int4,
        "nf4" => DtypeKind::Nf4,
        "int2" | "i2" => DtypeKind::Int2,
        "q8-0" => return Some(CacheDtype::q8_0()),
        "q4-0" => return Some(CacheDtype::q4_0()),
        _ => return None,
    };
    Some(CacheDtype::new(kind))
}

fn valid_names() -> String {
    let mut all: Vec<&str> = DTYPE_NAMES.to_vec();
    all.extend_from_slice(KIVI_NAMES);
    format!(
        "{} (add /gN to set the group size, e.g. int4/g64, /tensor for one scale per tensor, e.g. int8/tensor, or /token for one scale per head vector, e.g. fp8-e4m3/token; fp8 defaults to one scale per tensor; kivi takes /rN for its f16 residual, e.g. kivi2/r64)",
        all.join(", ")
    )
}

/// Splits `int4/g64/r32` into the base name and its suffixes.
fn split_suffixes(text: &str) -> (String, Vec<String>) {
    let lower = text.trim().to_ascii_lowercase().replace('_', "-");
    let mut parts = lower.split('/').map(str::to_string);
    let base = parts.next().unwrap_or_default();
    (base, parts.collect())
}

/// Refuses a suffix given twice (`kivi2/r64/r32`, `int4/g64/g32`): which one was meant is a
/// guess, and a label must parse back to what it names.
fn once_each(original: &str, suffixes: &[String]) -> Result<(), PlanError> {
    let tag = |p: &str| -> String {
        match p.chars().next() {
            Some(c @ ('g' | 'r')) if p[1..].chars().all(|d| d.is_ascii_digit()) => c.to_string(),
            _ => p.to_string(),
        }
    };
    for (i, part) in suffixes.iter().enumerate() {
        if suffixes[..i]
            .iter()
            .any(|earlier| tag(earlier) == tag(part))
        {
            return Err(PlanError::BadDtype {
                name: original.to_string(),
                reason: format!("'/{}' is given twice; give each suffix once", tag(part)),
            });
        }
    }
    Ok(())
}

/// Reads a positive number after a one-letter suffix tag (`g64` → 64).
fn suffix_number(original: &str, part: &str, tag: char, what: &str) -> Result<u32, PlanError> {
    let digits = part.strip_prefix(tag).unwrap_or("");
    match digits.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(PlanError::BadDtype {
            name: original.to_string(),
            reason: format!(
                "'/{part}' is not a valid {what}; write /{tag}N with N a positive integer"
            ),
        }),
    }
}

impl CacheDtype {
    /// Returns this dtype with `group` elements per scale group.
    ///
    /// Float kinds have no scales, so a group size is refused for them.
    pub fn with_group(self, group: u32) -> Result<Self, PlanError> {
        if self.kind.is_float() {
            return Err(PlanError::BadDtype {
                name: format!("{}/g{group}", self.kind.name()),
                reason: format!(
                    "{} stores no scales, so it has no group size; drop the /g suffix",
                    self.kind.name()
                ),
            });
        }
        if group == 0 {
            return Err(PlanError::BadDtype {
                name: format!("{}/g0", self.kind.name()),
                reason: "group size must be at least 1".to_string(),
            });
        }
        Ok(CacheDtype {
            group_size: Some(group),
            // A per-tensor dtype (fp8) grouped gets an f32 scale per group.
            scale_bytes: if self.scale_bytes == 0 {
                4
            } else {
                self.scale_bytes
            },
            ..self
        })
    }

    /// Returns this dtype with one scale for a whole tensor (vLLM's fp8 KV cache): its
    /// storage is the codes alone, `code_bits` per element.
    pub fn per_tensor(self) -> Result<Self, PlanError> {
        if self.kind.is_float() {
            return Err(PlanError::BadDtype {
                name: format!("{}/tensor", self.kind.name()),
                reason: format!(
                    "{} stores no scales; drop the /tensor suffix",
                    self.kind.name()
                ),
            });
        }
        Ok(CacheDtype {
            group_size: None,
            scale_bytes: 0,
            zero_point: false,
            ..self
        })
    }

    /// Returns this dtype with one f32 scale per head vector (per token, per KV head): the
    /// `/token` suffix, e.g. `fp8-e4m3/token` (8 + 32/head_dim bits per element).
    pub fn per_token(self) -> Result<Self, PlanError> {
        if self.kind.is_float() {
            return Err(PlanError::BadDtype {
                name: format!("{}/token", self.kind.name()),
                reason: format!(
                    "{} stores no scales; drop the /token suffix",
                    self.kind.name()
                ),
            });
        }
        Ok(CacheDtype {
            group_size: None,
            scale_bytes: 4,
            zero_point: false,
            ..self
        })
    }

    /// Whether the scale is one per tensor (no per-group storage).
    pub fn is_per_tensor(&self) -> bool {
        !self.kind.is_float() && self.scale_bytes == 0
    }

    /// Whether this is llama.cpp's `q8_0` or `q4_0` block layout.
    fn llama_cpp_name(&self) -> Option<&'static str> {
        if *self == CacheDtype::q8_0() {
            Some("q8_0")
        } else if *self == CacheDtype::q4_0() {
            Some("q4_0")
        } else {
            None
        }
    }
}

impl std::str::FromStr for CacheDtype {
    type Err = PlanError;

    /// Parses `f16`, `int4`, `int4/g64`, `q8_0`, `fp8-e4m3`, ... (case and `_`/`-` forgiving).
    /// KIVI presets are a (K, V) pair: parse them with [`parse_kv_dtypes`].
    fn from_str(text: &str) -> Result<Self, PlanError> {
        let (base, suffixes) = split_suffixes(text);
        if base.starts_with("kivi") {
            return Err(PlanError::BadDtype {
                name: text.to_string(),
                reason: "KIVI is a (key, value) pair of dtypes; give it where both are set (e.g. --cache-dtype kivi2), not for K or V alone".to_string(),
            });
        }
        let mut dtype = base_dtype(&base).ok_or_else(|| PlanError::UnknownDtype {
            name: text.to_string(),
            valid: valid_names(),
        })?;
        once_each(text, &suffixes)?;
        let bad = |reason: String| PlanError::BadDtype {
            name: text.to_string(),
            reason,
        };
        // A label must parse back to what it names: llama.cpp's blocks are fixed layouts, so
        // a changed group would silently become another dtype (q4_0/g64 is not int4/g64).
        if let (Some(fixed), Some(part)) = (dtype.llama_cpp_name(), suffixes.first()) {
            return Err(bad(format!(
                "'/{part}': {fixed} is llama.cpp's fixed block of 32 with one f16 scale; for \
                 another grouping use {} with /gN or /tensor",
                dtype.kind.name()
            )));
        }
        let has = |tag: &str| {
            suffixes
                .iter()
                .any(|p| p == tag || (tag == "g" && p.starts_with('g')))
        };
        if has("tensor") && has("g") {
            return Err(bad(
                "/tensor is one scale for the whole tensor, /gN one per group of N: give one \
                 of them, not both"
                    .to_string(),
            ));
        }
        for part in &suffixes {
            if part.starts_with('g') {
                let group = suffix_number(text, part, 'g', "group size")?;
                dtype = dtype.with_group(group).map_err(|e| match e {
                    PlanError::BadDtype { reason, .. } => PlanError::BadDtype {
                        name: text.to_string(),
                        reason,
                    },
                    other => other,
                })?;
            } else if part == "token" {
                dtype = dtype.per_token().map_err(|e| match e {
                    PlanError::BadDtype { reason, .. } => PlanError::BadDtype {
                        name: text.to_string(),
                        reason,
                    },
                    other => other,
                })?;
            } else if part == "tensor" {
                dtype = dtype.per_tensor().map_err(|e| match e {
                    PlanError::BadDtype { reason, .. } => PlanError::BadDtype {
                        name: text.to_string(),
                        reason,
                    },
                    other => other,
                })?;
            } else {
                return Err(PlanError::BadDtype {
                    name: text.to_string(),
                    reason: format!(
                        "unknown suffix '/{part}'; /gN sets the group size, /tensor one scale per tensor, /token one scale per head vector"
                    ),
                });
            }
        }
        Ok(dtype)
    }
}

impl std::fmt::Display for CacheDtype {
    /// The name [`FromStr`](std::str::FromStr) reads back; group sizes differing from the
    /// kind's default are written as `/gN`, KIVI halves as `kivi4-k/r128` / `kivi4-v/r128`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(name) = self.llama_cpp_name() {
            return f.write_str(name);
        }
        if self.residual > 0 || self.axis == GroupAxis::Channel {
            let half = if self.axis == GroupAxis::Channel {
                "k"
            } else {
                "v"
            };
            write!(f, "kivi{}-{half}", self.kind.code_bits())?;
            if self.group_size != Some(32) {
                write!(f, "/g{}", self.group_len(0))?;
            }
            return write!(f, "/r{}", self.residual);
        }
        f.write_str(self.kind.name())?;
        let default = CacheDtype::new(self.kind);
        if self.is_per_tensor() {
            // fp8's default is already per tensor: its bare name says it.
            return if default.is_per_tensor() {
                Ok(())
            } else {
                f.write_str("/tensor")
            };
        }
        if default.is_per_tensor()
            && self.group_size.is_none()
            && self.scale_bytes == 4
            && !self.zero_point
        {
            return f.write_str("/token");
        }
        if self.group_size != default.group_size {
            if let Some(g) = self.group_size {
                write!(f, "/g{g}")?;
            }
        }
        Ok(())
    }
}

/// A key dtype and a value dtype, as set together by `--cache-dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvDtypes {
    pub k: CacheDtype,
    pub v: CacheDtype,
}

impl KvDtypes {
    /// The same dtype for keys and values.
    pub fn same(dtype: CacheDtype) -> Self {
        KvDtypes { k: dtype, v: dtype }
    }

    /// One label for the pair: the dtype's name when K and V agree, `kivi2/r128` for a KIVI
    /// preset, else `k=<K>,v=<V>`.
    pub fn label(&self) -> String {
        if self.k == self.v {
            return self.k.to_string();
        }
        let kivi_pair = CacheDtype {
            axis: GroupAxis::Token,
            ..self.k
        } == self.v
            && self.k.axis == GroupAxis::Channel
            && self.k.residual > 0;
        if kivi_pair {
            let group = match self.k.group_size {
                Some(32) | None => String::new(),
                Some(g) => format!("/g{g}"),
            };
            return format!(
                "kivi{}/r{}{group}",
                self.k.kind.code_bits(),
                self.k.residual
            );
        }
        format!("k={},v={}", self.k, self.v)
    }
}

/// Parses a name that sets keys and values together: any [`CacheDtype`] name (both the same),
/// or a KIVI preset `kivi2` / `kivi4`, optionally with `/rN` (f16 residual tokens, default
/// [`KIVI_DEFAULT_RESIDUAL`]) and `/gN` (group size, default 32), or the halves `kivi4-k/r128`.
pub fn parse_kv_dtypes(text: &str) -> Result<KvDtypes, PlanError> {
    let (base, suffixes) = split_suffixes(text);
    let kivi_bits = match base.as_str() {
        "kivi2" | "kivi-2" => Some(DtypeKind::Int2),
        "kivi4" | "kivi-4" => Some(DtypeKind::Int4),
        _ => None,
    };
    let Some(kind) = kivi_bits else {
        return text.parse::<CacheDtype>().map(KvDtypes::same);
    };
    let (mut residual, mut group) = (KIVI_DEFAULT_RESIDUAL, 32);
    once_each(text, &suffixes)?;
    for part in &suffixes {
        if part.starts_with('r') {
            residual = suffix_number(text, part, 'r', "residual length")?;
        } else if part.starts_with('g') {
            group = suffix_number(text, part, 'g', "group size")?;
        } else {
            return Err(PlanError::BadDtype {
                name: text.to_string(),
                reason: format!(
                    "unknown suffix '/{part}'; KIVI takes /rN (f16 residual tokens) and /gN (group size)"
                ),
            });
        }
    }
    let (k, v) = CacheDtype::kivi(kind, residual);
    Ok(KvDtypes {
        k: CacheDtype {
            group_size: Some(group),
            ..k
        },
        v: CacheDtype {
            group_size: Some(group),
            ..v
        },
    })
}

/// Parses one side (K or V) of a cache: a [`CacheDtype`] name, or a KIVI half
/// (`kivi4-k`, `kivi2-v/r64`, also written `kivi4` with `--k-dtype` meaning its key half).
pub fn parse_side(text: &str, key: bool) -> Result<CacheDtype, PlanError> {
    let (base, _) = split_suffixes(text);
    let stripped = base
        .strip_suffix("-k")
        .or_else(|| base.strip_suffix("-v"))
        .unwrap_or(&base);
    if stripped.starts_with("kivi") {
        let side_key = if base.ends_with("-k") {
            true
        } else if base.ends_with("-v") {
            false
        } else {
            key
        };
        let rest = text.trim().to_ascii_lowercase().replace('_', "-");
        let rest = rest
            .split_once('/')
            .map(|(_, r)| format!("/{r}"))
            .unwrap_or_default();
        let pair = parse_kv_dtypes(&format!("{stripped}{rest}")).map_err(|e| match e {
            PlanError::BadDtype { reason, .. } => PlanError::BadDtype {
                name: text.to_string(),
                reason,
            },
            other => other,
        })?;
        return Ok(if side_key { pair.k } else { pair.v });
    }
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10: a label parses back to the dtype it names, and a name whose suffixes would be
    /// dropped or overridden is refused rather than read as something else.
    #[test]
    fn labels_parse_back_to_what_they_name() {
        for name in [
            "f16",
            "int4/g64",
            "int8/g128",
            "fp8-e4m3/tensor",
            "int4/tensor",
            "q4_0",
            "q8_0",
            "nf4/g32",
            "int2/g16",
        ] {
            let d: CacheDtype = name.parse().unwrap();
            let back: CacheDtype = d.to_string().parse().unwrap();
            assert_eq!(back, d, "{name} -> {d}");
        }
        for name in ["kivi2", "kivi4/r64", "kivi2/r64/g64", "kivi4/g16"] {
            let p = parse_kv_dtypes(name).unwrap();
            assert_eq!(
                parse_kv_dtypes(&p.label()).unwrap(),
                p,
                "{name} -> {}",
                p.label()
            );
        }
        for (name, says) in [
            ("fp8-e4m3/tensor/g64", "not both"),
            ("int4/g64/tensor", "not both"),
            ("kivi2/r64/r32", "'/r' is given twice"),
            ("int4/g64/g32", "'/g' is given twice"),
            ("q4_0/g64", "fixed block"),
            ("q8_0/tensor", "fixed block"),
        ] {
            let e = parse_kv_dtypes(name).unwrap_err().to_string();
            assert!(e.contains(says), "{name}: {e}");
        }
    }

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

    #[test]
    fn parses_every_canonical_name_and_round_trips() {
        for name in DTYPE_NAMES {
            let d: CacheDtype = name.parse().unwrap();
            assert_eq!(d.to_string(), *name);
        }
        assert_eq!(
            "fp16".parse::<CacheDtype>().unwrap(),
            CacheDtype::new(DtypeKind::F16)
        );
        assert_eq!(
            "BF16".parse::<CacheDtype>().unwrap(),
            CacheDtype::new(DtypeKind::Bf16)
        );
        assert_eq!(
            "fp8_e5m2".parse::<CacheDtype>().unwrap(),
            CacheDtype::new(DtypeKind::Fp8E5m2)
        );
        assert_eq!("Q4-0".parse::<CacheDtype>().unwrap(), CacheDtype::q4_0());
    }

    #[test]
    fn group_suffix_sets_group_and_changes_storage() {
        let d: CacheDtype = "int4/g64".parse().unwrap();
        assert_eq!(d.group_size, Some(64));
        assert_eq!(d.to_string(), "int4/g64");
        // 4 bits + (2 + 2 bytes) * 8 / 64 = 4.5 bits; with the default group 32 it is 5.0.
        assert_eq!(d.bits_per_element(128), 4.5);
        assert_eq!(
            "int4".parse::<CacheDtype>().unwrap().bits_per_element(128),
            5.0
        );
        // int8 with one f32 scale per 128-channel head vector: 8 + 32/128 = 8.25 bits.
        assert_eq!(
            "int8".parse::<CacheDtype>().unwrap().bits_per_element(128),
            8.25
        );
        let g: CacheDtype = "int8/g32".parse().unwrap();
        assert_eq!(g.to_string(), "int8/g32");
        assert_eq!(g.quantized_bytes(1, 128), 128 + 4 * 4);
    }

    #[test]
    fn per_tensor_scales_cost_nothing_per_element() {
        // vLLM's fp8 KV cache: one scale per tensor, so exactly 8 bits per element.
        let d: CacheDtype = "fp8-e4m3/tensor".parse().unwrap();
        assert_eq!(d.bits_per_element(128), 8.0);
        assert_eq!(d.quantized_bytes(16, 128), 16 * 128);
        // fp8's default is per tensor, so /tensor changes nothing and the bare name says it.
        assert_eq!(d.to_string(), "fp8-e4m3");
        assert_eq!(d, "fp8".parse::<CacheDtype>().unwrap());
        assert_eq!(
            "int8/tensor"
                .parse::<CacheDtype>()
                .unwrap()
                .bits_per_element(64),
            8.0
        );
        let err = "bf16/tensor".parse::<CacheDtype>().unwrap_err().to_string();
        assert!(err.contains("no scales"), "{err}");
    }

    #[test]
    fn fp8_stores_eight_bits_unless_a_finer_scale_is_asked() {
        // vLLM allocates fp8 KV pages of exactly 1 byte per element (one k_scale/v_scale per
        // layer, vllm/attention/layer.py), as SGLang and TensorRT-LLM do.
        for name in ["fp8", "fp8-e4m3", "fp8-e5m2"] {
            let d: CacheDtype = name.parse().unwrap();
            assert_eq!(d.bits_per_element(128), 8.0, "{name}");
            assert_eq!(d.quantized_bytes(16, 128), 16 * 128, "{name}");
        }
        // /token: one f32 per 128-channel head vector = 8 + 32/128 = 8.25 bits.
        let t: CacheDtype = "fp8-e4m3/token".parse().unwrap();
        assert_eq!(t.bits_per_element(128), 8.25);
        assert_eq!(t.to_string(), "fp8-e4m3/token");
        assert_eq!(t.to_string().parse::<CacheDtype>().unwrap(), t);
        // /g32 on fp8: an f32 scale per 32 elements = 9 bits.
        let g: CacheDtype = "fp8-e5m2/g32".parse().unwrap();
        assert_eq!(g.bits_per_element(128), 9.0);
        assert_eq!(g.to_string().parse::<CacheDtype>().unwrap(), g);
        let err = "f16/token".parse::<CacheDtype>().unwrap_err().to_string();
        assert!(err.contains("no scales"), "{err}");
    }

    #[test]
    fn bad_names_say_what_is_valid() {
        let err = "int3".parse::<CacheDtype>().unwrap_err().to_string();
        assert!(
            err.contains("'int3'") && err.contains("nf4") && err.contains("kivi2"),
            "{err}"
        );
        let err = "f16/g32".parse::<CacheDtype>().unwrap_err().to_string();
        assert!(err.contains("no group size"), "{err}");
        let err = "int4/g0".parse::<CacheDtype>().unwrap_err().to_string();
        assert!(err.contains("/g0"), "{err}");
        let err = "int4/x9".parse::<CacheDtype>().unwrap_err().to_string();
        assert!(err.contains("/x9"), "{err}");
        let err = "kivi2".parse::<CacheDtype>().unwrap_err().to_string();
        assert!(err.contains("pair"), "{err}");
    }

    #[test]
    fn kivi_presets_parse_as_pairs() {
        let p = parse_kv_dtypes("kivi2").unwrap();
        let (k, v) = CacheDtype::kivi(DtypeKind::Int2, KIVI_DEFAULT_RESIDUAL);
        assert_eq!((p.k, p.v), (k, v));
        assert_eq!(p.label(), "kivi2/r128");
        let p = parse_kv_dtypes("kivi4/r32").unwrap();
        assert_eq!(p.k.residual, 32);
        assert_eq!(p.k.axis, GroupAxis::Channel);
        assert_eq!(p.v.axis, GroupAxis::Token);
        assert_eq!(p.label(), "kivi4/r32");
        let p = parse_kv_dtypes("kivi4/r64/g64").unwrap();
        assert_eq!((p.k.group_size, p.v.group_size), (Some(64), Some(64)));
        assert_eq!(parse_kv_dtypes(&p.label()).unwrap(), p);
        assert_eq!(
            parse_kv_dtypes("int8").unwrap(),
            KvDtypes::same(CacheDtype::new(DtypeKind::Int8))
        );
        assert!(parse_kv_dtypes("kivi3").is_err());
        assert!(parse_kv_dtypes("kivi2/r0").is_err());
        // Each half reads back through parse_side.
        assert_eq!(parse_side(&k.to_string(), false).unwrap(), k);
        assert_eq!(parse_side(&v.to_string(), true).unwrap(), v);
        assert_eq!(parse_side("kivi2", true).unwrap(), k);
        assert_eq!(parse_side("kivi2", false).unwrap(), v);
        assert_eq!(
            KvDtypes {
                k,
                v: CacheDtype::new(DtypeKind::F16)
            }
            .label(),
            "k=kivi2-k/r128,v=f16"
        );
    }
}
