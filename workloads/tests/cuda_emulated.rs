//! The CUDA kernels run on the CPU through a small emulator (src/cuda/emu, built with g++):
//! the same kernel sources NVRTC compiles, launched with the same parameter structs, launch
//! configurations and block tables as the GPU path, then checked against the host codec twins
//! (bit for bit) and the f64 reference (to f32 rounding). Skips, saying so, without g++.

use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::cuda::block_table::BlockTables;
use kvbench_workloads::cuda::check::{self, LayerOutputs};
use kvbench_workloads::cuda::codec::{kernel_layout, synthetic_index, synthetic_value, GpuCodec};
use kvbench_workloads::cuda::launch;
use kvbench_workloads::cuda::params::{self, CacheWriteParams, DecodeParams, PrefillParams};
use kvbench_workloads::cuda::plan::CudaPlan;
use kvbench_workloads::cuda::reference::{self, ErrorSum, Tensor};
use kvbench_workloads::cuda::schedule::{Addrs, BufferSizes, LayerAddrs, Op, Schedule};
use kvbench_workloads::{Backend, OffloadConfig, Strategy, WorkloadKind, WorkloadSpec};
use std::ffi::{c_void, CString};
use std::io::Write;
use std::path::{Path, PathBuf};

#[repr(C)]
#[derive(Clone, Copy)]
struct Dim3 {
    x: u32,
    y: u32,
    z: u32,
}

type Entry<P> = unsafe extern "C" fn(Dim3, Dim3, *const P);
type SynthEntry = unsafe extern "C" fn(Dim3, Dim3, *mut f32, u64, i32, i32, i32);

/// A compiled emulator library for one kernel configuration.
struct Emu {
    handle: *mut c_void,
}

impl Emu {
    /// Build (per test `tag`, so tests running in parallel never share a library's state).
    fn build(tag: &str, head_dim: u32, k: GpuCodec, v: GpuCodec) -> Option<Emu> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda/emu");
        let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let lib = out_dir.join(format!(
            "libkvbench_emu_{tag}_{head_dim}_{}_{}.so",
            k.id(),
            v.id()
        ));
        let mut cmd = std::process::Command::new("g++");
        cmd.args(["-std=c++17", "-O1", "-shared", "-fPIC", "-Wall", "-Werror"])
            // Hidden symbols, no STB_GNU_UNIQUE: libraries of different configurations loaded
            // together must not share the emulator's state.
            .args([
                "-fvisibility=hidden",
                "-fno-gnu-unique",
                "-U_FORTIFY_SOURCE",
            ])
            .arg("-Wno-unknown-pragmas")
            .arg(format!("-DHEAD_DIM={head_dim}"))
            .arg(format!("-DK_CODEC={}", k.id()))
            .arg(format!("-DV_CODEC={}", v.id()));
        for f in [
            "emu_cache_write.cpp",
            "emu_decode_attention.cpp",
            "emu_prefill_attention.cpp",
        ] {
            cmd.arg(src.join(f));
        }
        cmd.arg("-o").arg(&lib);
        match cmd.output() {
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "SKIPPED emulated kernels: no g++ ({e})");
                return None;
            }
            Ok(o) if !o.status.success() => panic!(
                "the emulator failed to compile:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => {}
        }
        let path = CString::new(lib.to_str().unwrap()).unwrap();
        // SAFETY: loading the library just built; it stays loaded for the test's life.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null(), "dlopen {lib:?} failed");
        Some(Emu { handle })
    }

    fn sym(&self, name: &str) -> *mut c_void {
        let c = CString::new(format!("emu_{name}")).unwrap();
        // SAFETY: looking up a symbol of a loaded library.
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        assert!(!p.is_null(), "emu_{name} missing");
        p
    }

    fn run<P>(&self, kernel: &str, l: launch::Launch, p: &P) {
        // SAFETY: every emu_* entry point of this kind has the Entry<P> signature with the
        // kernel's own parameter struct, which P mirrors (params.rs).
        unsafe {
            let f: Entry<P> = std::mem::transmute(self.sym(kernel));
            f(dim(l.grid), dim(l.block), p);
        }
    }

    /// `synthetic_rows` with an explicit launch (as schedule.rs plans it).
    fn synthetic_rows_raw(
        &self,
        l: launch::Launch,
        out: u64,
        key: u64,
        n: i32,
        base: i32,
        heads: i32,
    ) {
        // SAFETY: emu_synthetic_rows has the SynthEntry signature; `out` is a live host buffer
        // sized by BufferSizes.
        unsafe {
            let f: SynthEntry = std::mem::transmute(self.sym("synthetic_rows"));
            f(
                dim(l.grid),
                dim(l.block),
                out as *mut f32,
                key,
                n,
                base,
                heads,
            );
        }
    }

    // Mirrors the kernel's parameter list one to one.
    #[allow(clippy::too_many_arguments)]
    fn synthetic_rows(
        &self,
        out: &mut [f32],
        key: u64,
        n: u32,
        base: u32,
        heads: u32,
        batch: u32,
        hd: u32,
    ) {
        // SAFETY: emu_synthetic_rows has the SynthEntry signature; out holds
        // batch × n × heads × hd floats.
        unsafe {
            let f: SynthEntry = std::mem::transmute(self.sym("synthetic_rows"));
            let grid = Dim3 {
                x: n,
                y: heads,
                z: batch,
            };
            f(
                grid,
                Dim3 {
                    x: hd.min(128),
                    y: 1,
                    z: 1,
                },
                out.as_mut_ptr(),
                key,
                n as i32,
                base as i32,
                heads as i32,
            );
        }
    }
}

fn dim(d: (u32, u32, u32)) -> Dim3 {
    Dim3 {
        x: d.0,
        y: d.1,
        z: d.2,
    }
}

fn addr<T>(v: &[T]) -> u64 {
    v.as_ptr() as u64
}

/// One emulated run: write a prompt into a (paged or contiguous) cache, prefill attention over
/// its last queries, one decode step with forced split-K; check everything.
struct Case {
    head_dim: u32,
    q_heads: u32,
    kv_heads: u32,
    batch: u32,
    prompt: u32,
    /// Some(block size) for paged, None for contiguous.
    paged: Option<u32>,
    shared_prefix: u32,
    k: GpuCodec,
    v: GpuCodec,
    /// Tokens per split in the decode step (small, to force several splits).
    split: u32,
}

impl Case {
    fn run(&self, emu: &Emu) {
        let (hd, qh, kvh, batch) = (self.head_dim, self.q_heads, self.kv_heads, self.batch);
        let group = qh / kvh;
        let max_len = self.prompt + 1;
        let seed = 11;
        let mut tables = match self.paged {
            Some(bs) => BlockTables::paged(batch, bs, max_len, self.shared_prefix),
            None => BlockTables::contiguous(batch, max_len),
        };
        let pool_blocks = match self.paged {
            Some(bs) => BlockTables::pool_blocks_needed(batch, bs, max_len, self.shared_prefix),
            None => batch,
        };
        let rows = (pool_blocks * kvh * tables.block_size()) as usize;
        let hdu = hd as usize;
        let mut k_codes = vec![0u8; rows * self.k.row_bytes(hdu)];
        let mut k_scales = vec![0u32; (rows * self.k.scale_words(hdu)).max(1)];
        let mut v_codes = vec![0u8; rows * self.v.row_bytes(hdu)];
        let mut v_scales = vec![0u32; (rows * self.v.scale_words(hdu)).max(1)];
        let kkey = reference::stream_key(seed, 0, Tensor::K);
        let vkey = reference::stream_key(seed, 0, Tensor::V);
        let qkey = reference::stream_key(seed, 0, Tensor::Q);

        // Prefill: write the prompt (sequence 0 writes the shared blocks once).
        tables.grow_to(self.prompt);
        let mut table = tables.packed();
        let shared = tables.shared_tokens() as i32;
        let starts: Vec<i32> = (0..batch)
            .map(|b| if b == 0 { 0 } else { shared })
            .collect();
        let mut ends = vec![self.prompt as i32; batch as usize];
        let write = |codes: &mut Vec<u8>,
                     scales: &mut Vec<u32>,
                     key: u64,
                     kernel: &str,
                     table: &[i32],
                     starts: &[i32],
                     ends: &[i32],
                     n: u32,
                     tables: &BlockTables| {
            let p = CacheWriteParams {
                src: 0,
                codes: codes.as_mut_ptr() as u64,
                scales: scales.as_mut_ptr() as u64,
                block_table: addr(table),
                start_pos: addr(starts),
                end_pos: addr(ends),
                synth_key: key,
                table_stride: tables.table_stride() as i32,
                block_size: tables.block_size() as i32,
                kv_heads: kvh as i32,
                src_len: 0,
                src_base: 0,
                shared_prefix: self.shared_prefix as i32,
            };
            emu.run(kernel, launch::cache_write_launch(n, kvh, batch), &p);
        };
        write(
            &mut k_codes,
            &mut k_scales,
            kkey,
            "cache_write_k",
            &table,
            &starts,
            &ends,
            self.prompt,
            &tables,
        );
        write(
            &mut v_codes,
            &mut v_scales,
            vkey,
            "cache_write_v",
            &table,
            &starts,
            &ends,
            self.prompt,
            &tables,
        );

        // Every stored row equals the host codec twin's bytes.
        for b in 0..batch {
            for h in 0..kvh {
                for pos in 0..self.prompt {
                    let (blk, slot) = tables.locate(b, pos).unwrap();
                    let r = ((blk * kvh + h) * tables.block_size() + slot) as usize;
                    let sb = if pos < self.shared_prefix { 0 } else { b };
                    for (codec, key, codes, scales) in [
                        (self.k, kkey, &k_codes, &k_scales),
                        (self.v, vkey, &v_codes, &v_scales),
                    ] {
                        let x: Vec<f32> = (0..hd)
                            .map(|d| synthetic_value(key, synthetic_index(sb, pos, h, d)))
                            .collect();
                        let (want_c, want_s) = codec.encode_row(&x);
                        let (rb, sw) = (codec.row_bytes(hdu), codec.scale_words(hdu));
                        assert_eq!(
                            &codes[r * rb..(r + 1) * rb],
                            &want_c[..],
                            "{codec:?} codes b{b} h{h} pos{pos}"
                        );
                        assert_eq!(
                            &scales[r * sw..(r + 1) * sw],
                            &want_s[..],
                            "{codec:?} scales b{b} h{h} pos{pos}"
                        );
                    }
                }
            }
        }

        // Prefill attention over the last n_pre prompt positions.
        let n_pre = self.prompt.min(20);
        let q_start = self.prompt - n_pre;
        let mut q_pre = vec![f32::NAN; (batch * n_pre * qh * hd) as usize];
        emu.synthetic_rows(&mut q_pre, qkey, n_pre, q_start, qh, batch, hd);
        let mut out_pre = vec![f32::NAN; q_pre.len()];
        let pp = PrefillParams {
            q: addr(&q_pre),
            k_codes: addr(&k_codes),
            k_scales: addr(&k_scales),
            v_codes: addr(&v_codes),
            v_scales: addr(&v_scales),
            block_table: addr(&table),
            out: out_pre.as_mut_ptr() as u64,
            table_stride: tables.table_stride() as i32,
            block_size: tables.block_size() as i32,
            kv_heads: kvh as i32,
            q_heads: qh as i32,
            q_start: q_start as i32,
            n_q: n_pre as i32,
            sm_scale_log2: params::sm_scale_log2(hd),
            pad: 0,
        };
        emu.run(
            "prefill_attention",
            launch::prefill_launch(n_pre, group, kvh, batch),
            &pp,
        );

        // One decode step at position `prompt`, split into `split`-token pieces.
        tables.grow_to(max_len);
        table = tables.packed();
        let starts_dec = vec![self.prompt as i32; batch as usize];
        ends = vec![max_len as i32; batch as usize];
        write(
            &mut k_codes,
            &mut k_scales,
            kkey,
            "cache_write_k",
            &table,
            &starts_dec,
            &ends,
            1,
            &tables,
        );
        write(
            &mut v_codes,
            &mut v_scales,
            vkey,
            "cache_write_v",
            &table,
            &starts_dec,
            &ends,
            1,
            &tables,
        );
        let mut q_dec = vec![f32::NAN; (batch * qh * hd) as usize];
        emu.synthetic_rows(&mut q_dec, qkey, 1, self.prompt, qh, batch, hd);
        let splits = max_len.div_ceil(self.split);
        let mut part_acc = vec![f32::NAN; (batch * qh * splits * hd) as usize];
        let mut part_ml = vec![f32::NAN; (batch * qh * splits * 2) as usize];
        let mut out_dec = vec![f32::NAN; q_dec.len()];
        let seq_lens = vec![max_len as i32; batch as usize];
        let dp = DecodeParams {
            q: addr(&q_dec),
            k_codes: addr(&k_codes),
            k_scales: addr(&k_scales),
            v_codes: addr(&v_codes),
            v_scales: addr(&v_scales),
            block_table: addr(&table),
            seq_lens: addr(&seq_lens),
            part_acc: part_acc.as_mut_ptr() as u64,
            part_ml: part_ml.as_mut_ptr() as u64,
            out: out_dec.as_mut_ptr() as u64,
            table_stride: tables.table_stride() as i32,
            block_size: tables.block_size() as i32,
            kv_heads: kvh as i32,
            q_heads: qh as i32,
            splits: splits as i32,
            tokens_per_split: self.split as i32,
            sm_scale_log2: params::sm_scale_log2(hd),
            pad: 0,
        };
        let hpb = launch::heads_per_block(group);
        emu.run(
            launch::decode_function(hpb),
            launch::decode_launch(kvh, group, batch, splits),
            &dp,
        );
        emu.run("decode_merge", launch::merge_launch(qh, batch, hd), &dp);

        // Compare with the f64 reference over the stored values (kernel error only) and over
        // the exact values (what the dtype costs).
        let mut stored = ErrorSum::default();
        let mut exact = ErrorSum::default();
        for b in 0..batch {
            for h in 0..kvh {
                let (ke, ks) =
                    reference::cache_rows(kkey, self.k, b, h, max_len, hd, self.shared_prefix);
                let (ve, vs) =
                    reference::cache_rows(vkey, self.v, b, h, max_len, hd, self.shared_prefix);
                for g in 0..group {
                    let head = h * group + g;
                    for i in 0..n_pre {
                        let pos = q_start + i;
                        let q = reference::query(qkey, b, pos, head, hd);
                        let at = (((b * n_pre + i) * qh + head) * hd) as usize;
                        let got = &out_pre[at..at + hdu];
                        stored.add(got, &reference::attend(&q, &ks, &vs, pos as usize + 1));
                        exact.add(got, &reference::attend(&q, &ke, &ve, pos as usize + 1));
                    }
                    let q = reference::query(qkey, b, self.prompt, head, hd);
                    let at = ((b * qh + head) * hd) as usize;
                    let got = &out_dec[at..at + hdu];
                    stored.add(got, &reference::attend(&q, &ks, &vs, max_len as usize));
                    exact.add(got, &reference::attend(&q, &ke, &ve, max_len as usize));
                }
            }
        }
        let what = format!(
            "{:?}/{:?} hd {hd} {qh}/{kvh} batch {batch} prompt {} paged {:?} prefix {}",
            self.k, self.v, self.prompt, self.paged, self.shared_prefix
        );
        assert_eq!(stored.non_finite, 0, "{what}: unwritten outputs");
        assert!(
            stored.rel_error() <= reference::KERNEL_BOUND,
            "{what}: kernel error {:.3e}",
            stored.rel_error()
        );
        let bound = reference::dtype_bound(self.k).max(reference::dtype_bound(self.v));
        assert!(
            exact.rel_error() <= bound,
            "{what}: dtype error {:.3e} > {bound}",
            exact.rel_error()
        );
    }
}

fn case(k: GpuCodec, paged: Option<u32>) -> Case {
    Case {
        head_dim: 128,
        q_heads: 8,
        kv_heads: 2,
        batch: 2,
        prompt: 45,
        paged,
        shared_prefix: 0,
        k,
        v: k,
        split: 16,
    }
}

#[test]
fn every_codec_paged_and_contiguous_matches_the_reference() {
    for codec in GpuCodec::ALL {
        let Some(emu) = Emu::build("codecs", 128, codec, codec) else {
            return;
        };
        case(codec, Some(16)).run(&emu);
        case(codec, None).run(&emu);
    }
}

#[test]
fn gqa_groups_head_dims_prefixes_and_mixed_codecs_match_the_reference() {
    let Some(emu) = Emu::build("shapes", 128, GpuCodec::F16, GpuCodec::F16) else {
        return;
    };
    // group 8 = two chunks of 4; group 2 (g2); MHA (g1); MQA; a shared prefix; one token.
    for (q, kv) in [(16, 2), (4, 2), (3, 3), (4, 1)] {
        Case {
            q_heads: q,
            kv_heads: kv,
            ..case(GpuCodec::F16, Some(16))
        }
        .run(&emu);
    }
    Case {
        batch: 3,
        shared_prefix: 37,
        ..case(GpuCodec::F16, Some(16))
    }
    .run(&emu);
    Case {
        prompt: 1,
        ..case(GpuCodec::F16, Some(16))
    }
    .run(&emu);
    Case {
        prompt: 32,
        split: 1000,
        ..case(GpuCodec::F16, Some(16))
    }
    .run(&emu);
    let Some(emu) = Emu::build("shapes", 64, GpuCodec::Int4, GpuCodec::F16) else {
        return;
    };
    Case {
        head_dim: 64,
        k: GpuCodec::Int4,
        v: GpuCodec::F16,
        ..case(GpuCodec::F16, Some(8))
    }
    .run(&emu);
    let Some(emu) = Emu::build("shapes", 256, GpuCodec::Fp8E4m3, GpuCodec::Int8) else {
        return;
    };
    Case {
        head_dim: 256,
        k: GpuCodec::Fp8E4m3,
        v: GpuCodec::Int8,
        prompt: 30,
        ..case(GpuCodec::F16, None)
    }
    .run(&emu);
}

/// One layer's cache planes on the host: K codes, K scales, V codes, V scales.
type HostCache = (Vec<u8>, Vec<u32>, Vec<u8>, Vec<u32>);

/// Host memory standing in for a workload's device buffers (sizes from BufferSizes).
struct HostBuffers {
    table: Vec<i32>,
    positions: Vec<i32>,
    caches: Vec<HostCache>,
    out_decode: Vec<Vec<f32>>,
    q_decode: Vec<f32>,
    part_acc: Vec<f32>,
    part_ml: Vec<f32>,
    q_prefill: Vec<f32>,
    out_prefill: [Vec<f32>; 2],
}

impl HostBuffers {
    fn new(s: &Schedule, sm_count: u32) -> Self {
        let n = BufferSizes::new(&s.plan, s.tables.packed().len(), sm_count);
        let nan = |len| vec![f32::NAN; len];
        HostBuffers {
            table: vec![-1; n.table],
            positions: vec![0; n.positions],
            caches: (0..s.plan.layers)
                .map(|_| {
                    (
                        vec![0; n.k_codes],
                        vec![0; n.k_scales],
                        vec![0; n.v_codes],
                        vec![0; n.v_scales],
                    )
                })
                .collect(),
            out_decode: (0..s.plan.layers).map(|_| nan(n.out_decode)).collect(),
            q_decode: nan(n.q_decode),
            part_acc: nan(n.part_acc),
            part_ml: nan(n.part_ml),
            q_prefill: nan(n.q_prefill),
            out_prefill: [nan(n.out_prefill), nan(n.out_prefill)],
        }
    }

    fn addrs(&self) -> Addrs {
        Addrs {
            table: addr(&self.table),
            positions: addr(&self.positions),
            q_decode: addr(&self.q_decode),
            part_acc: addr(&self.part_acc),
            part_ml: addr(&self.part_ml),
            q_prefill: addr(&self.q_prefill),
            out_prefill: [addr(&self.out_prefill[0]), addr(&self.out_prefill[1])],
            layers: self
                .caches
                .iter()
                .zip(&self.out_decode)
                .map(|((kc, ks, vc, vs), out)| LayerAddrs {
                    k_codes: addr(kc),
                    k_scales: addr(ks),
                    v_codes: addr(vc),
                    v_scales: addr(vs),
                    out_decode: addr(out),
                })
                .collect(),
        }
    }

    /// Execute a phase's ops as attention.rs does, on the emulator.
    fn execute(&mut self, emu: &Emu, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Positions(v) => self.positions[..v.len()].copy_from_slice(&v),
                Op::Table(v) => self.table[..v.len()].copy_from_slice(&v),
                Op::CacheWrite {
                    value,
                    launch,
                    params,
                } => emu.run(
                    if value {
                        "cache_write_v"
                    } else {
                        "cache_write_k"
                    },
                    launch,
                    &params,
                ),
                Op::Queries {
                    launch,
                    out,
                    key,
                    n,
                    base,
                    heads,
                } => emu.synthetic_rows_raw(launch, out, key, n, base, heads),
                Op::Prefill { launch, params } => emu.run("prefill_attention", launch, &params),
                Op::Decode {
                    function,
                    launch,
                    params,
                } => emu.run(function, launch, &params),
                Op::Merge { launch, params } => emu.run("decode_merge", launch, &params),
            }
        }
    }
}

/// The whole attention workload — every op schedule.rs plans for prefill and each decode
/// step, over several layers — executed on the emulator and verified by check.rs exactly as
/// `CudaAttention::verify` does on a GPU.
#[test]
fn whole_workloads_verify_for_every_strategy() {
    let Some(emu) = Emu::build("workload", 64, GpuCodec::Int8, GpuCodec::Fp8E4m3) else {
        return;
    };
    for (strategy, shared_prefix) in [
        (Strategy::None, 0),
        (Strategy::Contiguous, 0),
        (Strategy::Paged, 37),
    ] {
        let spec = WorkloadSpec {
            kind: WorkloadKind::Attention,
            backend: Backend::Cuda,
            shape: ModelShape::uniform("emu", 2, 8, 2, 64, 512, 2048),
            strategy,
            k_dtype: CacheDtype::new(DtypeKind::Int8),
            v_dtype: kernel_layout(DtypeKind::Fp8E4m3),
            batch: 2,
            prompt: 262,
            gen: 2,
            block_size: 16,
            shared_prefix,
            window: None,
            mlp: false,
            seed: 21,
            offload: OffloadConfig::default(),
        };
        // 8 "SMs" give 3 splits at 263 and 264 tokens (at most one per 128).
        let sm_count = 8;
        let mut s = Schedule::new(CudaPlan::new(&spec).unwrap(), spec.seed);
        let mut bufs = HostBuffers::new(&s, sm_count);
        let a = bufs.addrs();
        let reset = s.reset();
        bufs.execute(&emu, vec![reset]);
        let ops = s.prefill(&a).unwrap();
        bufs.execute(&emu, ops);
        for _ in 0..spec.gen {
            let ops = s.decode(&a, sm_count).unwrap();
            assert!(ops
                .iter()
                .any(|op| matches!(op, Op::Decode { params, .. } if params.splits == 3)));
            bufs.execute(&emu, ops);
        }
        let outputs: Vec<LayerOutputs> = check::checked(s.plan.layers)
            .into_iter()
            .map(|layer| LayerOutputs {
                layer,
                decode: bufs.out_decode[layer as usize].clone(),
                prefill: bufs.out_prefill[usize::from(layer != 0)].clone(),
            })
            .collect();
        let v = check::verify_outputs(&s.plan, s.seed, s.len, &outputs);
        assert!(v.passed, "{strategy:?}: {}", v.detail);
        assert!(v.rel_error > 0.0 && v.cosine > 0.99, "{strategy:?}: {v:?}");
    }
}

/// The cache write's other source: f32 rows from memory ([batch][src_len][kv_heads][head_dim],
/// row 0 at position `src_base`), as a decoder's K/V projections would hand them over.
#[test]
fn cache_write_from_rows_in_memory_matches_the_codec() {
    for codec in [GpuCodec::Int4, GpuCodec::Bf16] {
        let Some(emu) = Emu::build("src", 64, codec, codec) else {
            return;
        };
        let (batch, kvh, hd, max_len) = (2u32, 3u32, 64usize, 20u32);
        let (base, n) = (5u32, 7u32);
        let tables = BlockTables::contiguous(batch, max_len);
        let rows = (batch * kvh * max_len) as usize;
        let mut codes = vec![0u8; rows * codec.row_bytes(hd)];
        let mut scales = vec![0u32; (rows * codec.scale_words(hd)).max(1)];
        let src: Vec<f32> = (0..(batch * n * kvh) as u64 * hd as u64)
            .map(|i| synthetic_value(99, i) * 4.0)
            .collect();
        let table = tables.packed();
        let starts = vec![base as i32; batch as usize];
        let ends = vec![(base + n) as i32; batch as usize];
        let p = CacheWriteParams {
            src: addr(&src),
            codes: codes.as_mut_ptr() as u64,
            scales: scales.as_mut_ptr() as u64,
            block_table: addr(&table),
            start_pos: addr(&starts),
            end_pos: addr(&ends),
            synth_key: 0,
            table_stride: tables.table_stride() as i32,
            block_size: tables.block_size() as i32,
            kv_heads: kvh as i32,
            src_len: n as i32,
            src_base: base as i32,
            shared_prefix: 0,
        };
        emu.run(
            "cache_write_k",
            launch::cache_write_launch(n, kvh, batch),
            &p,
        );
        let (rb, sw) = (codec.row_bytes(hd), codec.scale_words(hd));
        for b in 0..batch {
            for h in 0..kvh {
                for pos in 0..max_len {
                    let r = ((b * kvh + h) * max_len + pos) as usize;
                    let stored = &codes[r * rb..(r + 1) * rb];
                    if pos < base || pos >= base + n {
                        assert!(
                            stored.iter().all(|c| *c == 0),
                            "row {pos} outside the write"
                        );
                        continue;
                    }
                    let at = (((b * n + pos - base) * kvh + h) as usize) * hd;
                    let (want_c, want_s) = codec.encode_row(&src[at..at + hd]);
                    assert_eq!(stored, &want_c[..], "{codec:?} b{b} h{h} pos{pos}");
                    assert_eq!(&scales[r * sw..(r + 1) * sw], &want_s[..]);
                }
            }
        }
    }
}
