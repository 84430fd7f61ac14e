//! Environment capture: where a run happened (host, CPU, cores, memory, OS), which kvbench
//! (version, git commit), when (UTC timestamp), and the process's peak resident memory.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The machine and build a run comes from; copied into every record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub host: String,
    /// CPU brand string, e.g. "AMD EPYC 7B13".
    pub cpu: String,
    /// Logical cores the OS offers.
    pub cores: u32,
    pub mem_bytes: u64,
    /// Memory available to new allocations when captured.
    pub mem_available_bytes: u64,
    /// e.g. "Ubuntu 24.04 (Linux 6.8.0)".
    pub os: String,
    pub kvbench_version: String,
    /// Commit of the source tree kvbench was built from, `-dirty` if it had changes.
    pub git_commit: String,
    /// The GPU CUDA rows ran on (set by the caller when a sweep has any); empty otherwise.
    pub gpu: String,
}

impl Environment {
    /// Read the environment now.
    pub fn capture() -> Environment {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        let cpu = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let os = format!(
            "{} (kernel {})",
            sysinfo::System::long_os_version().unwrap_or_else(|| std::env::consts::OS.into()),
            sysinfo::System::kernel_version().unwrap_or_else(|| "unknown".into())
        );
        Environment {
            host: host_name(),
            cpu,
            cores: sys.cpus().len().max(1) as u32,
            mem_bytes: sys.total_memory(),
            mem_available_bytes: sys.available_memory(),
            os,
            kvbench_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: git_commit(),
            gpu: String::new(),
        }
    }
}

/// What identifies a machine for its limits: a calibration measured on one is not used on
/// another. The host name alone does not: VMs of different shapes share names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// CPU brand string.
    pub cpu: String,
    /// Logical cores.
    pub cores: u32,
    /// Largest cache level's size from sysfs, 0 if unknown.
    pub llc_bytes: u64,
    /// Total memory, rounded to whole GiB (the kernel's figure moves by a few MiB per boot).
    pub mem_gib: u64,
}

impl Fingerprint {
    /// This machine's, now.
    pub fn current() -> Fingerprint {
        let env = Environment::capture();
        Fingerprint {
            cpu: env.cpu,
            cores: env.cores,
            llc_bytes: last_level_cache_bytes(),
            mem_gib: (env.mem_bytes + (1 << 29)) >> 30,
        }
    }

    /// What differs from `other`, one `what: mine vs theirs` phrase each; empty when the
    /// same machine.
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        if *self == Fingerprint::default() {
            return vec!["no machine fingerprint recorded".into()];
        }
        let mut d = Vec::new();
        if self.cpu != other.cpu {
            d.push(format!("cpu {:?} vs {:?}", self.cpu, other.cpu));
        }
        if self.cores != other.cores {
            d.push(format!("cores {} vs {}", self.cores, other.cores));
        }
        if self.llc_bytes != other.llc_bytes {
            d.push(format!(
                "last-level cache {} MiB vs {} MiB",
                self.llc_bytes >> 20,
                other.llc_bytes >> 20
            ));
        }
        if self.mem_gib != other.mem_gib {
            d.push(format!(
                "memory {} GiB vs {} GiB",
                self.mem_gib, other.mem_gib
            ));
        }
        d
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} cores, LLC {} MiB, {} GiB",
            self.cpu,
            self.cores,
            self.llc_bytes >> 20,
            self.mem_gib
        )
    }
}

/// Where Linux lists cpu0's caches, one `indexN` directory each.
const SYSFS_CACHES: &str = "/sys/devices/system/cpu/cpu0/cache";

/// One cache as sysfs lists it.
struct ListedCache {
    level: Option<u32>,
    /// "Data", "Instruction" or "Unified".
    kind: String,
    bytes: u64,
}

/// The caches listed under `dir` that have a readable size; empty if none.
fn listed_caches(dir: &Path) -> Vec<ListedCache> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let read = |e: &std::fs::DirEntry, f: &str| std::fs::read_to_string(e.path().join(f)).ok();
    entries
        .flatten()
        .filter_map(|e| {
            Some(ListedCache {
                bytes: parse_cache_size(read(&e, "size")?.trim())?,
                level: read(&e, "level").and_then(|l| l.trim().parse().ok()),
                kind: read(&e, "type").unwrap_or_default().trim().to_string(),
            })
        })
        .collect()
}

/// Size of the largest CPU cache listed in sysfs (Linux), 0 if unknown.
pub fn last_level_cache_bytes() -> u64 {
    let caches = listed_caches(Path::new(SYSFS_CACHES));
    caches.iter().map(|c| c.bytes).max().unwrap_or(0)
}

/// Size of cpu0's level-`level` cache that holds data (type "Data" or "Unified") from sysfs
/// (Linux), 0 if unknown. Level 1 is the L1d, level 2 the L2 one core owns.
pub fn data_cache_bytes(level: u32) -> u64 {
    data_cache_in(Path::new(SYSFS_CACHES), level)
}

fn data_cache_in(dir: &Path, level: u32) -> u64 {
    listed_caches(dir)
        .iter()
        .filter(|c| c.level == Some(level) && c.kind != "Instruction")
        .map(|c| c.bytes)
        .max()
        .unwrap_or(0)
}

/// "32768K" / "8M" / "1024" (sysfs cache size) to bytes.
fn parse_cache_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// Memory the OS can give to new allocations right now.
pub fn available_memory() -> u64 {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.available_memory()
}

/// Physical cores (SMT siblings counted once), when the OS says.
pub fn physical_cores() -> Option<usize> {
    sysinfo::System::physical_core_count().filter(|&n| n > 0)
}

/// This machine's name, safe for a file name (letters, digits, `-`, `.`, `_`).
pub fn host_name() -> String {
    let raw = sysinfo::System::host_name().unwrap_or_else(|| "unknown-host".into());
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "unknown-host".into()
    } else {
        clean
    }
}

/// The build's git commit: `KVBENCH_GIT_COMMIT` set at build time if present, else asked of
/// git in the source tree at run time, else "unknown".
pub fn git_commit() -> String {
    if let Some(c) = option_env!("KVBENCH_GIT_COMMIT") {
        return c.to_string();
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) if !hash.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        _ => "unknown".into(),
    }
}

/// Now as an RFC 3339 UTC timestamp, e.g. `2026-11-27T21:44:18Z`.
pub fn timestamp_now() -> String {
    rfc3339_utc(unix_now())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Format Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339_utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A timestamp fit for a file name: `20261127-214418`.
pub fn file_stamp(secs: u64) -> String {
    rfc3339_utc(secs)
        .replace(['-', ':', 'Z'], "")
        .replace('T', "-")
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Reset the kernel's record of this process's peak RSS (Linux ≥ 4.0: `clear_refs` with 5),
/// so the next [`peak_rss_bytes`] covers only what ran since. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident memory of this process: `VmHWM` from /proc (resettable), else getrusage's
/// `ru_maxrss` (the peak since the process started).
pub fn peak_rss_bytes() -> u64 {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            return kib * 1024;
        }
    }
    rusage_max_rss()
}

/// `getrusage(RUSAGE_SELF).ru_maxrss` in bytes (Linux reports KiB, macOS bytes).
fn rusage_max_rss() -> u64 {
    // SAFETY: getrusage only writes into the zeroed struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0;
    }
    let max = usage.ru_maxrss.max(0) as u64;
    if cfg!(target_os = "macos") {
        max
    } else {
        max * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        // `date -u -d @1700000000` → Tue Nov 14 22:13:20 UTC 2023
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        // Leap day: `date -u -d @951782400` → Tue Feb 29 00:00:00 UTC 2000
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(file_stamp(1_700_000_000), "20231114-221320");
    }

    #[test]
    fn peak_rss_grows_with_a_touched_allocation() {
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let with_big = peak_rss_bytes();
        assert!(
            with_big >= 64 << 20,
            "peak RSS {with_big} with 64 MiB touched"
        );
        drop(big);
        // After a reset the peak is what is resident now, without the freed 64 MiB.
        if reset_peak_rss() {
            let after = peak_rss_bytes();
            assert!(after + (32 << 20) < with_big, "{after} vs {with_big}");
        }
    }

    #[test]
    fn data_caches_are_found_by_level_and_skip_the_instruction_cache() {
        // This machine's layout in sysfs: L1i 32K, L1d 48K, L2 2048K, L3 107520K.
        let dir = tempfile::tempdir().unwrap();
        for (i, (level, kind, size)) in [
            (1, "Instruction", "32K"),
            (1, "Data", "48K"),
            (2, "Unified", "2048K"),
            (3, "Unified", "107520K"),
        ]
        .into_iter()
        .enumerate()
        {
            let d = dir.path().join(format!("index{i}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("level"), format!("{level}\n")).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        }
        assert_eq!(data_cache_in(dir.path(), 1), 48 << 10);
        assert_eq!(data_cache_in(dir.path(), 2), 2 << 20);
        assert_eq!(data_cache_in(dir.path(), 3), 105 << 20);
        assert_eq!(data_cache_in(dir.path(), 4), 0);
        assert_eq!(data_cache_in(&dir.path().join("missing"), 1), 0);
    }

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("32768K"), Some(32 << 20));
        assert_eq!(parse_cache_size("8M"), Some(8 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("x"), None);
    }

    #[test]
    fn fingerprints_name_what_differs() {
        let here = Fingerprint {
            cpu: "Intel Xeon".into(),
            cores: 2,
            llc_bytes: 480 << 20,
            mem_gib: 24,
        };
        assert!(here.differences(&here.clone()).is_empty());
        // The CI machine of the issue: same core count, another CPU and a 32 MiB L3.
        let ci = Fingerprint {
            cpu: "AMD EPYC".into(),
            llc_bytes: 32 << 20,
            ..here.clone()
        };
        let d = here.differences(&ci);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("AMD EPYC") && d[1].contains("480 MiB vs 32 MiB"),
            "{d:?}"
        );
        // A file from before fingerprints never matches.
        assert_eq!(Fingerprint::default().differences(&here).len(), 1);
        assert!(Fingerprint::current()
            .differences(&Fingerprint::current())
            .is_empty());
    }

    #[test]
    fn capture_fills_what_it_can() {
        let env = Environment::capture();
        assert!(env.cores >= 1);
        assert!(env.mem_bytes > 0);
        assert!(!env.host.is_empty() && !env.host.contains('/'));
        assert_eq!(env.kvbench_version, env!("CARGO_PKG_VERSION"));
        assert!(!env.git_commit.is_empty());
    }
}
