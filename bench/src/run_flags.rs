//! The raw values of `kvbench run`'s sweep flags turned into a checked sweep, once: shapes
//! from the registry, config.json files or explicit sizes, (K, V) dtype pairs, defaults that
//! depend on other flags (the prompt covers the shared prefix; offload runs at attention
//! level), then [`Matrix::expand_at_most`]. The CLI only declares the flags and copies them
//! here.

use crate::axes;
use crate::matrix::{Matrix, MatrixError, Sweep};
use crate::options::defaults;
use crate::suite;
use kvbench_planner::dtype::{parse_kv_dtypes, parse_side, KvDtypes};
use kvbench_planner::{ModelShape, PlanError};
use kvbench_workloads::{OffloadConfig, Strategy};
use std::path::PathBuf;

/// The sweep flags of `kvbench run`, as given (`None`: not given).
#[derive(Debug, Clone, Default)]
pub struct RunFlags {
    pub model: Option<Vec<String>>,
    pub config: Option<Vec<PathBuf>>,
    /// Layers of each shape (list); None: a registry model's own, 1 for an explicit shape.
    pub layers: Option<Vec<u32>>,
    pub q_heads: Option<Vec<u32>>,
    pub kv_heads: Option<Vec<u32>>,
    pub head_dim: Option<Vec<u32>>,
    pub hidden: Option<Vec<u32>>,
    pub intermediate: Option<u32>,
    pub workload: Option<Vec<String>>,
    pub strategy: Option<Vec<String>>,
    pub cache_dtype: Option<Vec<String>>,
    pub k_dtype: Option<Vec<String>>,
    pub v_dtype: Option<Vec<String>>,
    pub prompt: Option<Vec<u32>>,
    pub gen: Option<Vec<u32>>,
    pub batch: Option<Vec<u32>>,
    pub block_size: Option<Vec<u32>>,
    pub shared_prefix: Option<u32>,
    pub window: Option<u32>,
    pub residual: Option<u32>,
    pub no_mlp: bool,
    pub backend: Option<Vec<String>>,
    pub tier: Option<Vec<String>>,
    pub tier_dir: Option<PathBuf>,
    pub redis_url: Option<String>,
    pub seed: u64,
    pub max_rows: u64,
    /// --prefill as given (its default depends on whether this is the default suite).
    pub prefill: Option<String>,
}

/// A sweep flag that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunFlagError {
    #[error(transparent)]
    Axis(#[from] axes::AxisError),
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    // `cause`, not `source`: in the message, and not again as the chain's next link.
    #[error("{flag} {value}: {cause}")]
    Dtype {
        flag: &'static str,
        value: String,
        cause: PlanError,
    },
}

fn dtype_error<'a>(
    flag: &'static str,
    value: &'a str,
) -> impl FnOnce(PlanError) -> RunFlagError + 'a {
    move |cause| RunFlagError::Dtype {
        flag,
        value: value.to_string(),
        cause,
    }
}

impl RunFlags {
    /// No axis of the sweep was given: run the default suite.
    pub fn is_default_suite(&self) -> bool {
        self.model.is_none()
            && self.config.is_none()
            && self.q_heads.is_none()
            && self.workload.is_none()
            && self.strategy.is_none()
            && self.cache_dtype.is_none()
            && self.k_dtype.is_none()
            && self.v_dtype.is_none()
            && self.prompt.is_none()
            && self.gen.is_none()
            && self.batch.is_none()
            && self.block_size.is_none()
            && self.shared_prefix.is_none()
            && self.window.is_none()
            && self.residual.is_none()
            && self.backend.is_none()
            && self.tier.is_none()
            && self.layers.is_none()
            && self.prefill.is_none()
            && !self.no_mlp
    }

    fn shapes(&self) -> Result<Vec<ModelShape>, RunFlagError> {
        // One entry per --layers value; `None` = each shape's own (1 for an explicit one).
        let layer_list: Vec<Option<u32>> = match &self.layers {
            Some(v) => v.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let mut shapes = Vec::new();
        if let Some(q_heads) = &self.q_heads {
            let (kv, hd) = (
                self.kv_heads.as_deref().unwrap_or_default(),
                self.head_dim.as_deref().unwrap_or_default(),
            );
            for &layers in &layer_list {
                for &q in q_heads {
                    for &k in kv {
                        for &d in hd {
                            // Llama's width is q_heads × head_dim unless given.
                            let hidden = self
                                .hidden
                                .clone()
                                .unwrap_or_else(|| vec![q.saturating_mul(d)]);
                            for h in hidden {
                                let inter = self
                                    .intermediate
                                    .unwrap_or_else(|| axes::default_intermediate(h));
                                let name = format!("q{q}-kv{k}-d{d}-h{h}");
                                shapes.push(ModelShape::uniform(
                                    &name,
                                    layers.unwrap_or(1),
                                    q,
                                    k,
                                    d,
                                    h,
                                    inter,
                                ));
                            }
                        }
                    }
                }
            }
            return Ok(shapes);
        }
        for &layers in &layer_list {
            for name in self.model.iter().flatten() {
                shapes.push(axes::registry_shape(name, layers)?);
            }
            for path in self.config.iter().flatten() {
                shapes.push(axes::config_shape(path, layers)?);
            }
        }
        if shapes.is_empty() {
            for &layers in &layer_list {
                let mut s = suite::mini_shape(2);
                if let Some(n) = layers {
                    axes::cut_layers(&mut s, n)?;
                }
                shapes.push(s);
            }
        }
        Ok(shapes)
    }

    fn dtypes(&self) -> Result<Vec<KvDtypes>, RunFlagError> {
        let mut pairs = if self.k_dtype.is_some() || self.v_dtype.is_some() {
            let fallback = self
                .cache_dtype
                .clone()
                .unwrap_or_else(|| vec!["f16".into()]);
            let ks = self.k_dtype.as_ref().unwrap_or(&fallback);
            let vs = self.v_dtype.as_ref().unwrap_or(&fallback);
            let mut pairs = Vec::new();
            for k in ks {
                for v in vs {
                    pairs.push(KvDtypes {
                        k: parse_side(k, true).map_err(dtype_error("--k-dtype", k))?,
                        v: parse_side(v, false).map_err(dtype_error("--v-dtype", v))?,
                    });
                }
            }
            pairs
        } else {
            let names = self
                .cache_dtype
                .clone()
                .unwrap_or_else(|| vec!["f16".into()]);
            names
                .iter()
                .map(|n| parse_kv_dtypes(n).map_err(dtype_error("--cache-dtype", n)))
                .collect::<Result<_, _>>()?
        };
        if let Some(r) = self.residual {
            for p in &mut pairs {
                for d in [&mut p.k, &mut p.v] {
                    if !d.kind.is_float() {
                        d.residual = r;
                    }
                }
            }
        }
        Ok(pairs)
    }

    fn matrix(&self) -> Result<Matrix, RunFlagError> {
        let list = |v: &Option<Vec<String>>, default: &str| {
            v.clone().unwrap_or_else(|| vec![default.to_string()])
        };
        let tiers = match &self.tier {
            Some(t) => t
                .iter()
                .map(|n| axes::parse_tier(n))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let strategies = axes::parse_strategies(&list(&self.strategy, "contiguous"), &tiers)?;
        // Offload runs at attention level only, so a sweep of offload strategies alone
        // defaults to it rather than refusing the default decoder.
        let only_offload = strategies.iter().all(|s| matches!(s, Strategy::Offload(_)));
        let default_kind = if only_offload { "attention" } else { "decoder" };
        // The shared prefix is part of the prompt: without --prompt the whole prompt is shared.
        let default_prompt = defaults::PROMPT.max(self.shared_prefix.unwrap_or(0));
        Ok(Matrix {
            shapes: self.shapes()?,
            kinds: list(&self.workload, default_kind)
                .iter()
                .map(|n| axes::parse_kind(n))
                .collect::<Result<_, _>>()?,
            backends: list(&self.backend, "cpu")
                .iter()
                .map(|n| axes::parse_backend(n))
                .collect::<Result<_, _>>()?,
            strategies,
            dtypes: self.dtypes()?,
            prompts: self.prompt.clone().unwrap_or_else(|| vec![default_prompt]),
            gens: self.gen.clone().unwrap_or_else(|| vec![defaults::GEN]),
            batches: self.batch.clone().unwrap_or_else(|| vec![defaults::BATCH]),
            block_sizes: self
                .block_size
                .clone()
                .unwrap_or_else(|| vec![defaults::BLOCK_SIZE]),
            shared_prefix: self.shared_prefix.unwrap_or(0),
            window: self.window,
            mlp: !self.no_mlp,
            seed: self.seed,
            offload: OffloadConfig {
                tier_dir: self.tier_dir.clone(),
                redis_url: self.redis_url.clone(),
                pool_blocks: 0,
            },
        })
    }

    /// The sweep to run: the default suite, or the cross product of the flags, checked.
    pub fn sweep(&self) -> Result<Sweep, RunFlagError> {
        if self.is_default_suite() {
            return Ok(suite::default_sweep(self.seed)?);
        }
        Ok(self.matrix()?.expand_at_most(self.max_rows)?)
    }
}
