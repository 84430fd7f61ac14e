//! What a CUDA workload will be, decided before touching the GPU: the layout, codecs, kernel
//! configuration, buffer sizes and exact memory accounting. Pure, so tested on the CPU.

use super::codec::{GpuCodec, SYNTHETIC_LIMITS};
use super::compile::KernelConfig;
use super::launch;
use crate::spec::{Strategy, WorkloadKind, WorkloadSpec};
use crate::{MemoryUse, WorkloadError};
use kvbench_planner::AttentionKind;

/// Prompt queries whose prefill attention the attention workload computes: the last
/// `PREFILL_QUERIES` of the prompt (each over every earlier token). The whole prompt's K/V is
/// written to the cache; attention over all of a 32K prompt would be O(S²) work that says
/// nothing about the cache.
pub const PREFILL_QUERIES: u32 = 64;

/// How the cache is held on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// One preallocated block of max_len slots per sequence.
    Contiguous,
    /// A pool of blocks of `block_size` tokens and a block table per sequence.
    Paged,
    /// `none`: every step rewrites (recomputes) all K/V into scratch before attending.
    Recompute,
}

/// A validated CUDA attention workload.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaPlan {
    pub mode: CacheMode,
    pub kernel: KernelConfig,
    pub layers: u32,
    pub batch: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub prompt: u32,
    pub gen: u32,
    /// Tokens per block (max_len for contiguous and recompute).
    pub block_size: u32,
    pub shared_prefix: u32,
    /// Query positions of the prefill attention (the last of the prompt).
    pub prefill_queries: u32,
}

impl CudaPlan {
    /// Validate a spec for the CUDA backend; every refusal names the value and the way out.
    pub fn new(spec: &WorkloadSpec) -> Result<CudaPlan, WorkloadError> {
        // What any backend refuses first; below, only what the CUDA kernels cannot run.
        spec.validate()?;
        let invalid = |m: String| Err(WorkloadError::Invalid(m));
        if spec.kind == WorkloadKind::Decoder {
            return invalid(
                "the decoder workload is not implemented on --backend cuda yet; use --workload \
                 attention, or --backend cpu"
                    .into(),
            );
        }
        let mode = match spec.strategy {
            Strategy::Contiguous => CacheMode::Contiguous,
            Strategy::Paged => CacheMode::Paged,
            Strategy::None => CacheMode::Recompute,
            other => {
                return invalid(format!(
                    "strategy {other:?} is not implemented on --backend cuda; use none, \
                     contiguous or paged, or --backend cpu"
                ))
            }
        };
        let shape = &spec.shape;
        if spec.window.is_some() || shape.layer_kinds.iter().any(|k| *k != AttentionKind::Full) {
            return invalid(format!(
                "model {} has sliding-window or MLA layers (or --window was given): the CUDA \
                 kernels attend over full contexts only; use --backend cpu",
                shape.name
            ));
        }
        let kernel = KernelConfig::new(
            shape.head_dim,
            GpuCodec::for_dtype(&spec.k_dtype)?,
            GpuCodec::for_dtype(&spec.v_dtype)?,
        )?;
        let max_len = spec.max_len();
        let (lim_b, lim_pos, lim_head, _) = SYNTHETIC_LIMITS;
        if spec.batch as u64 >= lim_b.min(65_536) {
            return invalid(format!(
                "batch {} exceeds the CUDA workload's limit of 65535; lower --batch or use \
                 --backend cpu",
                spec.batch
            ));
        }
        if max_len as u64 >= lim_pos {
            return invalid(format!(
                "prompt + gen = {max_len} tokens exceeds the CUDA workload's 16M-token limit"
            ));
        }
        if shape.q_heads as u64 > lim_head {
            return invalid(format!("q_heads {} exceeds 256", shape.q_heads));
        }
        let block_size = match mode {
            CacheMode::Paged => spec.block_size,
            _ => max_len.max(1),
        };
        Ok(CudaPlan {
            mode,
            kernel,
            layers: shape.layers,
            batch: spec.batch,
            q_heads: shape.q_heads,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            prompt: spec.prompt,
            gen: spec.gen,
            block_size,
            shared_prefix: spec.shared_prefix,
            prefill_queries: spec.prompt.min(PREFILL_QUERIES),
        })
    }

    /// Longest sequence.
    pub fn max_len(&self) -> u32 {
        self.prompt + self.gen
    }

    /// Query heads per KV head.
    pub fn group(&self) -> u32 {
        self.q_heads / self.kv_heads
    }

    /// Prefix tokens shared by the batch in the cache (paged only).
    pub fn shared_for_tables(&self) -> u32 {
        if self.mode == CacheMode::Paged {
            self.shared_prefix
        } else {
            0
        }
    }

    /// Bytes of one token of one KV head, K and V, codes and scales.
    pub fn row_pair_bytes(&self) -> u64 {
        let hd = self.head_dim as usize;
        (self.kernel.k_codec.row_total_bytes(hd) + self.kernel.v_codec.row_total_bytes(hd)) as u64
    }

    /// Pool blocks per layer the cache needs at max_len.
    pub fn pool_blocks(&self) -> u32 {
        match self.mode {
            CacheMode::Paged => super::block_table::BlockTables::pool_blocks_needed(
                self.batch,
                self.block_size,
                self.max_len(),
                self.shared_prefix,
            ),
            _ => self.batch,
        }
    }

    /// Rows (token × KV head) of one layer's pool.
    pub fn pool_rows(&self) -> u64 {
        self.pool_blocks() as u64 * self.kv_heads as u64 * self.block_size as u64
    }

    /// Splits the partial-result buffers must hold.
    pub fn max_splits(&self, sm_count: u32) -> u32 {
        launch::max_splits(self.decode_base_blocks(), self.max_len(), sm_count)
    }

    /// Decode blocks before split-K: KV heads × head chunks × batch.
    pub fn decode_base_blocks(&self) -> u32 {
        self.kv_heads * (self.group() / launch::heads_per_block(self.group())) * self.batch
    }

    /// Device bytes the workload allocates (caches, queries, outputs, partials).
    pub fn device_bytes_needed(&self, sm_count: u32) -> u64 {
        let (b, qh, hd) = (self.batch as u64, self.q_heads as u64, self.head_dim as u64);
        let cache = self.layers as u64 * self.pool_rows() * self.row_pair_bytes();
        let splits = self.max_splits(sm_count) as u64;
        let decode = 4 * b * qh * hd * (1 + self.layers as u64) + 4 * b * qh * splits * (hd + 2);
        let prefill = 4 * b * self.prefill_queries as u64 * qh * hd * 3;
        cache + decode + prefill
    }

    /// The cache's memory when every sequence holds `len` tokens, per the storage contract.
    pub fn memory(&self, len: u32, blocks_held: u32) -> MemoryUse {
        let per_token = self.layers as u64 * self.kv_heads as u64 * self.row_pair_bytes();
        match self.mode {
            CacheMode::Recompute => MemoryUse::default(),
            CacheMode::Contiguous => MemoryUse {
                kv_bytes_used: self.batch as u64 * len as u64 * per_token,
                kv_bytes_allocated: self.batch as u64 * self.max_len() as u64 * per_token,
            },
            CacheMode::Paged => {
                // The contract (and the planner) count the whole shared prefix once, its
                // copy-on-write partial block included.
                let shared = if self.batch > 1 {
                    self.shared_prefix.min(len)
                } else {
                    0
                } as u64;
                let stored = shared + self.batch as u64 * (len as u64 - shared);
                MemoryUse {
                    kv_bytes_used: stored * per_token,
                    kv_bytes_allocated: blocks_held as u64 * self.block_size as u64 * per_token,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Backend, OffloadConfig};
    use kvbench_planner::{allocated_bytes, used_bytes, CacheDtype, DtypeKind, LayoutKind};
    use kvbench_planner::{LayoutQuery, ModelShape};

    fn spec(strategy: Strategy, kind: DtypeKind) -> WorkloadSpec {
        WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cuda,
            shape: ModelShape::uniform("llama3-8b-like", 2, 32, 8, 128, 4096, 14336),
            strategy,
            k_dtype: crate::cuda::codec::kernel_layout(kind),
            v_dtype: crate::cuda::codec::kernel_layout(kind),
            batch: 3,
            prompt: 100,
            gen: 20,
            block_size: 16,
            shared_prefix: 40,
            window: None,
            mlp: false,
            seed: 1,
            offload: OffloadConfig::default(),
        }
    }

    fn query<'a>(s: &'a WorkloadSpec, kind: LayoutKind) -> LayoutQuery<'a> {
        LayoutQuery {
            shape: &s.shape,
            k: s.k_dtype,
            v: s.v_dtype,
            kind,
            batch: s.batch,
            max_len: s.max_len(),
            shared_prefix: s.shared_prefix,
            window: None,
        }
    }

    #[test]
    fn contiguous_allocation_equals_the_planners_prediction() {
        for kind in [
            DtypeKind::F16,
            DtypeKind::Int8,
            DtypeKind::Int4,
            DtypeKind::Fp8E4m3,
        ] {
            let s = spec(Strategy::Contiguous, kind);
            let plan = CudaPlan::new(&s).unwrap();
            let m = plan.memory(s.max_len(), plan.pool_blocks());
            let q = query(&s, LayoutKind::Contiguous);
            assert_eq!(
                m.kv_bytes_allocated,
                allocated_bytes(&q).unwrap(),
                "{kind:?}"
            );
            assert_eq!(m.kv_bytes_used, used_bytes(&q).unwrap(), "{kind:?}");
        }
    }

    #[test]
    fn paged_allocation_with_a_shared_prefix_equals_the_planners_prediction() {
        for kind in [
            DtypeKind::F16,
            DtypeKind::Int8,
            DtypeKind::Int4,
            DtypeKind::Fp8E5m2,
        ] {
            let s = spec(Strategy::Paged, kind);
            let plan = CudaPlan::new(&s).unwrap();
            let mut tables = super::super::block_table::BlockTables::paged(
                s.batch,
                s.block_size,
                s.max_len(),
                s.shared_prefix,
            );
            tables.grow_to(s.max_len());
            let m = plan.memory(s.max_len(), tables.blocks_held());
            let q = query(&s, LayoutKind::Paged { block_size: 16 });
            assert_eq!(
                m.kv_bytes_allocated,
                allocated_bytes(&q).unwrap(),
                "{kind:?}"
            );
            assert_eq!(m.kv_bytes_used, used_bytes(&q).unwrap(), "{kind:?}");
        }
    }

    #[test]
    fn llama3_8b_f16_contiguous_by_hand() {
        // 128 KiB per token over 32 layers (REFERENCE.md) = 4 KiB per layer; 2 layers,
        // batch 3, 120 tokens: 3 × 120 × 8 KiB.
        let s = spec(Strategy::Contiguous, DtypeKind::F16);
        let plan = CudaPlan::new(&s).unwrap();
        assert_eq!(plan.memory(120, 3).kv_bytes_allocated, 3 * 120 * 8192);
        assert_eq!(plan.memory(10, 3).kv_bytes_used, 3 * 10 * 8192);
    }

    #[test]
    fn recompute_holds_no_cache() {
        let s = spec(Strategy::None, DtypeKind::F16);
        let plan = CudaPlan::new(&s).unwrap();
        assert_eq!(plan.memory(120, 3), MemoryUse::default());
        let q = query(&s, LayoutKind::None);
        assert_eq!(allocated_bytes(&q).unwrap(), 0);
    }

    #[test]
    fn refusals_name_the_value_and_the_way_out() {
        let mut s = spec(Strategy::Concat, DtypeKind::F16);
        let e = CudaPlan::new(&s).unwrap_err().to_string();
        assert!(e.contains("Concat") && e.contains("--backend cpu"), "{e}");
        s.strategy = Strategy::Paged;
        s.kind = WorkloadKind::Decoder;
        let e = CudaPlan::new(&s).unwrap_err().to_string();
        assert!(
            e.contains("decoder") && e.contains("--workload attention"),
            "{e}"
        );
        s.kind = WorkloadKind::Attention;
        s.window = Some(4096);
        assert!(CudaPlan::new(&s)
            .unwrap_err()
            .to_string()
            .contains("sliding"));
        s.window = None;
        s.k_dtype = CacheDtype::new(DtypeKind::Nf4);
        assert!(CudaPlan::new(&s).unwrap_err().to_string().contains("nf4"));
        s.k_dtype = CacheDtype::new(DtypeKind::F16);
        s.shape.head_dim = 80;
        assert!(CudaPlan::new(&s)
            .unwrap_err()
            .to_string()
            .contains("head_dim 80"));
        s.shape.head_dim = 128;
        s.shape.q_heads = 12;
        s.shape.kv_heads = 8;
        assert!(CudaPlan::new(&s)
            .unwrap_err()
            .to_string()
            .contains("multiple"));
        s.shape.q_heads = 32;
        s.block_size = 0;
        assert!(CudaPlan::new(&s)
            .unwrap_err()
            .to_string()
            .contains("block size 0"));
    }

    #[test]
    fn device_bytes_cover_the_cache() {
        // Llama-3-8B-like, one layer, batch 32 at 32K in f16: 32 × 32K × 8 × 512 B = 4 GiB.
        let mut s = spec(Strategy::Contiguous, DtypeKind::F16);
        s.shape.layers = 1;
        s.shape.layer_kinds.truncate(1);
        s.batch = 32;
        s.prompt = 32768;
        s.gen = 0;
        let plan = CudaPlan::new(&s).unwrap();
        let need = plan.device_bytes_needed(132);
        assert!(
            ((4 << 30)..(4 << 30) + (128 << 20)).contains(&need),
            "{need}"
        );
        assert_eq!(plan.prefill_queries, PREFILL_QUERIES);
    }
}
