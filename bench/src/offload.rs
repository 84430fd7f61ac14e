//! The prefix-reuse scenario: a prefix of N tokens is computed once and stored in a tier;
//! a later request with that prefix loads it instead of recomputing. Measures TTFT both ways
//! per tier, the load bandwidth achieved, and where loading starts to win (fitted over
//! several prefix lengths), with every loaded block hash-checked and the first-token outputs
//! of both ways compared bit for bit and with the f64 reference.

use kvbench_planner::tiers::BreakEven;
use kvbench_workloads::tier::{tier_name, OffloadWorkload};
use kvbench_workloads::{Strategy, Tier, WorkloadError, WorkloadSpec};
use serde::Serialize;
use std::time::Instant;

/// What the scenario measures.
#[derive(Debug, Clone)]
pub struct PrefixReuse {
    /// Shape, dtypes, block size, seed and tier settings (strategy and lengths are set here).
    pub spec: WorkloadSpec,
    pub tiers: Vec<Tier>,
    /// The longest shared prefix, tokens.
    pub prefix: u32,
    /// New tokens of the later request after the prefix.
    pub suffix: u32,
    /// Timed runs per length; the median is kept.
    pub repetitions: u32,
}

/// One tier's result (one CSV row).
#[derive(Debug, Clone, Serialize)]
pub struct PrefixReuseRow {
    pub tier: String,
    pub prefix_tokens: u32,
    pub suffix_tokens: u32,
    pub ttft_recompute_ms: f64,
    pub ttft_load_ms: f64,
    /// Recompute TTFT / load TTFT.
    pub speedup: f64,
    /// Seconds of the tier's reads alone (no hashing, no compute), ms.
    pub load_transfer_ms: f64,
    pub bytes_loaded: u64,
    pub load_gbps: f64,
    pub blocks_verified: u64,
    pub hash_failures: u64,
    pub fallbacks: u64,
    /// Shortest prefix for which loading wins, from fits over the measured lengths.
    pub break_even: String,
    pub break_even_tokens: u64,
    /// First-token outputs identical (bit for bit) to the recompute path.
    pub identical: bool,
    pub rel_error: f64,
    pub note: String,
}

/// Errors of the scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{tier} tier: {error}")]
    Workload {
        tier: &'static str,
        error: WorkloadError,
    },
    #[error("--shared-prefix {0} is shorter than one block of {1} tokens: use at least {1}")]
    TooShort(u32, u32),
}

/// Prefix lengths measured: N/8, N/4, N/2, N rounded down to whole blocks (at least one).
pub fn lengths(prefix: u32, block: u32) -> Vec<u32> {
    let mut out: Vec<u32> = [8, 4, 2, 1]
        .iter()
        .map(|div| (prefix / div / block).max(1) * block)
        .collect();
    out.dedup();
    out
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Least-squares `t = c0 + c1·x (+ c2·x²)` over the points; `degree` 1 or 2.
// Gauss-Jordan on a 3×4 matrix reads clearest with indices.
#[allow(clippy::needless_range_loop)]
pub fn fit(points: &[(f64, f64)], degree: usize) -> Vec<f64> {
    let m = degree + 1;
    // Normal equations A·c = y with A[i][j] = Σ x^(i+j), y[i] = Σ t·x^i.
    let mut a = vec![vec![0f64; m + 1]; m];
    for &(x, t) in points {
        for i in 0..m {
            for j in 0..m {
                a[i][j] += x.powi((i + j) as i32);
            }
            a[i][m] += t * x.powi(i as i32);
        }
    }
    for col in 0..m {
        let pivot = (col..m)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .expect("non-empty");
        a.swap(col, pivot);
        for row in 0..m {
            if row != col && a[col][col] != 0.0 {
                let f = a[row][col] / a[col][col];
                for k in col..=m {
                    a[row][k] -= f * a[col][k];
                }
            }
        }
    }
    (0..m)
        .map(|i| {
            if a[i][i] != 0.0 {
                a[i][m] / a[i][i]
            } else {
                0.0
            }
        })
        .collect()
}

/// Shortest integer `n ≥ 1` with `recompute(n) > load(n)`, for a convex recompute curve
/// and a linear load line (so once loading wins it keeps winning).
pub fn crossing(recompute: &[f64], load: &[f64]) -> BreakEven {
    let eval = |c: &[f64], n: f64| c.iter().rev().fold(0.0, |acc, k| acc * n + k);
    let wins = |n: u64| eval(recompute, n as f64) > eval(load, n as f64);
    if wins(1) {
        return BreakEven::Always;
    }
    let mut hi = 2u64;
    while !wins(hi) {
        if hi >= 1 << 40 {
            return BreakEven::Never;
        }
        hi *= 2;
    }
    let mut lo = hi / 2;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wins(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    BreakEven::From(hi)
}

/// Seconds of `f`, and its result.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

/// One request's spec: batch 1, `prefix + suffix` prompt tokens, no decode, offloading to
/// `tier` with a pool big enough that only the explicit store evicts.
fn request_spec(base: &WorkloadSpec, tier: Tier, prefix: u32, suffix: u32) -> WorkloadSpec {
    let mut spec = base.clone();
    // The scenario is attention-level: the prefix's K/V written and attended, per layer.
    spec.kind = kvbench_workloads::WorkloadKind::Attention;
    spec.strategy = Strategy::Offload(tier);
    spec.batch = 1;
    spec.prompt = prefix + suffix;
    spec.gen = 0;
    spec.shared_prefix = prefix;
    let blocks = spec.shape.layers * (prefix + suffix).div_ceil(spec.block_size.max(1));
    spec.offload.pool_blocks = blocks.max(1);
    spec
}

/// Recompute TTFT at one length: a fresh prefill of the prefix, then the suffix.
fn recompute(spec: &WorkloadSpec, reps: u32) -> Result<(f64, OffloadWorkload), WorkloadError> {
    let mut w = OffloadWorkload::new(spec, false)?;
    let (prefix, total) = (spec.shared_prefix as usize, spec.prompt as usize);
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        kvbench_workloads::Workload::reset(&mut w)?;
        let (t, r) = timed(|| {
            w.prefill_fresh(prefix)
                .and_then(|_| w.run_tokens(prefix, total))
        });
        r?;
        times.push(t);
    }
    Ok((median(times), w))
}

/// Load TTFT at one length: the prefix computed and stored (untimed), then timed: its blocks
/// loaded layer by layer (verified) and the suffix computed.
struct Loaded {
    ttft_s: f64,
    transfer_s: f64,
    bytes: u64,
    workload: OffloadWorkload,
}

fn load(spec: &WorkloadSpec, reps: u32) -> Result<Loaded, WorkloadError> {
    let mut w = OffloadWorkload::new(spec, true)?;
    let (prefix, total) = (spec.shared_prefix as usize, spec.prompt as usize);
    let (mut times, mut transfers, mut bytes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..reps.max(1) {
        kvbench_workloads::Workload::reset(&mut w)?;
        w.prefill_fresh(prefix)?;
        w.evict_all()?;
        let before = w.tier_stats();
        let (t, r) = timed(|| w.run_tokens(prefix, total));
        r?;
        let after = w.tier_stats();
        times.push(t);
        transfers.push(after.read_s - before.read_s);
        bytes = after.bytes_read - before.bytes_read;
    }
    Ok(Loaded {
        ttft_s: median(times),
        transfer_s: median(transfers),
        bytes,
        workload: w,
    })
}

/// The scenario a sweep asks for: its offload workloads with a shared prefix, every tier
/// they name, on the first such workload's shape and dtypes. `None` when there are none.
pub fn from_specs(specs: &[WorkloadSpec], repetitions: u32) -> Option<PrefixReuse> {
    let offload: Vec<&WorkloadSpec> = specs
        .iter()
        .filter(|s| matches!(s.strategy, Strategy::Offload(_)) && s.shared_prefix > 0)
        .collect();
    let first = offload.first()?;
    let mut tiers = Vec::new();
    for s in &offload {
        if let Strategy::Offload(t) = s.strategy {
            if !tiers.contains(&t) {
                tiers.push(t);
            }
        }
    }
    Some(PrefixReuse {
        spec: (*first).clone(),
        tiers,
        prefix: first.shared_prefix,
        suffix: 1,
        repetitions,
    })
}

/// Write the rows as CSV (header included).
/// Written whole or not at all, as every other output (export::atomic).
pub fn write_csv(
    rows: &[PrefixReuseRow],
    path: &std::path::Path,
) -> Result<(), crate::export::ExportError> {
    let failed = |e: &dyn std::fmt::Display| {
        crate::export::ExportError::at(path)(std::io::Error::other(e.to_string()))
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r).map_err(|e| failed(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| failed(e.error()))?;
    crate::export::atomic::write(path, &bytes)
}

/// Run the scenario for every tier.
pub fn run_prefix_reuse(cfg: &PrefixReuse) -> Result<Vec<PrefixReuseRow>, ScenarioError> {
    let block = cfg.spec.block_size.max(1);
    if cfg.prefix < block {
        return Err(ScenarioError::TooShort(cfg.prefix, block));
    }
    let lens = lengths(cfg.prefix, block);
    let wrap = |tier: Tier| {
        move |error| ScenarioError::Workload {
            tier: tier_name(tier),
            error,
        }
    };
    let first = cfg.tiers.first().copied().unwrap_or(Tier::Host);
    // Recompute does not depend on the tier: measure it once per length.
    let mut recompute_points = Vec::new();
    let mut reference = None;
    for &n in &lens {
        let spec = request_spec(&cfg.spec, first, n, cfg.suffix);
        let (t, w) = recompute(&spec, cfg.repetitions).map_err(wrap(first))?;
        recompute_points.push((n as f64, t));
        if n == *lens.last().expect("at least one length") {
            reference = Some(w);
        }
    }
    let reference = reference.expect("the longest length was measured");
    let rel_error = reference.last_rel_error();
    let recompute_fit = fit(&recompute_points, if lens.len() >= 3 { 2 } else { 1 });
    let ttft_recompute = recompute_points.last().expect("measured").1;

    let mut rows = Vec::new();
    for &tier in &cfg.tiers {
        let mut load_points = Vec::new();
        let mut last = None;
        for &n in &lens {
            let spec = request_spec(&cfg.spec, tier, n, cfg.suffix);
            let loaded = load(&spec, cfg.repetitions).map_err(wrap(tier))?;
            load_points.push((n as f64, loaded.ttft_s));
            last = Some(loaded);
        }
        let loaded = last.expect("at least one length");
        let load_fit = fit(&load_points, 1);
        let break_even = crossing(&recompute_fit, &load_fit);
        let w = &loaded.workload;
        let stats = w.tier_stats();
        let counters = w.counters();
        let identical = w.last_outputs() == reference.last_outputs();
        let mut note = w.tier_note().unwrap_or_default();
        if let Some(e) = &counters.first_error {
            note = format!("fell back to recompute: {e}; {note}");
        }
        rows.push(PrefixReuseRow {
            tier: tier_name(tier).to_string(),
            prefix_tokens: *lens.last().expect("measured"),
            suffix_tokens: cfg.suffix,
            ttft_recompute_ms: ttft_recompute * 1e3,
            ttft_load_ms: loaded.ttft_s * 1e3,
            speedup: ttft_recompute / loaded.ttft_s,
            load_transfer_ms: loaded.transfer_s * 1e3,
            bytes_loaded: loaded.bytes,
            load_gbps: if loaded.transfer_s > 0.0 {
                loaded.bytes as f64 / loaded.transfer_s / 1e9
            } else {
                0.0
            },
            blocks_verified: stats.blocks_read,
            hash_failures: stats.hash_failures,
            fallbacks: counters.fallbacks,
            break_even: break_even.to_string(),
            break_even_tokens: match break_even {
                BreakEven::From(n) => n,
                BreakEven::Always | BreakEven::Resident => 1,
                BreakEven::Never => 0,
            },
            identical,
            rel_error,
            note,
        });
    }
    Ok(rows)
}

/// The rows as an aligned text table.
pub fn render(rows: &[PrefixReuseRow]) -> String {
    let header = [
        "tier",
        "prefix",
        "TTFT recompute ms",
        "TTFT load ms",
        "speedup",
        "load GB/s",
        "blocks verified",
        "hash fail",
        "fallbacks",
        "break-even",
        "identical",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.tier.clone(),
                r.prefix_tokens.to_string(),
                format!("{:.2}", r.ttft_recompute_ms),
                format!("{:.2}", r.ttft_load_ms),
                format!("{:.1}x", r.speedup),
                format!("{:.2}", r.load_gbps),
                r.blocks_verified.to_string(),
                r.hash_failures.to_string(),
                r.fallbacks.to_string(),
                r.break_even.clone(),
                if r.identical { "yes" } else { "NO" }.to_string(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: Vec<String>| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    for c in cells {
        out.push('\n');
        out.push_str(&line(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_whole_blocks() {
        assert_eq!(lengths(4096, 16), vec![512, 1024, 2048, 4096]);
        assert_eq!(lengths(40, 16), vec![16, 32]);
        assert_eq!(lengths(16, 16), vec![16]);
    }

    #[test]
    fn fits_recover_exact_curves() {
        // t = 2 + 3x + 0.5x² and t = 1 + 4x sampled exactly.
        let quad: Vec<(f64, f64)> = [1.0, 2.0, 4.0, 8.0]
            .iter()
            .map(|&x| (x, 2.0 + 3.0 * x + 0.5 * x * x))
            .collect();
        let c = fit(&quad, 2);
        assert!(
            (c[0] - 2.0).abs() < 1e-9 && (c[1] - 3.0).abs() < 1e-9 && (c[2] - 0.5).abs() < 1e-9,
            "{c:?}"
        );
        let lin: Vec<(f64, f64)> = [1.0, 3.0].iter().map(|&x| (x, 1.0 + 4.0 * x)).collect();
        let c = fit(&lin, 1);
        assert!(
            (c[0] - 1.0).abs() < 1e-9 && (c[1] - 4.0).abs() < 1e-9,
            "{c:?}"
        );
    }

    fn tiny(tier_dir: &std::path::Path, redis_url: Option<String>) -> WorkloadSpec {
        use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
        use kvbench_workloads::{Backend, OffloadConfig, WorkloadKind};
        WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cpu,
            shape: ModelShape::uniform("tiny", 2, 4, 2, 32, 128, 256),
            strategy: Strategy::Offload(Tier::Host),
            k_dtype: CacheDtype::new(DtypeKind::Int8),
            v_dtype: CacheDtype::new(DtypeKind::Int8),
            batch: 1,
            prompt: 0,
            gen: 0,
            block_size: 16,
            shared_prefix: 0,
            window: None,
            mlp: false,
            seed: 3,
            offload: OffloadConfig {
                tier_dir: Some(tier_dir.to_path_buf()),
                redis_url,
                pool_blocks: 0,
            },
        }
    }

    #[test]
    fn prefix_reuse_loads_verified_blocks_and_matches_recompute() {
        let dir = tempfile::tempdir().unwrap();
        let server = kvbench_workloads::tier::local_redis::LocalRedis::start().unwrap();
        let mut tiers = vec![Tier::Host, Tier::Disk];
        match &server {
            Some(_) => tiers.push(Tier::Redis),
            None => eprintln!("SKIPPED the redis tier: redis-server is not installed"),
        }
        let cfg = PrefixReuse {
            spec: tiny(dir.path(), server.as_ref().map(|s| s.url())),
            tiers: tiers.clone(),
            prefix: 128,
            suffix: 1,
            repetitions: 1,
        };
        let rows = run_prefix_reuse(&cfg).unwrap();
        assert_eq!(rows.len(), tiers.len());
        // int8 blocks: 16 tokens × 2 heads × (32 codes + 4-byte f32 scale) × K and V = 2304 B;
        // the longest prefix is 128 tokens = 8 blocks per layer, 2 layers.
        for r in &rows {
            assert!(r.identical, "{}: load path changed the first token", r.tier);
            assert_eq!(r.blocks_verified, 16, "{}", r.tier);
            assert_eq!(r.bytes_loaded, 16 * 2304, "{}", r.tier);
            assert_eq!((r.hash_failures, r.fallbacks), (0, 0));
            assert!(r.ttft_load_ms > 0.0 && r.ttft_recompute_ms > 0.0 && r.load_gbps > 0.0);
            assert!(r.rel_error < 2e-2, "{}", r.rel_error);
        }
        let table = render(&rows);
        assert!(
            table.lines().count() == rows.len() + 1 && table.contains("host"),
            "{table}"
        );
    }

    #[test]
    fn crossing_by_hand() {
        // recompute 0.5n², load 10 + 2n: 0.5n² − 2n − 10 > 0 ⇔ n > 2 + √24 = 6.899 → 7.
        assert_eq!(crossing(&[0.0, 0.0, 0.5], &[10.0, 2.0]), BreakEven::From(7));
        assert_eq!(crossing(&[5.0, 3.0], &[1.0, 2.0]), BreakEven::Always);
        assert_eq!(crossing(&[0.0, 1.0], &[1.0, 2.0]), BreakEven::Never);
    }
}
