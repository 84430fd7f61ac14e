//! Things a run tells the user besides its rows, as values (not strings matched by their
//! text), so the binary can group them: outlier counts are summarised in one line, every
//! other note is printed as it is.

use std::fmt;

/// One note from a finished workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// Timing samples far from the median (counted per row in the `outliers` column).
    Outliers {
        /// The workload, as `matrix::describe` names it.
        workload: String,
        /// Which samples and how many.
        detail: String,
    },
    /// An offload tier failed during the run; blocks were recomputed instead of loaded.
    TierFallback {
        workload: String,
        tier: String,
        recomputed_blocks: u64,
        error: String,
    },
    /// What a workload's tuning chose for this machine, and on what figures
    /// ([`kvbench_workloads::Workload::tune`]).
    Tuned { workload: String, detail: String },
    /// The layout allocated other than the planner predicted.
    LayoutMismatch {
        workload: String,
        allocated: u64,
        predicted: u64,
    },
}

impl Note {
    /// An outlier note (summarised, not printed one by one).
    pub fn is_outliers(&self) -> bool {
        matches!(self, Note::Outliers { .. })
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Outliers { workload, detail } | Note::Tuned { workload, detail } => {
                write!(f, "{workload}: {detail}")
            }
            Note::TierFallback {
                workload,
                tier,
                recomputed_blocks,
                error,
            } => write!(
                f,
                "{workload}: the {tier} tier failed and the run recomputed {recomputed_blocks} \
                 blocks instead (row status `fallback`): {error}"
            ),
            Note::LayoutMismatch {
                workload,
                allocated,
                predicted,
            } => write!(
                f,
                "{workload}: layout allocated {allocated} bytes but the planner predicted \
                 {predicted}"
            ),
        }
    }
}
