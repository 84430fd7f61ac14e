//! Thresholds and tolerances: defaults, a TOML file (ci/thresholds.toml), and per-metric
//! overrides from flags (`--metric tokens_per_s=0.2`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::columns::{role, Role};
use super::CompareError;

/// Every threshold a comparison uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Relative change a timing metric may worsen by before it is a regression (0.10 = 10%).
    pub timing_threshold: f64,
    /// A timing change must also exceed `spread_k × (MAD of baseline + MAD of new)`.
    pub spread_k: f64,
    /// Error metrics may worsen by `max(error_abs_tol, error_rel_tol × baseline)`.
    pub error_rel_tol: f64,
    /// Absolute part of the error tolerance.
    pub error_abs_tol: f64,
    /// Per-metric overrides, by column name.
    pub metric: BTreeMap<String, MetricThreshold>,
    /// In-run timing ratios checked against the baseline's same ratios.
    pub ratio: Vec<RatioSpec>,
}

/// Overrides for one metric.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricThreshold {
    /// Timing threshold (relative) for this metric.
    pub threshold: Option<f64>,
    /// Relative error tolerance for this metric.
    pub rel_tol: Option<f64>,
    /// Absolute error tolerance for this metric.
    pub abs_tol: Option<f64>,
}

/// A timing ratio inside one run, e.g. paged over contiguous tokens/s, compared between the
/// baseline and the new run. Without `column`, the metric itself is already such a ratio
/// (`pct_of_limit` = achieved / this machine's measured limit).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatioSpec {
    /// What the ratio means, for the table.
    pub name: String,
    /// The timing metric (a column).
    pub metric: String,
    /// The key column whose two values are divided (`strategy`, `k_dtype`).
    pub column: Option<String>,
    /// Value of `column` on top.
    pub numerator: Option<String>,
    /// Value of `column` below.
    pub denominator: Option<String>,
    /// Key columns that may differ between the two rows of a pair (a paged row's
    /// `block_size`, the `v_dtype` that follows `k_dtype`).
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Only rows whose columns have these values (`only = { workload = "decoder" }`): a
    /// ratio whose one side runs for microseconds measures scheduler wake-ups, not the code.
    #[serde(default)]
    pub only: std::collections::BTreeMap<String, String>,
    /// Relative change allowed for the median over all pairs; defaults to the metric's
    /// timing threshold.
    pub threshold: Option<f64>,
    /// Relative change allowed for a single pair (also beyond its spread); defaults to
    /// `threshold`. Single pairs swing far more than the median on a shared machine.
    pub pair_threshold: Option<f64>,
    /// Judge single pairs at all (default true). Off, only the median over all pairs gates:
    /// on a shared machine single pairs swing too far to mean anything.
    #[serde(default = "yes")]
    pub check_pairs: bool,
}

fn yes() -> bool {
    true
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            timing_threshold: 0.10,
            spread_k: 2.0,
            error_rel_tol: 0.05,
            error_abs_tol: 1e-9,
            metric: BTreeMap::new(),
            ratio: Vec::new(),
        }
    }
}

/// Refuses negative or non-finite values for a flag; `example` says what a value means.
fn non_negative(flag: &str, value: f64, example: &'static str) -> Result<(), CompareError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(CompareError::BadFlag {
            flag: flag.to_string(),
            value,
            example,
        })
    }
}

/// Whether a column is something compared (not key, identity or info).
fn is_metric(column: &str) -> bool {
    matches!(
        role(column),
        Role::Exact | Role::Error(_) | Role::Timing { .. }
    )
}

impl Thresholds {
    /// Reads a thresholds file.
    pub fn from_file(path: &Path) -> Result<Self, CompareError> {
        let text = std::fs::read_to_string(path).map_err(|e| CompareError::Thresholds {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses thresholds TOML; `path` labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, CompareError> {
        let bad = |message: String| CompareError::Thresholds {
            path: path.display().to_string(),
            message,
        };
        let t: Thresholds = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        t.validate().map_err(bad)?;
        Ok(t)
    }

    /// Applies a `NAME=VALUE` flag: the timing threshold of a timing metric, or the relative
    /// tolerance of an error metric.
    pub fn set_from_flag(&mut self, flag: &str) -> Result<(), CompareError> {
        let bad = |why: &str| CompareError::MetricFlag {
            flag: flag.to_string(),
            why: why.to_string(),
        };
        let (name, value) = flag
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=VALUE, e.g. tokens_per_s=0.2"))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| bad("VALUE must be a number, e.g. 0.2 for 20%"))?;
        let name = name.trim();
        let mut entry = self.metric.get(name).cloned().unwrap_or_default();
        match role(name) {
            Role::Timing { .. } => entry.threshold = Some(value),
            Role::Error(_) => entry.rel_tol = Some(value),
            Role::Exact => return Err(bad("exact metrics have no threshold: they must match")),
            _ => return Err(bad("not a timing or error metric column")),
        }
        let mut next = self.clone();
        next.metric.insert(name.to_string(), entry);
        next.validate().map_err(|why| bad(&why))?;
        *self = next;
        Ok(())
    }

    /// Sets the default timing threshold (`--threshold`).
    pub fn set_timing_threshold(&mut self, value: f64) -> Result<(), CompareError> {
        non_negative("--threshold", value, "0.1 means 10%")?;
        self.timing_threshold = value;
        Ok(())
    }

    /// Sets the spread multiplier (`--spread-k`).
    pub fn set_spread_k(&mut self, value: f64) -> Result<(), CompareError> {
        non_negative(
            "--spread-k",
            value,
            "a multiplier: 2 means beyond twice the summed MAD of both runs",
        )?;
        self.spread_k = value;
        Ok(())
    }

    /// Checks values are usable and names are metrics.
    fn validate(&self) -> Result<(), String> {
        let check = |what: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("{what} = {v} must be a non-negative number"))
            }
        };
        check("timing_threshold", self.timing_threshold)?;
        check("spread_k", self.spread_k)?;
        check("error_rel_tol", self.error_rel_tol)?;
        check("error_abs_tol", self.error_abs_tol)?;
        for (name, m) in &self.metric {
            if !is_metric(name) {
                return Err(format!(
                    "[metric.{name}]: `{name}` is not a compared metric column \
                     (e.g. tokens_per_s, ttft_ms, rel_error)"
                ));
            }
            for (what, v) in [
                ("threshold", m.threshold),
                ("rel_tol", m.rel_tol),
                ("abs_tol", m.abs_tol),
            ] {
                if let Some(v) = v {
                    check(&format!("metric.{name}.{what}"), v)?;
                }
            }
        }
        for r in &self.ratio {
            if !matches!(role(&r.metric), Role::Timing { .. }) {
                return Err(format!(
                    "ratio `{}`: metric `{}` is not a timing metric",
                    r.name, r.metric
                ));
            }
            let parts = [&r.column, &r.numerator, &r.denominator];
            let given = parts.iter().filter(|p| p.is_some()).count();
            if given != 0 && given != 3 {
                return Err(format!(
                    "ratio `{}`: give column, numerator and denominator together, or none",
                    r.name
                ));
            }
            if let Some(t) = r.threshold {
                check(&format!("ratio `{}` threshold", r.name), t)?;
            }
            if let Some(t) = r.pair_threshold {
                check(&format!("ratio `{}` pair_threshold", r.name), t)?;
            }
        }
        Ok(())
    }

    /// Timing threshold for a metric.
    pub fn timing_threshold_for(&self, metric: &str) -> f64 {
        self.metric
            .get(metric)
            .and_then(|m| m.threshold)
            .unwrap_or(self.timing_threshold)
    }

    /// (relative, absolute) tolerance for an error metric.
    pub fn tolerance_for(&self, metric: &str) -> (f64, f64) {
        let m = self.metric.get(metric);
        (
            m.and_then(|m| m.rel_tol).unwrap_or(self.error_rel_tol),
            m.and_then(|m| m.abs_tol).unwrap_or(self.error_abs_tol),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Thresholds, CompareError> {
        Thresholds::from_toml(text, Path::new("t.toml"))
    }

    #[test]
    fn file_overrides_defaults_per_metric() {
        let t = parse(
            "timing_threshold = 0.2\n[metric.itl_p99_ms]\nthreshold = 0.5\n\
             [metric.rel_error]\nabs_tol = 1e-4\n",
        )
        .unwrap();
        assert_eq!(t.timing_threshold_for("ttft_ms"), 0.2);
        assert_eq!(t.timing_threshold_for("itl_p99_ms"), 0.5);
        assert_eq!(t.tolerance_for("rel_error"), (0.05, 1e-4));
        assert_eq!(t.spread_k, 2.0);
    }

    #[test]
    fn flags_set_threshold_or_tolerance_by_metric_kind() {
        let mut t = Thresholds::default();
        t.set_from_flag("tokens_per_s=0.3").unwrap();
        t.set_from_flag("rel_error=0.01").unwrap();
        assert_eq!(t.timing_threshold_for("tokens_per_s"), 0.3);
        assert_eq!(t.tolerance_for("rel_error").0, 0.01);
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_fix() {
        let mut t = Thresholds::default();
        for (flag, want) in [
            ("tokens_per_s", "NAME=VALUE"),
            ("tokens_per_s=fast", "must be a number"),
            ("kv_bytes_allocated=0.1", "must match"),
            ("model=0.1", "not a timing or error metric"),
            ("ttft_ms=-1", "non-negative"),
        ] {
            let msg = t.set_from_flag(flag).unwrap_err().to_string();
            assert!(msg.contains(flag) && msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn each_global_flag_says_what_its_value_means() {
        let mut t = Thresholds::default();
        let msg = t.set_timing_threshold(-0.1).unwrap_err().to_string();
        assert!(
            msg.contains("--threshold -0.1") && msg.contains("10%"),
            "{msg}"
        );
        // A multiplier, not a fraction.
        let msg = t.set_spread_k(f64::NAN).unwrap_err().to_string();
        assert!(
            msg.contains("--spread-k NaN") && msg.contains("multiplier"),
            "{msg}"
        );
        assert!(!msg.contains('%'), "{msg}");
    }

    #[test]
    fn typos_in_the_file_are_errors() {
        let msg = parse("timing_treshold = 0.1\n").unwrap_err().to_string();
        assert!(
            msg.contains("t.toml") && msg.contains("timing_treshold"),
            "{msg}"
        );
        let msg = parse("[metric.tokens_per_sec]\nthreshold = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("tokens_per_sec"), "{msg}");
        let msg =
            parse("[[ratio]]\nname = \"x\"\nmetric = \"tokens_per_s\"\ncolumn = \"strategy\"\n")
                .unwrap_err()
                .to_string();
        assert!(msg.contains("together"), "{msg}");
    }

    #[test]
    fn the_committed_ci_thresholds_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/thresholds.toml");
        let t = Thresholds::from_file(&path).unwrap();
        assert!(!t.ratio.is_empty());
    }
}
