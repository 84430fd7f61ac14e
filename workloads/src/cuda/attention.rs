//! The attention workload on the GPU: per layer, write the new tokens' K/V into the cache
//! (quantize-on-write) and attend: tiled prefill for the prompt's last queries, split-K decode
//! for each generated token. Inputs are synthetic streams generated on the device, so caches
//! of any length fill without host memory; the host recomputes them for verification.
//!
//! What to launch is decided by `schedule.rs` (plain data, also run by the emulator test);
//! this file allocates the buffers, executes the ops with cudarc and times them with events.

use super::check::{self, LayerOutputs};
use super::device::{CudaResultExt, Gpu, Kernels};
use super::launch::Launch;
use super::plan::CudaPlan;
use super::schedule::{Addrs, BufferSizes, LayerAddrs, Op, Schedule};
use crate::spec::WorkloadSpec;
use crate::{MemoryUse, Verification, Workload, WorkloadError};
use cudarc::driver::{CudaEvent, CudaFunction, CudaSlice, DeviceRepr, PushKernelArg};

/// One layer's cache planes and decode output.
struct LayerBuffers {
    k_codes: CudaSlice<u8>,
    k_scales: CudaSlice<u32>,
    v_codes: CudaSlice<u8>,
    v_scales: CudaSlice<u32>,
    out_decode: CudaSlice<f32>,
}

/// A built CUDA attention workload.
pub struct CudaAttention {
    spec: WorkloadSpec,
    schedule: Schedule,
    gpu: Gpu,
    kernels: Kernels,
    table: CudaSlice<i32>,
    positions: CudaSlice<i32>,
    layers: Vec<LayerBuffers>,
    q_decode: CudaSlice<f32>,
    part_acc: CudaSlice<f32>,
    part_ml: CudaSlice<f32>,
    q_prefill: CudaSlice<f32>,
    /// Prefill output of layer 0 and of the other layers (the last one written last).
    out_prefill: [CudaSlice<f32>; 2],
    addrs: Addrs,
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
        let schedule = Schedule::new(plan, spec.seed);
        let plan = &schedule.plan;
        let packed = schedule.tables.packed();
        let n = BufferSizes::new(plan, packed.len(), sms);
        let s = gpu.stream.clone();
        let f32s = |len: usize| s.alloc_zeros::<f32>(len).cuda("buffer allocation");
        let layers = (0..plan.layers)
            .map(|_| {
                Ok(LayerBuffers {
                    k_codes: s.alloc_zeros::<u8>(n.k_codes).cuda("cache allocation")?,
                    k_scales: s.alloc_zeros::<u32>(n.k_scales).cuda("cache allocation")?,
                    v_codes: s.alloc_zeros::<u8>(n.v_codes).cuda("cache allocation")?,
                    v_scales: s.alloc_zeros::<u32>(n.v_scales).cuda("cache allocation")?,
                    out_decode: f32s(n.out_decode)?,
                })
            })
            .collect::<Result<Vec<_>, WorkloadError>>()?;
        let mut w = CudaAttention {
            spec: spec.clone(),
            table: s.clone_htod(&packed).cuda("block table upload")?,
            positions: s
                .alloc_zeros::<i32>(n.positions)
                .cuda("buffer allocation")?,
            layers,
            q_decode: f32s(n.q_decode)?,
            part_acc: f32s(n.part_acc)?,
            part_ml: f32s(n.part_ml)?,
            q_prefill: f32s(n.q_prefill)?,
            out_prefill: [f32s(n.out_prefill)?, f32s(n.out_prefill)?],
            addrs: Addrs::default(),
            last_read_bytes: 0,
            start: gpu.timing_event()?,
            stop: gpu.timing_event()?,
            timed: false,
            device_bytes: 0,
            kernels,
            schedule,
            gpu,
        };
        w.addrs = w.addresses();
        w.gpu.sync()?;
        let (free_after, _) = w.gpu.mem_info()?;
        w.device_bytes = free_before.saturating_sub(free_after);
        Ok(w)
    }

    fn addresses(&self) -> Addrs {
        let g = &self.gpu;
        Addrs {
            table: g.ptr(&self.table),
            positions: g.ptr(&self.positions),
            q_decode: g.ptr(&self.q_decode),
            part_acc: g.ptr(&self.part_acc),
            part_ml: g.ptr(&self.part_ml),
            q_prefill: g.ptr(&self.q_prefill),
            out_prefill: [g.ptr(&self.out_prefill[0]), g.ptr(&self.out_prefill[1])],
            layers: self
                .layers
                .iter()
                .map(|l| LayerAddrs {
                    k_codes: g.ptr(&l.k_codes),
                    k_scales: g.ptr(&l.k_scales),
                    v_codes: g.ptr(&l.v_codes),
                    v_scales: g.ptr(&l.v_scales),
                    out_decode: g.ptr(&l.out_decode),
                })
                .collect(),
        }
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
        // every address in it is a live buffer sized by BufferSizes for this plan.
        unsafe { builder.launch(l.config()) }.cuda("kernel launch")?;
        Ok(())
    }

    /// Execute the ops of one phase on the stream (asynchronously, but for the small uploads).
    fn execute(&mut self, ops: Vec<Op>) -> Result<(), WorkloadError> {
        for op in ops {
            match op {
                Op::Positions(host) => self
                    .gpu
                    .stream
                    .memcpy_htod(&host, &mut self.positions)
                    .cuda("position upload")?,
                Op::Table(host) => self
                    .gpu
                    .stream
                    .memcpy_htod(&host, &mut self.table)
                    .cuda("block table upload")?,
                Op::CacheWrite {
                    value,
                    launch,
                    params,
                } => {
                    let f = if value {
                        &self.kernels.cache_write_v
                    } else {
                        &self.kernels.cache_write_k
                    };
                    self.launch(f, launch, &params)?
                }
                Op::Queries {
                    launch,
                    out,
                    key,
                    n,
                    base,
                    heads,
                } => {
                    let mut builder = self.gpu.stream.launch_builder(&self.kernels.synthetic_rows);
                    builder.arg(&out).arg(&key).arg(&n).arg(&base).arg(&heads);
                    // SAFETY: `out` holds batch × n × heads × head_dim f32 (BufferSizes).
                    unsafe { builder.launch(launch.config()) }.cuda("kernel launch")?;
                }
                Op::Prefill { launch, params } => {
                    self.launch(&self.kernels.prefill, launch, &params)?
                }
                Op::Decode {
                    function,
                    launch,
                    params,
                } => {
                    let heads = match function {
                        "decode_attention_g4" => 4,
                        "decode_attention_g2" => 2,
                        _ => 1,
                    };
                    self.launch(self.kernels.decode(heads), launch, &params)?
                }
                Op::Merge { launch, params } => {
                    self.launch(&self.kernels.decode_merge, launch, &params)?
                }
            }
        }
        Ok(())
    }

    fn timed_phase(&mut self, ops: Vec<Op>) -> Result<(), WorkloadError> {
        self.start.record(&self.gpu.stream).cuda("event record")?;
        self.execute(ops)?;
        self.stop.record(&self.gpu.stream).cuda("event record")?;
        self.timed = true;
        Ok(())
    }

    /// Read back the checked layers' outputs.
    fn outputs(&self) -> Result<Vec<LayerOutputs>, WorkloadError> {
        let plan = &self.schedule.plan;
        check::checked(plan.layers)
            .into_iter()
            .map(|layer| {
                let s = &self.gpu.stream;
                Ok(LayerOutputs {
                    layer,
                    decode: s
                        .clone_dtoh(&self.layers[layer as usize].out_decode)
                        .cuda("output download")?,
                    prefill: s
                        .clone_dtoh(&self.out_prefill[usize::from(layer != 0)])
                        .cuda("output download")?,
                })
            })
            .collect()
    }
}

impl Workload for CudaAttention {
    fn spec(&self) -> &WorkloadSpec {
        &self.spec
    }

    fn verify(&mut self) -> Result<Verification, WorkloadError> {
        self.reset()?;
        for l in &mut self.layers {
            self.gpu.poison(&mut l.out_decode)?;
        }
        for buf in self.out_prefill.iter_mut() {
            self.gpu.poison(buf)?;
        }
        self.gpu.poison(&mut self.part_acc)?;
        self.gpu.poison(&mut self.part_ml)?;
        self.prefill()?;
        for _ in 0..self.schedule.plan.gen {
            self.decode_step()?;
        }
        self.gpu.sync()?;
        let outputs = self.outputs()?;
        let v = check::verify_outputs(
            &self.schedule.plan,
            self.schedule.seed,
            self.schedule.len,
            &outputs,
        );
        self.reset()?;
        Ok(v)
    }

    fn reset(&mut self) -> Result<(), WorkloadError> {
        let op = self.schedule.reset();
        self.execute(vec![op])?;
        self.last_read_bytes = 0;
        self.timed = false;
        self.gpu.sync()
    }

    fn prefill(&mut self) -> Result<(), WorkloadError> {
        let ops = self.schedule.prefill(&self.addrs)?;
        self.timed_phase(ops)
    }

    fn decode_step(&mut self) -> Result<(), WorkloadError> {
        let ops = self.schedule.decode(&self.addrs, self.gpu.info.sm_count)?;
        self.timed_phase(ops)?;
        self.last_read_bytes = decode_bytes_read(&self.schedule.plan, self.schedule.len);
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), WorkloadError> {
        self.gpu.sync()
    }

    fn memory(&self) -> MemoryUse {
        self.schedule
            .plan
            .memory(self.schedule.len, self.schedule.tables.blocks_held())
    }

    fn kv_bytes_read_last_step(&self) -> u64 {
        self.last_read_bytes
    }

    fn prefill_flops(&self) -> f64 {
        prefill_flops(&self.schedule.plan)
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
    use kvbench_planner::prefill::causal_pairs;
    use kvbench_planner::span::Span;
    let first = (p.prompt - p.prefill_queries) as u64;
    // Σ over positions first .. prompt − 1 of (position + 1) keys: the planner's causal
    // pairs of the whole prompt less those of the skipped first positions.
    let keys = causal_pairs(p.prompt as u64, Span::All) - causal_pairs(first, Span::All);
    4.0 * p.head_dim as f64 * keys * (p.q_heads * p.batch * p.layers) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::reference::{self, Tensor};
    use crate::spec::{Backend, OffloadConfig, Strategy, WorkloadKind};
    use kvbench_planner::{DtypeKind, ModelShape};

    fn plan(prompt: u32, gen: u32, kind: DtypeKind) -> CudaPlan {
        CudaPlan::new(&WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cuda,
            shape: ModelShape::uniform("t", 2, 32, 8, 128, 4096, 14336),
            strategy: Strategy::Paged,
            k_dtype: crate::cuda::codec::kernel_layout(kind),
            v_dtype: crate::cuda::codec::kernel_layout(kind),
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
                k_dtype: crate::cuda::codec::kernel_layout(kind),
                v_dtype: crate::cuda::codec::kernel_layout(kind),
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
            let codes = w.gpu.stream.clone_dtoh(&w.layers[0].k_codes).unwrap();
            let scales = w.gpu.stream.clone_dtoh(&w.layers[0].k_scales).unwrap();
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
