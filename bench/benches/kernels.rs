//! Criterion micro-benchmarks of the CPU kernels and codecs, with throughput in bytes so
//! criterion prints GB/s: decode attention per cache dtype (MHA and GQA, contiguous and
//! paged), prefill attention, and codec encode/decode, on the detected instruction set
//! (`Isa::detect`: AVX-512, else AVX2, else scalar).
//!
//! `cargo bench -p kvbench-bench --bench kernels` (all), or add a filter such as `decode/f16`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::cache::{CacheGeometry, DenseCache, KvCache, PagedCache};
use kvbench_workloads::codec::Codec;
use kvbench_workloads::cpu::decode::{decode_attention, DecodeJob, Together, Walk};
use kvbench_workloads::cpu::prefill::{prefill_attention, prefill_flops, PrefillShape};
use kvbench_workloads::cpu::Isa;
use kvbench_workloads::synth;
use std::hint::black_box;

const D: usize = 128;
const Q_HEADS: usize = 32;
/// Context length of the decode benches: 8 KV heads × 4096 × 128 × 2 × f16 = 16 MiB per
/// layer, so several layers exceed the last-level cache.
const S: usize = 4096;

fn filled(cache: &mut dyn KvCache, layers: usize, kv: usize) {
    let mut k = vec![0.0f32; kv * D];
    let mut v = vec![0.0f32; kv * D];
    for l in 0..layers {
        for pos in 0..S {
            synth::fill(synth::stream(1, 1, l as u64, pos as u64, 0), 1.0, &mut k);
            synth::fill(synth::stream(1, 2, l as u64, pos as u64, 0), 1.0, &mut v);
            cache.append(l, 0, &k, &v).expect("room for S tokens");
        }
    }
}

/// Decode attention over `layers` distinct layers (so the bytes come from memory).
fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.sample_size(10);
    use DtypeKind::*;
    // MHA, GQA-8 and MQA (the wide, tile-GEMM kernels on AVX-512).
    for (kv, layers) in [(32usize, 4usize), (8, 16), (1, 64)] {
        for kind in [F32, F16, Bf16, Int8, Int4, Fp8E4m3, Nf4] {
            for paged in [false, true] {
                if paged && kind != F16 {
                    continue;
                }
                let dt = CacheDtype::new(kind);
                let shape = ModelShape::uniform(
                    "bench",
                    layers as u32,
                    Q_HEADS as u32,
                    kv as u32,
                    D as u32,
                    4096,
                    0,
                );
                let g =
                    CacheGeometry::new(&shape, None, dt, dt, 1, S as u32, 16, 0).expect("geometry");
                let mut cache: Box<dyn KvCache> = if paged {
                    Box::new(PagedCache::new(&g).expect("paged"))
                } else {
                    Box::new(DenseCache::new(&g, false).expect("contiguous"))
                };
                filled(cache.as_mut(), layers, kv);
                let bytes: u64 = (0..layers)
                    .flat_map(|l| (0..kv).map(move |h| (l, h)))
                    .map(|(l, h)| cache.view(l, 0, h).bytes_read())
                    .sum();
                let mut q = vec![0.0f32; Q_HEADS * D];
                synth::fill(synth::stream(1, 3, 0, 0, 0), 0.3, &mut q);
                let mut out = vec![0.0f32; Q_HEADS * D];
                let group_len = Q_HEADS / kv * D;
                group.throughput(Throughput::Bytes(bytes));
                let name = format!(
                    "{}/kv{kv}/{}",
                    kind.name(),
                    if paged { "paged16" } else { "contiguous" }
                );
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| {
                        for l in 0..layers {
                            let mut jobs: Vec<DecodeJob> = out
                                .chunks_mut(group_len)
                                .zip(q.chunks(group_len))
                                .enumerate()
                                .map(|(h, (o, qg))| DecodeJob {
                                    view: cache.view(l, 0, h),
                                    q: qg,
                                    out: o,
                                })
                                .collect();
                            // A paged block holds every head: they are read together.
                            let together = match cache.heads_share_blocks() {
                                true => Together {
                                    jobs: kv,
                                    walk: Walk::CALIBRATED,
                                },
                                false => Together::ALONE,
                            };
                            decode_attention(&mut jobs, Q_HEADS / kv, together, Isa::detect());
                        }
                        black_box(&out);
                    })
                });
            }
        }
    }
    group.finish();
}

/// Prefill attention at 2048 tokens (throughput: bytes of Q, K, V and output).
fn prefill(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefill");
    group.sample_size(10);
    let t = 2048;
    for kv in [32usize, 8] {
        let shape = PrefillShape {
            q_heads: Q_HEADS,
            kv_heads: kv,
            head_dim: D,
            window: None,
        };
        let mut q = vec![0.0f32; t * Q_HEADS * D];
        let mut k = vec![0.0f32; t * kv * D];
        let mut v = vec![0.0f32; t * kv * D];
        synth::fill(synth::stream(2, 1, 0, 0, 0), 1.0, &mut q);
        synth::fill(synth::stream(2, 2, 0, 0, 0), 1.0, &mut k);
        synth::fill(synth::stream(2, 3, 0, 0, 0), 1.0, &mut v);
        let mut out = vec![0.0f32; t * Q_HEADS * D];
        group.throughput(Throughput::Bytes(
            ((2 * q.len() + k.len() + v.len()) * 4) as u64,
        ));
        eprintln!(
            "prefill kv{kv}: {:.1} GFLOP per call",
            prefill_flops(&shape, t) / 1e9
        );
        group.bench_function(BenchmarkId::from_parameter(format!("t2048/kv{kv}")), |b| {
            b.iter(|| prefill_attention(&shape, t, &q, &k, &v, &mut out))
        });
    }
    group.finish();
}

/// Encoding and decoding one head vector per dtype (throughput: f32 bytes in/out).
fn codecs(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    use DtypeKind::*;
    let rows = 1024;
    let mut x = vec![0.0f32; rows * D];
    synth::fill(synth::stream(3, 1, 0, 0, 0), 1.0, &mut x);
    for kind in [F16, Bf16, Fp8E4m3, Int8, Int4, Nf4, Int2] {
        let codec = Codec::new(CacheDtype::new(kind), D as u32).expect("codec");
        let mut bytes = vec![0u8; rows * codec.unit_bytes];
        group.throughput(Throughput::Bytes((x.len() * 4) as u64));
        group.bench_function(BenchmarkId::new("encode", kind.name()), |b| {
            b.iter(|| {
                for (r, o) in x.chunks(D).zip(bytes.chunks_mut(codec.unit_bytes)) {
                    codec.encode_unit(r, o);
                }
            })
        });
        let mut out = vec![0.0f32; D];
        group.bench_function(BenchmarkId::new("decode", kind.name()), |b| {
            b.iter(|| {
                for u in bytes.chunks(codec.unit_bytes) {
                    codec.decode_row(u, 0, &mut out);
                    black_box(&out);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode, prefill, codecs);
criterion_main!(benches);
