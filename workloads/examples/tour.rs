//! A short tour of the workloads crate: build each strategy for one small shape, verify it
//! against the f64 reference, time its prefill and decode, and print its memory.
//!
//! `cargo run --release -p kvbench-workloads --example tour`

use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::{build, Backend, OffloadConfig, Strategy, WorkloadKind, WorkloadSpec};
use std::time::Instant;

fn main() {
    println!("| workload | strategy | cache dtype | verified | rel_error | TTFT ms | TPOT ms | kv_bytes_used | kv_bytes_allocated |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for kind in [WorkloadKind::Decoder, WorkloadKind::Attention] {
        for (strategy, dtype) in [
            (Strategy::None, DtypeKind::F16),
            (Strategy::Concat, DtypeKind::F16),
            (Strategy::Contiguous, DtypeKind::F16),
            (Strategy::Paged, DtypeKind::F16),
            (Strategy::Paged, DtypeKind::Int8),
            (Strategy::Paged, DtypeKind::Int4),
        ] {
            let spec = WorkloadSpec {
                kind,
                backend: Backend::Cpu,
                // Llama-3-8B's attention widths (GQA 32/8, head_dim 128), 2 layers, small MLP.
                shape: ModelShape::uniform("llama3-8b-widths", 2, 32, 8, 128, 4096, 4096),
                strategy,
                k_dtype: CacheDtype::new(dtype),
                v_dtype: CacheDtype::new(dtype),
                batch: 1,
                prompt: 256,
                gen: 16,
                block_size: 16,
                shared_prefix: 0,
                window: None,
                mlp: true,
                seed: 7,
                offload: OffloadConfig::default(),
            };
            let mut w = build(&spec).expect("valid spec");
            let v = w.verify().expect("runs");
            w.reset().expect("reset");
            let t = Instant::now();
            w.prefill().expect("prefill");
            let ttft = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..spec.gen {
                w.decode_step().expect("decode");
            }
            let tpot = t.elapsed().as_secs_f64() / spec.gen as f64;
            let m = w.memory();
            println!(
                "| {kind:?} | {strategy:?} | {} | {} | {:.1e} | {:.1} | {:.2} | {} | {} |",
                dtype.name(),
                v.passed,
                v.rel_error,
                ttft * 1e3,
                tpot * 1e3,
                m.kv_bytes_used,
                m.kv_bytes_allocated
            );
        }
    }
}
