//! kvbench-bench: the runner — sweep matrix, timing, statistics, calibration, environment,
//! records and exporters, report merging and plots, baseline comparison.

pub mod record;

pub use record::{Record, SCHEMA_VERSION};
