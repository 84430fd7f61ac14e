//! How far each cache dtype may move the attention output from the f64 reference: the
//! bounds `verify()` enforces. docs/accuracy.md explains where each number comes from.

use kvbench_planner::{CacheDtype, DtypeKind};

/// Bound on ‖out − ref‖ / ‖ref‖ of the attention output for one dtype's storage error.
pub fn rel_error_bound(kind: DtypeKind) -> f64 {
    match kind {
        // f32 arithmetic only: accumulation-order rounding over thousands of terms.
        DtypeKind::F32 => 1e-4,
        // One rounding of K and V to 11 significant bits (2^-11 ≈ 4.9e-4 per element).
        DtypeKind::F16 => 2e-3,
        // 8 significant bits (2^-8 ≈ 3.9e-3 per element).
        DtypeKind::Bf16 => 1.5e-2,
        // 4 significant bits (2^-4) with a per-vector scale.
        DtypeKind::Fp8E4m3 => 0.08,
        // 3 significant bits (2^-3).
        DtypeKind::Fp8E5m2 => 0.15,
        // 255 levels over ±absmax of each head vector.
        DtypeKind::Int8 => 0.02,
        // 16 levels over each group of 32's range.
        DtypeKind::Int4 => 0.15,
        // 16 normal-quantile levels over ±absmax of each group of 64.
        DtypeKind::Nf4 => 0.2,
        // 4 levels: coarse by design (KIVI-2 relies on its f16 residual).
        DtypeKind::Int2 => 0.6,
    }
}

/// Bound for a K/V dtype pair: the looser of the two.
pub fn pair_bound(k: &CacheDtype, v: &CacheDtype) -> f64 {
    rel_error_bound(k.kind).max(rel_error_bound(v.kind))
}

/// Bound for a decoder of `layers` layers: each layer's cache error feeds the next layer's
/// input, so the bound grows with depth.
pub fn decoder_bound(k: &CacheDtype, v: &CacheDtype, layers: u32) -> f64 {
    pair_bound(k, v) * (1.0 + 0.5 * (layers.saturating_sub(1)) as f64)
}

/// Smallest cosine of final hidden states a decoder must keep.
pub fn cosine_floor(bound: f64) -> f64 {
    1.0 - bound
}
