//! Baseline comparison (`kvbench compare`): match rows by workload key, judge each metric by
//! its kind (exact, error, timing), check in-run timing ratios, and say whether the new run
//! regressed.

pub mod columns;
pub mod key;
pub mod ratios;
pub mod render;
pub mod thresholds;
pub mod verdict;

use std::path::Path;

use crate::report::load::{check_schema, check_values, classify, CsvKind};
use crate::report::table::CsvTable;
use crate::report::ReportError;
use columns::{role, Role, Spread};
use key::{fingerprint, KeyColumns};
pub use thresholds::Thresholds;
use verdict::{Measured, Verdict};

/// Errors a user can cause when comparing.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// Reading a CSV failed.
    #[error(transparent)]
    Input(#[from] ReportError),
    /// A CSV that is not a run CSV.
    #[error("{which} {path} is not a run CSV (no tokens_per_s column): compare the CSVs `kvbench run` writes")]
    NotARun {
        /// baseline or new.
        which: String,
        /// The file.
        path: String,
    },
    /// A CSV of another schema version.
    #[error(
        "{which} {path} has schema_version {found}, this kvbench writes {supported}: columns \
         were renamed or removed in between, so rows cannot be matched; regenerate the \
         baseline with this kvbench (ci/regression.sh --update-baseline)"
    )]
    Schema {
        /// baseline or new.
        which: String,
        /// The file.
        path: String,
        /// Its version.
        found: u32,
        /// This build's version.
        supported: u32,
    },
    /// A metric the baseline gates is not a column of the new run.
    #[error(
        "new run {path} has no `{metric}` column, which baseline {baseline} gates: it cannot \
         pass a check it has no data for; re-run with a kvbench that writes it"
    )]
    MissingMetric {
        /// The metric.
        metric: String,
        /// The new file.
        path: String,
        /// The baseline file.
        baseline: String,
    },
    /// No workload of the baseline is in the new run (or neither has a row).
    #[error("{why}: nothing was compared, so nothing can pass")]
    NothingCompared {
        /// Which case, with the files.
        why: String,
    },
    /// Two rows of one file with the same workload key.
    #[error(
        "{which} has two rows for workload `{workload}` ({first} and {second}){hint}: compare \
         one machine's run at a time (kvbench report merges machines)"
    )]
    DuplicateKey {
        /// Why the rows may look alike: key columns the other file lacks.
        hint: String,
        /// baseline or new.
        which: String,
        /// First row.
        first: String,
        /// Second row.
        second: String,
        /// The workload.
        workload: String,
    },
    /// A bad thresholds file.
    #[error("thresholds file {path}: {message}")]
    Thresholds {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A bad number for a global threshold flag.
    #[error("{flag} {value}: must be a non-negative number ({example})")]
    BadFlag {
        /// The flag.
        flag: String,
        /// The value given.
        value: f64,
        /// What a value means, by example.
        example: &'static str,
    },
    /// A bad `--metric NAME=VALUE` flag.
    #[error("--metric {flag}: {why}")]
    MetricFlag {
        /// The flag value.
        flag: String,
        /// What is wrong and how to fix it.
        why: String,
    },
}

/// Which timing comparisons to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimingMode {
    /// Timing across runs when machine fingerprints match (else "not comparable"), plus the
    /// in-run ratios of the thresholds file.
    #[default]
    Auto,
    /// Only in-run ratios: stable on a noisy or different machine (what CI uses).
    Ratios,
    /// No timing at all.
    Off,
}

/// How to compare.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Thresholds and tolerances.
    pub thresholds: Thresholds,
    /// Which timing comparisons to make.
    pub timing: TimingMode,
    /// Baseline workloads absent from the new run do not fail the comparison.
    pub allow_missing: bool,
}

/// One line of the table of changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The workload (varying key columns) or ratio pair.
    pub workload: String,
    /// The metric, or the ratio's name.
    pub metric: String,
    /// Baseline value as text.
    pub base: String,
    /// New value as text.
    pub new: String,
    /// new / base − 1, where meaningful.
    pub change: Option<f64>,
    /// The rule applied ("exact", "±5% | 1e-9", "10% & 2×MAD").
    pub rule: String,
    /// The outcome.
    pub verdict: Verdict,
}

/// Everything a comparison found.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Per-metric findings, baseline row order.
    pub findings: Vec<Finding>,
    /// Things worth knowing that are not per-metric (unmatched columns, other machines).
    pub notes: Vec<String>,
    /// Workloads present in both runs.
    pub matched: usize,
    /// Whether missing workloads fail.
    pub allow_missing: bool,
}

impl Comparison {
    /// Findings that fail the comparison.
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.verdict.fails() && !(self.allow_missing && f.verdict == Verdict::Missing))
    }

    /// Whether the new run passes.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// How many findings have a verdict.
    pub fn count(&self, v: Verdict) -> usize {
        self.findings.iter().filter(|f| f.verdict == v).count()
    }
}

/// Reads a run CSV for comparison, checking its schema version.
pub fn load_run(path: &Path, which: &str) -> Result<CsvTable, CompareError> {
    let table = CsvTable::read(path)?;
    let not_a_run = || CompareError::NotARun {
        which: which.to_string(),
        path: path.display().to_string(),
    };
    if classify(&table, path).map_err(|_| not_a_run())? != CsvKind::Run {
        return Err(not_a_run());
    }
    check_schema(&table, path).map_err(|e| match e {
        ReportError::SchemaMismatch {
            found, supported, ..
        } => CompareError::Schema {
            which: which.to_string(),
            path: path.display().to_string(),
            found,
            supported,
        },
        other => CompareError::Input(other),
    })?;
    Ok(table)
}

/// Compares two run CSV files.
pub fn compare_files(base: &Path, new: &Path, opts: &Options) -> Result<Comparison, CompareError> {
    let b = load_run(base, "baseline")?;
    let n = load_run(new, "new")?;
    let names = (base.display().to_string(), new.display().to_string());
    compare_named(&b, &n, opts, (&names.0, &names.1))
}

/// Compares two run tables.
pub fn compare(
    base: &CsvTable,
    new: &CsvTable,
    opts: &Options,
) -> Result<Comparison, CompareError> {
    compare_named(base, new, opts, ("baseline", "new"))
}

/// The value and spread of a timing metric in one row.
pub(crate) fn measured(
    table: &CsvTable,
    row: usize,
    metric: &str,
    spread: &Spread,
) -> Option<Measured> {
    let value = table.num(row, metric)?;
    let spread = match spread {
        Spread::Absolute(c) => table.num(row, c).unwrap_or(0.0),
        Spread::RelativeOf { mad, of, median } => {
            let skew = |t: f64| {
                median
                    .as_ref()
                    .and_then(|m| table.num(row, m))
                    .map_or(0.0, |m| (t - m).abs())
            };
            match (table.num(row, mad), table.num(row, of)) {
                (Some(m), Some(t)) if t > 0.0 => value.abs() * (m + skew(t)) / t,
                _ => 0.0,
            }
        }
        Spread::MeanOf { mad, median } => {
            let m = table.num(row, mad).unwrap_or(0.0);
            m + table.num(row, median).map_or(0.0, |p| (value - p).abs())
        }
        Spread::Unknown => 0.0,
    };
    Some(Measured { value, spread })
}

/// A cell as a finite number; `None` when empty, NaN, infinite or not a number.
fn finite(table: &CsvTable, row: usize, column: &str) -> Option<f64> {
    table.num(row, column).filter(|v| v.is_finite())
}

/// Formats a number for the table: 4 significant digits, integers whole.
pub(crate) fn show(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.3e}")
    } else {
        let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.digits$}")
    }
}

/// Whether a metric of this role is checked in this timing mode (a gate): timing metrics are
/// read by the in-run ratios too, so only `--timing off` leaves them ungated.
fn gated(role: &Role, timing: TimingMode) -> bool {
    match role {
        Role::Exact | Role::Error(_) => true,
        Role::Timing { .. } => timing != TimingMode::Off,
        _ => false,
    }
}

/// Compares two run tables; `names` (baseline, new) name them in messages.
fn compare_named(
    base: &CsvTable,
    new: &CsvTable,
    opts: &Options,
    names: (&str, &str),
) -> Result<Comparison, CompareError> {
    // A negative or infinite timing would be judged "no data" below, which passes.
    check_values(base)?;
    check_values(new)?;
    let keys = KeyColumns::of(base, new);
    let base_index = keys.index(base, &format!("baseline {}", names.0), names.1)?;
    let new_index = keys.index(new, &format!("new run {}", names.1), names.0)?;
    if base.is_empty() && new.is_empty() {
        return Err(CompareError::NothingCompared {
            why: format!(
                "baseline {} and new run {} both have no rows (header only)",
                names.0, names.1
            ),
        });
    }
    // A gate the new run cannot be judged on fails; a metric only the new run has is a later
    // kvbench's addition, which the baseline cannot gate (a note below).
    if let Some(metric) = base
        .columns()
        .iter()
        .find(|c| !new.has(c) && gated(&role(c), opts.timing))
    {
        return Err(CompareError::MissingMetric {
            metric: metric.clone(),
            path: names.1.to_string(),
            baseline: names.0.to_string(),
        });
    }
    let th = &opts.thresholds;
    let mut out = Comparison {
        allow_missing: opts.allow_missing,
        ..Comparison::default()
    };
    for c in &keys.one_sided {
        out.notes.push(format!(
            "key column `{c}` is in only one of the runs; rows were matched without it"
        ));
    }
    let metrics: Vec<(String, Role)> = base
        .columns()
        .iter()
        .filter(|c| new.has(c))
        .map(|c| (c.clone(), role(c)))
        .filter(|(_, r)| matches!(r, Role::Exact | Role::Error(_) | Role::Timing { .. }))
        .collect();
    for c in base.columns().iter().chain(new.columns()) {
        let in_both = base.has(c) && new.has(c);
        let is_metric = matches!(role(c), Role::Exact | Role::Error(_) | Role::Timing { .. });
        let note = format!("metric `{c}` is in only one of the runs; not compared");
        if is_metric && !in_both && !out.notes.contains(&note) {
            out.notes.push(note);
        }
    }

    let mut other_machines: Vec<(String, String)> = Vec::new();
    for b in 0..base.len() {
        let key = KeyColumns::key_of(base, b, &keys.shared);
        let workload = keys.label(base, b);
        let Some(&n) = new_index.get(&key) else {
            out.findings.push(Finding {
                workload,
                metric: "(row)".into(),
                base: "present".into(),
                new: "absent".into(),
                change: None,
                rule: "every baseline workload runs".into(),
                verdict: Verdict::Missing,
            });
            continue;
        };
        out.matched += 1;
        let same_machine = fingerprint(base, b) == fingerprint(new, n);
        for (metric, role) in &metrics {
            let (bt, nt) = (base.get(b, metric), new.get(n, metric));
            let finding = |verdict, change, rule: String| Finding {
                workload: workload.clone(),
                metric: metric.clone(),
                base: bt.to_string(),
                new: nt.to_string(),
                change,
                rule,
                verdict,
            };
            match role {
                Role::Exact => {
                    out.findings
                        .push(finding(verdict::exact(bt, nt), None, "exact".into()))
                }
                Role::Error(better) => {
                    let (rel, abs) = th.tolerance_for(metric);
                    let rule = format!("±{}% | {abs:e}", show(rel * 100.0));
                    let f = match (finite(base, b, metric), finite(new, n, metric)) {
                        (Some(x), Some(y)) => {
                            let change = (x != 0.0).then(|| y / x - 1.0);
                            finding(verdict::error(x, y, *better, rel, abs), change, rule)
                        }
                        // Empty, NaN or text: the gate cannot be judged, so it fails.
                        _ => finding(Verdict::Unreadable, None, rule),
                    };
                    out.findings.push(f);
                }
                Role::Timing { better, spread } => {
                    if opts.timing == TimingMode::Off {
                        continue;
                    }
                    // Gated in both timing modes (the ratios divide these columns).
                    if finite(base, b, metric).is_none() || finite(new, n, metric).is_none() {
                        out.findings.push(finding(
                            Verdict::Unreadable,
                            None,
                            "a finite number on both sides".into(),
                        ));
                        continue;
                    }
                    if opts.timing != TimingMode::Auto {
                        continue;
                    }
                    let (Some(x), Some(y)) = (
                        measured(base, b, metric, spread),
                        measured(new, n, metric, spread),
                    ) else {
                        continue;
                    };
                    // Rows that were not timed (verification failed) carry zeros.
                    if x.value <= 0.0 && y.value <= 0.0 {
                        continue;
                    }
                    if !same_machine {
                        let pair = (fingerprint(base, b), fingerprint(new, n));
                        if !other_machines.contains(&pair) {
                            other_machines.push(pair);
                        }
                        continue;
                    }
                    let t = th.timing_threshold_for(metric);
                    let rule = format!("{}% & {}×MAD", show(t * 100.0), show(th.spread_k));
                    let (v, change) = verdict::timing(x, y, *better, t, th.spread_k);
                    out.findings.push(Finding {
                        base: show(x.value),
                        new: show(y.value),
                        ..finding(v, change, rule)
                    });
                }
                _ => {}
            }
        }
    }
    for (b, n) in other_machines {
        out.notes.push(format!(
            "timing not comparable: baseline ran on `{b}`, new on `{n}`; run both on one \
             machine to compare timing (exact and error metrics were compared)"
        ));
    }
    let base_keys: std::collections::HashSet<&Vec<String>> = base_index.keys().collect();
    let mut added: Vec<usize> = new_index
        .iter()
        .filter(|(k, _)| !base_keys.contains(k))
        .map(|(_, &r)| r)
        .collect();
    added.sort_unstable();
    for n in added {
        out.findings.push(Finding {
            workload: keys.label(new, n),
            metric: "(row)".into(),
            base: "absent".into(),
            new: "present".into(),
            change: None,
            rule: String::new(),
            verdict: Verdict::Added,
        });
    }
    if out.matched == 0 {
        return Err(CompareError::NothingCompared {
            why: format!(
                "none of the {} workloads of baseline {} is in new run {} (--allow-missing \
                 forgives missing workloads, not an empty comparison)",
                base.len(),
                names.0,
                names.1
            ),
        });
    }
    if opts.timing != TimingMode::Off {
        for spec in &th.ratio {
            out.findings
                .extend(ratios::check(base, new, &keys, spec, th));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
