//! kvbench-bench: the runner — sweep matrix, timing, statistics, calibration, environment,
//! records and exporters, report merging and plots, baseline comparison.

pub mod calibrate;
pub mod compare;
pub mod env;
pub mod export;
pub mod matrix;
pub mod offload;
pub mod record;
pub mod report;
pub mod runner;
pub mod stats;

pub use record::{Record, SCHEMA_VERSION};
