//! The offload workload: blocks really go through each tier, come back bit-exact, outputs
//! match a resident run bit for bit and the f64 reference within the dtype's bound, and tier
//! faults fall back to recomputing (counted) instead of returning wrong data.

use kvbench_planner::{CacheDtype, DtypeKind, ModelShape};
use kvbench_workloads::tier::local_redis::LocalRedis;
use kvbench_workloads::tier::OffloadWorkload;
use kvbench_workloads::{
    Backend, OffloadConfig, Strategy, Tier, Workload, WorkloadKind, WorkloadSpec,
};

fn spec(tier: Tier, dtype: DtypeKind, offload: OffloadConfig) -> WorkloadSpec {
    WorkloadSpec {
        kind: WorkloadKind::Attention,
        backend: Backend::Cpu,
        shape: ModelShape::uniform("tiny", 3, 4, 2, 32, 128, 256),
        strategy: Strategy::Offload(tier),
        k_dtype: CacheDtype::new(dtype),
        v_dtype: CacheDtype::new(dtype),
        batch: 2,
        prompt: 40,
        gen: 6,
        block_size: 16,
        shared_prefix: 16,
        window: None,
        mlp: false,
        seed: 42,
        offload,
    }
}

fn host(pool_blocks: u32) -> OffloadConfig {
    OffloadConfig {
        pool_blocks,
        ..OffloadConfig::default()
    }
}

#[test]
fn host_offload_is_lossless_for_every_dtype() {
    for dtype in [
        DtypeKind::F32,
        DtypeKind::F16,
        DtypeKind::Int8,
        DtypeKind::Int4,
    ] {
        let s = spec(Tier::Host, dtype, host(0));
        let mut w = OffloadWorkload::new(&s, true).unwrap();
        let v = w.verify().unwrap();
        assert!(v.passed, "{dtype:?}: {}", v.detail);
        let stats = w.tier_stats();
        assert!(stats.blocks_read > 0 && w.counters().evictions > 0);
        assert_eq!(stats.hash_failures, 0);
        assert_eq!(w.counters().fallbacks, 0);
        // Blocks travel in their stored dtype: a block is 16 tokens × 2 heads of K and V in
        // that dtype, as the planner's storage contract sizes it.
        let d = CacheDtype::new(dtype);
        let block = 2 * 2 * d.quantized_bytes(16, 32);
        assert_eq!(stats.bytes_written % block, 0, "{dtype:?}");
        assert_eq!(stats.bytes_read, stats.blocks_read * block);
        // The working pool never holds more than the automatic limit: half of
        // ceil(46/16) = 3 blocks × 3 layers × 2 sequences = 9.
        assert!(w.memory().kv_bytes_allocated <= 9 * block, "{dtype:?}");
    }
}

#[test]
fn a_pool_too_small_for_one_layer_of_every_sequence_is_refused_with_advice() {
    // A layer is decoded for the whole batch at once: 2 sequences × ceil(46/16) = 3 blocks.
    for pool in [2, 5] {
        let s = spec(Tier::Host, DtypeKind::F16, host(pool));
        let err = OffloadWorkload::new(&s, true).err().unwrap().to_string();
        assert!(
            err.contains(&format!("--pool-blocks {pool}")) && err.contains("6 or more"),
            "{err}"
        );
    }
    assert!(OffloadWorkload::new(&spec(Tier::Host, DtypeKind::F16, host(6)), true).is_ok());
}

#[test]
fn disk_offload_round_trips_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OffloadConfig {
        tier_dir: Some(dir.path().to_path_buf()),
        ..host(0)
    };
    let mut w = OffloadWorkload::new(&spec(Tier::Disk, DtypeKind::Int8, cfg), true).unwrap();
    let v = w.verify().unwrap();
    assert!(v.passed, "{}", v.detail);
    assert!(w.tier_stats().blocks_read > 0);
    eprintln!("{}", w.tier_note().unwrap());
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn missing_tier_settings_are_clear_errors() {
    let err = OffloadWorkload::new(&spec(Tier::Disk, DtypeKind::F16, host(0)), true)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--tier-dir"), "{err}");
    let cfg = OffloadConfig {
        redis_url: Some("redis://127.0.0.1:1/".into()),
        ..host(0)
    };
    let err = OffloadWorkload::new(&spec(Tier::Redis, DtypeKind::F16, cfg), true)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("cannot reach Redis at redis://127.0.0.1:1/"),
        "{err}"
    );
}

#[test]
fn redis_going_away_mid_run_falls_back_to_recompute() {
    let mut server = match LocalRedis::start() {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let cfg = OffloadConfig {
        redis_url: Some(server.url()),
        ..host(0)
    };
    let s = spec(Tier::Redis, DtypeKind::F16, cfg);
    let mut w = OffloadWorkload::new(&s, true).unwrap();
    assert!(w.verify().unwrap().passed);
    w.reset().unwrap();
    w.prefill().unwrap();
    let before = w.tier_stats();
    assert!(before.blocks_written > 0);
    server.stop();
    for _ in 0..s.gen {
        w.decode_step().unwrap();
    }
    let c = w.counters();
    assert_eq!(c.fallbacks, 1);
    assert!(c.recomputed_blocks > 0);
    assert!(
        c.first_error
            .as_deref()
            .unwrap()
            .contains("cannot reach Redis"),
        "{c:?}"
    );
    // The outputs after the fallback are exactly those of a resident run.
    let mut resident = OffloadWorkload::new(&s, false).unwrap();
    resident.prefill().unwrap();
    for _ in 0..s.gen {
        resident.decode_step().unwrap();
    }
    assert_eq!(w.last_outputs(), resident.last_outputs());
}

#[test]
fn decode_steps_write_back_only_the_changed_tail_blocks() {
    // 4 layers × 32 full blocks of prompt; the pool holds half of the 4 × 33 blocks, so
    // every step reloads two layers. Blocks loaded and not changed are not written again:
    // a step writes exactly the tail block of each layer (the one its new token went into).
    let mut s = spec(Tier::Host, DtypeKind::F16, host(0));
    s.shape = ModelShape::uniform("q8", 4, 8, 2, 64, 512, 1792);
    s.batch = 1;
    s.prompt = 512;
    s.shared_prefix = 512;
    s.gen = 8;
    let mut w = OffloadWorkload::new(&s, true).unwrap();
    let v = w.verify().unwrap();
    assert!(v.passed, "{}", v.detail);
    w.reset().unwrap();
    w.prefill().unwrap();
    w.decode_step().unwrap();
    for _ in 1..s.gen {
        let before = w.tier_stats();
        w.decode_step().unwrap();
        let after = w.tier_stats();
        assert_eq!(after.blocks_written - before.blocks_written, 4);
        assert!(after.blocks_read - before.blocks_read >= 2 * 33);
    }
}

#[test]
fn a_corrupted_block_on_disk_is_caught_counted_and_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OffloadConfig {
        tier_dir: Some(dir.path().to_path_buf()),
        ..host(0)
    };
    let s = spec(Tier::Disk, DtypeKind::F16, cfg);
    let mut w = OffloadWorkload::new(&s, true).unwrap();
    w.prefill().unwrap();
    assert!(w.tier_stats().blocks_written > 0);
    // Flip one bit in every 4 KiB page of the block file: whichever block comes back first
    // is corrupted.
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&file).unwrap();
    for i in (100..bytes.len()).step_by(4096) {
        bytes[i] ^= 0x04;
    }
    std::fs::write(&file, &bytes).unwrap();
    for _ in 0..s.gen {
        w.decode_step().unwrap();
    }
    let report = w.tier_report().unwrap();
    assert_eq!(report.hash_failures, 1, "the first bad block stops loading");
    assert_eq!(report.fallbacks, 1);
    assert!(report.recomputed_blocks > 0);
    assert!(report
        .first_error
        .unwrap()
        .contains("failed its hash check"));
    let mut resident = OffloadWorkload::new(&s, false).unwrap();
    resident.prefill().unwrap();
    for _ in 0..s.gen {
        resident.decode_step().unwrap();
    }
    assert_eq!(
        w.last_outputs(),
        resident.last_outputs(),
        "never a wrong result"
    );
}
