//! Baseline comparison: per-metric verdicts, regression exit.
