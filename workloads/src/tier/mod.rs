//! Offload tiers for paged KV blocks: host memory, local disk, Redis.
//!
//! A [`TierStore`] moves raw block bytes with their content hash; [`VerifiedTier`] wraps one,
//! checks every loaded block bit-exact against the hash it was stored with, and counts bytes,
//! seconds and failures.

pub mod disk;
pub mod hash;
pub mod host;
pub mod local_redis;
pub mod lru;
pub mod offload;
pub mod offload_cache;
pub mod redis_store;
pub mod synth;
pub mod verified;

pub use disk::{DiskIo, DiskStore};
pub use hash::{prefix_keys, xxh64, BlockKey};
pub use host::HostStore;
pub use offload::OffloadWorkload;
pub use offload_cache::{OffloadCache, OffloadCounters};
pub use redis_store::RedisStore;
pub use verified::{TierStats, VerifiedTier};

use crate::spec::{OffloadConfig, Tier};
use std::path::PathBuf;

/// What a run's offload tier did, for the CSV.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierReport {
    /// `host`, `disk` or `redis`.
    pub tier: &'static str,
    pub blocks_stored: u64,
    /// Blocks loaded back, every one verified bit-exact.
    pub blocks_loaded: u64,
    pub bytes_loaded: u64,
    /// Bytes loaded / seconds in the store's reads, GB/s.
    pub load_gbps: f64,
    pub hash_failures: u64,
    /// Tier faults that switched the run to recomputing.
    pub fallbacks: u64,
    /// Blocks recomputed because the tier could not give them back.
    pub recomputed_blocks: u64,
    /// The first tier error, if any.
    pub first_error: Option<String>,
}

/// One block on its way into a tier.
#[derive(Debug, Clone, Copy)]
pub struct BlockOut<'a> {
    pub key: BlockKey,
    /// XXH64 of `bytes`, kept with the block so a reader can check it.
    pub hash: u64,
    pub bytes: &'a [u8],
}

/// A place blocks can be evicted to and loaded back from. Stores move bytes; checking them
/// is [`VerifiedTier`]'s job. `Send + Sync` so an offloading cache is a [`KvCache`] the
/// decode threads can read.
///
/// [`KvCache`]: crate::cache::KvCache
pub trait TierStore: Send + Sync {
    /// Which tier this is.
    fn tier(&self) -> Tier;
    /// Store every block (batched, so disk writes and Redis round trips can be combined).
    fn put(&mut self, blocks: &[BlockOut<'_>]) -> Result<(), TierError>;
    /// Load the blocks named by `keys` into `out` (one buffer per key, resized to the block);
    /// returns the hash stored with each block, `None` where the tier does not hold it.
    fn get(
        &mut self,
        keys: &[BlockKey],
        out: &mut [Vec<u8>],
    ) -> Result<Vec<Option<u64>>, TierError>;
    /// Forget the blocks (missing ones are ignored).
    fn remove(&mut self, keys: &[BlockKey]) -> Result<(), TierError>;
    /// How the tier stores and what a reader should know (e.g. whether the page cache was
    /// bypassed).
    fn note(&self) -> String;
}

/// What can go wrong in a tier; each message names the value and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    // `cause`, not `source`, below: the io error is in the message, and as the error's
    // source too a one-line `{:#}` chain would print it twice.
    #[error(
        "tier directory `{dir}` is not usable ({cause}): pass --tier-dir with a writable directory"
    )]
    Unwritable { dir: PathBuf, cause: std::io::Error },
    #[error(
        "writing a block to `{path}` failed ({cause}): free disk space or pick another --tier-dir"
    )]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("reading a block from `{path}` failed: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot reach Redis at {url}: {reason}; start redis-server there or pass --redis-url")]
    Unavailable { url: String, reason: String },
    #[error("block {key} from the {tier} tier failed its hash check (stored {stored:016x}, loaded {loaded:016x})")]
    Corrupt {
        tier: &'static str,
        key: BlockKey,
        stored: u64,
        loaded: u64,
    },
    #[error("the {tier} tier is full ({capacity} blocks): give it more blocks")]
    Full { tier: &'static str, capacity: usize },
    #[error("block of {got} bytes does not fit the {tier} tier's {size}-byte blocks")]
    BlockSize {
        tier: &'static str,
        size: usize,
        got: usize,
    },
    #[error("{0}")]
    Config(String),
}

impl TierError {
    /// Faults after which the run can fall back to recomputing (the data is lost or
    /// unreachable, not misconfigured).
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            TierError::Write { .. }
                | TierError::Read { .. }
                | TierError::Unavailable { .. }
                | TierError::Corrupt { .. }
        )
    }
}

/// The name used in the CLI and CSV.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Host => "host",
        Tier::Disk => "disk",
        Tier::Redis => "redis",
    }
}

/// Open the store for `tier` with the run's settings, for blocks of `block_bytes`.
pub fn open(
    tier: Tier,
    config: &OffloadConfig,
    block_bytes: usize,
    capacity_blocks: usize,
) -> Result<Box<dyn TierStore>, TierError> {
    Ok(match tier {
        Tier::Host => Box::new(HostStore::new(block_bytes, capacity_blocks)),
        Tier::Disk => {
            let dir = config.tier_dir.clone().ok_or_else(|| {
                TierError::Config("--tier disk needs --tier-dir DIR for its block file".into())
            })?;
            Box::new(DiskStore::create(&dir, block_bytes, DiskIo::Direct)?)
        }
        Tier::Redis => {
            let url = config.redis_url.clone().ok_or_else(|| {
                TierError::Config(
                    "--tier redis needs --redis-url, e.g. redis://127.0.0.1:6379/".into(),
                )
            })?;
            Box::new(RedisStore::connect(&url, redis_store::DEFAULT_TTL_S)?)
        }
    })
}
