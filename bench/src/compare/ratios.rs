//! Timing ratios inside one run (paged / contiguous tokens/s, int8 / f16, pct_of_limit),
//! compared between the baseline and the new run. Both halves of a ratio ran minutes apart on
//! one machine, so machine speed and background load largely cancel: the gate that stays
//! stable on a noisy shared CI machine.

use std::collections::HashMap;

use super::columns::{role, Better, Role, Spread};
use super::key::KeyColumns;
use super::thresholds::{RatioSpec, Thresholds};
use super::verdict::{self, Measured, Verdict};
use super::{measured, show, Finding};
use crate::report::table::CsvTable;

/// A ratio found in one run, by the key of its pair.
struct RunRatio {
    label: String,
    value: Measured,
}

/// Key columns that identify a pair: the shared key less the divided column and `ignore`.
fn pair_columns(keys: &KeyColumns, spec: &RatioSpec) -> Vec<String> {
    keys.shared
        .iter()
        .filter(|c| Some(*c) != spec.column.as_ref() && !spec.ignore.contains(c))
        .cloned()
        .collect()
}

/// Every ratio of `spec` in one run.
fn ratios_in(
    table: &CsvTable,
    keys: &KeyColumns,
    spec: &RatioSpec,
    spread: &Spread,
) -> HashMap<Vec<String>, RunRatio> {
    let pair_cols = pair_columns(keys, spec);
    // Rows whose key omits the divided column: the label shows the varying rest.
    let label_of = |row: usize| {
        keys.varying
            .iter()
            .filter(|c| pair_cols.contains(c))
            .map(|c| format!("{c}={}", table.get(row, c)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = HashMap::new();
    let positive = |m: Option<Measured>| m.filter(|m| m.value > 0.0);
    let chosen = |r: usize| spec.only.iter().all(|(c, v)| table.get(r, c) == v);
    match (&spec.column, &spec.numerator, &spec.denominator) {
        (Some(col), Some(num), Some(den)) => {
            let mut denominators = HashMap::new();
            for r in (0..table.len()).filter(|&r| chosen(r)) {
                if table.get(r, col) == den {
                    denominators.insert(KeyColumns::key_of(table, r, &pair_cols), r);
                }
            }
            for r in (0..table.len()).filter(|&r| chosen(r)) {
                if table.get(r, col) != num {
                    continue;
                }
                let key = KeyColumns::key_of(table, r, &pair_cols);
                let Some(&d) = denominators.get(&key) else {
                    continue;
                };
                let (Some(n), Some(dv)) = (
                    positive(measured(table, r, &spec.metric, spread)),
                    positive(measured(table, d, &spec.metric, spread)),
                ) else {
                    continue;
                };
                let value = n.value / dv.value;
                // Relative spreads add under division (first order).
                let rel = n.spread / n.value + dv.spread / dv.value;
                out.insert(
                    key,
                    RunRatio {
                        label: label_of(r),
                        value: Measured {
                            value,
                            spread: value * rel,
                        },
                    },
                );
            }
        }
        _ => {
            for r in (0..table.len()).filter(|&r| chosen(r)) {
                if let Some(m) = positive(measured(table, r, &spec.metric, spread)) {
                    out.insert(
                        KeyColumns::key_of(table, r, &pair_cols),
                        RunRatio {
                            label: label_of(r),
                            value: m,
                        },
                    );
                }
            }
        }
    }
    out
}

/// The median change over all pairs, judged against the threshold alone: noise moves single
/// pairs either way, a real regression moves them all, so the median is the stable verdict
/// on a shared machine where one pair's spread can excuse anything.
fn median_of(pairs: &[Finding], better: Better, threshold: f64) -> Option<Finding> {
    let mut changes: Vec<f64> = pairs.iter().filter_map(|f| f.change).collect();
    if changes.len() < 3 {
        return None;
    }
    changes.sort_by(f64::total_cmp);
    let n = changes.len();
    let median = if n % 2 == 1 {
        changes[n / 2]
    } else {
        (changes[n / 2 - 1] + changes[n / 2]) / 2.0
    };
    let base = Measured {
        value: 1.0,
        spread: 0.0,
    };
    let new = Measured {
        value: 1.0 + median,
        spread: 0.0,
    };
    let (verdict, change) = verdict::timing(base, new, better, threshold, 0.0);
    Some(Finding {
        workload: format!("median of {n} pairs"),
        metric: pairs[0].metric.clone(),
        base: "1".into(),
        new: show(1.0 + median),
        change,
        rule: format!("{}%", show(threshold * 100.0)),
        verdict,
    })
}

/// Checks one ratio spec: a finding per pair present in both runs, or one "no data" finding
/// when the baseline has no pair at all (a gate that checks nothing must be visible).
pub fn check(
    base: &CsvTable,
    new: &CsvTable,
    keys: &KeyColumns,
    spec: &RatioSpec,
    th: &Thresholds,
) -> Vec<Finding> {
    let Role::Timing { better, spread } = role(&spec.metric) else {
        return Vec::new();
    };
    let threshold = spec
        .threshold
        .unwrap_or_else(|| th.timing_threshold_for(&spec.metric));
    let pair_threshold = spec.pair_threshold.unwrap_or(threshold);
    let rule = format!(
        "{}% & {}×MAD",
        show(pair_threshold * 100.0),
        show(th.spread_k)
    );
    let in_base = ratios_in(base, keys, spec, &spread);
    let in_new = ratios_in(new, keys, spec, &spread);
    let mut pairs: Vec<(&Vec<String>, &RunRatio)> = in_base.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (key, b) in pairs {
        let Some(n) = in_new.get(key) else { continue };
        let (v, change) = verdict::timing(b.value, n.value, better, pair_threshold, th.spread_k);
        // A pair whose value is NaN or empty cannot be judged: the gate fails.
        let v = if v == Verdict::NoData {
            Verdict::Unreadable
        } else {
            v
        };
        out.push(Finding {
            workload: b.label.clone(),
            metric: spec.name.clone(),
            base: show(b.value.value),
            new: show(n.value.value),
            change,
            rule: rule.clone(),
            verdict: v,
        });
    }
    if let Some(f) = median_of(&out, better, threshold) {
        if !spec.check_pairs {
            out.clear();
        }
        out.push(f);
    }
    if out.is_empty() {
        out.push(Finding {
            workload: "(none)".into(),
            metric: spec.name.clone(),
            base: format!("{} pairs", in_base.len()),
            new: format!("{} pairs", in_new.len()),
            change: None,
            rule: "no pair of rows to divide: check the ratio's column and values".into(),
            verdict: Verdict::NoData,
        });
    }
    out
}
