//! Cache layouts behind one small API: concat, contiguous, paged, windows, quantized storage.
