//! The serving engine's own memory rules: what it holds back besides weights and KV cache,
//! and how it counts what is left. One module per engine; each rule names the engine version
//! it follows.

pub mod sglang;
pub mod vllm;

use serde::Serialize;

use crate::error::PlanError;
use crate::shape::{AttentionKind, ModelShape};

/// Which engine's arithmetic a deployment follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    #[default]
    Vllm,
    Sglang,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = PlanError;
    fn from_str(text: &str) -> Result<Self, PlanError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "vllm" => Ok(Engine::Vllm),
            "sglang" => Ok(Engine::Sglang),
            other => Err(PlanError::InvalidValue {
                what: "engine".to_string(),
                value: other.to_string(),
                fix: "use vllm or sglang".to_string(),
            }),
        }
    }
}

/// A `major.minor` engine version (patch levels do not change the memory rules here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Self {
        Version { major, minor }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for Version {
    type Err = PlanError;
    /// Reads `0.21`, `v0.21.1`, `0.10.1.1`, `0.19.0rc1+cu128`, `0.11.1.dev7+g1234`:
    /// major.minor, further release numbers, and a PEP 440 / local suffix (rc, dev, post, aN,
    /// bN, +local); anything else (`1e9`, `0.21abc`, `0.21 x`) is refused.
    fn from_str(text: &str) -> Result<Self, PlanError> {
        let refuse = || PlanError::InvalidValue {
            what: "engine version".to_string(),
            value: text.to_string(),
            fix:
                "write major.minor, e.g. 0.21 (a patch and a suffix such as 0.19.0rc1 are read too)"
                    .to_string(),
        };
        let t = text.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let number = |s: &str| -> Result<(u32, usize), PlanError> {
            let n = digits(s);
            let value = s[..n].parse().map_err(|_| refuse())?;
            Ok((value, n))
        };
        let (major, n) = number(t)?;
        let rest = t[n..].strip_prefix('.').ok_or_else(refuse)?;
        let (minor, n) = number(rest)?;
        let mut rest = &rest[n..];
        // Further release numbers (0.10.1.1 is a vLLM release).
        while let Some(after) = rest.strip_prefix('.').filter(|a| digits(a) > 0) {
            rest = &after[digits(after)..];
        }
        if !rest.is_empty() && !version_suffix(rest) {
            return Err(refuse());
        }
        Ok(Version { major, minor })
    }
}

/// Whether `s` is a PEP 440 pre-, post- or dev-release or local suffix (`rc1`, `.dev7`,
/// `-rc1`, `.post1`, `a1`, `b2`, `+cu128`), possibly followed by more of them.
fn version_suffix(s: &str) -> bool {
    let s = s.strip_prefix(['.', '-', '_']).unwrap_or(s);
    let digit_after = |p: &str| {
        s.strip_prefix(p)
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    s.starts_with('+')
        || ["rc", "dev", "post"].iter().any(|p| s.starts_with(p))
        || digit_after("a")
        || digit_after("b")
}

/// User overrides of single reserve components (bytes per GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ReserveOverrides {
    pub activation: Option<u64>,
    pub sampler: Option<u64>,
    pub non_torch: Option<u64>,
    pub cuda_graph: Option<u64>,
}

/// How the engine is run.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct EngineOptions {
    pub engine: Engine,
    /// The engine version whose rules apply (None: the latest kvbench knows).
    pub version: Option<Version>,
    /// vLLM's max_num_seqs (None: the engine's default for the GPU).
    pub max_num_seqs: Option<u32>,
    /// No CUDA graphs (vLLM --enforce-eager, SGLang --disable-cuda-graph).
    pub enforce_eager: bool,
    pub overrides: ReserveOverrides,
    /// How layers that keep fewer than all tokens (windows, chunks) are cached.
    pub hybrid: HybridCache,
}

/// Whether the engine keeps sliding-window and chunked layers in KV cache groups of their own
/// (vLLM's hybrid KV cache manager), holding only what they attend to, or caches them as
/// full attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HybridCache {
    /// vLLM `--disable-hybrid-kv-cache-manager`: every layer cached as full attention.
    pub disabled: bool,
    /// vLLM's `VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE` as set: whether chunked
    /// layers get groups of their own; None = the engine version's default.
    pub chunked: Option<bool>,
}

/// The cache shape an engine allocates for `shape`: layers it does not keep in groups of
/// their own become full attention. With the rule followed, when one applies (the model
/// has sliding or chunked layers).
pub fn cache_shape(shape: &ModelShape, opts: &EngineOptions) -> (ModelShape, Option<String>) {
    let has = |f: fn(&AttentionKind) -> bool| shape.layer_kinds.iter().any(f);
    let chunked = has(|k| matches!(k, AttentionKind::Chunked { .. }));
    let sliding = has(|k| matches!(k, AttentionKind::Sliding { .. }));
    let as_full = |pick: fn(&AttentionKind) -> bool| {
        let mut out = shape.clone();
        for kind in out.layer_kinds.iter_mut().filter(|k| pick(k)) {
            *kind = AttentionKind::Full;
        }
        out
    };
    let windowed = |k: &AttentionKind| {
        matches!(
            k,
            AttentionKind::Sliding { .. } | AttentionKind::Chunked { .. }
        )
    };
    match opts.engine {
        Engine::Sglang if chunked => (
            as_full(|k| matches!(k, AttentionKind::Chunked { .. })),
            Some(sglang::CHUNKED_RULE.to_string()),
        ),
        Engine::Sglang => (shape.clone(), None),
        Engine::Vllm if !(chunked || sliding) => (shape.clone(), None),
        Engine::Vllm => {
            let version = opts.version.unwrap_or(vllm::LATEST);
            if opts.hybrid.disabled {
                return (
                    as_full(windowed),
                    Some(format!("vLLM {version} --disable-hybrid-kv-cache-manager: sliding-window and chunked layers cached as full attention (kv_cache_utils.py unify_hybrid_kv_cache_specs)")),
                );
            }
            if !chunked {
                return (shape.clone(), None);
            }
            let (grouped, why) = match opts.hybrid.chunked {
                Some(on) => (on, "as set"),
                None => (
                    version >= vllm::CHUNKED_GROUPED_SINCE,
                    "that version's default",
                ),
            };
            if grouped {
                (
                    shape.clone(),
                    Some(format!("vLLM {version}: chunked local-attention layers in KV cache groups of their own, each holding its newest chunk (VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=1, {why}; ChunkedLocalAttentionSpec)")),
                )
            } else {
                // vLLM then turns the hybrid manager off for the whole model.
                (
                    as_full(windowed),
                    Some(format!("vLLM {version}: chunked local-attention layers cached as full attention (VLLM_ALLOW_CHUNKED_LOCAL_ATTN_WITH_HYBRID_KV_CACHE=0, {why}: the hybrid KV cache manager is off)")),
                )
            }
        }
    }
}

/// One part of the memory an engine holds back on each GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReserveComponent {
    /// Short name, e.g. "peak activation".
    pub name: &'static str,
    pub bytes: u64,
    /// The rule (and engine version) it follows, or "given (--reserve-...)".
    pub rule: String,
}

/// The engine's reserve per GPU, component by component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reserve {
    pub components: Vec<ReserveComponent>,
    /// The engine version the rules follow, e.g. "vLLM 0.21".
    pub follows: String,
}

impl Reserve {
    pub fn total(&self) -> u64 {
        self.components.iter().map(|c| c.bytes).sum()
    }

    /// One line: total and components.
    pub fn note(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let parts: Vec<String> = self
            .components
            .iter()
            .map(|c| format!("{} {:.2} GiB", c.name, gib(c.bytes)))
            .collect();
        format!("{}: {}", self.follows, parts.join(" + "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_vllm_names_them_and_nothing_else() {
        let v = |t: &str| t.parse::<Version>().map(|v| (v.major, v.minor));
        for (text, want) in [
            ("0.21", (0, 21)),
            ("v0.21.1", (0, 21)),
            ("0.10.1.1", (0, 10)),
            ("0.19.0rc1+cu128", (0, 19)),
            ("0.11.1.dev7+g1234", (0, 11)),
            ("0.1.dev7548+gbaba038", (0, 1)),
            ("0.21-rc1", (0, 21)),
            ("1.0a1", (1, 0)),
        ] {
            assert_eq!(v(text).ok(), Some(want), "{text}");
        }
        // Leading digits alone used to be enough: 1e9 was read as 1.9.
        for text in [
            "1e9",
            "0.21abc",
            "0",
            "abc",
            "",
            "0.",
            ".21",
            "0.21 x",
            "99999999999.1",
        ] {
            assert!(v(text).is_err(), "{text}");
        }
    }
}
