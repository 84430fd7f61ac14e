//! A whole sweep: every workload of this shard in order, inside one thread pool, each result
//! handed to the export manager as soon as it is finished, with a progress bar on stderr.

use crate::export::{ExportError, ExportManager};
use crate::matrix::{describe, Shard};
use crate::note::Note;
use crate::runner::{Outcome, Runner};
use crate::Record;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kvbench_workloads::WorkloadSpec;
use std::sync::atomic::Ordering;

/// What a sweep produced.
#[derive(Debug, Clone, Default)]
pub struct SweepResult {
    /// One record per finished workload, in sweep order.
    pub records: Vec<Record>,
    /// Outlier advice and other notes, to print after the table.
    pub notes: Vec<Note>,
    /// The user stopped the run; `records` holds what finished.
    pub interrupted: bool,
    /// Workloads of this shard that were not run (interrupted).
    pub not_run: usize,
}

/// Errors that end a sweep early (a failing workload does not: it becomes a row).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot start a pool of {threads} threads: {why}")]
    Pool { threads: u32, why: String },
}

/// Run `specs` (the whole sweep; only `shard`'s part when given) and export each result.
/// The caller ends the export with [`ExportManager::finish`].
pub fn run_sweep(
    runner: &Runner,
    specs: &[WorkloadSpec],
    shard: Option<Shard>,
    exports: &mut ExportManager,
    show_progress: bool,
) -> Result<SweepResult, SweepError> {
    let mine: Vec<(usize, WorkloadSpec)> = match shard {
        Some(s) => s.select(specs),
        None => specs.iter().cloned().enumerate().collect(),
    };
    let threads = runner.timing.threads;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads as usize)
        .build()
        .map_err(|e| SweepError::Pool {
            threads,
            why: e.to_string(),
        })?;
    let bar = progress_bar(mine.len() as u64, show_progress);
    let mut result = SweepResult::default();
    for (done, (index, spec)) in mine.iter().enumerate() {
        if runner.stop.load(Ordering::Relaxed) {
            result.interrupted = true;
            result.not_run = mine.len() - done;
            break;
        }
        bar.set_message(describe(spec));
        // The workload's kernels use the current rayon pool: this one, sized by --threads.
        let outcome: Option<Outcome> = pool.install(|| runner.run_one(*index, spec));
        let Some(outcome) = outcome else {
            result.interrupted = true;
            result.not_run = mine.len() - done;
            break;
        };
        exports.add(&outcome.record, &outcome.samples)?;
        result.notes.extend(outcome.notes);
        result.records.push(outcome.record);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(result)
}

/// A bar on stderr showing the workload running now and the time left; hidden when stderr is
/// not a terminal or when asked.
fn progress_bar(len: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} · {eta} left · {wide_msg}",
    )
    .expect("the template is valid");
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
