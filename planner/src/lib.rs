//! kvbench-planner: pure KV-cache sizing math. No threads, no clocks, no files except parsing
//! a config.json handed over as text.

pub mod bounds;
pub mod config;
pub mod deploy;
pub mod dtype;
pub mod gpu;
pub mod layout;
pub mod registry;
pub mod shape;
pub mod tiers;

pub use dtype::{CacheDtype, DtypeKind, GroupAxis};
pub use shape::{AttentionKind, ModelShape};
