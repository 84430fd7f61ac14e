//! The sweep matrix: a list of values on every axis, expanded to their cross product (as
//! llama-bench does). The matrix checks its axes (empty, zero, repeated values); every other
//! rule is `WorkloadSpec::validate`, called on each combination, so the runner only sees
//! runnable workloads.

use kvbench_planner::dtype::KvDtypes;
use kvbench_planner::ModelShape;
use kvbench_workloads::{Backend, OffloadConfig, SpecError, Strategy, WorkloadKind, WorkloadSpec};

/// A value on one axis that can never run, or an axis left empty.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatrixError {
    #[error("--{axis} has no values; give at least one (a comma list, e.g. --{axis} 1,8)")]
    EmptyAxis { axis: &'static str },
    #[error("--{axis} {value} is not allowed: {why}")]
    BadValue {
        axis: &'static str,
        value: String,
        why: String,
    },
    /// A value no combination can run (a shape, a dtype, a prefix longer than a prompt).
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no workload left to run: every combination was invalid ({first})")]
    NothingToRun { first: String },
    #[error(
        "--{axis} names {value} twice; give each value once (a repeated value would run, \
         and be compared, twice)"
    )]
    Duplicate { axis: &'static str, value: String },
    #[error(
        "the sweep's cross product is {rows} rows, more than the bound of {max}; narrow the \
         comma lists, or raise the bound with --max-rows {rows}"
    )]
    TooManyRows { rows: u64, max: u64 },
}

/// Every axis of a sweep. Each `Vec` is one comma list of the CLI; the sweep is their product.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Shapes to run, already reduced to the layers asked for.
    pub shapes: Vec<ModelShape>,
    pub kinds: Vec<WorkloadKind>,
    pub backends: Vec<Backend>,
    pub strategies: Vec<Strategy>,
    /// Key and value dtypes, set together.
    pub dtypes: Vec<KvDtypes>,
    pub prompts: Vec<u32>,
    pub gens: Vec<u32>,
    pub batches: Vec<u32>,
    /// Tokens per block; only paged and offload strategies vary over it.
    pub block_sizes: Vec<u32>,
    pub shared_prefix: u32,
    pub window: Option<u32>,
    pub mlp: bool,
    pub seed: u64,
    pub offload: OffloadConfig,
}

/// A combination that was dropped, and why (for a note to the user).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub workload: String,
    pub why: String,
}

/// The expanded sweep: runnable specs in a fixed order, and the combinations left out.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub specs: Vec<WorkloadSpec>,
    pub skipped: Vec<Skipped>,
}

impl Matrix {
    /// Validate every axis, then expand the cross product in a fixed, documented order
    /// (shape, workload, backend, batch, prompt, gen, dtype, strategy, block size), so that
    /// rows comparing strategies for one dtype and length sit next to each other.
    pub fn expand(&self) -> Result<Sweep, MatrixError> {
        self.expand_at_most(crate::options::defaults::MAX_ROWS)
    }

    /// As [`Matrix::expand`], refusing (before expanding anything) a cross product of more
    /// than `max_rows` rows.
    pub fn expand_at_most(&self, max_rows: u64) -> Result<Sweep, MatrixError> {
        self.validate()?;
        let rows = self.rows();
        if rows > max_rows {
            return Err(MatrixError::TooManyRows {
                rows,
                max: max_rows,
            });
        }
        let mut specs = Vec::new();
        let mut skipped = Vec::new();
        for shape in &self.shapes {
            for &kind in &self.kinds {
                for &backend in &self.backends {
                    for &batch in &self.batches {
                        for &prompt in &self.prompts {
                            for &gen in &self.gens {
                                for &KvDtypes {
                                    k: k_dtype,
                                    v: v_dtype,
                                } in &self.dtypes
                                {
                                    for &strategy in &self.strategies {
                                        for &block_size in self.blocks_for(strategy) {
                                            let spec = WorkloadSpec {
                                                kind,
                                                backend,
                                                shape: shape.clone(),
                                                strategy,
                                                k_dtype,
                                                v_dtype,
                                                batch,
                                                prompt,
                                                gen,
                                                block_size,
                                                shared_prefix: self.shared_prefix,
                                                window: self.window,
                                                mlp: self.mlp,
                                                seed: self.seed,
                                                offload: self.offload.clone(),
                                            };
                                            match spec.validate() {
                                                Ok(()) => specs.push(spec),
                                                Err(e) if e.is_conflict() => {
                                                    skipped.push(Skipped {
                                                        workload: describe(&spec),
                                                        why: e.to_string(),
                                                    })
                                                }
                                                Err(e) => return Err(e.into()),
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if specs.is_empty() {
            let first = skipped
                .first()
                .map(|s| format!("{}: {}", s.workload, s.why))
                .unwrap_or_default();
            return Err(MatrixError::NothingToRun { first });
        }
        Ok(Sweep { specs, skipped })
    }

    /// Rows of the cross product before combinations are dropped, saturating at `u64::MAX`.
    pub fn rows(&self) -> u64 {
        let per_strategy: u64 = self
            .strategies
            .iter()
            .map(|&s| self.blocks_for(s).len() as u64)
            .sum();
        [
            self.shapes.len(),
            self.kinds.len(),
            self.backends.len(),
            self.batches.len(),
            self.prompts.len(),
            self.gens.len(),
            self.dtypes.len(),
        ]
        .iter()
        .fold(per_strategy, |acc, &n| acc.saturating_mul(n as u64))
    }

    /// Block sizes matter only to paged layouts; other strategies run once (with the first).
    fn blocks_for(&self, strategy: Strategy) -> &[u32] {
        if is_paged(strategy) {
            &self.block_sizes
        } else {
            &self.block_sizes[..1]
        }
    }

    fn validate(&self) -> Result<(), MatrixError> {
        non_empty("model", self.shapes.len())?;
        non_empty("workload", self.kinds.len())?;
        non_empty("backend", self.backends.len())?;
        non_empty("strategy", self.strategies.len())?;
        non_empty("cache-dtype", self.dtypes.len())?;
        non_empty("prompt", self.prompts.len())?;
        non_empty("gen", self.gens.len())?;
        non_empty("batch", self.batches.len())?;
        non_empty("block-size", self.block_sizes.len())?;
        positive("prompt", &self.prompts, "a prompt needs at least one token")?;
        positive(
            "gen",
            &self.gens,
            "at least one decode step is needed to time ITL",
        )?;
        positive(
            "batch",
            &self.batches,
            "a batch holds at least one sequence",
        )?;
        positive(
            "block-size",
            &self.block_sizes,
            "a block holds at least one token",
        )?;
        if let Some(w) = self.window {
            positive("window", &[w], "a window holds at least one token")?;
        }
        once(
            "model",
            &self
                .shapes
                .iter()
                // One shape at several --layers is several models.
                .map(|s| format!("{} with {} layers", s.name, s.layers))
                .collect::<Vec<_>>(),
        )?;
        once(
            "workload",
            &self
                .kinds
                .iter()
                .map(|&k| kind_name(k).to_string())
                .collect::<Vec<_>>(),
        )?;
        once(
            "backend",
            &self
                .backends
                .iter()
                .map(|&b| backend_name(b).to_string())
                .collect::<Vec<_>>(),
        )?;
        once(
            "strategy",
            &self
                .strategies
                .iter()
                .map(|&s| strategy_name(s))
                .collect::<Vec<_>>(),
        )?;
        once(
            "cache-dtype",
            &self.dtypes.iter().map(KvDtypes::label).collect::<Vec<_>>(),
        )?;
        once("prompt", &self.prompts)?;
        once("gen", &self.gens)?;
        once("batch", &self.batches)?;
        once("block-size", &self.block_sizes)?;
        Ok(())
    }
}

/// Paged layouts (and offload, which pages its working pool) vary over block size.
pub fn is_paged(strategy: Strategy) -> bool {
    strategy.is_paged()
}

/// Refuses an axis that names one value twice.
fn once<T: PartialEq + ToString>(axis: &'static str, values: &[T]) -> Result<(), MatrixError> {
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(MatrixError::Duplicate {
                axis,
                value: v.to_string(),
            });
        }
    }
    Ok(())
}

fn non_empty(axis: &'static str, len: usize) -> Result<(), MatrixError> {
    if len == 0 {
        Err(MatrixError::EmptyAxis { axis })
    } else {
        Ok(())
    }
}

fn positive(axis: &'static str, values: &[u32], why: &str) -> Result<(), MatrixError> {
    match values.iter().find(|&&v| v == 0) {
        Some(_) => Err(MatrixError::BadValue {
            axis,
            value: "0".into(),
            why: why.into(),
        }),
        None => Ok(()),
    }
}

/// One line naming a workload, for progress, notes and errors.
pub fn describe(spec: &WorkloadSpec) -> String {
    let dtype = KvDtypes {
        k: spec.k_dtype,
        v: spec.v_dtype,
    }
    .label();
    let block = if is_paged(spec.strategy) {
        format!(" block {}", spec.block_size)
    } else {
        String::new()
    };
    format!(
        "{} {} {} {}{} {} b{} p{}+g{}",
        spec.shape.name,
        kind_name(spec.kind),
        backend_name(spec.backend),
        strategy_name(spec.strategy),
        block,
        dtype,
        spec.batch,
        spec.prompt,
        spec.gen
    )
}

/// CLI/CSV name of a strategy (`offload-disk` for an offload tier).
pub fn strategy_name(s: Strategy) -> String {
    match s {
        Strategy::None => "none".into(),
        Strategy::Concat => "concat".into(),
        Strategy::Contiguous => "contiguous".into(),
        Strategy::Paged => "paged".into(),
        Strategy::Offload(t) => format!("offload-{}", tier_name(t)),
    }
}

/// CLI/CSV name of an offload tier.
pub fn tier_name(t: kvbench_workloads::Tier) -> &'static str {
    match t {
        kvbench_workloads::Tier::Host => "host",
        kvbench_workloads::Tier::Disk => "disk",
        kvbench_workloads::Tier::Redis => "redis",
    }
}

/// CLI/CSV name of a workload kind.
pub fn kind_name(k: WorkloadKind) -> &'static str {
    match k {
        WorkloadKind::Decoder => "decoder",
        WorkloadKind::Attention => "attention",
    }
}

/// CLI/CSV name of a backend.
pub fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Cpu => "cpu",
        Backend::Cuda => "cuda",
    }
}

/// The `i`-th of `n` disjoint slices of a sweep (`--shard i/n`, counted from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based slice number.
    pub index: u32,
    pub count: u32,
}

/// A `--shard` value that is not `i/n` with 1 ≤ i ≤ n.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--shard {value:?}: {why} (write i/n with 1 <= i <= n, e.g. --shard 2/4 for the second of four)")]
pub struct ShardError {
    pub value: String,
    pub why: String,
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| ShardError {
            value: s.to_string(),
            why: why.to_string(),
        };
        let (i, n) = s.split_once('/').ok_or_else(|| err("no '/'"))?;
        let index: u32 = i.trim().parse().map_err(|_| err("i is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| err("n is not a number"))?;
        if count == 0 {
            return Err(err("n must be at least 1"));
        }
        if index == 0 || index > count {
            return Err(err("i is out of range; shards count from 1"));
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Positions (0-based, in sweep order) of this shard's workloads in a sweep of `len`:
    /// a contiguous slice, sizes differing by at most one. Contiguous rather than round-robin
    /// so rows that are compared with each other (the strategies of one dtype and length sit
    /// next to each other in the sweep) mostly run on the same machine.
    pub fn range(&self, len: usize) -> std::ops::Range<usize> {
        let (i, n) = (self.index as usize - 1, self.count as usize);
        (len * i / n)..(len * (i + 1) / n)
    }

    /// This shard's workloads, each with its position in the whole sweep.
    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<(usize, T)> {
        self.range(items.len())
            .map(|p| (p, items[p].clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvbench_planner::{CacheDtype, DtypeKind};

    fn matrix() -> Matrix {
        Matrix {
            shapes: vec![ModelShape::uniform("tiny", 2, 4, 2, 16, 64, 128)],
            kinds: vec![WorkloadKind::Decoder],
            backends: vec![Backend::Cpu],
            strategies: vec![Strategy::None, Strategy::Contiguous, Strategy::Paged],
            dtypes: vec![
                KvDtypes::same(CacheDtype::new(DtypeKind::F16)),
                KvDtypes::same(CacheDtype::new(DtypeKind::Int8)),
            ],
            prompts: vec![8, 32],
            gens: vec![4],
            batches: vec![1, 2],
            block_sizes: vec![16],
            shared_prefix: 0,
            window: None,
            mlp: true,
            seed: 1,
            offload: OffloadConfig::default(),
        }
    }

    #[test]
    fn cross_product_size_and_order() {
        let sweep = matrix().expand().unwrap();
        // 2 batches × 2 prompts × 2 dtypes × 3 strategies.
        assert_eq!(sweep.specs.len(), 24);
        assert!(sweep.skipped.is_empty());
        // Strategies vary fastest, then dtype, then prompt.
        let s: Vec<_> = sweep.specs[..4].iter().map(|s| s.strategy).collect();
        assert_eq!(
            s,
            [
                Strategy::None,
                Strategy::Contiguous,
                Strategy::Paged,
                Strategy::None
            ]
        );
        assert_eq!(sweep.specs[3].k_dtype.kind, DtypeKind::Int8);
        assert_eq!(sweep.specs[6].prompt, 32);
        assert_eq!(sweep.specs[12].batch, 2);
    }

    #[test]
    fn block_sizes_multiply_only_paged() {
        let mut m = matrix();
        m.block_sizes = vec![16, 32, 1];
        let sweep = m.expand().unwrap();
        // per (batch, prompt, dtype): none + contiguous + 3 paged = 5
        assert_eq!(sweep.specs.len(), 2 * 2 * 2 * 5);
        let paged: Vec<u32> = sweep.specs[..5]
            .iter()
            .filter(|s| s.strategy == Strategy::Paged)
            .map(|s| s.block_size)
            .collect();
        assert_eq!(paged, [16, 32, 1]);
    }

    #[test]
    fn bad_values_are_named() {
        let mut m = matrix();
        m.batches = vec![1, 0];
        let e = m.expand().unwrap_err().to_string();
        assert!(e.contains("--batch 0"), "{e}");

        let mut m = matrix();
        m.gens.clear();
        assert_eq!(
            m.expand().unwrap_err(),
            MatrixError::EmptyAxis { axis: "gen" }
        );

        let mut m = matrix();
        m.shared_prefix = 9;
        let e = m.expand().unwrap_err().to_string();
        assert!(
            e.contains("--shared-prefix 9 is longer than --prompt 8"),
            "{e}"
        );
    }

    #[test]
    fn impossible_shapes_are_refused() {
        let mut m = matrix();
        m.shapes = vec![ModelShape::uniform("odd", 2, 6, 4, 16, 64, 128)];
        let e = m.expand().unwrap_err().to_string();
        assert!(
            e.contains("q_heads 6 is not a multiple of kv_heads 4"),
            "{e}"
        );

        m.shapes = vec![ModelShape::uniform("zero", 0, 4, 4, 16, 64, 128)];
        assert!(m.expand().unwrap_err().to_string().contains("layers is 0"));

        m.shapes = vec![ModelShape::uniform("oddhd", 1, 4, 4, 15, 64, 128)];
        assert!(m.expand().unwrap_err().to_string().contains("head_dim 15"));
    }

    #[test]
    fn kivi_residual_must_hold_a_key_group() {
        let mut m = matrix();
        // KIVI's values are grouped per token in 32s: head_dim 32 holds one group.
        m.shapes = vec![ModelShape::uniform("tiny", 2, 4, 2, 32, 128, 128)];
        let (k, v) = CacheDtype::kivi(DtypeKind::Int2, 16);
        m.dtypes = vec![KvDtypes { k, v }];
        let e = m.expand().unwrap_err().to_string();
        assert!(
            e.contains("--residual 16") && e.contains("at least 32"),
            "{e}"
        );
        let (k, v) = CacheDtype::kivi(DtypeKind::Int2, 32);
        m.dtypes = vec![KvDtypes { k, v }];
        assert!(m.expand().is_ok());
    }

    #[test]
    fn kivi_is_not_paged_but_runs_contiguous() {
        let mut m = matrix();
        m.shapes = vec![ModelShape::uniform("tiny", 2, 4, 2, 32, 128, 128)];
        let (k, v) = CacheDtype::kivi(DtypeKind::Int4, 32);
        m.dtypes = vec![KvDtypes { k, v }];
        let sweep = m.expand().unwrap();
        assert_eq!(sweep.specs.len(), 2 * 2 * 2); // none + contiguous
        assert_eq!(sweep.skipped.len(), 4);
        assert!(sweep.skipped[0].why.contains("not paged"));

        m.strategies = vec![Strategy::Paged];
        assert!(matches!(
            m.expand().unwrap_err(),
            MatrixError::NothingToRun { .. }
        ));
    }

    #[test]
    fn a_bad_value_in_any_combination_refuses_a_conflict_is_skipped() {
        // hidden 0 is fine for attention (it reads no hidden size) but not for the decoder:
        // the attention rows would run, yet the sweep is refused, naming the value.
        let mut m = matrix();
        m.kinds = vec![WorkloadKind::Attention, WorkloadKind::Decoder];
        m.shapes[0].hidden = 0;
        let e = m.expand().unwrap_err().to_string();
        assert!(
            e.contains("hidden 0") && e.contains("--workload attention"),
            "{e}"
        );
        // Offload runs attention workloads only: the decoder's offload rows are skipped.
        let mut m = matrix();
        m.strategies = vec![
            Strategy::Contiguous,
            Strategy::Offload(kvbench_workloads::Tier::Host),
        ];
        let sweep = m.expand().unwrap();
        assert_eq!(sweep.specs.len(), 2 * 2 * 2);
        assert_eq!(sweep.skipped.len(), 2 * 2 * 2);
        assert!(sweep.skipped[0].why.contains("--workload attention"));
    }

    #[test]
    fn shard_parsing() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["0/4", "5/4", "1/0", "a/2", "3", "1/-2"] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(Shard { index: 3, count: 7 }.to_string(), "3/7");
    }

    #[test]
    fn shards_partition_the_sweep() {
        let specs = matrix().expand().unwrap().specs;
        for n in 1..=30u32 {
            let mut seen = vec![0u32; specs.len()];
            for i in 1..=n {
                let shard = Shard { index: i, count: n };
                let part = shard.select(&specs);
                // Deterministic: the same call gives the same slice.
                assert_eq!(
                    part.iter().map(|p| p.0).collect::<Vec<_>>(),
                    shard.select(&specs).iter().map(|p| p.0).collect::<Vec<_>>()
                );
                // Balanced: sizes differ by at most one.
                let len = part.len();
                assert!(len == specs.len() / n as usize || len == specs.len().div_ceil(n as usize));
                // Contiguous: consecutive positions.
                assert!(part.windows(2).all(|w| w[1].0 == w[0].0 + 1));
                for (p, spec) in part {
                    assert_eq!(spec, specs[p]);
                    seen[p] += 1;
                }
            }
            // Disjoint and complete: every workload in exactly one shard.
            assert!(seen.iter().all(|&c| c == 1), "n = {n}: {seen:?}");
        }
    }

    #[test]
    fn labels() {
        let spec = &matrix().expand().unwrap().specs[2];
        assert_eq!(
            describe(spec),
            "tiny decoder cpu paged block 16 f16 b1 p8+g4"
        );
        assert_eq!(
            strategy_name(Strategy::Offload(kvbench_workloads::Tier::Disk)),
            "offload-disk"
        );
    }
}

#[cfg(test)]
mod shard_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_sweep_splits_into_disjoint_complete_slices(len in 0usize..500, n in 1u32..64) {
            let items: Vec<usize> = (0..len).collect();
            let mut union = Vec::new();
            for i in 1..=n {
                let part = Shard { index: i, count: n }.select(&items);
                prop_assert!(part.len() == len / n as usize || part.len() == len.div_ceil(n as usize));
                union.extend(part.into_iter().map(|(p, v)| { assert_eq!(p, v); p }));
            }
            // In order, each once: disjoint and complete.
            prop_assert_eq!(union, items);
        }
    }
}
