//! Merging run CSVs across machines into a report with tables and SVG charts
//! (`kvbench report`), and plan CSVs into capacity charts.

pub mod chart;
pub mod load;
pub mod markdown;
pub mod plans;
pub mod run_charts;
pub mod runs;
pub mod table;
pub mod view;
pub mod write;

pub use write::{write_report, ReportSummary};

#[cfg(test)]
mod samples_test;

use std::path::PathBuf;

/// Errors a user can cause when building a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No CSV was given.
    #[error("no CSV given: pass one or more run or plan CSVs (e.g. results/runs/*.csv)")]
    NoInputs,
    /// A file could not be read, is too large or is not text.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// A file is not well-formed CSV.
    #[error("{} is not a readable CSV: {message}", path.display())]
    BadCsv {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A CSV that is neither a run nor a plan CSV.
    #[error(
        "{} is neither a run CSV (no tokens_per_s/ttft_ms column) nor a plan CSV (no model \
         column): pass output of `kvbench run` or `kvbench plan --format csv`",
        path.display()
    )]
    UnknownCsv {
        /// The file.
        path: PathBuf,
    },
    /// A run CSV without the schema_version column.
    #[error(
        "{} has no schema_version column: it was not written by `kvbench run`, or it was \
         edited; re-run the benchmark",
        path.display()
    )]
    NoSchemaVersion {
        /// The file.
        path: PathBuf,
    },
    /// A schema_version cell that is not a number.
    #[error("{origin}: schema_version `{value}` is not a number; re-run the benchmark")]
    BadSchemaVersion {
        /// File and line.
        origin: String,
        /// The cell.
        value: String,
    },
    /// A row of a schema this build does not read.
    #[error(
        "{origin}: schema_version {found}, but this kvbench reads {supported}: run `kvbench \
         report` from the kvbench version that wrote it, or re-run the benchmark with this one"
    )]
    SchemaMismatch {
        /// File and line.
        origin: String,
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// Every input has a header but no rows.
    #[error(
        "{} has a header but no rows{also}: there is nothing to report; pass CSVs with rows \
         (a header-only `--shard` is fine next to shards that have rows)",
        path.display()
    )]
    NoRows {
        /// The first input.
        path: PathBuf,
        /// Says so of the other inputs, when there are any.
        also: String,
    },
    /// A time, rate, bandwidth or byte count that no measurement gives.
    #[error(
        "{origin}: `{column}` is {value} in a timed row ({status}), but a time, rate, \
         bandwidth or byte count is never negative or infinite: the file is corrupt or was \
         edited; re-run the benchmark or fix that cell"
    )]
    BadValue {
        /// File and line.
        origin: String,
        /// The column.
        column: String,
        /// The cell.
        value: String,
        /// The row's status, as `status ok`.
        status: String,
    },
    /// Writing an output failed.
    #[error("cannot write {}: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// plotters failed to draw a chart.
    #[error("cannot draw chart `{title}`: {message}")]
    Chart {
        /// Chart title.
        title: String,
        /// plotters' error.
        message: String,
    },
}
