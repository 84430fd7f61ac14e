//! Quantization codecs: f16/bf16, fp8, int8, int4, nf4, int2.
