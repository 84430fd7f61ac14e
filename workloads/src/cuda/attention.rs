//! The attention workload on the GPU: per layer, write the new tokens' K/V into the cache
//! (quantize-on-write) and attend: tiled prefill for the prompt's last queries, split-K decode
//! for each generated token. Inputs are synthetic streams generated on the device, so caches
//! of any length fill without host memory; the host recomputes them for verification.

use super::block_table::BlockTables;
use super::codec::GpuCodec;
use super::device::{CudaResultExt, Gpu, Kernels};
use super::launch::{self, Launch};
use super::params::{self, CacheWriteParams, DecodeParams, PrefillParams};
use super::plan::{CacheMode, CudaPlan};
use super::reference::{self, ErrorSum, Tensor};
use crate::spec::WorkloadSpec;
use crate::{MemoryUse, Verification, Workload, WorkloadError};
use cudarc::driver::{CudaEvent, CudaFunction, CudaSlice, DeviceRepr, PushKernelArg};
use rayon::prelude::*;

/// One layer's cache: codes and scales planes for K and V.
struct LayerCache {
    k_codes: CudaSlice<u8>,
    k_scales: CudaSlice<u32>,
    v_codes: CudaSlice<u8>,
    v_scales: CudaSlice<u32>,
}

/// A built CUDA attention workload.
pub struct CudaAttention {
    spec: WorkloadSpec,
    plan: CudaPlan,
    gpu: Gpu,
    kernels: Kernels,
    tables: BlockTables,
    table_dev: CudaSlice<i32>,
    caches: Vec<LayerCache>,
    /// i32 [start_pos; batch] ++ [end_pos; batch] ++ [seq_len; batch].
    positions: CudaSlice<i32>,
    q_decode: CudaSlice<f32>,
    /// Decode output of every layer, [batch][q_heads][head_dim] each.
    out_decode: Vec<CudaSlice<f32>>,
    part_acc: CudaSlice<f32>,
    part_ml: CudaSlice<f32>,
    q_prefill: CudaSlice<f32>,
    /// Prefill output of layer 0 and of the other layers (the last one written last).
    out_prefill: [CudaSlice<f32>; 2],
    len: u32,
    last_read_bytes: u64,
    start: CudaEvent,
    stop: CudaEvent,
    timed: bool,
    device_bytes: u64,
}

impl CudaAttention {
    /// Allocate the caches and buffers of `spec` on `gpu` (the plan already validated it).
    pub fn new(spec: &WorkloadSpec, plan: CudaPlan, gpu: Gpu) -> Result<Self, WorkloadError> {
        let sms = gpu.info.sm_count;
        let (free_before, _) = gpu.mem_info()?;
        let need = plan.device_bytes_needed(sms);
        if need > free_before / 100 * 95 {
            return Err(WorkloadError::Invalid(format!(
                "this workload needs {:.2} GiB of device memory and {:.2} GiB are free: lower \
                 --batch, --layers, --prompt or --gen",
                need as f64 / (1u64 << 30) as f64,
                free_before as f64 / (1u64 << 30) as f64
            )));
        }
        let kernels = gpu.kernels(&plan.kernel)?;
        let tables = match plan.mode {
            CacheMode::Paged => BlockTables::paged(
                plan.batch,
                plan.block_size,
                plan.max_len(),
                plan.shared_prefix,
            ),
            _ => BlockTables::contiguous(plan.batch, plan.max_len()),
        };
        let s = &gpu.stream;
        let hd = plan.head_dim as usize;
        let rows = plan.pool_rows() as usize;
        let (kc, vc) = (plan.kernel.k_codec, plan.kernel.v_codec);
        let alloc_u8 = |n: usize| s.alloc_zeros::<u8>(n.max(1)).cuda("cache allocation");
        let alloc_u32 = |n: usize| s.alloc_zeros::<u32>(n.max(1)).cuda("scale allocation");
        let alloc_f32 = |n: usize| s.alloc_zeros::<f32>(n.max(1)).cuda("buffer allocation");
        let caches = (0..plan.layers)
            .map(|_| {
                Ok(LayerCache {
                    k_codes: alloc_u8(rows * kc.row_bytes(hd))?,
                    k_scales: alloc_u32(rows * kc.scale_words(hd))?,
                    v_codes: alloc_u8(rows * vc.row_bytes(hd))?,
                    v_scales: alloc_u32(rows * vc.scale_words(hd))?,
                })
            })
            .collect::<Result<Vec<_>, WorkloadError>>()?;
        let (b, qh) = (plan.batch as usize, plan.q_heads as usize);
        let splits = plan.max_splits(sms) as usize;
        let n_pre = plan.prefill_queries as usize;
        let table_dev = s.clone_htod(&tables.packed()).cuda("block table upload")?;
        let mut w = CudaAttention {
            spec: spec.clone(),
            kernels,
            table_dev,
            caches,
            positions: s.alloc_zeros::<i32>(3 * b).cuda("positions")?,
            q_decode: alloc_f32(b * qh * hd)?,
            out_decode: (0..plan.layers)
                .map(|_| alloc_f32(b * qh * hd))
                .collect::<Result<_, _>>()?,
            part_acc: alloc_f32(b * qh * splits * hd)?,
            part_ml: alloc_f32(b * qh * splits * 2)?,
            q_prefill: alloc_f32(b * n_pre * qh * hd)?,
            out_prefill: [
                alloc_f32(b * n_pre * qh * hd)?,
                alloc_f32(b * n_pre * qh * hd)?,
            ],
            len: 0,
            last_read_bytes: 0,
            start: gpu.timing_event()?,
            stop: gpu.timing_event()?,
            timed: false,
            device_bytes: 0,
            tables,
            plan,
            gpu,
        };
        w.gpu.sync()?;
        let (free_after, _) = w.gpu.mem_info()?;
        w.device_bytes = free_before.saturating_sub(free_after);
        Ok(w)
    }

    fn launch<P: DeviceRepr>(
        &self,
        f: &CudaFunction,
        l: Launch,
        p: &P,
    ) -> Result<(), WorkloadError> {
        let mut builder = self.gpu.stream.launch_builder(f);
        builder.arg(p);
        // SAFETY: the parameter struct mirrors the kernel's (params.rs tests, static_asserts);
        // every pointer in it is a live allocation sized by the plan for this launch.
        unsafe { builder.launch(l.config()) }.cuda("kernel launch")?;
        Ok(())
    }

    /// Upload per-sequence start/end positions and attended lengths.
    fn set_positions(
        &mut self,
        starts: &[i32],
        end: u32,
        seq_len: u32,
    ) -> Result<(), WorkloadError> {
        let b = self.plan.batch as usize;
        let mut host = Vec::with_capacity(3 * b);
        host.extend_from_slice(starts);
        host.extend(std::iter::repeat_n(end as i32, b));
        host.extend(std::iter::repeat_n(seq_len as i32, b));
        self.gpu
            .stream
            .memcpy_htod(&host, &mut self.positions)
            .cuda("position upload")
    }

    /// Grow the block tables to `len` tokens and upload them if they changed.
    fn grow_tables(&mut self, len: u32) -> Result<(), WorkloadError> {
        if self.tables.grow_to(len) {
            let packed = self.tables.packed();
            self.gpu
                .stream
                .memcpy_htod(&packed, &mut self.table_dev)
                .cuda("block table upload")?;
        }
        Ok(())
    }

    fn key(&self, layer: u32, t: Tensor) -> u64 {
        reference::stream_key(self.spec.seed, layer, t)
    }

    /// Write rows [start_pos[b], end) of every sequence into `layer`'s cache, K and V.
    fn write_cache(&self, layer: u32, max_rows: u32) -> Result<(), WorkloadError> {
        let c = &self.caches[layer as usize];
        let b = self.plan.batch as u64;
        let pos = self.gpu.ptr(&self.positions);
        let base = CacheWriteParams {
            src: 0,
            codes: 0,
            scales: 0,
            block_table: self.gpu.ptr(&self.table_dev),
            start_pos: pos,
            end_pos: pos + 4 * b,
            synth_key: 0,
            table_stride: self.tables.table_stride() as i32,
            block_size: self.tables.block_size() as i32,
            kv_heads: self.plan.kv_heads as i32,
            src_len: 0,
            src_base: 0,
            shared_prefix: self.plan.shared_prefix as i32,
        };
        let l = launch::cache_write_launch(max_rows, self.plan.kv_heads, self.plan.batch);
        let k = CacheWriteParams {
            codes: self.gpu.ptr(&c.k_codes),
            scales: self.gpu.ptr(&c.k_scales),
            synth_key: self.key(layer, Tensor::K),
            ..base
        };
        self.launch(&self.kernels.cache_write_k, l, &k)?;
        let v = CacheWriteParams {
            codes: self.gpu.ptr(&c.v_codes),
            scales: self.gpu.ptr(&c.v_scales),
            synth_key: self.key(layer, Tensor::V),
            ..base
        };
        self.launch(&self.kernels.cache_write_v, l, &v)
    }

    /// Generate the queries of `n` positions from `base` into `out` ([batch][n][q_heads][hd]).
    fn queries(
        &self,
        layer: u32,
        out: &CudaSlice<f32>,
        n: u32,
        base: u32,
    ) -> Result<(), WorkloadError> {
        let l = Launch {
            grid: (n, self.plan.q_heads, self.plan.batch),
            block: (self.plan.head_dim.min(128), 1, 1),
        };
        let mut builder = self.gpu.stream.launch_builder(&self.kernels.synthetic_rows);
        let (ptr, key) = (self.gpu.ptr(out), self.key(layer, Tensor::Q));
        let (n, base, heads) = (n as i32, base as i32, self.plan.q_heads as i32);
        builder.arg(&ptr).arg(&key).arg(&n).arg(&base).arg(&heads);
        // SAFETY: out holds batch × n × q_heads × head_dim f32 (sized by the plan).
        unsafe { builder.launch(l.config()) }.cuda("kernel launch")?;
        Ok(())
    }

    fn begin_phase(&mut self) -> Result<(), WorkloadError> {
        self.start.record(&self.gpu.stream).cuda("event record")
    }

    fn end_phase(&mut self) -> Result<(), WorkloadError> {
        self.stop.record(&self.gpu.stream).cuda("event record")?;
        self.timed = true;
        Ok(())
    }

    /// The cache planes of `layer` as kernel addresses (k codes, k scales, v codes, v scales).
    fn cache_ptrs(&self, layer: u32) -> (u64, u64, u64, u64) {
        let c = &self.caches[layer as usize];
        (
            self.gpu.ptr(&c.k_codes),
            self.gpu.ptr(&c.k_scales),
            self.gpu.ptr(&c.v_codes),
            self.gpu.ptr(&c.v_scales),
        )
    }

    /// Check sampled outputs against the f64 references; every output element must be finite.
    fn check(&self) -> Result<Verification, WorkloadError> {
        let p = &self.plan;
        let (hd, qh, n_pre) = (
            p.head_dim as usize,
            p.q_heads as usize,
            p.prefill_queries as usize,
        );
        let layers: Vec<u32> = dedup(vec![0, p.layers - 1]);
        let seqs: Vec<u32> = dedup(vec![0, p.batch - 1]);
        let mut exact = ErrorSum::default();
        let mut stored = ErrorSum::default();
        for &layer in &layers {
            let dec = self
                .gpu
                .stream
                .clone_dtoh(&self.out_decode[layer as usize])
                .cuda("output download")?;
            let pre_buf = &self.out_prefill[if layer == 0 { 0 } else { 1 }];
            let pre = self
                .gpu
                .stream
                .clone_dtoh(pre_buf)
                .cuda("output download")?;
            // Every element of both outputs must have been written (they were poisoned).
            if p.gen > 0 {
                count_non_finite(&dec, &mut exact);
            }
            if n_pre > 0 {
                count_non_finite(&pre, &mut exact);
            }
            for &b in &seqs {
                let rows = self.reference_rows(layer, b, self.len);
                // Prefill: first, middle and last of the computed queries.
                let first = p.prompt - p.prefill_queries;
                let picks = if n_pre > 0 {
                    dedup(vec![0, n_pre / 2, n_pre - 1])
                } else {
                    vec![]
                };
                let mut jobs: Vec<(u32, usize, Vec<f32>)> = Vec::new();
                for i in picks {
                    for h in 0..qh {
                        let at = ((b as usize * n_pre + i) * qh + h) * hd;
                        jobs.push((first + i as u32, h, pre[at..at + hd].to_vec()));
                    }
                }
                if p.gen > 0 {
                    for h in 0..qh {
                        let at = (b as usize * qh + h) * hd;
                        jobs.push((self.len - 1, h, dec[at..at + hd].to_vec()));
                    }
                }
                let qkey = self.key(layer, Tensor::Q);
                let group = p.group() as usize;
                let results: Vec<(Vec<f32>, Vec<f64>, Vec<f64>)> = jobs
                    .into_par_iter()
                    .map(|(pos, h, got)| {
                        let q = reference::query(qkey, b, pos, h as u32, p.head_dim);
                        let (ke, ks, ve, vs) = &rows[h / group];
                        let n = pos as usize + 1;
                        (got, attend_rows(&q, ke, ve, n), attend_rows(&q, ks, vs, n))
                    })
                    .collect();
                for (got, want_exact, want_stored) in results {
                    exact.add(&got, &want_exact);
                    stored.add(&got, &want_stored);
                }
            }
        }
        let bound =
            reference::dtype_bound(p.kernel.k_codec).max(reference::dtype_bound(p.kernel.v_codec));
        let (e, k) = (exact.rel_error(), stored.rel_error());
        let mut detail = Vec::new();
        if exact.non_finite > 0 {
            detail.push(format!(
                "{} output elements were never written (NaN)",
                exact.non_finite
            ));
        }
        if k.is_nan() || k > reference::KERNEL_BOUND {
            detail.push(format!(
                "rel_error {k:.3e} against the reference over the stored (dequantized) values \
                 exceeds {:.0e}: a kernel bug",
                reference::KERNEL_BOUND
            ));
        }
        if e.is_nan() || e > bound {
            detail.push(format!(
                "rel_error {e:.3e} exceeds the dtype bound {bound:.0e}"
            ));
        }
        Ok(Verification {
            passed: detail.is_empty(),
            rel_error: e,
            cosine: exact.cosine(),
            bound,
            detail: detail.join("; "),
        })
    }

    /// (exact K, stored K, exact V, stored V) as f64 rows for each KV head of sequence `b`.
    #[allow(clippy::type_complexity)]
    fn reference_rows(&self, layer: u32, b: u32, len: u32) -> Vec<(Rows, Rows, Rows, Rows)> {
        let p = &self.plan;
        let (kk, vk) = (self.key(layer, Tensor::K), self.key(layer, Tensor::V));
        (0..p.kv_heads)
            .into_par_iter()
            .map(|kvh| {
                let (ke, ks) = reference::cache_rows(
                    kk,
                    p.kernel.k_codec,
                    b,
                    kvh,
                    len,
                    p.head_dim,
                    p.shared_prefix,
                );
                let (ve, vs) = reference::cache_rows(
                    vk,
                    p.kernel.v_codec,
                    b,
                    kvh,
                    len,
                    p.head_dim,
                    p.shared_prefix,
                );
                let hd = p.head_dim as usize;
                (
                    to_rows(&ke, hd),
                    to_rows(&ks, hd),
                    to_rows(&ve, hd),
                    to_rows(&vs, hd),
                )
            })
            .collect()
    }
}

type Rows = Vec<Vec<f64>>;

fn to_rows(x: &[f32], hd: usize) -> Rows {
    x.chunks(hd)
        .map(|r| r.iter().map(|v| *v as f64).collect())
        .collect()
}

/// The workloads crate's f64 reference over the first `n` rows.
fn attend_rows(q: &[f32], k: &Rows, v: &Rows, n: usize) -> Vec<f64> {
    let q: Vec<f64> = q.iter().map(|x| *x as f64).collect();
    crate::reference::attend(&q, &k[..n], &v[..n])
}

fn count_non_finite(x: &[f32], sum: &mut ErrorSum) {
    sum.non_finite += x.iter().filter(|v| !v.is_finite()).count() as u64;
}

fn dedup<T: PartialEq>(mut v: Vec<T>) -> Vec<T> {
    v.dedup();
    v
}

impl Workload for CudaAttention {
    fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    fn verify(&mut self) -> Result<Verification, WorkloadError> {
        self.reset()?;
        for buf in self
            .out_decode
            .iter_mut()
            .chain(self.out_prefill.iter_mut())
        {
            self.gpu.poison(buf)?;
        }
        self.gpu.poison(&mut self.part_acc)?;
        self.gpu.poison(&mut self.part_ml)?;
        self.prefill()?;
        for _ in 0..self.plan.gen {
            self.decode_step()?;
        }
        self.gpu.sync()?;
        let result = self.check();
        self.reset()?;
        result
    }

    fn reset(&mut self) -> Result<(), WorkloadError> {
        self.tables.reset();
        let packed = self.tables.packed();
        self.gpu
            .stream
            .memcpy_htod(&packed, &mut self.table_dev)
            .cuda("block table upload")?;
        self.len = 0;
        self.last_read_bytes = 0;
        self.timed = false;
        self.gpu.sync()
    }

    fn prefill(&mut self) -> Result<(), WorkloadError> {
        let p = self.plan.clone();
        if self.len != 0 {
            return Err(WorkloadError::Invalid(
                "prefill after decoding: reset first".into(),
            ));
        }
        self.begin_phase()?;
        self.grow_tables(p.prompt)?;
        let shared = self.tables.shared_tokens().min(p.prompt) as i32;
        // Sequences other than the first skip the shared blocks: sequence 0 writes them once.
        let starts: Vec<i32> = (0..p.batch)
            .map(|b| if b == 0 { 0 } else { shared })
            .collect();
        self.set_positions(&starts, p.prompt, p.prompt)?;
        for layer in 0..p.layers {
            self.write_cache(layer, p.prompt)?;
        }
        let n_pre = p.prefill_queries;
        if n_pre > 0 {
            for layer in 0..p.layers {
                self.queries(layer, &self.q_prefill, n_pre, p.prompt - n_pre)?;
                let (kc, ks, vc, vs) = self.cache_ptrs(layer);
                let out = &self.out_prefill[if layer == 0 { 0 } else { 1 }];
                let params = PrefillParams {
                    q: self.gpu.ptr(&self.q_prefill),
                    k_codes: kc,
                    k_scales: ks,
                    v_codes: vc,
                    v_scales: vs,
                    block_table: self.gpu.ptr(&self.table_dev),
                    out: self.gpu.ptr(out),
                    table_stride: self.tables.table_stride() as i32,
                    block_size: self.tables.block_size() as i32,
                    kv_heads: p.kv_heads as i32,
                    q_heads: p.q_heads as i32,
                    q_start: (p.prompt - n_pre) as i32,
                    n_q: n_pre as i32,
                    sm_scale_log2: params::sm_scale_log2(p.head_dim),
                    pad: 0,
                };
                let l = launch::prefill_launch(n_pre, p.group(), p.kv_heads, p.batch);
                self.launch(&self.kernels.prefill, l, &params)?;
            }
        }
        self.len = p.prompt;
        self.end_phase()
    }

    fn decode_step(&mut self) -> Result<(), WorkloadError> {
        let p = self.plan.clone();
        if self.len >= p.max_len() {
            return Err(WorkloadError::Invalid(format!(
                "decode step {} beyond prompt + gen = {}: reset first",
                self.len + 1 - p.prompt,
                p.max_len()
            )));
        }
        self.begin_phase()?;
        let pos = self.len;
        let new_len = pos + 1;
        self.grow_tables(new_len)?;
        // `none` recomputes every earlier token's K/V each step; caches write only the new one.
        let (start, rows) = match p.mode {
            CacheMode::Recompute => (0, new_len),
            _ => (pos as i32, 1),
        };
        self.set_positions(&vec![start; p.batch as usize], new_len, new_len)?;
        let hpb = launch::heads_per_block(p.group());
        let split = launch::decode_split(p.decode_base_blocks(), new_len, self.gpu.info.sm_count);
        for layer in 0..p.layers {
            self.write_cache(layer, rows)?;
            self.queries(layer, &self.q_decode, 1, pos)?;
            let (kc, ks, vc, vs) = self.cache_ptrs(layer);
            let params = DecodeParams {
                q: self.gpu.ptr(&self.q_decode),
                k_codes: kc,
                k_scales: ks,
                v_codes: vc,
                v_scales: vs,
                block_table: self.gpu.ptr(&self.table_dev),
                seq_lens: self.gpu.ptr(&self.positions) + 8 * p.batch as u64,
                part_acc: self.gpu.ptr(&self.part_acc),
                part_ml: self.gpu.ptr(&self.part_ml),
                out: self.gpu.ptr(&self.out_decode[layer as usize]),
                table_stride: self.tables.table_stride() as i32,
                block_size: self.tables.block_size() as i32,
                kv_heads: p.kv_heads as i32,
                q_heads: p.q_heads as i32,
                splits: split.splits as i32,
                tokens_per_split: split.tokens_per_split as i32,
                sm_scale_log2: params::sm_scale_log2(p.head_dim),
                pad: 0,
            };
            let l = launch::decode_launch(p.kv_heads, p.group(), p.batch, split.splits);
            self.launch(self.kernels.decode(hpb), l, &params)?;
            let m = launch::merge_launch(p.q_heads, p.batch, p.head_dim);
            self.launch(&self.kernels.decode_merge, m, &params)?;
        }
        self.len = new_len;
        self.last_read_bytes = decode_bytes_read(&p, new_len);
        self.end_phase()
    }

    fn synchronize(&mut self) -> Result<(), WorkloadError> {
        self.gpu.sync()
    }

    fn memory(&self) -> MemoryUse {
        self.plan.memory(self.len, self.tables.blocks_held())
    }

    fn kv_bytes_read_last_step(&self) -> u64 {
        self.last_read_bytes
    }

    fn prefill_flops(&self) -> f64 {
        prefill_flops(&self.plan)
    }

    fn device_time_ms(&self) -> Option<f64> {
        if !self.timed {
            return None;
        }
        self.start.elapsed_ms(&self.stop).ok().map(|ms| ms as f64)
    }

    fn device_bytes(&self) -> Option<u64> {
        Some(self.device_bytes)
    }

    fn device_label(&self) -> Option<String> {
        Some(self.gpu.info.label())
    }
}

/// K/V bytes (codes and scales) one decode step reads: every layer, sequence and KV head
/// over `len` tokens.
pub fn decode_bytes_read(p: &CudaPlan, len: u32) -> u64 {
    p.layers as u64 * p.batch as u64 * p.kv_heads as u64 * len as u64 * p.row_pair_bytes()
}

/// Attention FLOPs of the prefill: each computed query (positions prompt − n .. prompt)
/// attends to every earlier token: 2·d for the score and 2·d for the value sum per key.
pub fn prefill_flops(p: &CudaPlan) -> f64 {
    let n = p.prefill_queries as f64;
    let first = (p.prompt - p.prefill_queries) as f64;
    // Σ over positions first .. first + n − 1 of (position + 1) keys.
    let keys = n * (first + 1.0) + n * (n - 1.0) / 2.0;
    4.0 * p.head_dim as f64 * keys * (p.q_heads * p.batch * p.layers) as f64
}

/// The codec a plan stores keys in (for reports).
pub fn key_codec(p: &CudaPlan) -> GpuCodec {
    p.kernel.k_codec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Backend, OffloadConfig, Strategy, WorkloadKind};
    use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};

    fn plan(prompt: u32, gen: u32, kind: DtypeKind) -> CudaPlan {
        CudaPlan::new(&WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cuda,
            shape: ModelShape::uniform("t", 2, 32, 8, 128, 4096, 14336),
            strategy: Strategy::Paged,
            k_dtype: CacheDtype::new(kind),
            v_dtype: CacheDtype::new(kind),
            batch: 4,
            prompt,
            gen,
            block_size: 16,
            shared_prefix: 0,
            window: None,
            mlp: false,
            seed: 1,
            offload: OffloadConfig::default(),
        })
        .unwrap()
    }

    /// On a GPU: the bytes quantize-on-write stores equal the host codec twin's, bit for bit.
    #[test]
    fn gpu_cache_bytes_equal_the_host_codec() {
        let Ok(_) = super::super::device_info() else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED gpu_cache_bytes_equal_the_host_codec: no GPU"
            );
            return;
        };
        for kind in [
            DtypeKind::F16,
            DtypeKind::Bf16,
            DtypeKind::Int8,
            DtypeKind::Int4,
            DtypeKind::Fp8E4m3,
            DtypeKind::Fp8E5m2,
        ] {
            let mut spec = WorkloadSpec {
                kind: WorkloadKind::Attention,
                backend: Backend::Cuda,
                shape: ModelShape::uniform("t", 1, 8, 2, 128, 1024, 4096),
                strategy: Strategy::Contiguous,
                k_dtype: CacheDtype::new(kind),
                v_dtype: CacheDtype::new(kind),
                batch: 2,
                prompt: 40,
                gen: 0,
                block_size: 16,
                shared_prefix: 0,
                window: None,
                mlp: false,
                seed: 3,
                offload: OffloadConfig::default(),
            };
            spec.gen = 1;
            let plan = CudaPlan::new(&spec).unwrap();
            let gpu = super::super::device::Gpu::open().unwrap();
            let mut w = CudaAttention::new(&spec, plan.clone(), gpu).unwrap();
            w.prefill().unwrap();
            w.gpu.sync().unwrap();
            let codes = w.gpu.stream.clone_dtoh(&w.caches[0].k_codes).unwrap();
            let scales = w.gpu.stream.clone_dtoh(&w.caches[0].k_scales).unwrap();
            let codec = plan.kernel.k_codec;
            let (rb, sw) = (codec.row_bytes(128), codec.scale_words(128));
            let key = reference::stream_key(3, 0, Tensor::K);
            for b in 0..2u32 {
                for kvh in 0..2u32 {
                    for pos in 0..40u32 {
                        let x: Vec<f32> = (0..128)
                            .map(|d| {
                                super::super::codec::synthetic_value(
                                    key,
                                    super::super::codec::synthetic_index(b, pos, kvh, d),
                                )
                            })
                            .collect();
                        let (want_codes, want_scales) = codec.encode_row(&x);
                        let r = ((b * 2 + kvh) * plan.max_len() + pos) as usize;
                        assert_eq!(
                            &codes[r * rb..(r + 1) * rb],
                            &want_codes[..],
                            "{kind:?} b{b} h{kvh} p{pos}"
                        );
                        assert_eq!(
                            &scales[r * sw..(r + 1) * sw],
                            &want_scales[..],
                            "{kind:?} scales"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn decode_reads_every_row_of_every_layer() {
        // 2 layers × 4 seqs × 8 KV heads × 1000 tokens × (256 + 256) bytes of f16.
        assert_eq!(
            decode_bytes_read(&plan(999, 1, DtypeKind::F16), 1000),
            2 * 4 * 8 * 1000 * 512
        );
        // int8: 128 codes + a 4-byte scale per row, K and V.
        assert_eq!(
            decode_bytes_read(&plan(999, 1, DtypeKind::Int8), 1000),
            2 * 4 * 8 * 1000 * 264
        );
    }

    #[test]
    fn prefill_flops_count_the_causal_triangle() {
        // Prompt 3 (all queries computed): 1 + 2 + 3 = 6 keys per head.
        let p = plan(3, 0, DtypeKind::F16);
        assert_eq!(prefill_flops(&p), 4.0 * 128.0 * 6.0 * (32 * 4 * 2) as f64);
        // Prompt 1000: queries at 936..999 see 937..1000 keys: 64 × 968.5.
        let p = plan(1000, 0, DtypeKind::F16);
        assert_eq!(
            prefill_flops(&p),
            4.0 * 128.0 * 64.0 * 968.5 * (32 * 4 * 2) as f64
        );
    }
}
