//! Defaults and checks of the options of `run` and `calibrate` that are not sweep axes
//! (those are checked by [`crate::matrix::Matrix`]). The CLI's `--help` reads the defaults
//! from here, so what it says is what runs.

/// Default values, shown in `--help`.
pub mod defaults {
    /// Timed runs per workload.
    pub const REPETITIONS: u32 = 3;
    /// Untimed runs per workload before timing.
    pub const WARMUP: u32 = 1;
    /// Prompt tokens per sequence.
    pub const PROMPT: u32 = 512;
    /// Generated tokens per sequence.
    pub const GEN: u32 = 128;
    /// Sequences per batch.
    pub const BATCH: u32 = 1;
    /// Tokens per block of paged layouts (vLLM's default).
    pub const BLOCK_SIZE: u32 = 16;
    /// Rows a cross product may expand to before it is refused (`--max-rows`).
    pub const MAX_ROWS: u64 = 1_000_000;
    /// Timed passes per calibration figure.
    pub const PASSES: u32 = 5;
    /// n of the calibration's n×n×n GEMM.
    pub const GEMM_N: u32 = 1536;
}

/// An option value that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionError {
    #[error("{flag} 0: {why}")]
    Zero {
        flag: &'static str,
        why: &'static str,
    },
    #[error(
        "--buffer-mib {mib}: the calibration holds two arrays of it, more than the {available_mib} \
         MiB available; give at most {most} (or leave it out for 16 × the last-level cache)"
    )]
    BufferTooLarge {
        mib: u64,
        available_mib: u64,
        most: u64,
    },
    #[error(
        "--threads {threads}: this machine runs {cores} threads at once; more threads than \
         that time the scheduler, not the kernels (give at most {cores}, or leave it out)"
    )]
    TooManyThreads { threads: usize, cores: usize },
}

/// `value`, or an error naming `flag` when it is 0.
pub fn positive(flag: &'static str, value: u32, why: &'static str) -> Result<u32, OptionError> {
    if value == 0 {
        Err(OptionError::Zero { flag, why })
    } else {
        Ok(value)
    }
}

/// Threads to run with: the requested count, at least 1 and at most the machine's cores
/// (`cores`), or every core when none was requested.
pub fn threads(requested: Option<usize>, cores: usize) -> Result<usize, OptionError> {
    match requested {
        None => Ok(cores.max(1)),
        Some(0) => Err(OptionError::Zero {
            flag: "--threads",
            why: "give at least 1 (or leave it out to use every core)",
        }),
        Some(n) if n > cores => Err(OptionError::TooManyThreads { threads: n, cores }),
        Some(n) => Ok(n),
    }
}

/// Bytes per calibration array for `--buffer-mib`: at least 1 MiB, and two of them within
/// `available` bytes of memory (the copy figure streams from one array into another).
pub fn buffer_bytes(mib: u64, available: u64) -> Result<u64, OptionError> {
    if mib == 0 {
        return Err(OptionError::Zero {
            flag: "--buffer-mib",
            why: "give at least 1 (MiB), or leave it out for 16 × the last-level cache",
        });
    }
    let most = (available >> 20) / 2;
    match mib.checked_mul(1 << 20) {
        Some(bytes) if mib <= most => Ok(bytes),
        _ => Err(OptionError::BufferTooLarge {
            mib,
            available_mib: available >> 20,
            most,
        }),
    }
}

/// Threads this machine runs at once.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_oversubscription_are_refused() {
        assert_eq!(threads(None, 2), Ok(2));
        assert_eq!(threads(Some(2), 2), Ok(2));
        let e = threads(Some(1000), 2).unwrap_err().to_string();
        assert!(
            e.contains("--threads 1000") && e.contains("at most 2"),
            "{e}"
        );
        assert!(threads(Some(0), 2)
            .unwrap_err()
            .to_string()
            .starts_with("--threads 0"));
        assert!(positive("--repetitions", 0, "time at least once").is_err());
        // 2^50 MiB would overflow the byte count; 600 MiB twice is more than 1 GiB.
        assert!(buffer_bytes(1 << 50, 1 << 30).is_err());
        assert!(buffer_bytes(600, 1 << 30).is_err());
        assert_eq!(buffer_bytes(8, 1 << 30), Ok(8 << 20));
    }
}
