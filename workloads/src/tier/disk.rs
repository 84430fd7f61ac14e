//! The disk tier: one file per run under a chosen directory, block slots at fixed offsets,
//! written and read with direct I/O (O_DIRECT, 4 KiB-aligned buffers) where the filesystem
//! allows it, so a reload really comes from the device and not from the page cache.

use super::{BlockKey, BlockOut, TierError, TierStore};
use crate::spec::Tier;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Alignment O_DIRECT needs for offsets, lengths and buffers (the page size covers every
/// logical block size in use).
const ALIGN: usize = 4096;
/// Bytes before each block in its slot: stored hash and length, little-endian u64s.
const HEADER: usize = 16;
/// Largest single read or write the store issues when it coalesces neighbouring slots.
const MAX_RUN_BYTES: usize = 16 << 20;

/// How the block file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskIo {
    /// O_DIRECT where the filesystem supports it, else buffered (and said so).
    Direct,
    /// Through the page cache: reads of recent writes are warm.
    Buffered,
}

/// A zeroed byte buffer whose start is `ALIGN`-aligned (without unsafe: the aligned window
/// of a slightly larger Vec, which is never reallocated).
struct AlignedBuf {
    raw: Vec<u8>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + ALIGN];
        let offset = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, offset, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.raw[self.offset..self.offset + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.offset..self.offset + self.len]
    }
}

/// Blocks in one file of fixed-size slots.
pub struct DiskStore {
    path: PathBuf,
    file: File,
    direct: bool,
    block_bytes: usize,
    slot_bytes: usize,
    next_slot: u64,
    free: Vec<u64>,
    index: HashMap<BlockKey, u64>,
}

impl DiskStore {
    /// Create this run's block file under `dir` (created if missing) for blocks of up to
    /// `block_bytes`.
    pub fn create(dir: &Path, block_bytes: usize, io: DiskIo) -> Result<DiskStore, TierError> {
        let unwritable = |cause| TierError::Unwritable {
            dir: dir.to_path_buf(),
            cause,
        };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            "kvbench-tier-{}-{nanos}.blocks",
            std::process::id()
        ));
        let open = |direct: bool| {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create_new(true);
            if direct {
                options.custom_flags(libc::O_DIRECT);
            }
            options.open(&path)
        };
        let (file, direct) = match io {
            DiskIo::Buffered => (open(false).map_err(unwritable)?, false),
            DiskIo::Direct => match open(true) {
                Ok(f) => (f, true),
                // EINVAL: the filesystem (e.g. an old tmpfs) does not do O_DIRECT.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    (open(false).map_err(unwritable)?, false)
                }
                Err(e) => return Err(unwritable(e)),
            },
        };
        Ok(DiskStore {
            path,
            file,
            direct,
            block_bytes,
            slot_bytes: (HEADER + block_bytes).div_ceil(ALIGN) * ALIGN,
            next_slot: 0,
            free: Vec::new(),
            index: HashMap::new(),
        })
    }

    /// The block file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether reads and writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Byte offset of the payload of the block stored under `key`, if held.
    pub fn payload_offset(&self, key: &BlockKey) -> Option<u64> {
        self.index
            .get(key)
            .map(|slot| slot * self.slot_bytes as u64 + HEADER as u64)
    }

    fn slot_for(&mut self, key: BlockKey) -> u64 {
        if let Some(&slot) = self.index.get(&key) {
            return slot;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        });
        self.index.insert(key, slot);
        slot
    }

    /// Runs of consecutive slots (at most `MAX_RUN_BYTES` each) over `(slot, item)` pairs
    /// sorted by slot.
    fn runs<T>(&self, sorted: &[(u64, T)]) -> Vec<std::ops::Range<usize>> {
        let per_run = (MAX_RUN_BYTES / self.slot_bytes).max(1);
        let mut runs = Vec::new();
        let mut start = 0;
        for i in 1..=sorted.len() {
            let breaks =
                i == sorted.len() || sorted[i].0 != sorted[i - 1].0 + 1 || i - start == per_run;
            if breaks {
                runs.push(start..i);
                start = i;
            }
        }
        runs
    }
}

impl TierStore for DiskStore {
    fn tier(&self) -> Tier {
        Tier::Disk
    }

    fn put(&mut self, blocks: &[BlockOut<'_>]) -> Result<(), TierError> {
        if let Some(b) = blocks.iter().find(|b| b.bytes.len() > self.block_bytes) {
            return Err(TierError::BlockSize {
                tier: "disk",
                size: self.block_bytes,
                got: b.bytes.len(),
            });
        }
        let mut sorted: Vec<(u64, &BlockOut<'_>)> =
            blocks.iter().map(|b| (self.slot_for(b.key), b)).collect();
        sorted.sort_by_key(|(slot, _)| *slot);
        for run in self.runs(&sorted) {
            let run = &sorted[run];
            let mut buf = AlignedBuf::new(run.len() * self.slot_bytes);
            for (i, (_, b)) in run.iter().enumerate() {
                let slot = &mut buf.as_mut_slice()[i * self.slot_bytes..];
                slot[..8].copy_from_slice(&b.hash.to_le_bytes());
                slot[8..16].copy_from_slice(&(b.bytes.len() as u64).to_le_bytes());
                slot[HEADER..HEADER + b.bytes.len()].copy_from_slice(b.bytes);
            }
            let offset = run[0].0 * self.slot_bytes as u64;
            if let Err(cause) = self.file.write_all_at(buf.as_slice(), offset) {
                // The slots of this batch hold nothing valid now.
                for (_, b) in run {
                    if let Some(slot) = self.index.remove(&b.key) {
                        self.free.push(slot);
                    }
                }
                return Err(TierError::Write {
                    path: self.path.clone(),
                    cause,
                });
            }
        }
        Ok(())
    }

    fn get(
        &mut self,
        keys: &[BlockKey],
        out: &mut [Vec<u8>],
    ) -> Result<Vec<Option<u64>>, TierError> {
        let mut hashes = vec![None; keys.len()];
        let mut sorted: Vec<(u64, usize)> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| self.index.get(k).map(|&slot| (slot, i)))
            .collect();
        // A key asked for twice breaks the run and is simply read twice.
        sorted.sort_unstable();
        for run in self.runs(&sorted) {
            let run = &sorted[run];
            let mut buf = AlignedBuf::new(run.len() * self.slot_bytes);
            let offset = run[0].0 * self.slot_bytes as u64;
            self.file
                .read_exact_at(buf.as_mut_slice(), offset)
                .map_err(|cause| TierError::Read {
                    path: self.path.clone(),
                    cause,
                })?;
            for (j, &(_, i)) in run.iter().enumerate() {
                let slot = &buf.as_slice()[j * self.slot_bytes..(j + 1) * self.slot_bytes];
                let hash = u64::from_le_bytes(slot[..8].try_into().expect("8 bytes"));
                let len = u64::from_le_bytes(slot[8..16].try_into().expect("8 bytes")) as usize;
                // A corrupted length cannot be trusted: hand back the whole slot, whose hash
                // will not match.
                let len = if len <= self.block_bytes {
                    len
                } else {
                    self.slot_bytes - HEADER
                };
                out[i].clear();
                out[i].extend_from_slice(&slot[HEADER..HEADER + len]);
                hashes[i] = Some(hash);
            }
        }
        Ok(hashes)
    }

    fn remove(&mut self, keys: &[BlockKey]) -> Result<(), TierError> {
        for key in keys {
            if let Some(slot) = self.index.remove(key) {
                self.free.push(slot);
            }
        }
        Ok(())
    }

    fn note(&self) -> String {
        if self.direct {
            format!(
                "O_DIRECT file {} (page cache bypassed: cold reads)",
                self.path.display()
            )
        } else {
            format!(
                "buffered file {} (no O_DIRECT here: reads may hit a warm page cache)",
                self.path.display()
            )
        }
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // The file is this run's scratch space; a failure to delete it leaves a named file
        // under --tier-dir, which is harmless.
        let _ = std::fs::remove_file(&self.path);
    }
}
