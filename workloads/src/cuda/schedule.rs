//! What the attention workload does on the device, step by step, as plain data: the uploads
//! and kernel launches (with their parameter structs) of a prefill or a decode step, given
//! the buffers' device addresses. `attention.rs` executes the ops with cudarc; the emulator
//! test executes the very same ops on host memory, so the host logic is tested without a GPU.

use super::block_table::BlockTables;
use super::launch::{self, Launch};
use super::params::{self, CacheWriteParams, DecodeParams, PrefillParams};
use super::plan::{CacheMode, CudaPlan};
use super::reference::{self, Tensor};
use crate::WorkloadError;

/// Elements of every buffer a workload allocates (caches per layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    pub k_codes: usize,
    pub k_scales: usize,
    pub v_codes: usize,
    pub v_scales: usize,
    /// i32: start positions, end positions, attended lengths (one per sequence each).
    pub positions: usize,
    pub table: usize,
    pub q_decode: usize,
    /// Per layer.
    pub out_decode: usize,
    pub part_acc: usize,
    pub part_ml: usize,
    pub q_prefill: usize,
    /// Two of these: layer 0's and the other layers' (the last written last).
    pub out_prefill: usize,
}

impl BufferSizes {
    /// Sizes for a plan on a GPU with `sm_count` SMs (split-K partials depend on it). Empty
    /// buffers get one element: a zero-byte allocation is an error on CUDA.
    pub fn new(plan: &CudaPlan, table_len: usize, sm_count: u32) -> Self {
        let hd = plan.head_dim as usize;
        let rows = plan.pool_rows() as usize;
        let (b, qh) = (plan.batch as usize, plan.q_heads as usize);
        let splits = plan.max_splits(sm_count) as usize;
        let n_pre = plan.prefill_queries as usize;
        let (kc, vc) = (plan.kernel.k_codec, plan.kernel.v_codec);
        let at_least_one = |n: usize| n.max(1);
        BufferSizes {
            k_codes: at_least_one(rows * kc.row_bytes(hd)),
            k_scales: at_least_one(rows * kc.scale_words(hd)),
            v_codes: at_least_one(rows * vc.row_bytes(hd)),
            v_scales: at_least_one(rows * vc.scale_words(hd)),
            positions: 3 * b,
            table: at_least_one(table_len),
            q_decode: b * qh * hd,
            out_decode: b * qh * hd,
            part_acc: b * qh * splits * hd,
            part_ml: b * qh * splits * 2,
            q_prefill: at_least_one(b * n_pre * qh * hd),
            out_prefill: at_least_one(b * n_pre * qh * hd),
        }
    }
}

/// Device addresses of one layer's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerAddrs {
    pub k_codes: u64,
    pub k_scales: u64,
    pub v_codes: u64,
    pub v_scales: u64,
    pub out_decode: u64,
}

/// Device addresses of every buffer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Addrs {
    pub table: u64,
    pub positions: u64,
    pub q_decode: u64,
    pub part_acc: u64,
    pub part_ml: u64,
    pub q_prefill: u64,
    pub out_prefill: [u64; 2],
    pub layers: Vec<LayerAddrs>,
}

/// One thing to do on the device, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Copy to the positions buffer.
    Positions(Vec<i32>),
    /// Copy to the block table buffer.
    Table(Vec<i32>),
    /// `cache_write_k` (`value == false`) or `cache_write_v`.
    CacheWrite {
        value: bool,
        launch: Launch,
        params: CacheWriteParams,
    },
    /// `synthetic_rows(out, key, n, base, heads)`.
    Queries {
        launch: Launch,
        out: u64,
        key: u64,
        n: i32,
        base: i32,
        heads: i32,
    },
    Prefill {
        launch: Launch,
        params: PrefillParams,
    },
    /// `function` is one of decode_attention_g1/g2/g4.
    Decode {
        function: &'static str,
        launch: Launch,
        params: DecodeParams,
    },
    Merge {
        launch: Launch,
        params: DecodeParams,
    },
}

/// The state of a workload between steps: how long the sequences are and who holds which block.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub plan: CudaPlan,
    pub seed: u64,
    pub tables: BlockTables,
    /// Tokens every sequence holds.
    pub len: u32,
}

impl Schedule {
    /// An empty cache for `plan`.
    pub fn new(plan: CudaPlan, seed: u64) -> Self {
        let tables = match plan.mode {
            CacheMode::Paged => BlockTables::paged(
                plan.batch,
                plan.block_size,
                plan.max_len(),
                plan.shared_prefix,
            ),
            _ => BlockTables::contiguous(plan.batch, plan.max_len()),
        };
        Schedule {
            plan,
            seed,
            tables,
            len: 0,
        }
    }

    /// Stream key of a tensor of a layer.
    pub fn key(&self, layer: u32, t: Tensor) -> u64 {
        reference::stream_key(self.seed, layer, t)
    }

    /// Rewind to before the prompt; returns the table to upload.
    pub fn reset(&mut self) -> Op {
        self.tables.reset();
        self.len = 0;
        Op::Table(self.tables.packed())
    }

    fn positions(&self, starts: Vec<i32>, end: u32) -> Op {
        let b = self.plan.batch as usize;
        let mut host = starts;
        host.extend(std::iter::repeat_n(end as i32, b));
        host.extend(std::iter::repeat_n(end as i32, b));
        Op::Positions(host)
    }

    fn grow(&mut self, len: u32, ops: &mut Vec<Op>) {
        if self.tables.grow_to(len) {
            ops.push(Op::Table(self.tables.packed()));
        }
    }

    /// K and V cache writes of rows [start_pos[b], end) of `layer`, up to `max_rows` per sequence.
    fn cache_writes(&self, a: &Addrs, layer: u32, max_rows: u32, ops: &mut Vec<Op>) {
        let p = &self.plan;
        let l = &a.layers[layer as usize];
        let base = CacheWriteParams {
            src: 0,
            codes: 0,
            scales: 0,
            block_table: a.table,
            start_pos: a.positions,
            end_pos: a.positions + 4 * p.batch as u64,
            synth_key: 0,
            table_stride: self.tables.table_stride() as i32,
            block_size: self.tables.block_size() as i32,
            kv_heads: p.kv_heads as i32,
            src_len: 0,
            src_base: 0,
            shared_prefix: p.shared_prefix as i32,
        };
        let launch = launch::cache_write_launch(max_rows, p.kv_heads, p.batch);
        ops.push(Op::CacheWrite {
            value: false,
            launch,
            params: CacheWriteParams {
                codes: l.k_codes,
                scales: l.k_scales,
                synth_key: self.key(layer, Tensor::K),
                ..base
            },
        });
        ops.push(Op::CacheWrite {
            value: true,
            launch,
            params: CacheWriteParams {
                codes: l.v_codes,
                scales: l.v_scales,
                synth_key: self.key(layer, Tensor::V),
                ..base
            },
        });
    }

    fn queries(&self, layer: u32, out: u64, n: u32, base: u32) -> Op {
        let p = &self.plan;
        Op::Queries {
            launch: Launch {
                grid: (n, p.q_heads, p.batch),
                block: (p.head_dim.min(128), 1, 1),
            },
            out,
            key: self.key(layer, Tensor::Q),
            n: n as i32,
            base: base as i32,
            heads: p.q_heads as i32,
        }
    }

    /// The prefill: write the prompt into every layer's cache, then prefill attention for the
    /// last `prefill_queries` prompt positions.
    pub fn prefill(&mut self, a: &Addrs) -> Result<Vec<Op>, WorkloadError> {
        let p = self.plan.clone();
        if self.len != 0 {
            return Err(WorkloadError::Invalid(
                "prefill after decoding: reset first".into(),
            ));
        }
        let mut ops = Vec::new();
        self.grow(p.prompt, &mut ops);
        let shared = self.tables.shared_tokens().min(p.prompt) as i32;
        // Sequences other than the first skip the shared blocks: sequence 0 writes them once.
        let starts = (0..p.batch)
            .map(|b| if b == 0 { 0 } else { shared })
            .collect();
        ops.push(self.positions(starts, p.prompt));
        for layer in 0..p.layers {
            self.cache_writes(a, layer, p.prompt, &mut ops);
        }
        let n_pre = p.prefill_queries;
        if n_pre > 0 {
            for layer in 0..p.layers {
                ops.push(self.queries(layer, a.q_prefill, n_pre, p.prompt - n_pre));
                let l = &a.layers[layer as usize];
                ops.push(Op::Prefill {
                    launch: launch::prefill_launch(n_pre, p.group(), p.kv_heads, p.batch),
                    params: PrefillParams {
                        q: a.q_prefill,
                        k_codes: l.k_codes,
                        k_scales: l.k_scales,
                        v_codes: l.v_codes,
                        v_scales: l.v_scales,
                        block_table: a.table,
                        out: a.out_prefill[usize::from(layer != 0)],
                        table_stride: self.tables.table_stride() as i32,
                        block_size: self.tables.block_size() as i32,
                        kv_heads: p.kv_heads as i32,
                        q_heads: p.q_heads as i32,
                        q_start: (p.prompt - n_pre) as i32,
                        n_q: n_pre as i32,
                        sm_scale_log2: params::sm_scale_log2(p.head_dim),
                        pad: 0,
                    },
                });
            }
        }
        self.len = p.prompt;
        Ok(ops)
    }

    /// One decode step: every layer writes the new token (`none`: rewrites all tokens),
    /// generates its query, attends (split-K) and merges.
    pub fn decode(&mut self, a: &Addrs, sm_count: u32) -> Result<Vec<Op>, WorkloadError> {
        let p = self.plan.clone();
        if self.len >= p.max_len() {
            return Err(WorkloadError::Invalid(format!(
                "decode step {} beyond prompt + gen = {}: reset first",
                self.len + 1 - p.prompt,
                p.max_len()
            )));
        }
        let mut ops = Vec::new();
        let pos = self.len;
        let new_len = pos + 1;
        self.grow(new_len, &mut ops);
        let (start, rows) = match p.mode {
            CacheMode::Recompute => (0, new_len),
            _ => (pos as i32, 1),
        };
        ops.push(self.positions(vec![start; p.batch as usize], new_len));
        let split = launch::decode_split(p.decode_base_blocks(), new_len, sm_count);
        for layer in 0..p.layers {
            self.cache_writes(a, layer, rows, &mut ops);
            ops.push(self.queries(layer, a.q_decode, 1, pos));
            let l = &a.layers[layer as usize];
            let params = DecodeParams {
                q: a.q_decode,
                k_codes: l.k_codes,
                k_scales: l.k_scales,
                v_codes: l.v_codes,
                v_scales: l.v_scales,
                block_table: a.table,
                seq_lens: a.positions + 8 * p.batch as u64,
                part_acc: a.part_acc,
                part_ml: a.part_ml,
                out: l.out_decode,
                table_stride: self.tables.table_stride() as i32,
                block_size: self.tables.block_size() as i32,
                kv_heads: p.kv_heads as i32,
                q_heads: p.q_heads as i32,
                splits: split.splits as i32,
                tokens_per_split: split.tokens_per_split as i32,
                sm_scale_log2: params::sm_scale_log2(p.head_dim),
                pad: 0,
            };
            ops.push(Op::Decode {
                function: launch::decode_function(launch::heads_per_block(p.group())),
                launch: launch::decode_launch(p.kv_heads, p.group(), p.batch, split.splits),
                params,
            });
            ops.push(Op::Merge {
                launch: launch::merge_launch(p.q_heads, p.batch, p.head_dim),
                params,
            });
        }
        self.len = new_len;
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Backend, OffloadConfig, Strategy, WorkloadKind, WorkloadSpec};
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};

    fn schedule(strategy: Strategy, shared_prefix: u32) -> (Schedule, Addrs) {
        let spec = WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cuda,
            shape: ModelShape::uniform("t", 2, 8, 2, 128, 1024, 4096),
            strategy,
            k_dtype: CacheDtype::new(DtypeKind::F16),
            v_dtype: CacheDtype::new(DtypeKind::F16),
            batch: 3,
            prompt: 40,
            gen: 3,
            block_size: 16,
            shared_prefix,
            window: None,
            mlp: false,
            seed: 5,
            offload: OffloadConfig::default(),
        };
        let addrs = Addrs {
            positions: 0x1000,
            layers: vec![LayerAddrs::default(); 2],
            ..Addrs::default()
        };
        (Schedule::new(CudaPlan::new(&spec).unwrap(), 5), addrs)
    }

    #[test]
    fn shared_prefix_blocks_are_written_by_the_first_sequence_only() {
        let (mut s, a) = schedule(Strategy::Paged, 35);
        let ops = s.prefill(&a).unwrap();
        // floor(35 / 16) = 2 shared blocks = 32 tokens: sequences 1 and 2 start at 32.
        let starts: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Positions(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(starts, vec![vec![0, 32, 32, 40, 40, 40, 40, 40, 40]]);
    }

    #[test]
    fn decode_writes_one_row_or_recomputes_all() {
        for (strategy, start, rows) in [(Strategy::Paged, 40, 1), (Strategy::None, 0, 41)] {
            let (mut s, a) = schedule(strategy, 0);
            s.prefill(&a).unwrap();
            let ops = s.decode(&a, 132).unwrap();
            assert!(ops.contains(&Op::Positions(vec![
                start, start, start, 41, 41, 41, 41, 41, 41
            ])));
            let writes: Vec<_> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::CacheWrite { launch, params, .. } => Some((launch.grid.0, params.end_pos)),
                    _ => None,
                })
                .collect();
            // K and V of 2 layers; end positions follow the 3 starts (4 bytes each).
            assert_eq!(writes.len(), 4);
            assert!(writes
                .iter()
                .all(|w| *w == ((rows as u32).div_ceil(4), 0x1000 + 12)));
        }
    }

    #[test]
    fn decode_attends_over_the_lengths_after_the_starts_and_ends() {
        let (mut s, a) = schedule(Strategy::Contiguous, 0);
        s.prefill(&a).unwrap();
        let ops = s.decode(&a, 132).unwrap();
        let decode = ops.iter().find_map(|op| match op {
            Op::Decode {
                params, function, ..
            } => Some((*params, *function)),
            _ => None,
        });
        let (params, function) = decode.unwrap();
        assert_eq!(params.seq_lens, 0x1000 + 24);
        assert_eq!(function, "decode_attention_g4");
        assert!(params.splits * params.tokens_per_split >= 41);
    }

    #[test]
    fn a_paged_table_is_uploaded_only_when_it_grows() {
        let (mut s, a) = schedule(Strategy::Paged, 0);
        // Same max_len (43), a prompt of exactly two blocks.
        s.plan.prompt = 32;
        s.plan.gen = 11;
        s.plan.prefill_queries = 32;
        let tables = |ops: &[Op]| ops.iter().filter(|op| matches!(op, Op::Table(_))).count();
        assert_eq!(tables(&s.prefill(&a).unwrap()), 1);
        // Token 33 needs a third block (tokens 32..47): uploaded; 34 fits.
        assert_eq!(tables(&s.decode(&a, 132).unwrap()), 1);
        assert_eq!(tables(&s.decode(&a, 132).unwrap()), 0);
    }

    #[test]
    fn steps_past_the_end_or_out_of_order_are_errors() {
        let (mut s, a) = schedule(Strategy::Paged, 0);
        s.prefill(&a).unwrap();
        assert!(s.prefill(&a).is_err());
        for _ in 0..3 {
            s.decode(&a, 132).unwrap();
        }
        assert!(s
            .decode(&a, 132)
            .unwrap_err()
            .to_string()
            .contains("reset first"));
        s.reset();
        assert!(s.prefill(&a).is_ok());
    }
}
