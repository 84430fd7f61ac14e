//! Decode attention against this machine's roofline (issue 4's targets).
//!
//! Measures read bandwidth and f32 GEMM rate, then times decode steps of the attention
//! workload (32 query heads, head_dim 128, batch 1, every layer's cache distinct and in main
//! memory) and prints a markdown table: step time, achieved GB/s, the roofline floor
//! max(bytes / bandwidth, flops / GEMM rate) and the ratio to it.
//!
//! `cargo run --release -p kvbench-workloads --example decode_roofline [-- quick|full|prefill]`
//!
//! `KVBENCH_ISA=scalar|avx2|avx512` runs the kernels of a lower instruction set than the
//! detected one (to compare old and new kernels in one binary, alternating);
//! `KVBENCH_PREFETCH=on|off,on|off` sets the next-tile prefetch for contiguous and paged rows;
//! `KVBENCH_INTDOT=off` scores int8/int4 keys with the float kernels instead of the
//! integer-dot (VNNI) ones.
//! `layouts KV S DTYPE` steps a contiguous and a paged cache of the same shape alternately
//! (`KVB_ROUNDS`, `KVB_LAYERS`, `KVB_ONLY=contiguous|paged` adjust it, for profiling);
//! `KVB_BLOCK` sets the paged block size (16), `KVB_LLC` the cache size the kernels assume, and
//! `KVB_Q` / `KVB_D` the query heads and head_dim (32 × 128) of this table and of `layouts`;
//! `KVB_TT` the rows per tile of the paged walk that reads heads together (one block), or with
//! `KVB_TT=tune` in `layouts` the tile the runner's tuning chooses. `incache` is narrowed by
//! `KVB_DTYPES=int8,int4`, `KVB_G=1|2|4|8|16|32` and `KVB_ONLY`, and `KVB_REPS` sets its repetitions.

use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::attention::{AttentionWorkload, PrefillMode};
use kvbench_workloads::cpu::matmul::{matmul, Mat, Par};
use kvbench_workloads::cpu::Isa;
use kvbench_workloads::{Backend, OffloadConfig, Strategy, Workload, WorkloadKind, WorkloadSpec};
use rayon::prelude::*;
use std::time::Instant;

/// The number in environment variable `name`, or `default` when it is unset or not a number.
fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|x| x.parse().ok())
        .unwrap_or(default)
}

/// Query heads and head_dim of every decode shape here: 32 × 128 unless `KVB_Q` / `KVB_D`
/// say otherwise (e.g. 8 × 64, the default suite's mini models).
fn query_shape() -> (u32, u32) {
    (env_or("KVB_Q", 32), env_or("KVB_D", 128))
}

/// The detected instruction set, or a lower one named by `KVBENCH_ISA`.
fn isa() -> Isa {
    let best = Isa::detect();
    let want = match std::env::var("KVBENCH_ISA").as_deref() {
        Ok("scalar") => Isa::Scalar,
        Ok("avx2") => Isa::Avx2,
        _ => best,
    };
    *Isa::available()
        .iter()
        .find(|&&i| i == want)
        .unwrap_or(&best)
}

/// Best-of-5 all-thread read bandwidth over 512 MiB (bytes/s).
fn read_bandwidth() -> f64 {
    let n = 1usize << 27;
    let data: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 7) as f32).collect();
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let s: f32 = data
            .par_chunks(1 << 16)
            .map(|c| {
                let mut acc = [0.0f32; 16];
                for ch in c.chunks_exact(16) {
                    for (a, x) in acc.iter_mut().zip(ch) {
                        *a += x;
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        std::hint::black_box(s);
        best = best.max((n * 4) as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// Best-of-3 f32 GEMM rate at 2048³ (flop/s).
fn gemm_rate() -> f64 {
    let n = 2048;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t = Instant::now();
        matmul(
            n,
            n,
            n,
            Mat::rows(&a, n),
            Mat::rows(&b, n),
            &mut c,
            false,
            Par::Pool,
        );
        best = best.max(2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64());
    }
    best
}

fn spec(
    kv: u32,
    s: u32,
    layers: u32,
    dt: CacheDtype,
    strategy: Strategy,
    steps: u32,
) -> WorkloadSpec {
    let (hq, d) = query_shape();
    WorkloadSpec {
        kind: WorkloadKind::Attention,
        backend: Backend::Cpu,
        shape: ModelShape::uniform("roofline", layers, hq, kv, d, 4096, 14336),
        strategy,
        k_dtype: dt,
        v_dtype: dt,
        batch: 1,
        prompt: s,
        gen: steps,
        block_size: env_or("KVB_BLOCK", 16),
        shared_prefix: 0,
        window: None,
        mlp: false,
        seed: 1,
        offload: OffloadConfig::default(),
    }
}

/// Median decode step (s) and KV bytes it read.
fn time_decode(sp: &WorkloadSpec) -> (f64, u64) {
    let mut w = AttentionWorkload::new(sp, PrefillMode::Fill)
        .expect("valid spec")
        .with_isa(isa())
        .with_walk_rows(env_or("KVB_TT", 0) as usize);
    w.prefill().expect("fill");
    let mut times = Vec::new();
    for _ in 0..sp.gen {
        let t = Instant::now();
        w.decode_step().expect("step");
        times.push(t.elapsed().as_secs_f64());
    }
    // The first step warms page tables and caches: drop it.
    times.remove(0);
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], w.kv_bytes_read_last_step())
}

/// `layouts KV S DTYPE`: contiguous and paged built side by side and stepped alternately
/// (16 rounds), so that both see the same machine state: median ms per step of each and
/// their ratio.
/// The dtype of a command-line word (f16 when unknown).
fn dtype_named(word: &str) -> DtypeKind {
    match word {
        "f32" => DtypeKind::F32,
        "bf16" => DtypeKind::Bf16,
        "int8" => DtypeKind::Int8,
        "int4" => DtypeKind::Int4,
        "fp8" | "fp8_e4m3" => DtypeKind::Fp8E4m3,
        "nf4" => DtypeKind::Nf4,
        _ => DtypeKind::F16,
    }
}

fn layouts() {
    let args: Vec<String> = std::env::args().collect();
    let kv: u32 = args[2].parse().expect("kv heads");
    let s: u32 = args[3].parse().expect("context");
    let kind = dtype_named(&args[4]);
    let dt = CacheDtype::new(kind);
    let layer_bytes = 2 * kv as u64 * s as u64 * dt.quantized_bytes(1, query_shape().1);
    let layers = env_or(
        "KVB_LAYERS",
        (512u64 << 20).div_ceil(layer_bytes).clamp(1, 64) as u32,
    );
    let rounds = env_or("KVB_ROUNDS", 16);
    let only: Vec<Strategy> = match std::env::var("KVB_ONLY").as_deref() {
        Ok("paged") => vec![Strategy::Paged],
        Ok("contiguous") => vec![Strategy::Contiguous],
        _ => vec![Strategy::Contiguous, Strategy::Paged],
    };
    let mut ws: Vec<AttentionWorkload> = only
        .into_iter()
        .map(|st| {
            let mut w =
                AttentionWorkload::new(&spec(kv, s, layers, dt, st, rounds + 1), PrefillMode::Fill)
                    .expect("valid spec")
                    .with_isa(isa());
            w = match std::env::var("KVB_TT").as_deref() {
                Ok("tune") => {
                    if let Some(chose) = w.tune().expect("tune") {
                        println!("{st:?}: {chose}");
                    }
                    w
                }
                _ => w.with_walk_rows(env_or("KVB_TT", 0) as usize),
            };
            w.prefill().expect("fill");
            w.decode_step().expect("warm-up step");
            w
        })
        .collect();
    let mut times = vec![Vec::new(); ws.len()];
    for _ in 0..rounds {
        for (w, t) in ws.iter_mut().zip(&mut times) {
            let t0 = Instant::now();
            w.decode_step().expect("step");
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let med: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(|a, b| a.total_cmp(b));
            t[t.len() / 2]
        })
        .collect();
    if med.len() < 2 {
        println!("{:.2} ms", med[0]);
        return;
    }
    println!(
        "kv {kv} S {s} {} layers {layers}: contiguous {:.2} ms, paged {:.2} ms, paged/contiguous speed {:.1} %",
        kind.name(),
        med[0],
        med[1],
        100.0 * med[0] / med[1]
    );
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "quick".into());
    // `KVBENCH_PREFETCH=contiguous,paged` (each `on` or `off`): the next-tile prefetch per
    // layout, as `kvbench calibrate` would choose it; both on when unset.
    if let Ok(p) = std::env::var("KVBENCH_PREFETCH") {
        let on: Vec<bool> = p.split(',').map(|x| x.trim() == "on").collect();
        kvbench_workloads::cpu::set_tile_prefetch(on[0], *on.get(1).unwrap_or(&on[0]));
    }
    if std::env::var("KVBENCH_INTDOT").as_deref() == Ok("off") {
        kvbench_workloads::cpu::set_integer_dot(false);
    }
    // `KVB_LLC=BYTES`: the last-level cache the kernels assume (the runner passes the
    // calibration's); above the KV bytes, paged heads are read one by one instead of together.
    if let Ok(c) = std::env::var("KVB_LLC") {
        kvbench_workloads::cpu::set_cache_bytes(c.parse().expect("KVB_LLC is a byte count"));
    }
    let bw = read_bandwidth();
    let gemm = gemm_rate();
    println!(
        "threads {}, isa {}, read bandwidth {:.1} GB/s, f32 GEMM {:.1} GFLOP/s\n",
        rayon::current_num_threads(),
        isa().name(),
        bw / 1e9,
        gemm / 1e9
    );
    if mode == "prefill" {
        prefill(gemm);
        return;
    }
    if mode == "incache" {
        incache();
        return;
    }
    if mode == "kernel" {
        kernel();
        return;
    }
    if mode == "layouts" {
        layouts();
        return;
    }
    println!("| kv heads | S | dtype | strategy | layers | step ms | MB read | GB/s | read GB/s now | floor ms | × floor | tokens/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    use DtypeKind::*;
    // `one KV S DTYPE`: a single row (for profiling).
    let args: Vec<String> = std::env::args().collect();
    let one = |i: usize| args.get(i).cloned().unwrap_or_default();
    let (lens, kvs, dtypes): (Vec<u32>, Vec<u32>, Vec<DtypeKind>) = match mode.as_str() {
        "full" => (
            vec![4096, 32768],
            vec![32, 8, 1],
            vec![F32, F16, Bf16, Int8, Int4],
        ),
        "one" => (
            vec![one(3).parse().expect("S")],
            vec![one(2).parse().expect("kv heads")],
            vec![dtype_named(&one(4))],
        ),
        _ => (vec![4096], vec![32, 8, 1], vec![F32, F16, Bf16, Int8, Int4]),
    };
    for &s in &lens {
        for &kv in &kvs {
            for &kind in &dtypes {
                let dt = CacheDtype::new(kind);
                for strategy in [Strategy::Contiguous, Strategy::Paged] {
                    if strategy == Strategy::Paged && !matches!(kind, F16) {
                        continue;
                    }
                    // Enough layers that the step streams ≥ 512 MB: nothing served from cache.
                    let (hq, d) = query_shape();
                    let layer_bytes = 2 * kv as u64 * s as u64 * dt.quantized_bytes(1, d);
                    let layers = (512u64 << 20).div_ceil(layer_bytes).clamp(1, 64) as u32;
                    let sp = spec(kv, s, layers, dt, strategy, 8);
                    let (t, bytes) = time_decode(&sp);
                    // The machine is shared: measure the ceiling again right after each row.
                    let bw = read_bandwidth();
                    let flops = 4.0 * hq as f64 * s as f64 * d as f64 * layers as f64;
                    let floor = (bytes as f64 / bw).max(flops / gemm);
                    println!(
                        "| {kv} | {s} | {} | {:?} | {layers} | {:.2} | {:.0} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} |",
                        kind.name(),
                        strategy,
                        t * 1e3,
                        bytes as f64 / 1e6,
                        bytes as f64 / t / 1e9,
                        bw / 1e9,
                        floor * 1e3,
                        t / floor,
                        // tokens/s of a model with these layers (batch 1).
                        1.0 / t
                    );
                }
            }
        }
    }
}

/// Prefill attention at 2048 tokens (causal, GQA-8 and MHA): achieved GFLOP/s against the
/// GEMM rate, the detected ISA's kernels alternating with the AVX2 (`gemm` crate) path.
fn prefill(gemm: f64) {
    use kvbench_workloads::cpu::prefill::{prefill_attention_isa, prefill_flops, PrefillShape};
    // The probe is this crate's own matmul at 2048³, which the prefill kernels can outrun:
    // a ratio to it, not a percentage of the machine's limit (that is `kvbench calibrate`'s).
    println!("| kv heads | prompt | isa | prefill ms | GFLOP/s | × matmul probe |");
    println!("|---|---|---|---|---|---|");
    let t = 2048usize;
    for kv in [8usize, 32] {
        let shape = PrefillShape {
            q_heads: 32,
            kv_heads: kv,
            head_dim: 128,
            window: None,
        };
        let mut q = vec![0.0f32; t * 32 * 128];
        let mut k = vec![0.0f32; t * kv * 128];
        let mut v = vec![0.0f32; t * kv * 128];
        kvbench_workloads::synth::fill(
            kvbench_workloads::synth::stream(1, 1, 0, 0, 0),
            2.0,
            &mut q,
        );
        kvbench_workloads::synth::fill(
            kvbench_workloads::synth::stream(1, 2, 0, 0, 0),
            1.0,
            &mut k,
        );
        kvbench_workloads::synth::fill(
            kvbench_workloads::synth::stream(1, 3, 0, 0, 0),
            1.0,
            &mut v,
        );
        let mut out = vec![0.0f32; q.len()];
        let flops = prefill_flops(&shape, t);
        let isas: Vec<Isa> = [Isa::Avx2, isa()]
            .into_iter()
            .filter(|i| Isa::available().contains(i))
            .collect();
        let mut best = vec![f64::MAX; isas.len()];
        for _ in 0..3 {
            for (b, &i) in best.iter_mut().zip(&isas) {
                let t0 = Instant::now();
                prefill_attention_isa(&shape, t, &q, &k, &v, &mut out, i);
                *b = b.min(t0.elapsed().as_secs_f64());
            }
        }
        for (b, i) in best.iter().zip(&isas) {
            println!(
                "| {kv} | {t} | {} | {:.1} | {:.1} | {:.2} |",
                i.name(),
                b * 1e3,
                flops / b / 1e9,
                flops / b / gemm
            );
        }
    }
    println!(
        "\nCompare GFLOP/s with the GEMM limit `kvbench calibrate` measures (the best of the \
         `gemm` crate and a blocked AVX-512 kernel at 4096³); the probe here is only a ratio."
    );
}

/// Decode attention alone over a prepared f32/f16 cache, alternating with the bandwidth
/// probe so both see the same machine load.
fn kernel() {
    use kvbench_workloads::cache::{CacheGeometry, DenseCache, KvCache};
    use kvbench_workloads::cpu::decode::{decode_attention, DecodeJob, Together};
    let (s, d, hq) = (4096usize, 128usize, 32usize);
    for (kv, kind) in [
        (32usize, DtypeKind::F16),
        (32, DtypeKind::F32),
        (32, DtypeKind::Bf16),
        (8, DtypeKind::F32),
        (8, DtypeKind::F16),
        (1, DtypeKind::F16),
        (32, DtypeKind::Int8),
        (32, DtypeKind::Int4),
    ] {
        let dt = CacheDtype::new(kind);
        let layers = ((512usize << 20)
            / (2 * kv * s * d * dt.quantized_bytes(1, 128) as usize / 128))
            .clamp(1, 64);
        let shape =
            ModelShape::uniform("k", layers as u32, hq as u32, kv as u32, d as u32, 4096, 0);
        let g = CacheGeometry::new(&shape, None, dt, dt, 1, s as u32, 16, 0).expect("geometry");
        let mut cache = DenseCache::new(&g, false).expect("cache");
        let mut k = vec![0.0f32; kv * d];
        for l in 0..layers {
            for p in 0..s {
                kvbench_workloads::synth::fill(
                    kvbench_workloads::synth::stream(1, 1, l as u64, p as u64, 0),
                    1.0,
                    &mut k,
                );
                cache.append(l, 0, &k, &k).expect("room");
            }
        }
        let bytes: u64 = (0..layers)
            .flat_map(|l| (0..kv).map(move |h| (l, h)))
            .map(|(l, h)| cache.view(l, 0, h).bytes_read())
            .sum();
        let q = vec![0.01f32; hq * d];
        let mut out = vec![0.0f32; hq * d];
        let gl = hq / kv * d;
        let mut best = f64::MAX;
        let mut bw = 0.0f64;
        for _ in 0..5 {
            bw = bw.max(read_bandwidth());
            let t = Instant::now();
            for l in 0..layers {
                let mut jobs: Vec<DecodeJob> = out
                    .chunks_mut(gl)
                    .zip(q.chunks(gl))
                    .enumerate()
                    .map(|(h, (o, qg))| DecodeJob {
                        view: cache.view(l, 0, h),
                        q: qg,
                        out: o,
                    })
                    .collect();
                decode_attention(&mut jobs, hq / kv, Together::ALONE, isa());
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "kernel kv {kv} {}: {layers} layers, {:.0} MB in {:.2} ms = {:.1} GB/s; probe {:.1} GB/s; ratio {:.2}",
            kind.name(),
            bytes as f64 / 1e6,
            best * 1e3,
            bytes as f64 / best / 1e9,
            bw / 1e9,
            (bytes as f64 / bw) / best
        );
    }
}

/// The same kernel over a small cache that stays in L2: compute cost per element.
fn incache() {
    use kvbench_workloads::cache::{CacheGeometry, DenseCache, KvCache, PagedCache};
    use kvbench_workloads::cpu::decode::attend_rows;
    let (s, d) = (256usize, 128usize);
    // `KVB_DTYPES=int8,int4`, `KVB_G=4` and `KVB_REPS` narrow and lengthen it, for profiling.
    let wanted = |what: &str, name: &str| {
        std::env::var(what).map_or(true, |v| v.split(',').any(|x| x == name))
    };
    let reps = env_or("KVB_REPS", 2000);
    for kind in [
        DtypeKind::F32,
        DtypeKind::F16,
        DtypeKind::Bf16,
        DtypeKind::Int8,
        DtypeKind::Int4,
        DtypeKind::Nf4,
        DtypeKind::Fp8E4m3,
    ] {
        for g in [1usize, 2, 4, 8, 16, 32] {
            if !wanted("KVB_DTYPES", kind.name()) || !wanted("KVB_G", &g.to_string()) {
                continue;
            }
            for paged in [false, true] {
                if !wanted("KVB_ONLY", if paged { "paged" } else { "contiguous" }) {
                    continue;
                }
                let dt = CacheDtype::new(kind);
                let shape = ModelShape::uniform("k", 1, g as u32, 1, d as u32, 4096, 0);
                let geo =
                    CacheGeometry::new(&shape, None, dt, dt, 1, s as u32, 16, 0).expect("geometry");
                let mut cache: Box<dyn KvCache> = if paged {
                    Box::new(PagedCache::new(&geo).expect("cache"))
                } else {
                    Box::new(DenseCache::new(&geo, false).expect("cache"))
                };
                let mut k = vec![0.0f32; d];
                for p in 0..s {
                    kvbench_workloads::synth::fill(
                        kvbench_workloads::synth::stream(1, 1, 0, p as u64, 0),
                        1.0,
                        &mut k,
                    );
                    cache.append(0, 0, &k, &k).expect("room");
                }
                let q = vec![0.01f32; g * d];
                let view = cache.view(0, 0, 0);
                // Fastest of many short repetitions: robust to other processes taking the core.
                let mut best = f64::MAX;
                for _ in 0..reps {
                    let t = Instant::now();
                    std::hint::black_box(attend_rows(&view, &q, g, 0, s, isa()));
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let ns = best * 1e9 / s as f64;
                println!(
                    "in-cache {} G={g} {}: {:.2} ns per row ({:.1} GFLOP/s one thread)",
                    kind.name(),
                    if paged { "paged" } else { "dense" },
                    ns,
                    4.0 * (g * d) as f64 / ns
                );
            }
        }
    }
}
