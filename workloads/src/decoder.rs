//! The synthetic decoder: RMSNorm, QKV, RoPE, cache, attention, output, MLP.
