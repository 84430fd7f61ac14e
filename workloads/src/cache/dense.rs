//! Concat and contiguous caches: one [`RowStore`] per (layer, sequence, KV head) for K and V.

use super::rows::{Growth, RowStore};
use super::{append_each, CacheError, CacheGeometry, HeadView, KvCache};
use crate::codec::Codec;
use crate::workload::MemoryUse;
use kvbench_planner::dtype::residual_split;
use rayon::prelude::*;

/// A cache whose rows live in per-head buffers: `concat` (grown by copying) or `contiguous`
/// (preallocated to each layer's capacity; a ring for sliding windows).
pub struct DenseCache {
    geom: CacheGeometry,
    /// `stores[layer][seq][head]` = (K, V).
    stores: Vec<Vec<Vec<(RowStore, RowStore)>>>,
    lens: Vec<Vec<usize>>,
}

impl DenseCache {
    /// A contiguous cache (`concat = false`) or a concat cache (`concat = true`).
    pub fn new(geom: &CacheGeometry, concat: bool) -> Result<Self, CacheError> {
        let kc = Codec::new(geom.k_dtype, geom.head_dim as u32)?;
        let vc = Codec::new(geom.v_dtype, geom.head_dim as u32)?;
        let store = |c: &Codec, cap: usize| {
            let residual = if c.dtype.kind.is_float() {
                0
            } else {
                c.dtype.residual as usize
            };
            let (quantized, _) = residual_split(&c.dtype, cap as u64, c.head_dim as u32);
            let units = quantized as usize / c.unit_tokens;
            let growth = if concat {
                Growth::Concat(units)
            } else {
                Growth::Ring(units)
            };
            RowStore::new(*c, growth, residual.min(cap))
        };
        let stores = (0..geom.layers)
            .map(|l| {
                let cap = geom.cap(l);
                (0..geom.batch)
                    .map(|_| {
                        (0..geom.kv_heads)
                            .map(|_| (store(&kc, cap), store(&vc, cap)))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Ok(DenseCache {
            geom: geom.clone(),
            stores,
            lens: vec![vec![0; geom.batch]; geom.layers],
        })
    }
}

impl KvCache for DenseCache {
    fn append(&mut self, layer: usize, seq: usize, k: &[f32], v: &[f32]) -> Result<(), CacheError> {
        let hd = self.geom.head_dim;
        if self.lens[layer][seq] >= self.geom.max_len {
            return Err(CacheError::Full {
                layer,
                seq,
                max_len: self.geom.max_len,
            });
        }
        for (h, (ks, vs)) in self.stores[layer][seq].iter_mut().enumerate() {
            ks.push(&k[h * hd..(h + 1) * hd])?;
            vs.push(&v[h * hd..(h + 1) * hd])?;
        }
        self.lens[layer][seq] += 1;
        Ok(())
    }

    fn append_tokens(
        &mut self,
        layer: usize,
        seq: usize,
        tokens: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), CacheError> {
        if self.lens[layer][seq] + tokens > self.geom.max_len {
            // The token that does not fit is refused as its own append would be.
            return append_each(self, layer, seq, tokens, k, v);
        }
        let (hd, heads) = (self.geom.head_dim, self.geom.kv_heads);
        let push = |store: &mut RowStore, rows: &[f32], h: usize| {
            (0..tokens).try_for_each(|t| store.push(&rows[(t * heads + h) * hd..][..hd]))
        };
        // Every head's K and V store on its own.
        self.stores[layer][seq]
            .par_iter_mut()
            .enumerate()
            .try_for_each(|(h, (ks, vs))| {
                let (a, b) = rayon::join(|| push(ks, k, h), || push(vs, v, h));
                a.and(b)
            })?;
        self.lens[layer][seq] += tokens;
        Ok(())
    }

    fn len(&self, layer: usize, seq: usize) -> usize {
        self.lens[layer][seq]
    }

    fn view(&self, layer: usize, seq: usize, head: usize) -> HeadView<'_> {
        let keep = self.geom.windows[layer].unwrap_or(usize::MAX);
        let (ks, vs) = &self.stores[layer][seq][head];
        HeadView {
            k: ks.segments(keep),
            v: vs.segments(keep),
        }
    }

    fn memory(&self) -> MemoryUse {
        let mut m = MemoryUse::default();
        for (ks, vs) in self.stores.iter().flatten().flatten() {
            m.kv_bytes_used += (ks.used() + vs.used()) as u64;
            m.kv_bytes_allocated += (ks.allocated() + vs.allocated()) as u64;
        }
        m
    }

    fn reset(&mut self) {
        for (ks, vs) in self.stores.iter_mut().flatten().flatten() {
            ks.clear();
            vs.clear();
        }
        self.lens.iter_mut().flatten().for_each(|l| *l = 0);
    }
}
