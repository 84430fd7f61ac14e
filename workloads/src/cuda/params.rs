//! `#[repr(C)]` kernel parameter structs, field for field the structs in kernels/*.cu (which
//! `static_assert` the sizes the tests below pin, with their offsets).

/// A device address (CUdeviceptr); 0 is null.
pub type DevicePtr = u64;

/// Parameters of `cache_write_k` / `cache_write_v` (kernels/cache_write.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheWriteParams {
    /// f32 rows [batch][src_len][kv_heads][head_dim]; 0 = synthetic values of `synth_key`.
    pub src: DevicePtr,
    pub codes: DevicePtr,
    pub scales: DevicePtr,
    pub block_table: DevicePtr,
    /// i32 [batch]: first position written.
    pub start_pos: DevicePtr,
    /// i32 [batch]: one past the last position written.
    pub end_pos: DevicePtr,
    pub synth_key: u64,
    pub table_stride: i32,
    pub block_size: i32,
    pub kv_heads: i32,
    pub src_len: i32,
    pub src_base: i32,
    /// Synthetic positions below this are identical across the batch (a shared prompt prefix).
    pub shared_prefix: i32,
}

/// Parameters of `decode_attention_g*` and `decode_merge` (kernels/decode_attention.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeParams {
    /// f32 [batch][q_heads][head_dim].
    pub q: DevicePtr,
    pub k_codes: DevicePtr,
    pub k_scales: DevicePtr,
    pub v_codes: DevicePtr,
    pub v_scales: DevicePtr,
    pub block_table: DevicePtr,
    /// i32 [batch]: tokens each query attends to.
    pub seq_lens: DevicePtr,
    /// f32 [batch][q_heads][splits][head_dim].
    pub part_acc: DevicePtr,
    /// f32 [batch][q_heads][splits][2].
    pub part_ml: DevicePtr,
    /// f32 [batch][q_heads][head_dim].
    pub out: DevicePtr,
    pub table_stride: i32,
    pub block_size: i32,
    pub kv_heads: i32,
    pub q_heads: i32,
    pub splits: i32,
    pub tokens_per_split: i32,
    /// 1/sqrt(head_dim) × log2(e): the kernels exponentiate in base 2.
    pub sm_scale_log2: f32,
    pub pad: i32,
}

/// Parameters of `prefill_attention` (kernels/prefill_attention.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PrefillParams {
    /// f32 [batch][n_q][q_heads][head_dim], positions q_start .. q_start + n_q.
    pub q: DevicePtr,
    pub k_codes: DevicePtr,
    pub k_scales: DevicePtr,
    pub v_codes: DevicePtr,
    pub v_scales: DevicePtr,
    pub block_table: DevicePtr,
    /// f32 [batch][n_q][q_heads][head_dim].
    pub out: DevicePtr,
    pub table_stride: i32,
    pub block_size: i32,
    pub kv_heads: i32,
    pub q_heads: i32,
    pub q_start: i32,
    pub n_q: i32,
    pub sm_scale_log2: f32,
    pub pad: i32,
}

// SAFETY: plain-old-data structs of integers and floats laid out as their C twins.
unsafe impl cudarc::driver::DeviceRepr for CacheWriteParams {}
unsafe impl cudarc::driver::DeviceRepr for DecodeParams {}
unsafe impl cudarc::driver::DeviceRepr for PrefillParams {}

/// The softmax scale 1/sqrt(head_dim), premultiplied by log2(e) for `exp2f`.
pub fn sm_scale_log2(head_dim: u32) -> f32 {
    (std::f64::consts::LOG2_E / (head_dim as f64).sqrt()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    // The same numbers the kernels static_assert: C layout of 8-byte pointers then 4-byte ints.
    #[test]
    fn cache_write_params_match_the_kernel_layout() {
        assert_eq!(size_of::<CacheWriteParams>(), 80);
        assert_eq!(offset_of!(CacheWriteParams, synth_key), 48);
        assert_eq!(offset_of!(CacheWriteParams, shared_prefix), 76);
    }

    #[test]
    fn decode_params_match_the_kernel_layout() {
        assert_eq!(size_of::<DecodeParams>(), 112);
        assert_eq!(offset_of!(DecodeParams, table_stride), 80);
        assert_eq!(offset_of!(DecodeParams, sm_scale_log2), 104);
    }

    #[test]
    fn prefill_params_match_the_kernel_layout() {
        assert_eq!(size_of::<PrefillParams>(), 88);
        assert_eq!(offset_of!(PrefillParams, table_stride), 56);
        assert_eq!(offset_of!(PrefillParams, sm_scale_log2), 80);
    }

    #[test]
    fn softmax_scale_in_base_two() {
        // exp2(s · log2 e / sqrt(d)) = exp(s / sqrt(d)); for d = 128 the scale is 0.12752...
        let s = sm_scale_log2(128);
        assert!((s as f64 - std::f64::consts::LOG2_E / 128f64.sqrt()).abs() < 1e-7);
        assert!(((2f64).powf(3.0 * s as f64) - (3.0 / 128f64.sqrt()).exp()).abs() < 1e-6);
    }
}
