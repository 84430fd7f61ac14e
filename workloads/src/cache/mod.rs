//! Cache layouts behind one small API: concat, contiguous (ring buffers for sliding windows)
//! and paged (block pool, block tables, prefix sharing, fork with copy-on-write), each
//! storing any cache dtype. `none` keeps no cache: the workloads recompute instead.
//!
//! Every layout hands the kernels the same thing: for one (layer, sequence, KV head), the
//! stored K rows and V rows as a list of [`Segment`]s in token order (contiguous = 1, ring =
//! 2, paged = one per block, plus the f16 residual of KIVI dtypes).

pub mod dense;
pub mod paged;
pub mod pool;
pub mod rows;

use crate::codec::{Codec, CodecError};
use crate::workload::MemoryUse;
use kvbench_planner::dtype::residual_split;
use kvbench_planner::{AttentionKind, CacheDtype, DtypeKind, ModelShape};

pub use dense::DenseCache;
pub use paged::PagedCache;
pub use pool::{BlockId, BlockPool, PoolError};

/// What a cache cannot do, or was asked wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("{0}")]
    Unsupported(String),
    /// An offload tier failed in a way the cache cannot recover from (misconfigured, full);
    /// the tier's own message, which says how to fix it.
    #[error("{0}")]
    Tier(String),
    #[error(
        "sequence {seq} of layer {layer} is full at {max_len} tokens; raise the maximum length"
    )]
    Full {
        layer: usize,
        seq: usize,
        max_len: usize,
    },
}

/// A run of stored rows of one head, in one storage format.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub codec: &'a Codec,
    /// Whole units of storage; rows `row0 .. row0 + rows` of them are live.
    pub bytes: &'a [u8],
    pub row0: usize,
    pub rows: usize,
}

impl Segment<'_> {
    /// Bytes a kernel reads to use this segment's live rows.
    pub fn bytes_read(&self) -> u64 {
        let c = self.codec;
        if c.unit_tokens == 1 {
            (self.rows * c.unit_bytes) as u64
        } else {
            let first = self.row0 / c.unit_tokens;
            let last = (self.row0 + self.rows).div_ceil(c.unit_tokens);
            ((last - first) * c.unit_bytes) as u64
        }
    }
}

/// The stored K and V of one (layer, sequence, KV head), oldest token first.
#[derive(Debug, Clone, Default)]
pub struct HeadView<'a> {
    pub k: Vec<Segment<'a>>,
    pub v: Vec<Segment<'a>>,
}

impl HeadView<'_> {
    /// Tokens visible (the same for K and V).
    pub fn rows(&self) -> usize {
        self.k.iter().map(|s| s.rows).sum()
    }

    /// Bytes of K and V a decode step reads.
    pub fn bytes_read(&self) -> u64 {
        self.k.iter().chain(&self.v).map(Segment::bytes_read).sum()
    }
}

/// Everything a layout needs to know to size itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheGeometry {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub batch: usize,
    pub max_len: usize,
    /// Sliding window of each layer; `None` = full attention.
    pub windows: Vec<Option<usize>>,
    pub k_dtype: CacheDtype,
    pub v_dtype: CacheDtype,
    pub block_size: usize,
    pub shared_prefix: usize,
}

impl CacheGeometry {
    /// Geometry for `shape`, with `window` overriding every full or sliding layer's window.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shape: &ModelShape,
        window: Option<u32>,
        k_dtype: CacheDtype,
        v_dtype: CacheDtype,
        batch: u32,
        max_len: u32,
        block_size: u32,
        shared_prefix: u32,
    ) -> Result<Self, CacheError> {
        let windows = shape
            .layer_kinds
            .iter()
            .enumerate()
            .map(|(l, kind)| match (kind, window) {
                (AttentionKind::Mla { .. }, _) => Err(CacheError::Unsupported(format!(
                    "layer {l} is MLA; the runner does not run MLA layers (plan them with `kvbench plan`)"
                ))),
                (AttentionKind::NoAttention | AttentionKind::SharedKv { .. }, _) => {
                    Err(CacheError::Unsupported(format!(
                        "layer {l} keeps no KV of its own (a state or KV-sharing layer); the runner runs attention layers only (plan the model with `kvbench plan`)"
                    )))
                }
                (_, Some(w)) => Ok(Some(w as usize)),
                (AttentionKind::Chunked { chunk }, None) => Err(CacheError::Unsupported(format!(
                    "layer {l} attends within chunks of {chunk} tokens (chunked local attention); the runner runs full and sliding-window layers (plan the model with `kvbench plan`, or pass --window to run every layer with a window)"
                ))),
                (AttentionKind::Sliding { window }, None) => Ok(Some(*window as usize)),
                (AttentionKind::Full, None) => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CacheGeometry {
            layers: shape.layers as usize,
            kv_heads: shape.kv_heads as usize,
            head_dim: shape.head_dim as usize,
            batch: batch as usize,
            max_len: max_len as usize,
            windows,
            k_dtype,
            v_dtype,
            block_size: block_size as usize,
            shared_prefix: shared_prefix as usize,
        })
    }

    /// Tokens layer `l` ever needs to hold: `min(window, max_len)`.
    pub fn cap(&self, l: usize) -> usize {
        self.windows[l].map_or(self.max_len, |w| w.min(self.max_len))
    }

    /// Bytes of `n` tokens of one head stored in `dtype`, residual included, as the storage
    /// contract counts them for a layout holding at most `n` tokens.
    pub fn head_bytes(&self, dtype: &CacheDtype, n: usize) -> u64 {
        let hd = self.head_dim as u32;
        let (q, _) = residual_split(dtype, n as u64, hd);
        let res = if dtype.residual > 0 && !dtype.kind.is_float() {
            CacheDtype::residual_bytes((n as u64).min(dtype.residual as u64), hd)
        } else {
            0
        };
        dtype.quantized_bytes(q, hd) + res
    }

    /// Bytes of one token of every KV head of one layer (K and V), residual ignored.
    pub fn token_bytes(&self) -> u64 {
        let hd = self.head_dim as u32;
        self.kv_heads as u64
            * (self.k_dtype.quantized_bytes(1, hd) + self.v_dtype.quantized_bytes(1, hd))
    }

    fn has_residual(&self) -> bool {
        [self.k_dtype, self.v_dtype]
            .iter()
            .any(|d| d.residual > 0 && !d.kind.is_float())
    }
}

/// [`KvCache::append_tokens`] one token at a time.
pub(crate) fn append_each<C: KvCache + ?Sized>(
    cache: &mut C,
    layer: usize,
    seq: usize,
    tokens: usize,
    k: &[f32],
    v: &[f32],
) -> Result<(), CacheError> {
    if tokens == 0 {
        return Ok(());
    }
    let row = k.len() / tokens;
    for (kr, vr) in k.chunks_exact(row).zip(v.chunks_exact(row)) {
        cache.append(layer, seq, kr, vr)?;
    }
    Ok(())
}

/// The one small API every cache layout offers.
pub trait KvCache: Send + Sync {
    /// Append one token's K and V (`kv_heads × head_dim` each) to `seq` in `layer`.
    fn append(&mut self, layer: usize, seq: usize, k: &[f32], v: &[f32]) -> Result<(), CacheError>;
    /// Append `tokens` consecutive tokens' K and V (`tokens × kv_heads × head_dim` each), as
    /// that many [`KvCache::append`] calls would; layouts may encode them in parallel.
    fn append_tokens(
        &mut self,
        layer: usize,
        seq: usize,
        tokens: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), CacheError> {
        append_each(self, layer, seq, tokens, k, v)
    }
    /// Make the rows of (layer, seq) resident before [`KvCache::view`]: a tiered cache loads
    /// them back here (layouts that always hold every row have nothing to do).
    fn prepare(&mut self, _layer: usize, _seq: usize) -> Result<(), CacheError> {
        Ok(())
    }
    /// Tokens appended to `seq` in `layer` so far (its next position).
    fn len(&self, layer: usize, seq: usize) -> usize;
    /// The rows attention may see now for (layer, seq, head): the last `window` tokens
    /// (after [`KvCache::prepare`] of (layer, seq)).
    fn view(&self, layer: usize, seq: usize, head: usize) -> HeadView<'_>;
    /// Whether one sequence's KV heads keep their rows side by side in shared blocks (a paged
    /// block holds every head's rows of its tokens), so the kernels read those heads together,
    /// block by block, rather than one head's short runs at a time.
    fn heads_share_blocks(&self) -> bool {
        false
    }
    /// KV bytes held in memory now: what a decode step over every layer reads, about.
    fn resident_bytes(&self) -> u64 {
        self.memory().kv_bytes_allocated
    }
    /// Exact bytes used and allocated now.
    fn memory(&self) -> MemoryUse;
    /// Drop every token (keep what a pool preallocated).
    fn reset(&mut self);
}

/// The f16 codec the KIVI residual uses.
pub(crate) fn residual_codec(head_dim: usize) -> Codec {
    Codec::new(CacheDtype::new(DtypeKind::F16), head_dim as u32).expect("f16 has no constraints")
}

#[cfg(test)]
mod tests;

/// The cache a workload's strategy keeps (`None` for `Strategy::None`, which recomputes).
pub fn for_spec(spec: &crate::WorkloadSpec) -> Result<Option<Box<dyn KvCache>>, CacheError> {
    use crate::Strategy;
    let g = CacheGeometry::new(
        &spec.shape,
        spec.window,
        spec.k_dtype,
        spec.v_dtype,
        spec.batch,
        spec.max_len(),
        spec.block_size,
        spec.shared_prefix,
    )?;
    Ok(match spec.strategy {
        Strategy::None => None,
        Strategy::Concat => Some(Box::new(DenseCache::new(&g, true)?)),
        Strategy::Contiguous => Some(Box::new(DenseCache::new(&g, false)?)),
        Strategy::Paged => Some(Box::new(PagedCache::new(&g)?)),
        Strategy::Offload(_) => {
            return Err(CacheError::Unsupported(
                "the offload strategy is built by the tiers module, not by the plain cache layouts"
                    .into(),
            ))
        }
    })
}
