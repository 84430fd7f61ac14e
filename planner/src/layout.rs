//! Bytes a cache layout allocates and uses (contiguous, paged, windows, prefix sharing).
