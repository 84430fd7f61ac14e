//! kvbench-bench: the runner — sweep matrix, timing, statistics, calibration, environment,
//! records and exporters, report merging and plots, baseline comparison.

pub mod axes;
pub mod calibrate;
pub mod compare;
pub mod env;
pub mod estimate;
pub mod export;
pub mod flags;
pub mod input;
pub mod matrix;
pub mod memory;
pub mod note;
pub mod offload;
pub mod options;
pub mod record;
pub mod report;
pub mod run_flags;
pub mod runner;
pub mod session;
pub mod sizing;
pub mod stats;
pub mod suite;

pub use record::{Record, Status, SCHEMA_VERSION};
