//! Every tier store round-trips blocks bit-exact, and every fault is an error, never data.

use kvbench_workloads::tier::local_redis::LocalRedis;
use kvbench_workloads::tier::{
    BlockKey, DiskIo, DiskStore, HostStore, RedisStore, TierError, TierStore, VerifiedTier,
};
use rand::{RngCore, SeedableRng};
use std::os::unix::fs::FileExt;

const BLOCK: usize = 6000; // not a multiple of 4096: slots need padding under O_DIRECT

fn blocks(n: usize, seed: u64) -> Vec<(BlockKey, Vec<u8>)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut bytes = vec![0u8; BLOCK - (i % 3) * 100];
            rng.fill_bytes(&mut bytes);
            (BlockKey([seed, i as u64]), bytes)
        })
        .collect()
}

/// Store `n` blocks, load them back in another order, compare byte for byte.
fn round_trip(store: Box<dyn TierStore>, n: usize) -> VerifiedTier {
    let mut tier = VerifiedTier::new(store);
    let data = blocks(n, 7);
    let refs: Vec<(BlockKey, &[u8])> = data.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    tier.store(&refs).unwrap();
    let order: Vec<usize> = (0..n).rev().step_by(2).chain((0..n).step_by(2)).collect();
    let keys: Vec<BlockKey> = order.iter().map(|&i| data[i].0).collect();
    let mut out = vec![Vec::new(); keys.len()];
    let found = tier.load(&keys, &mut out).unwrap();
    assert!(found.iter().all(|&f| f));
    for (&i, bytes) in order.iter().zip(&out) {
        assert!(data[i].1 == *bytes, "block {i} came back different");
    }
    let stats = tier.stats();
    let total: u64 = data.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(stats.bytes_written, total);
    assert_eq!(stats.blocks_read, keys.len() as u64);
    assert_eq!(stats.hash_failures, 0);
    // A block never stored is a miss, not an error.
    let mut one = vec![Vec::new()];
    assert_eq!(
        tier.load(&[BlockKey([99, 99])], &mut one).unwrap(),
        vec![false]
    );
    assert_eq!(tier.stats().misses, 1);
    tier
}

#[test]
fn host_round_trip() {
    round_trip(Box::new(HostStore::new(BLOCK, 64)), 50);
}

#[test]
fn disk_round_trip_direct_and_buffered() {
    let dir = tempfile::tempdir().unwrap();
    for io in [DiskIo::Direct, DiskIo::Buffered] {
        let store = DiskStore::create(dir.path(), BLOCK, io).unwrap();
        if io == DiskIo::Buffered {
            assert!(!store.is_direct());
            assert!(store.note().contains("warm page cache"));
        }
        eprintln!("disk tier: {}", store.note());
        // 700 blocks of 8 KiB slots: more than one 16 MiB coalesced run.
        let tier = round_trip(Box::new(store), 2100);
        drop(tier);
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "block files are removed at the end of the run"
    );
}

#[test]
fn disk_tier_in_an_unusable_directory_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    // A directory under a regular file cannot exist, even for root.
    let bad = file.join("tiers");
    let err = DiskStore::create(&bad, BLOCK, DiskIo::Direct)
        .err()
        .unwrap();
    assert!(matches!(err, TierError::Unwritable { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&bad.display().to_string()) && msg.contains("--tier-dir"),
        "{msg}"
    );
}

#[test]
fn corrupted_block_on_disk_fails_its_hash_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::create(dir.path(), BLOCK, DiskIo::Buffered).unwrap();
    let path = store.path().to_path_buf();
    let data = blocks(4, 3);
    let mut tier = VerifiedTier::new(Box::new(store));
    let refs: Vec<(BlockKey, &[u8])> = data.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    tier.store(&refs).unwrap();
    // Slots are given out in order (block 2 is slot 2), 8 KiB each, payload after 16 B.
    let offset = 2 * 8192 + 16 + 1234;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    assert_eq!(byte[0], data[2].1[1234], "the offset points into block 2");
    file.write_all_at(&[byte[0] ^ 0x10], offset).unwrap();
    let mut out = vec![Vec::new(); 2];
    let err = tier.load(&[data[1].0, data[2].0], &mut out).unwrap_err();
    assert!(
        matches!(err, TierError::Corrupt { key, .. } if key == data[2].0),
        "{err}"
    );
    assert!(err.is_recoverable());
    assert_eq!(tier.stats().hash_failures, 1);
    // The untouched neighbour still loads.
    assert_eq!(tier.load(&[data[1].0], &mut out[..1]).unwrap(), vec![true]);
    assert_eq!(out[0], data[1].1);
}

fn redis_or_skip() -> Option<LocalRedis> {
    match LocalRedis::start() {
        Ok(Some(server)) => Some(server),
        Ok(None) => {
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn redis_round_trip_ttl_and_sharing_between_runs() {
    let Some(server) = redis_or_skip() else {
        return;
    };
    let tier = round_trip(
        Box::new(RedisStore::connect(&server.url(), 120).unwrap()),
        40,
    );
    assert!(tier.note().contains("TTL 120 s"));
    let key = BlockKey([7, 5]);
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_connection().unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(RedisStore::redis_key(&key))
        .query(&mut raw)
        .unwrap();
    assert!((1..=120).contains(&ttl), "TTL {ttl}");
    // A second run (its own connection, no memory of what was stored) finds the block by
    // its content key and checks it against the hash stored with it.
    let mut second = VerifiedTier::new(Box::new(RedisStore::connect(&server.url(), 120).unwrap()));
    assert!(!second.holds(&key));
    let mut out = vec![Vec::new()];
    assert_eq!(second.load(&[key], &mut out).unwrap(), vec![true]);
    assert_eq!(out[0], blocks(40, 7)[5].1);
}

#[test]
fn redis_corruption_and_server_loss_are_errors() {
    let Some(mut server) = redis_or_skip() else {
        return;
    };
    let mut tier = VerifiedTier::new(Box::new(RedisStore::connect(&server.url(), 60).unwrap()));
    let data = blocks(3, 11);
    let refs: Vec<(BlockKey, &[u8])> = data.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    tier.store(&refs).unwrap();
    // Someone overwrites block 1 with other bytes (block 0's, one bit flipped) under a
    // header that matches them: only the hash this run remembered catches it.
    let mut forged = data[0].1.clone();
    forged[0] ^= 1;
    let mut value = kvbench_workloads::tier::xxh64(&forged, 0)
        .to_le_bytes()
        .to_vec();
    value.extend_from_slice(&forged);
    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_connection().unwrap();
    redis::cmd("SET")
        .arg(RedisStore::redis_key(&data[1].0))
        .arg(value)
        .query::<()>(&mut raw)
        .unwrap();
    let mut out = vec![Vec::new()];
    let err = tier.load(&[data[1].0], &mut out).unwrap_err();
    assert!(matches!(err, TierError::Corrupt { .. }), "{err}");

    server.stop();
    let err = tier.load(&[data[0].0], &mut out).unwrap_err();
    assert!(matches!(err, TierError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains(&server.url()), "{err}");
    assert!(err.is_recoverable());
    assert_eq!(tier.stats().faults, 1);
    let err = RedisStore::connect(&server.url(), 60).err().unwrap();
    assert!(
        err.to_string()
            .starts_with("cannot reach Redis at redis://127.0.0.1:"),
        "{err}"
    );
}
