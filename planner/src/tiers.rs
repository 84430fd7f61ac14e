//! Capacity and reload-versus-recompute break-even across memory tiers.
//!
//! A cached prefix of `n` tokens can be loaded from a tier in `sequence_bytes(n) / rate`
//! seconds (linear in `n`) or recomputed by a prefill in `flops(n) / flop_rate` seconds, whose
//! attention part grows as n². Loading wins above the break-even length, if there is one.

pub mod cost;
pub mod link;
pub mod spec;

pub use cost::{KvFootprint, LayerBytes, PrefillCost};
pub use link::{link, Link, LINKS};
pub use spec::{parse_tiers, TierKind, TierSpec, TierSpecError};

/// Where loading a cached prefix starts to beat recomputing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakEven {
    /// The tier is device memory: nothing to load.
    Resident,
    /// Loading is faster at every length.
    Always,
    /// Loading is faster for prefixes of at least this many tokens.
    From(u64),
    /// Recomputing is faster at every length (only possible with sliding windows).
    Never,
}

impl std::fmt::Display for BreakEven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BreakEven::Resident => write!(f, "resident"),
            BreakEven::Always => write!(f, "always"),
            BreakEven::From(n) => write!(f, "≥ {n} tokens"),
            BreakEven::Never => write!(f, "never"),
        }
    }
}

/// Longest prefix the break-even search considers (beyond any real context).
const SEARCH_LIMIT: u64 = 1 << 40;

/// Seconds to load a prefix of `n` tokens at `bytes_per_s`, after a fixed `latency_s`.
pub fn load_seconds(fp: &KvFootprint, n: u64, bytes_per_s: f64, latency_s: f64) -> f64 {
    latency_s + fp.sequence_bytes(n) / bytes_per_s
}

/// The shortest prefix for which loading at `bytes_per_s` (after `latency_s`) takes less time
/// than recomputing it at `flops_per_s`.
///
/// recompute − load is convex in `n` (quadratic attention minus linear load) and ≤ 0 at
/// `n = 0`, so once loading wins it keeps winning: a doubling then bisection search finds
/// the first winning length exactly.
pub fn break_even(
    fp: &KvFootprint,
    cost: &PrefillCost,
    flops_per_s: f64,
    bytes_per_s: f64,
    latency_s: f64,
) -> BreakEven {
    let wins = |n: u64| cost.seconds(n, flops_per_s) > load_seconds(fp, n, bytes_per_s, latency_s);
    if wins(1) {
        return BreakEven::Always;
    }
    let mut hi = 2;
    while !wins(hi) {
        if hi >= SEARCH_LIMIT {
            return BreakEven::Never;
        }
        hi *= 2;
    }
    let mut lo = hi / 2; // loses
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

/// The deployment a tier view is computed for.
#[derive(Debug, Clone, PartialEq)]
pub struct TierContext {
    /// Context length of one sequence, tokens.
    pub context: u64,
    /// Effective prefill FLOP/s of the deployment (peak × utilisation).
    pub prefill_flops_per_s: f64,
    /// Fixed delay before a load's first byte (a network round trip, an SSD access).
    pub latency_s: f64,
}

/// One tier's line in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct TierRow {
    pub name: String,
    pub kind: TierKind,
    pub capacity_bytes: u64,
    /// Link name (`resident` for device memory, `custom` for an explicit rate).
    pub link: String,
    /// Load rate into device memory, GB/s (0 when resident).
    pub load_gbps: f64,
    /// Tokens the tier holds when every layer keeps every token.
    pub tokens: u64,
    /// Whole sequences of `context` tokens the tier holds.
    pub sequences: u64,
    /// Seconds to load one `context`-token sequence (0 when resident).
    pub load_s: f64,
    /// Seconds to recompute one `context`-token prefill.
    pub recompute_s: f64,
    pub break_even: BreakEven,
}

/// Capacity and break-even of every tier for a model footprint and prefill cost.
pub fn tier_view(
    tiers: &[TierSpec],
    fp: &KvFootprint,
    cost: &PrefillCost,
    ctx: &TierContext,
) -> Vec<TierRow> {
    let recompute_s = cost.seconds(ctx.context, ctx.prefill_flops_per_s);
    let seq_bytes = fp.sequence_bytes(ctx.context);
    tiers
        .iter()
        .map(|t| {
            let (load_s, break_even) = match t.load_bytes_per_s {
                None => (0.0, BreakEven::Resident),
                Some(rate) => (
                    load_seconds(fp, ctx.context, rate, ctx.latency_s),
                    break_even(fp, cost, ctx.prefill_flops_per_s, rate, ctx.latency_s),
                ),
            };
            TierRow {
                name: t.name.clone(),
                kind: t.kind,
                capacity_bytes: t.capacity_bytes,
                link: t.link.clone(),
                load_gbps: t.load_bytes_per_s.unwrap_or(0.0) / 1e9,
                tokens: (t.capacity_bytes as f64 / fp.bytes_per_token()).floor() as u64,
                sequences: (t.capacity_bytes as f64 / seq_bytes).floor() as u64,
                load_s,
                recompute_s,
                break_even,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttentionKind, CacheDtype, DtypeKind, ModelShape};

    fn llama8() -> ModelShape {
        ModelShape::uniform("Llama-3.1-8B", 32, 32, 8, 128, 4096, 14336)
    }

    fn f16() -> CacheDtype {
        CacheDtype::new(DtypeKind::F16)
    }

    #[test]
    fn break_even_of_llama8b_over_25gbe_by_hand() {
        // 131,072 B/token over 3.125 GB/s; linear 13,958,643,712 FLOPs/token; attention
        // 2·L·H·d = 262,144 FLOPs per n(n+1). Loading wins when
        // b·n(n+1) + a·n > β·n  ⇔  n > β/b − a/b − 1, with
        // β/b = 131072/3.125e9 · R/262144 = R/6.25e9 = 112,001.6 at R = 7.0001e14 and
        // a/b = 13,958,643,712/262,144 = 53,248: n > 58,752.6, so from 58,753 tokens.
        let fp = KvFootprint::of(&llama8(), &f16(), &f16());
        let cost = PrefillCost::of(&llama8());
        assert_eq!(
            break_even(&fp, &cost, 7.0001e14, 3.125e9, 0.0),
            BreakEven::From(58_753)
        );
        // At 100 GbE, β/b = R/25e9 = 28,000 < a/b + 1 = 53,249: loading always wins.
        assert_eq!(
            break_even(&fp, &cost, 7.0001e14, 12.5e9, 0.0),
            BreakEven::Always
        );
    }

    #[test]
    fn latency_moves_break_even_to_the_quadratic_root() {
        // With a fixed latency t the condition is b·n² + (a + b − β)·n − t > 0; the root
        // (−c + √(c² + 4bt)) / 2b for R = 3.5e14, 25 GbE, t = 2 ms is 3511.45 → 3512.
        let fp = KvFootprint::of(&llama8(), &f16(), &f16());
        let cost = PrefillCost::of(&llama8());
        assert_eq!(
            break_even(&fp, &cost, 3.5e14, 3.125e9, 2e-3),
            BreakEven::From(3512)
        );
    }

    #[test]
    fn all_sliding_layers_can_make_recompute_always_win() {
        // Window 16: recompute per token levels off at a + 16·per_pair, load keeps growing
        // only to the window too — but a very slow link stays slower forever.
        let mut shape = ModelShape::uniform("t", 1, 1, 1, 64, 64, 64);
        shape.layer_kinds[0] = AttentionKind::Sliding { window: 16 };
        let fp = KvFootprint::of(&shape, &f16(), &f16());
        let cost = PrefillCost::of(&shape);
        assert_eq!(break_even(&fp, &cost, 1e15, 1.0, 0.0), BreakEven::Never);
    }

    #[test]
    fn tier_view_of_the_issue_example() {
        // Llama-3-70B f16: 327,680 B/token. 80 GiB → 262,144 tokens, 64 sequences of 4096
        // (1.25 GiB each); 512 GiB → 1,677,721 tokens, 409 sequences.
        let llama70 = ModelShape::uniform("Llama-3-70B", 80, 64, 8, 128, 8192, 28672);
        let fp = KvFootprint::of(&llama70, &f16(), &f16());
        let cost = PrefillCost::of(&llama70);
        let tiers = parse_tiers("hbm:80GiB,dram:512GiB,ssd:4TiB").unwrap();
        let ctx = TierContext {
            context: 4096,
            prefill_flops_per_s: 4e14,
            latency_s: 0.0,
        };
        let rows = tier_view(&tiers, &fp, &cost, &ctx);
        assert_eq!(rows[0].tokens, 262_144);
        assert_eq!(rows[0].sequences, 64);
        assert_eq!(rows[0].break_even, BreakEven::Resident);
        assert_eq!(rows[1].tokens, 1_677_721);
        assert_eq!(rows[1].sequences, 409);
        // 1.25 GiB over PCIe 5 (63.015 GB/s) = 21.30 ms.
        assert!((rows[1].load_s - 1.342_177_28e9 / 63.015_384_6e9).abs() < 1e-6);
        // Recompute: (136,902,082,560 × 4096 + 1,310,720 × 4096 × 4097) / 4e14 = 1.4569 s.
        let expected = (136_902_082_560.0 * 4096.0 + 1_310_720.0 * 4096.0 * 4097.0) / 4e14;
        assert!((rows[2].recompute_s - expected).abs() < 1e-9);
        assert_eq!(rows[2].break_even, BreakEven::Always);
        assert_eq!(rows[2].tokens, (4u64 << 40) / 327_680);
    }
}
