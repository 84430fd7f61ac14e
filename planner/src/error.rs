//! Errors a user of the planner can cause, each naming the bad value and how to fix it.

use thiserror::Error;

/// Everything the planner can refuse.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanError {
    /// A cache dtype name that is not known.
    #[error("unknown cache dtype '{name}'; valid names: {valid}")]
    UnknownDtype { name: String, valid: String },
    /// A cache dtype suffix (`/g64`, `/r128`) that is malformed or does not apply.
    #[error("bad cache dtype '{name}': {reason}")]
    BadDtype { name: String, reason: String },
    /// A model name that is not in the registry.
    #[error("unknown model '{name}'; did you mean {suggestions}? (`kvbench models` lists all, or pass --config path/config.json)")]
    UnknownModel { name: String, suggestions: String },
    /// A GPU name that is not in the registry.
    #[error("unknown GPU '{name}'; did you mean {suggestions}? known: {known}")]
    UnknownGpu {
        name: String,
        suggestions: String,
        known: String,
    },
    /// A config.json that is not valid JSON.
    #[error("config.json is not valid JSON: {0}")]
    ConfigJson(String),
    /// A config.json of a model without attention layers (Mamba, RWKV).
    #[error(
        "config.json describes a {0} model, which has no attention layers: it keeps a \
         fixed-size recurrent state per sequence and no KV cache to size; pass a transformer \
         or hybrid model's config"
    )]
    NoAttention(String),
    /// A config.json that lacks a field the KV cache size depends on.
    #[error("config.json lacks required field '{field}' ({why})")]
    ConfigMissingField { field: String, why: String },
    /// A config.json field with a value that cannot describe a model.
    #[error("config.json field '{field}' has bad value {value}: {why}")]
    ConfigBadField {
        field: String,
        value: String,
        why: String,
    },
    /// A size or count that must be positive (or otherwise in range) but is not.
    #[error("{what} = {value} is invalid: {fix}")]
    InvalidValue {
        what: String,
        value: String,
        fix: String,
    },
    /// A memory size such as `58.5GiB` that cannot be read.
    #[error("cannot read size '{0}': write a number with a unit, e.g. 58.5GiB, 80GB, 512MiB")]
    BadSize(String),
    /// A tensor-parallel degree that does not split the model's heads evenly.
    #[error(
        "tp = {tp} does not divide {what} = {count}; pick a tp that divides {count} (e.g. {hint})"
    )]
    TpNotDivisor {
        tp: u32,
        what: String,
        count: u32,
        hint: String,
    },
    /// A pipeline-parallel degree larger than the number of layers.
    #[error("pp = {pp} exceeds the model's {layers} layers; use pp <= {layers}")]
    PpTooLarge { pp: u32, layers: u32 },
    /// A layout that cannot hold the requested dtype or shape.
    #[error("{0}")]
    Layout(String),
    /// A byte total past 16 EiB: sizes no machine can hold, nor a u64 count.
    #[error("{bytes} bytes does not fit in 64 bits; use smaller sizes")]
    TooLarge { bytes: u128 },
    /// A safetensors file or index that cannot be read as one.
    #[error("safetensors {file}: {reason}")]
    Safetensors { file: String, reason: String },
    /// A config.json `quantization_config` kvbench cannot size.
    #[error("quantization_config: {0}")]
    Quantization(String),
    /// A vLLM server log kvbench cannot check against.
    #[error("vLLM log: {0}")]
    VllmLog(String),
    /// Weights and reserve leave nothing for the KV cache, or the budget fits zero sequences.
    #[error("{0}")]
    NoCapacity(String),
}
