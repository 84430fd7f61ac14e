//! The Redis tier: blocks in a real Redis (or Valkey) server under their content-hash keys,
//! written and read in pipelines, each with a TTL. The stored value is the block's XXH64
//! (8 bytes, little-endian) followed by its bytes, so any reader can check it.

use super::{BlockKey, BlockOut, TierError, TierStore};
use crate::spec::Tier;
use std::time::Duration;

/// Seconds a block lives in Redis unless refreshed.
pub const DEFAULT_TTL_S: u64 = 3600;
/// How long connecting, and each reply, may take before the server counts as gone.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Payload bytes per pipeline, so a long prefix does not build one huge request.
const PIPELINE_BYTES: usize = 32 << 20;
/// Key prefix of every block.
const KEY_PREFIX: &str = "kvbench:blk:";

/// A connection to a Redis server holding blocks.
pub struct RedisStore {
    /// The URL with any password removed, for messages.
    url: String,
    connection: redis::Connection,
    ttl_s: u64,
}

/// `url` without the password part, safe to print.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl RedisStore {
    /// Connect to `url` (e.g. `redis://127.0.0.1:6379/`) and check the server answers.
    pub fn connect(url: &str, ttl_s: u64) -> Result<RedisStore, TierError> {
        let shown = redact(url);
        let client = redis::Client::open(url).map_err(|e| {
            TierError::Config(format!(
                "bad --redis-url `{shown}`: {e}; use redis://HOST:PORT/"
            ))
        })?;
        let unavailable = |e: redis::RedisError| TierError::Unavailable {
            url: shown.clone(),
            reason: e.to_string(),
        };
        let mut connection = client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(unavailable)?;
        connection
            .set_read_timeout(Some(TIMEOUT))
            .map_err(unavailable)?;
        connection
            .set_write_timeout(Some(TIMEOUT))
            .map_err(unavailable)?;
        redis::cmd("PING")
            .query::<String>(&mut connection)
            .map_err(unavailable)?;
        Ok(RedisStore {
            url: shown,
            connection,
            ttl_s: ttl_s.max(1),
        })
    }

    /// The Redis key of a block.
    pub fn redis_key(key: &BlockKey) -> String {
        format!("{KEY_PREFIX}{key}")
    }

    fn unavailable(&self, e: redis::RedisError) -> TierError {
        TierError::Unavailable {
            url: self.url.clone(),
            reason: e.to_string(),
        }
    }

    /// Split `n` items with sizes `size(i)` into pipelines of about `PIPELINE_BYTES`.
    fn batches(n: usize, size: impl Fn(usize) -> usize) -> Vec<std::ops::Range<usize>> {
        let mut batches = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for i in 0..n {
            bytes += size(i);
            if bytes >= PIPELINE_BYTES || i + 1 == n {
                batches.push(start..i + 1);
                start = i + 1;
                bytes = 0;
            }
        }
        batches
    }
}

impl TierStore for RedisStore {
    fn tier(&self) -> Tier {
        Tier::Redis
    }

    fn put(&mut self, blocks: &[BlockOut<'_>]) -> Result<(), TierError> {
        for batch in Self::batches(blocks.len(), |i| blocks[i].bytes.len()) {
            let mut pipe = redis::pipe();
            for b in &blocks[batch] {
                let mut value = Vec::with_capacity(8 + b.bytes.len());
                value.extend_from_slice(&b.hash.to_le_bytes());
                value.extend_from_slice(b.bytes);
                pipe.cmd("SET")
                    .arg(Self::redis_key(&b.key))
                    .arg(value)
                    .arg("EX")
                    .arg(self.ttl_s)
                    .ignore();
            }
            pipe.query::<()>(&mut self.connection)
                .map_err(|e| self.unavailable(e))?;
        }
        Ok(())
    }

    fn get(
        &mut self,
        keys: &[BlockKey],
        out: &mut [Vec<u8>],
    ) -> Result<Vec<Option<u64>>, TierError> {
        let guess = out.first().map_or(0, |b| b.capacity()).max(1);
        let mut hashes = Vec::with_capacity(keys.len());
        for batch in Self::batches(keys.len(), |_| guess) {
            let mut pipe = redis::pipe();
            for key in &keys[batch.clone()] {
                pipe.cmd("GET").arg(Self::redis_key(key));
            }
            let values: Vec<Option<Vec<u8>>> = pipe
                .query(&mut self.connection)
                .map_err(|e| self.unavailable(e))?;
            for (value, buf) in values.into_iter().zip(&mut out[batch]) {
                hashes.push(match value {
                    Some(v) if v.len() >= 8 => {
                        buf.clear();
                        buf.extend_from_slice(&v[8..]);
                        Some(u64::from_le_bytes(v[..8].try_into().expect("8 bytes")))
                    }
                    // Shorter than a header: not ours or truncated; the hash check fails.
                    Some(v) => {
                        buf.clear();
                        buf.extend_from_slice(&v);
                        Some(!0)
                    }
                    None => None,
                });
            }
        }
        Ok(hashes)
    }

    fn remove(&mut self, keys: &[BlockKey]) -> Result<(), TierError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("DEL");
        for key in keys {
            cmd.arg(Self::redis_key(key));
        }
        cmd.query::<()>(&mut self.connection)
            .map_err(|e| self.unavailable(e))
    }

    fn note(&self) -> String {
        format!(
            "Redis at {}, pipelined SET/GET, TTL {} s, keys {KEY_PREFIX}<prefix hash>",
            self.url, self.ttl_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }

    #[test]
    fn pipelines_split_by_bytes() {
        let b = RedisStore::batches(5, |_| PIPELINE_BYTES / 2);
        assert_eq!(b, vec![0..2, 2..4, 4..5]);
        assert!(RedisStore::batches(0, |_| 1).is_empty());
    }

    #[test]
    fn unreachable_server_is_one_clear_error() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let err = RedisStore::connect("redis://127.0.0.1:1/", 60)
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("redis://127.0.0.1:1/") && msg.contains("--redis-url"),
            "{msg}"
        );
        let err = RedisStore::connect("http://nope", 60).err().unwrap();
        assert!(matches!(err, TierError::Config(_)), "{err}");
    }
}
