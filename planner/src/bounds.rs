//! Roofline bounds: decode tokens/s from bandwidth, prefill time from compute.
