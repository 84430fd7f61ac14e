//! The rule for each kind of metric: exact, error within tolerance, timing beyond spread and
//! threshold. Pure functions of the two values, so each rule is tested by hand.

use super::columns::Better;

/// The outcome for one metric of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// An exact metric differs: the storage contract or a codec changed.
    Changed,
    /// Worse beyond tolerance (errors) or beyond spread and threshold (timing).
    Regressed,
    /// A workload of the baseline is absent from the new run.
    Missing,
    /// A gated value is empty, NaN or not a number in one of the runs.
    Unreadable,
    /// Better beyond tolerance or beyond spread and threshold.
    Improved,
    /// Timing measured on different machines: not compared.
    NotComparable,
    /// Nothing to judge, and not a failure: a timing whose baseline is 0 (a row that was
    /// not timed) or a ratio with no pair of rows to divide. Empty, NaN or text cells are
    /// `Unreadable`; negative or infinite timings are refused when the CSV is read.
    NoData,
    /// A workload only the new run has.
    Added,
    /// Different, but within the tolerance.
    WithinTolerance,
    /// Different, but within the measured spread or under the threshold.
    WithinNoise,
    /// Identical.
    Same,
}

impl Verdict {
    /// Whether this fails the comparison.
    pub fn fails(self) -> bool {
        matches!(
            self,
            Verdict::Changed | Verdict::Regressed | Verdict::Missing | Verdict::Unreadable
        )
    }

    /// Whether a table of changes shows it without `--all`.
    pub fn notable(self) -> bool {
        !matches!(
            self,
            Verdict::Same | Verdict::WithinNoise | Verdict::WithinTolerance
        )
    }

    /// Short word for tables.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Changed => "CHANGED",
            Verdict::Regressed => "REGRESSED",
            Verdict::Missing => "MISSING",
            Verdict::Unreadable => "UNREADABLE",
            Verdict::Improved => "improved",
            Verdict::NotComparable => "not comparable",
            Verdict::NoData => "no data",
            Verdict::Added => "new",
            Verdict::WithinTolerance => "within tolerance",
            Verdict::WithinNoise => "within noise",
            Verdict::Same => "same",
        }
    }
}

/// Exact metrics: numbers compare by value ("16" equals "16.0"), anything else as text.
pub fn exact(base: &str, new: &str) -> Verdict {
    let (b, n) = (base.trim(), new.trim());
    let same = match (b.parse::<f64>(), n.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => b == n,
    };
    if same {
        Verdict::Same
    } else {
        Verdict::Changed
    }
}

/// Error metrics: worse by more than `max(abs_tol, rel_tol × |base|)` is a regression.
pub fn error(base: f64, new: f64, better: Better, rel_tol: f64, abs_tol: f64) -> Verdict {
    if !base.is_finite() || !new.is_finite() {
        return if base.to_bits() == new.to_bits() {
            Verdict::Same
        } else if new.is_finite() {
            Verdict::Improved
        } else {
            Verdict::Regressed
        };
    }
    let allowed = abs_tol.max(rel_tol * base.abs());
    let worse_by = match better {
        Better::Lower => new - base,
        Better::Higher => base - new,
    };
    if new == base {
        Verdict::Same
    } else if worse_by > allowed {
        Verdict::Regressed
    } else if -worse_by > allowed {
        Verdict::Improved
    } else {
        Verdict::WithinTolerance
    }
}

/// A timing value with its measured spread (median absolute deviation, same unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// The median (or the derived rate).
    pub value: f64,
    /// Its MAD, in the same unit; 0 when unknown.
    pub spread: f64,
}

/// Timing metrics: a regression only when the change is worse than `threshold` (relative)
/// AND larger than `k × (spread of baseline + spread of new)`, so neither a small drift nor
/// a noisy pair of runs fails the gate. Returns the verdict and `new / base − 1`.
pub fn timing(
    base: Measured,
    new: Measured,
    better: Better,
    threshold: f64,
    k: f64,
) -> (Verdict, Option<f64>) {
    let finite = |m: Measured| m.value.is_finite() && m.spread.is_finite();
    if !finite(base) || !finite(new) || base.value <= 0.0 || new.value < 0.0 {
        return (Verdict::NoData, None);
    }
    let change = new.value / base.value - 1.0;
    let worse = match better {
        Better::Lower => change,
        Better::Higher => -change,
    };
    let beyond_spread = (new.value - base.value).abs() > k * (base.spread + new.spread);
    let verdict = if new.value == base.value {
        Verdict::Same
    } else if worse > threshold && beyond_spread {
        Verdict::Regressed
    } else if -worse > threshold && beyond_spread {
        Verdict::Improved
    } else {
        Verdict::WithinNoise
    };
    (verdict, Some(change))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(value: f64, spread: f64) -> Measured {
        Measured { value, spread }
    }

    #[test]
    fn exact_compares_numbers_by_value_and_text_as_text() {
        assert_eq!(exact("16", "16.0"), Verdict::Same);
        assert_eq!(exact("8.5", "8.5"), Verdict::Same);
        assert_eq!(exact("1048576", "1048577"), Verdict::Changed);
        assert_eq!(exact("ok", "ok"), Verdict::Same);
        assert_eq!(exact("true", "false"), Verdict::Changed);
    }

    #[test]
    fn error_tolerance_is_the_larger_of_relative_and_absolute() {
        // base 0.010, rel 5% → 0.0005 allowed; abs 1e-9 is smaller.
        assert_eq!(
            error(0.010, 0.0104, Better::Lower, 0.05, 1e-9),
            Verdict::WithinTolerance
        );
        assert_eq!(
            error(0.010, 0.0106, Better::Lower, 0.05, 1e-9),
            Verdict::Regressed
        );
        assert_eq!(
            error(0.010, 0.0094, Better::Lower, 0.05, 1e-9),
            Verdict::Improved
        );
        // A zero baseline: only the absolute tolerance applies.
        assert_eq!(
            error(0.0, 1e-10, Better::Lower, 0.05, 1e-9),
            Verdict::WithinTolerance
        );
        assert_eq!(
            error(0.0, 1e-8, Better::Lower, 0.05, 1e-9),
            Verdict::Regressed
        );
        // Cosine similarity: lower is worse.
        assert_eq!(
            error(0.999, 0.99, Better::Higher, 0.0, 1e-3),
            Verdict::Regressed
        );
        assert_eq!(error(0.5, 0.5, Better::Higher, 0.0, 0.0), Verdict::Same);
    }

    #[test]
    fn timing_needs_both_threshold_and_spread() {
        // 20 ms → 25 ms is +25%, beyond 10%; spreads 0.5 + 0.5 ms, k = 2 → 2 ms < 5 ms.
        let (v, c) = timing(m(20.0, 0.5), m(25.0, 0.5), Better::Lower, 0.10, 2.0);
        assert_eq!(v, Verdict::Regressed);
        assert!((c.unwrap() - 0.25).abs() < 1e-12);
        // Same change, but the runs are noisy: 2 × (1.5 + 1.5) = 6 ms > 5 ms.
        let (v, _) = timing(m(20.0, 1.5), m(25.0, 1.5), Better::Lower, 0.10, 2.0);
        assert_eq!(v, Verdict::WithinNoise);
        // Quiet runs but a small change: +5% under the 10% threshold.
        let (v, _) = timing(m(20.0, 0.0), m(21.0, 0.0), Better::Lower, 0.10, 2.0);
        assert_eq!(v, Verdict::WithinNoise);
    }

    #[test]
    fn timing_direction_follows_the_metric() {
        // tokens/s falling 100 → 80 is a regression; rising is an improvement.
        let (v, c) = timing(m(100.0, 1.0), m(80.0, 1.0), Better::Higher, 0.10, 2.0);
        assert_eq!(v, Verdict::Regressed);
        assert!((c.unwrap() + 0.2).abs() < 1e-12);
        let (v, _) = timing(m(100.0, 1.0), m(130.0, 1.0), Better::Higher, 0.10, 2.0);
        assert_eq!(v, Verdict::Improved);
        let (v, _) = timing(m(20.0, 0.1), m(15.0, 0.1), Better::Lower, 0.10, 2.0);
        assert_eq!(v, Verdict::Improved);
    }

    #[test]
    fn timing_without_data_is_not_a_verdict() {
        assert_eq!(
            timing(m(0.0, 0.0), m(1.0, 0.0), Better::Lower, 0.1, 2.0).0,
            Verdict::NoData
        );
        assert_eq!(
            timing(m(f64::NAN, 0.0), m(1.0, 0.0), Better::Lower, 0.1, 2.0).0,
            Verdict::NoData
        );
    }

    #[test]
    fn failing_verdicts() {
        let fails: Vec<Verdict> = [
            Verdict::Changed,
            Verdict::Regressed,
            Verdict::Missing,
            Verdict::Improved,
            Verdict::NotComparable,
            Verdict::NoData,
            Verdict::Added,
            Verdict::WithinNoise,
            Verdict::WithinTolerance,
            Verdict::Same,
        ]
        .into_iter()
        .filter(|v| v.fails())
        .collect();
        assert_eq!(
            fails,
            [Verdict::Changed, Verdict::Regressed, Verdict::Missing]
        );
    }
}
