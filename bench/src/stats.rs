//! Statistics of timing samples: median, percentiles, MAD and modified-Z outliers.
//!
//! Percentiles interpolate linearly between order statistics (NumPy's default, "type 7"), so
//! p50 equals the median. Outliers follow Iglewicz and Hoaglin's modified Z-score, as
//! hyperfine does: `z = 0.6745 · (x − median) / MAD`, an outlier when `|z| > 3.5`.

use serde::{Deserialize, Serialize};

/// Modified Z-score above which a sample counts as an outlier (Iglewicz & Hoaglin).
pub const OUTLIER_Z: f64 = 3.5;

/// Summary of a set of samples, in the samples' own unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    pub mean: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// Median absolute deviation from the median (unscaled).
    pub mad: f64,
    /// Samples whose modified Z-score exceeds [`OUTLIER_Z`].
    pub outliers: usize,
}

impl Summary {
    /// Summarise `samples`; an empty slice gives all zeros (and NaNs are ignored).
    pub fn of(samples: &[f64]) -> Summary {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if sorted.is_empty() {
            return Summary::default();
        }
        sorted.sort_by(f64::total_cmp);
        let median = percentile_sorted(&sorted, 50.0);
        let mad = mad_about(&sorted, median);
        Summary {
            count: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            p50: median,
            p90: percentile_sorted(&sorted, 90.0),
            p99: percentile_sorted(&sorted, 99.0),
            mad,
            outliers: sorted
                .iter()
                .filter(|&&x| modified_z(x, median, mad).abs() > OUTLIER_Z)
                .count(),
        }
    }

    /// A one-line note when outliers were found (`None` if clean); print [`OUTLIER_ADVICE`]
    /// once after such notes.
    pub fn outlier_note(&self, what: &str) -> Option<String> {
        if self.outliers == 0 {
            return None;
        }
        Some(format!(
            "{what}: {} of {} samples are statistical outliers (modified Z > {OUTLIER_Z})",
            self.outliers, self.count
        ))
    }
}

/// What to do about outliers, in the spirit of hyperfine's warning.
pub const OUTLIER_ADVICE: &str = "outliers mean other programs or frequency scaling disturbed \
the timing; rerun on a quiet machine, or with more --warmup runs and -r repetitions";

/// The `p`-th percentile (0–100) of ascending `sorted` data, linear interpolation.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// Median absolute deviation of `sorted` around `center`.
fn mad_about(sorted: &[f64], center: f64) -> f64 {
    let mut dev: Vec<f64> = sorted.iter().map(|x| (x - center).abs()).collect();
    dev.sort_by(f64::total_cmp);
    percentile_sorted(&dev, 50.0)
}

/// Modified Z-score of `x`; 0 when the MAD is 0 and `x` is the median, else infinite.
pub fn modified_z(x: f64, median: f64, mad: f64) -> f64 {
    let d = x - median;
    if mad > 0.0 {
        0.6745 * d / mad
    } else if d == 0.0 {
        0.0
    } else {
        // Half the samples are identical and x differs from them: as far out as it gets.
        f64::INFINITY.copysign(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles_match_numpy() {
        // numpy.percentile([1..=10], [50, 90, 99]) = 5.5, 9.1, 9.91
        let s = Summary::of(&[10.0, 1.0, 2.0, 9.0, 3.0, 8.0, 4.0, 7.0, 5.0, 6.0]);
        assert_eq!(s.count, 10);
        assert_eq!(s.median, 5.5);
        assert_eq!(s.p50, 5.5);
        assert!((s.p90 - 9.1).abs() < 1e-12);
        assert!((s.p99 - 9.91).abs() < 1e-12);
        assert_eq!(s.mean, 5.5);
        assert_eq!((s.min, s.max), (1.0, 10.0));
    }

    #[test]
    fn odd_count_median_is_the_middle_sample() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!(s.median, 2.0);
    }

    #[test]
    fn mad_by_hand() {
        // [1,1,2,2,4,6,9]: median 2; |deviations| = [1,1,0,0,2,4,7] → sorted [0,0,1,1,2,4,7] → 1.
        let s = Summary::of(&[1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]);
        assert_eq!(s.median, 2.0);
        assert_eq!(s.mad, 1.0);
        // z(9) = 0.6745·7/1 = 4.72 > 3.5 → outlier; z(6) = 2.70 → not.
        assert_eq!(s.outliers, 1);
        assert!(s.outlier_note("ITL").unwrap().contains("1 of 7"));
    }

    #[test]
    fn one_slow_sample_among_steady_ones_is_flagged() {
        let mut xs = vec![10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.1, 10.0];
        assert_eq!(Summary::of(&xs).outliers, 0);
        assert!(Summary::of(&xs).outlier_note("ITL").is_none());
        xs.push(25.0);
        assert_eq!(Summary::of(&xs).outliers, 1);
    }

    #[test]
    fn zero_mad_flags_any_differing_sample() {
        let s = Summary::of(&[5.0, 5.0, 5.0, 5.0, 7.0]);
        assert_eq!(s.mad, 0.0);
        assert_eq!(s.outliers, 1);
        assert_eq!(modified_z(5.0, 5.0, 0.0), 0.0);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(Summary::of(&[]), Summary::default());
        let s = Summary::of(&[4.0]);
        assert_eq!((s.median, s.p99, s.mad, s.outliers), (4.0, 4.0, 0.0, 0));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn order_statistics_are_ordered(xs in proptest::collection::vec(0.0f64..1e6, 1..200)) {
            let s = Summary::of(&xs);
            prop_assert!(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max);
            prop_assert!(s.min <= s.mean && s.mean <= s.max);
            prop_assert!(s.mad >= 0.0 && s.mad <= s.max - s.min);
            prop_assert!(s.outliers < s.count || s.count == 0);
            prop_assert_eq!(s.count, xs.len());
        }

        #[test]
        fn shifting_samples_shifts_location_not_spread(
            xs in proptest::collection::vec(0.0f64..1e3, 1..100),
            c in -1e3f64..1e3,
        ) {
            let a = Summary::of(&xs);
            let shifted: Vec<f64> = xs.iter().map(|x| x + c).collect();
            let b = Summary::of(&shifted);
            prop_assert!((b.median - a.median - c).abs() < 1e-9);
            prop_assert!((b.mad - a.mad).abs() < 1e-9);
            prop_assert_eq!(a.outliers, b.outliers);
        }
    }
}
