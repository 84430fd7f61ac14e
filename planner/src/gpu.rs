//! GPU registry: memory, bandwidth, dense FP16/FP8 rates, with sources.
