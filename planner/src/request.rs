//! The raw values of `kvbench plan`'s flags turned into checked ones, once, whatever other
//! flags are present: a bad `--pp` is refused even without `--gpu` (as ripgrep turns its
//! `LowArgs` into `HiArgs`). Each error names the flag, the value and the fix.

use crate::deploy::WeightDtype;
use crate::fits::SeqArg;
use crate::units::parse_size;

/// Default bound on the rows of a plan's cross product (`--max-rows`).
pub const MAX_ROWS: u64 = 1_000_000;

/// The flags as given.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFlags<'a> {
    /// Raw --seq items: token counts or `max`.
    pub seq: &'a [String],
    pub batch: &'a [u32],
    pub tp: &'a [u32],
    pub pp: u32,
    pub gpus: Option<u32>,
    /// None: the engine's default.
    pub mem_util: Option<f64>,
    /// Raw --weights-dtype items; empty: what the checkpoint says.
    pub weights_dtype: &'a [String],
    pub reserve: Option<&'a str>,
    pub kv_budget: Option<&'a str>,
    /// None: the engine's default.
    pub block_size: Option<u32>,
    pub max_batched_tokens: u32,
    pub prefill_tflops: Option<f64>,
    pub tier_latency_ms: f64,
}

/// The values the flags parse to.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedFlags {
    pub seqs: Vec<SeqArg>,
    /// --weights-dtype choices; empty: what the checkpoint says.
    pub weights: Vec<WeightDtype>,
    pub reserve: Option<u64>,
    pub kv_budget: Option<u64>,
}

/// A flag value that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("{flag} {value}: {why}")]
    Bad {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("{flag} names {value} twice; give each value once")]
    Duplicate { flag: &'static str, value: String },
    #[error(
        "the plan's cross product is {rows} rows, more than the bound of {max}; narrow the \
         comma lists, or raise the bound with --max-rows {rows}"
    )]
    TooManyRows { rows: u64, max: u64 },
}

fn bad(flag: &'static str, value: impl ToString, why: &str) -> RequestError {
    RequestError::Bad {
        flag,
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// Each value of a list at least 1, and given once.
fn positive_list(flag: &'static str, values: &[u32], why: &str) -> Result<(), RequestError> {
    for (i, &v) in values.iter().enumerate() {
        if v == 0 {
            return Err(bad(flag, 0, why));
        }
        if values[..i].contains(&v) {
            return Err(RequestError::Duplicate {
                flag,
                value: v.to_string(),
            });
        }
    }
    Ok(())
}

/// `--seq`: token counts (each at least 1) or `max`, each given once.
fn seq_list(items: &[String]) -> Result<Vec<SeqArg>, RequestError> {
    let mut seqs = Vec::with_capacity(items.len());
    for item in items {
        if item.trim().is_empty() {
            return Err(bad(
                "--seq",
                items.join(","),
                "an empty item in the list; separate values by single commas, e.g. --seq 512,1024",
            ));
        }
        let seq: SeqArg = item
            .parse()
            .map_err(|e: crate::PlanError| bad("--seq", item.trim(), &e.to_string()))?;
        if seq == SeqArg::Tokens(0) {
            return Err(bad(
                "--seq",
                0,
                "a sequence holds at least one token (e.g. --seq 4096)",
            ));
        }
        if seqs.contains(&seq) {
            return Err(RequestError::Duplicate {
                flag: "--seq",
                value: item.trim().to_string(),
            });
        }
        seqs.push(seq);
    }
    Ok(seqs)
}

/// A memory size that must carry a unit and be positive (`58.5GiB`, `3GiB`).
fn size(flag: &'static str, text: &str) -> Result<u64, RequestError> {
    let t = text.trim();
    let number_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(number_end);
    match number.parse::<f64>() {
        Ok(0.0) => return Err(bad(flag, t, "must be positive, e.g. 58.5GiB")),
        Ok(_) if unit.trim().is_empty() => {
            return Err(bad(
                flag,
                t,
                &format!("add a unit, e.g. {number}GiB (or {number}B for bytes)"),
            ))
        }
        _ => {}
    }
    parse_size(t).map_err(|_| {
        bad(
            flag,
            t,
            "write a positive number with a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. 58.5GiB)",
        )
    })
}

/// One reserve component's size (`--reserve-cuda-graph 0`, `--reserve-sampler 1.2GiB`): as
/// [`size`], but zero is a size here (a component the deployment does not hold).
pub fn component_size(flag: &'static str, text: &str) -> Result<u64, RequestError> {
    let t = text.trim();
    let number: String = t
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let unit = t[number.len()..].trim().to_ascii_lowercase();
    let known_unit = ["", "b", "kb", "mb", "gb", "tb", "kib", "mib", "gib", "tib"];
    if number.parse::<f64>() == Ok(0.0) && known_unit.contains(&unit.as_str()) {
        return Ok(0);
    }
    size(flag, t)
}

/// Checks every flag, whether or not the flags that use it are present.
pub fn check(f: &PlanFlags) -> Result<CheckedFlags, RequestError> {
    let seqs = seq_list(f.seq)?;
    positive_list(
        "--batch",
        f.batch,
        "a batch holds at least one sequence (e.g. --batch 1)",
    )?;
    positive_list(
        "--tp",
        f.tp,
        "give a tensor-parallel degree of at least 1 (e.g. --tp 8)",
    )?;
    if f.pp == 0 {
        return Err(bad("--pp", 0, "give at least 1 pipeline stage"));
    }
    if f.gpus == Some(0) {
        return Err(bad("--gpus", 0, "a deployment has at least 1 GPU"));
    }
    if let Some(mem_util) = f.mem_util.filter(|m| !(*m > 0.0 && *m <= 1.0)) {
        return Err(bad(
            "--mem-util",
            mem_util,
            "a fraction of GPU memory in (0, 1], e.g. 0.9 (vLLM's gpu_memory_utilization)",
        ));
    }
    if f.block_size == Some(0) {
        return Err(bad(
            "--block-size",
            0,
            "a block holds at least one token (vLLM: 16)",
        ));
    }
    if f.max_batched_tokens == 0 {
        return Err(bad(
            "--max-batched-tokens",
            0,
            "a step schedules at least one token (vLLM: 8192)",
        ));
    }
    if let Some(t) = f.prefill_tflops {
        if !(t.is_finite() && t > 0.0) {
            return Err(bad("--prefill-tflops", t, "give a positive rate, e.g. 400"));
        }
    }
    if !(f.tier_latency_ms.is_finite() && f.tier_latency_ms >= 0.0) {
        return Err(bad(
            "--tier-latency-ms",
            f.tier_latency_ms,
            "give a delay of 0 or more milliseconds",
        ));
    }
    let mut weights: Vec<WeightDtype> = Vec::with_capacity(f.weights_dtype.len());
    for item in f.weights_dtype {
        let w: WeightDtype = item
            .parse()
            .map_err(|e: crate::PlanError| bad("--weights-dtype", item.trim(), &e.to_string()))?;
        if weights.iter().any(|x| x.name == w.name) {
            return Err(RequestError::Duplicate {
                flag: "--weights-dtype",
                value: item.trim().to_string(),
            });
        }
        weights.push(w);
    }
    Ok(CheckedFlags {
        seqs,
        weights,
        reserve: f.reserve.map(|r| size("--reserve", r)).transpose()?,
        kv_budget: f.kv_budget.map(|b| size("--kv-budget", b)).transpose()?,
    })
}

/// The rows of a cross product of lists of these lengths, refused beyond `max` before any
/// row is built (a product past u64 saturates, and is refused too).
pub fn bounded_rows(lengths: &[usize], max: u64) -> Result<u64, RequestError> {
    let rows = lengths
        .iter()
        .fold(1u64, |acc, &n| acc.saturating_mul(n as u64));
    if rows > max {
        return Err(RequestError::TooManyRows { rows, max });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> &'static [String] {
        Box::leak(items.iter().map(|s| s.to_string()).collect::<Box<[_]>>())
    }

    fn flags() -> PlanFlags<'static> {
        PlanFlags {
            seq: strings(&["4096"]),
            batch: &[1],
            tp: &[],
            pp: 1,
            gpus: None,
            mem_util: None,
            weights_dtype: strings(&["bf16"]),
            reserve: None,
            kv_budget: None,
            block_size: None,
            max_batched_tokens: 8192,
            prefill_tflops: None,
            tier_latency_ms: 0.0,
        }
    }

    fn err(f: PlanFlags) -> String {
        check(&f).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_list_item_is_named_as_one() {
        // `--seq 512,,1024` used to say "--seq : seq =  is invalid".
        let mut f = flags();
        f.seq = strings(&["512", "", "1024"]);
        let e = err(f);
        assert!(
            e.contains("--seq 512,,1024") && e.contains("empty item"),
            "{e}"
        );
        let e = crate::registry::find(" ").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn every_flag_is_checked_alone() {
        assert!(check(&flags()).is_ok());
        assert!(err(PlanFlags { pp: 0, ..flags() }).starts_with("--pp 0"));
        assert!(err(PlanFlags {
            mem_util: Some(5.0),
            ..flags()
        })
        .starts_with("--mem-util 5"));
        assert!(err(PlanFlags {
            weights_dtype: strings(&["bogus"]),
            ..flags()
        })
        .starts_with("--weights-dtype bogus"));
        assert!(err(PlanFlags {
            prefill_tflops: Some(0.0),
            ..flags()
        })
        .starts_with("--prefill-tflops 0"));
        assert!(err(PlanFlags {
            seq: strings(&["1024", "0"]),
            ..flags()
        })
        .starts_with("--seq 0"));
        assert!(err(PlanFlags {
            tp: &[0],
            ..flags()
        })
        .starts_with("--tp 0"));
        assert!(err(PlanFlags {
            seq: strings(&["1024", "1024"]),
            ..flags()
        })
        .contains("twice"));
        assert!(err(PlanFlags {
            seq: strings(&["max", "MAX"]),
            ..flags()
        })
        .contains("twice"));
        assert!(err(PlanFlags {
            seq: strings(&["lots"]),
            ..flags()
        })
        .starts_with("--seq lots"));
        assert_eq!(
            check(&PlanFlags {
                seq: strings(&["max", "8192"]),
                ..flags()
            })
            .unwrap()
            .seqs,
            vec![SeqArg::Max, SeqArg::Tokens(8192)]
        );
    }

    #[test]
    fn sizes_need_a_unit_and_a_positive_value() {
        let e = err(PlanFlags {
            kv_budget: Some("58.5"),
            ..flags()
        });
        assert!(e.contains("add a unit, e.g. 58.5GiB"), "{e}");
        let e = err(PlanFlags {
            kv_budget: Some("0GiB"),
            ..flags()
        });
        assert!(e.contains("must be positive"), "{e}");
        // 58.5 GiB = 58.5 × 2^30 bytes.
        let ok = check(&PlanFlags {
            kv_budget: Some("58.5GiB"),
            ..flags()
        })
        .unwrap();
        assert_eq!(ok.kv_budget, Some(62_813_896_704));
    }

    #[test]
    fn cross_products_are_bounded_before_they_are_built() {
        assert_eq!(bounded_rows(&[10, 10], 100), Ok(100));
        assert_eq!(
            bounded_rows(&[10_000, 1_000], MAX_ROWS),
            Err(RequestError::TooManyRows {
                rows: 10_000_000,
                max: MAX_ROWS
            })
        );
        assert!(bounded_rows(&[usize::MAX, usize::MAX], MAX_ROWS).is_err());
    }
}
