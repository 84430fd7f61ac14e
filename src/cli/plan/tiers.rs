//! `kvbench plan --tiers`: tokens and sequences per memory tier, and the context length above
//! which loading a cached prefix from each tier beats recomputing it. Wiring only: the math
//! is `kvbench_planner::tiers`.

use anyhow::{bail, Context};
use clap::Args;
use kvbench_planner::dtype::KvDtypes;
use kvbench_planner::tiers::{parse_tiers, tier_view, KvFootprint, PrefillCost, TierContext};
use kvbench_planner::units::{format_bytes, format_count};
use kvbench_planner::{gpu, ModelInfo};
use tabled::builder::Builder;
use tabled::settings::Style;

/// Share of a GPU's dense FP16 rate a prefill reaches when no --prefill-tflops is given.
const DEFAULT_MFU: f64 = 0.4;
/// Prefill rate without --gpu or --prefill-tflops: an H100 SXM (989 TFLOPS) at 40%.
const DEFAULT_TFLOPS: f64 = 400.0;

/// Memory tiers and what reloading from them costs.
#[derive(Debug, Args)]
#[command(next_help_heading = "Tiers")]
pub struct TierArgs {
    /// Memory tiers to size (list of name:size[@link|@rate]), e.g.
    /// hbm:80GiB,dram:512GiB,ssd:4TiB or dram:1TiB@pcie4,remote:10TiB@25GB/s. Names: hbm,
    /// dram (host), ssd (nvme, disk), remote (redis, net). Links: nvlink-c2c, pcie5, pcie4,
    /// 400gbe, nvme5, 100gbe, nvme4, 25gbe (defaults: dram pcie5, ssd nvme4, remote 100gbe).
    #[arg(long, value_name = "LIST")]
    pub tiers: Option<String>,
    /// Effective prefill rate of the deployment, TFLOP/s [default: 40% of the first --gpu's
    /// dense FP16 rate × tp, else 400].
    #[arg(long, value_name = "TFLOPS")]
    pub prefill_tflops: Option<f64>,
    /// Fixed delay before a load's first byte (network round trip, SSD access), ms.
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    pub tier_latency_ms: f64,
}

/// The prefill rate to use and where it comes from.
fn prefill_rate(args: &TierArgs, gpus: &[String], tp: &[u32]) -> anyhow::Result<(f64, String)> {
    // Checked positive by kvbench_planner::request.
    if let Some(t) = args.prefill_tflops {
        return Ok((t * 1e12, "--prefill-tflops".into()));
    }
    if let Some(name) = gpus.first() {
        let g = gpu::find(name)?;
        let tp = tp.first().copied().unwrap_or(1).max(1);
        let rate = g.fp16_tflops * DEFAULT_MFU * tp as f64;
        return Ok((
            rate * 1e12,
            format!(
                "{}: {} dense FP16 TFLOPS × {DEFAULT_MFU} × tp {tp}",
                g.name, g.fp16_tflops
            ),
        ));
    }
    Ok((
        DEFAULT_TFLOPS * 1e12,
        "default: H100 SXM 989 TFLOPS × 0.4".into(),
    ))
}

/// Prefill cost of a model: the planner's one prefill model (2 × active parameters less the
/// embeddings, plus causal attention).
fn prefill_cost(model: &ModelInfo) -> (PrefillCost, &'static str) {
    (
        PrefillCost::of_model(model),
        "2 × active parameters less embeddings, plus causal attention",
    )
}

/// The tier tables for every model, dtype pair and context length; `None` without --tiers.
pub fn render(
    args: &TierArgs,
    models: &[ModelInfo],
    pairs: &[KvDtypes],
    seqs: &[u32],
    gpus: &[String],
    tp: &[u32],
) -> anyhow::Result<Option<String>> {
    let Some(list) = &args.tiers else {
        return Ok(None);
    };
    let tiers = parse_tiers(list).context("in --tiers")?;
    if !(args.tier_latency_ms.is_finite() && args.tier_latency_ms >= 0.0) {
        bail!(
            "--tier-latency-ms {}: give 0 or more milliseconds",
            args.tier_latency_ms
        );
    }
    let (rate, rate_source) = prefill_rate(args, gpus, tp)?;
    let mut out = String::new();
    for model in models {
        let (cost, cost_source) = prefill_cost(model);
        for kv in pairs {
            let fp = KvFootprint::of(&model.shape, &kv.k, &kv.v);
            for &seq in seqs {
                let ctx = TierContext {
                    context: seq as u64,
                    prefill_flops_per_s: rate,
                    latency_s: args.tier_latency_ms / 1e3,
                };
                let rows = tier_view(&tiers, &fp, &cost, &ctx);
                out.push_str(&format!(
                    "\nTiers: {} {}, {} B/token, context {seq}; prefill {:.0} TFLOP/s ({rate_source}; {cost_source})\n",
                    model.key,
                    kv.label(),
                    fp.bytes_per_token(),
                    rate / 1e12
                ));
                let mut b = Builder::default();
                b.push_record([
                    "tier",
                    "capacity",
                    "link",
                    "load GB/s",
                    "tokens",
                    "sequences",
                    "load ms",
                    "recompute ms",
                    "reload wins",
                ]);
                for r in rows {
                    b.push_record([
                        r.name.clone(),
                        format_bytes(r.capacity_bytes as f64),
                        r.link.clone(),
                        if r.load_gbps > 0.0 {
                            format!("{:.1}", r.load_gbps)
                        } else {
                            "-".into()
                        },
                        format_count(r.tokens),
                        format_count(r.sequences),
                        format!("{:.2}", r.load_s * 1e3),
                        format!("{:.1}", r.recompute_s * 1e3),
                        r.break_even.to_string(),
                    ]);
                }
                out.push_str(&b.build().with(Style::sharp()).to_string());
                out.push('\n');
            }
        }
    }
    Ok(Some(out))
}
