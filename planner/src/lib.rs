//! kvbench-planner: pure KV-cache sizing math. No threads, no clocks, no files except parsing
//! a config.json handed over as text.

pub mod bounds;
pub mod columns;
pub mod config;
pub mod deploy;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod fits;
pub mod gpu;
pub mod hf_cache;
pub mod layout;
pub mod parallel;
pub mod plan;
pub mod pool;
pub mod prefill;
pub mod registry;
pub mod request;
pub mod safetensors;
pub mod shape;
pub mod span;
pub mod state;
pub mod tiers;
pub mod units;
pub mod vllm_log;
pub mod weights;

pub use config::parse_config;
pub use dtype::{parse_kv_dtypes, CacheDtype, DtypeKind, GroupAxis, KvDtypes};
pub use error::PlanError;
pub use layout::{allocated_bytes, used_bytes, LayoutKind, LayoutQuery};
pub use registry::{find as find_model, ModelInfo};
pub use shape::{AttentionKind, ModelShape};
