//! kvbench-planner: pure KV-cache sizing math. No threads, no clocks, no files.

pub mod dtype;
pub mod shape;

pub use dtype::{CacheDtype, DtypeKind, GroupAxis};
pub use shape::{AttentionKind, ModelShape};
