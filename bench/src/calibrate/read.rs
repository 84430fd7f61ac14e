//! Read-bandwidth kernels. The limit is the best read this machine can do, so several ways of
//! reading are measured and the fastest kept: plain (auto-vectorised) summing, AVX2 and
//! AVX-512 loads over several independent streams, and AVX-512 with software prefetch. Each
//! kernel returns the wrapping sum of every word, so all of them can be checked against
//! [`sum_scalar`], their scalar twin.

/// Independent cursors each vector kernel walks at once (separate parts of the array, as
/// separate KV heads are): more streams keep more hardware prefetchers busy.
pub const STREAMS: usize = 4;
/// How far ahead of each cursor the prefetching kernel asks for a line (bytes); about one
/// memory latency's worth of one stream's share of the bandwidth.
pub const PREFETCH_BYTES: usize = 1024;

/// One way of reading memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMethod {
    /// `iter().fold(wrapping_add)`, vectorised by the compiler for the baseline target.
    Scalar,
    /// AVX2 256-bit loads over [`STREAMS`] streams.
    Avx2Streams,
    /// AVX-512 512-bit loads over [`STREAMS`] streams.
    Avx512Streams,
    /// AVX-512 loads over [`STREAMS`] streams with `prefetcht0` [`PREFETCH_BYTES`] ahead.
    Avx512Prefetch,
}

impl ReadMethod {
    /// The methods this CPU can run, detected now.
    pub fn available() -> Vec<ReadMethod> {
        let mut m = vec![ReadMethod::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                m.push(ReadMethod::Avx2Streams);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                m.push(ReadMethod::Avx512Streams);
                m.push(ReadMethod::Avx512Prefetch);
            }
        }
        m
    }

    /// Name in the calibration file and on screen.
    pub fn name(self) -> &'static str {
        match self {
            ReadMethod::Scalar => "scalar",
            ReadMethod::Avx2Streams => "avx2-streams",
            ReadMethod::Avx512Streams => "avx512-streams",
            ReadMethod::Avx512Prefetch => "avx512-prefetch",
        }
    }

    /// Wrapping sum of `words`, read this way. A method the CPU lacks falls back to
    /// [`sum_scalar`] (never chosen by [`ReadMethod::available`]).
    pub fn sum(self, words: &[u64]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                ReadMethod::Avx2Streams if std::arch::is_x86_feature_detected!("avx2") => {
                    // SAFETY: AVX2 was detected just above.
                    return unsafe { x86::sum_avx2_streams(words) };
                }
                ReadMethod::Avx512Streams if std::arch::is_x86_feature_detected!("avx512f") => {
                    // SAFETY: AVX-512F was detected just above.
                    return unsafe { x86::sum_avx512_streams(words, false) };
                }
                ReadMethod::Avx512Prefetch if std::arch::is_x86_feature_detected!("avx512f") => {
                    // SAFETY: AVX-512F was detected just above.
                    return unsafe { x86::sum_avx512_streams(words, true) };
                }
                _ => {}
            }
        }
        sum_scalar(words)
    }
}

/// Sum of all words; integer adds vectorise freely (no float reassociation), so the loop is
/// limited by memory, not by the adder. The scalar twin of every kernel here.
pub fn sum_scalar(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

/// Split `words` into [`STREAMS`] equal parts of whole `lane_words` vectors × 2 (each
/// stream is unrolled twice) and the tail the vector loop leaves.
fn stream_split(len: usize, lane_words: usize) -> (usize, usize) {
    let step = 2 * lane_words;
    let per_stream = len / STREAMS / step * step;
    (per_stream, per_stream * STREAMS)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{stream_split, sum_scalar, PREFETCH_BYTES, STREAMS};
    use std::arch::x86_64::*;

    /// [`super::sum_scalar`] with 256-bit loads, [`STREAMS`] cursors, two vectors each.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum_avx2_streams(words: &[u64]) -> u64 {
        let (per, done) = stream_split(words.len(), 4);
        let p = words.as_ptr();
        let mut acc = [_mm256_setzero_si256(); 2 * STREAMS];
        let mut i = 0;
        while i < per {
            for s in 0..STREAMS {
                // SAFETY: s·per + i + 8 ≤ STREAMS·per ≤ len.
                let q = unsafe { p.add(s * per + i) };
                let a = unsafe { _mm256_loadu_si256(q.cast()) };
                let b = unsafe { _mm256_loadu_si256(q.add(4).cast()) };
                acc[2 * s] = _mm256_add_epi64(acc[2 * s], a);
                acc[2 * s + 1] = _mm256_add_epi64(acc[2 * s + 1], b);
            }
            i += 8;
        }
        let mut total = sum_scalar(&words[done..]);
        for v in acc {
            let mut lanes = [0u64; 4];
            // SAFETY: 4 u64 lanes into a 4-word array.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), v) };
            total = lanes.iter().fold(total, |a, &x| a.wrapping_add(x));
        }
        total
    }

    /// [`super::sum_scalar`] with 512-bit loads, [`STREAMS`] cursors, two vectors (two cache
    /// lines) each; with `prefetch`, each cursor also prefetches [`PREFETCH_BYTES`] ahead.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum_avx512_streams(words: &[u64], prefetch: bool) -> u64 {
        let (per, done) = stream_split(words.len(), 8);
        let p = words.as_ptr();
        let mut acc = [_mm512_setzero_si512(); 2 * STREAMS];
        let ahead = PREFETCH_BYTES / 8;
        let mut i = 0;
        while i < per {
            for s in 0..STREAMS {
                // SAFETY: s·per + i + 16 ≤ STREAMS·per ≤ len.
                let q = unsafe { p.add(s * per + i) };
                if prefetch {
                    // A prefetch never faults, so running past the end is harmless; wrapping
                    // pointer arithmetic keeps it defined.
                    let f = q.wrapping_add(ahead).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(f);
                    _mm_prefetch::<_MM_HINT_T0>(f.wrapping_add(64));
                }
                let a = unsafe { _mm512_loadu_si512(q.cast()) };
                let b = unsafe { _mm512_loadu_si512(q.add(8).cast()) };
                acc[2 * s] = _mm512_add_epi64(acc[2 * s], a);
                acc[2 * s + 1] = _mm512_add_epi64(acc[2 * s + 1], b);
            }
            i += 16;
        }
        let mut total = sum_scalar(&words[done..]);
        for v in acc {
            total = total.wrapping_add(_mm512_reduce_add_epi64(v) as u64);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_sums_like_its_scalar_twin() {
        // Σ 0..n = n(n−1)/2 (Gauss); lengths that leave tails of every size.
        for n in [0u64, 1, 7, 63, 64, 65, 1000, 4099, 100_003] {
            let words: Vec<u64> = (0..n).collect();
            let want = n * n.saturating_sub(1) / 2;
            assert_eq!(sum_scalar(&words), want, "n = {n}");
            for m in ReadMethod::available() {
                assert_eq!(m.sum(&words), want, "{} n = {n}", m.name());
            }
        }
        // Wrapping: large words overflow the same way in every kernel.
        let big: Vec<u64> = (0..5000u64).map(|i| u64::MAX - i * 977).collect();
        for m in ReadMethod::available() {
            assert_eq!(m.sum(&big), sum_scalar(&big), "{}", m.name());
        }
    }
}
