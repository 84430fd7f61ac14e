//! Whether the decode kernels' next-tile prefetch pays on this machine, for a contiguous store
//! and for paged blocks: the same decode step (GQA-8, head_dim 128, f16, KV streamed from
//! memory) timed with and without it, alternating. It differs by machine, layout and build: on
//! a Zen 5 it cost a contiguous step 17-45 % and saved a paged one 13-23 % while a tile's
//! prefetches went out in one burst, and saves both since they are spread over the tile's work
//! (docs/performance.md, seventh round); on an older EPYC it halved a contiguous f32 step. So it
//! is measured here, like the limits, never assumed.

use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::attention::{AttentionWorkload, PrefillMode};
use kvbench_workloads::WorkloadSpec;
use kvbench_workloads::{cpu, Backend, OffloadConfig, Strategy, Workload, WorkloadKind};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Longest context of the probe's decode step; layers are added until the step reads
/// `bytes`.
const CONTEXT: u64 = 32_768;
/// KV bytes per token of one probe layer: 8 heads × 128 × 2 (K, V) × 2 B.
const TOKEN_BYTES: u64 = 8 * 128 * 2 * 2;

/// What the probe measured for one layout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrefetchProbe {
    /// Fastest decode step with the prefetch, ms.
    pub with_ms: f64,
    /// Fastest decode step without it, ms.
    pub without_ms: f64,
    /// The choice: prefetch unless going without is at least 3 % faster (a tie keeps the
    /// kernels as they were tuned).
    pub on: bool,
}

/// The probe's figures and choices, per layout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TilePrefetch {
    pub contiguous: PrefetchProbe,
    pub paged: PrefetchProbe,
}

impl TilePrefetch {
    /// Apply the choices to this process's decode kernels.
    pub fn apply(&self) {
        cpu::set_tile_prefetch(self.contiguous.on, self.paged.on);
    }

    /// One line: each layout's choice and the steps it rests on.
    pub fn describe(&self) -> String {
        let one = |name: &str, p: &PrefetchProbe| {
            format!(
                "{name} {} ({:.2} ms a step with it, {:.2} ms without)",
                if p.on { "on" } else { "off" },
                p.with_ms,
                p.without_ms
            )
        };
        format!(
            "{}; {}",
            one("contiguous", &self.contiguous),
            one("paged", &self.paged)
        )
    }
}

fn probe_spec(layers: u32, context: u32, strategy: Strategy, steps: u32) -> WorkloadSpec {
    let f16 = CacheDtype::new(DtypeKind::F16);
    WorkloadSpec {
        kind: WorkloadKind::Attention,
        backend: Backend::Cpu,
        shape: ModelShape::uniform("prefetch-probe", layers, 32, 8, 128, 4096, 14336),
        strategy,
        k_dtype: f16,
        v_dtype: f16,
        batch: 1,
        prompt: context,
        gen: steps,
        block_size: 16,
        shared_prefix: 0,
        window: None,
        mlp: false,
        seed: 7,
        offload: OffloadConfig::default(),
    }
}

/// Times decode steps over at least `bytes` of KV (a multiple of the last-level cache) with
/// and without the prefetch, alternating, for each layout; leaves the kernels' setting as it
/// found it.
pub fn measure(bytes: u64, passes: u32) -> Result<TilePrefetch, String> {
    let before = (cpu::tile_prefetch(1), cpu::tile_prefetch(2));
    let result = (|| {
        Ok::<_, String>(TilePrefetch {
            contiguous: probe(bytes, passes, Strategy::Contiguous)?,
            paged: probe(bytes, passes, Strategy::Paged)?,
        })
    })();
    cpu::set_tile_prefetch(before.0, before.1);
    result
}

fn probe(bytes: u64, passes: u32, strategy: Strategy) -> Result<PrefetchProbe, String> {
    let context = (bytes / TOKEN_BYTES).clamp(1024, CONTEXT);
    let layers = bytes.div_ceil(context * TOKEN_BYTES).clamp(1, 64) as u32;
    // Timed steps per setting: at least 3; plus one untimed step per setting.
    let steps = passes.max(3);
    let spec = probe_spec(layers, context as u32, strategy, 2 * steps + 2);
    let mut w = AttentionWorkload::new(&spec, PrefillMode::Fill).map_err(|e| e.to_string())?;
    w.prefill().map_err(|e| e.to_string())?;
    let set = |on: bool| cpu::set_tile_prefetch(on, on);
    let mut best = [f64::INFINITY; 2];
    // One untimed step each: pages and clocks settle.
    for on in [true, false] {
        set(on);
        w.decode_step().map_err(|e| e.to_string())?;
    }
    for _ in 0..steps {
        for (i, on) in [true, false].into_iter().enumerate() {
            set(on);
            let t = Instant::now();
            w.decode_step().map_err(|e| e.to_string())?;
            best[i] = best[i].min(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(PrefetchProbe {
        with_ms: best[0],
        without_ms: best[1],
        on: best[1] > 0.97 * best[0],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_times_both_settings_and_restores_the_kernels() {
        // A small probe (one layer of 1024 tokens, 4 MiB): both figures are real step times, the choice
        // follows them, and the process setting is left as it was.
        cpu::set_tile_prefetch(true, true);
        let t = measure(1, 3).unwrap();
        for p in [t.contiguous, t.paged] {
            assert!(p.with_ms > 0.0 && p.without_ms > 0.0, "{t:?}");
            assert_eq!(p.on, p.without_ms > 0.97 * p.with_ms);
        }
        assert!(cpu::tile_prefetch(1) && cpu::tile_prefetch(2));
    }
}
