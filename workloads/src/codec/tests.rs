use super::*;
use proptest::prelude::*;

fn all_dtypes() -> Vec<CacheDtype> {
    use DtypeKind::*;
    let mut v: Vec<CacheDtype> = [F32, F16, Bf16, Fp8E4m3, Fp8E5m2, Int8, Int4, Nf4, Int2]
        .into_iter()
        .map(CacheDtype::new)
        .collect();
    v.push(CacheDtype::q8_0());
    v.push(CacheDtype::q4_0());
    // fp8 with a scale per head vector (the `/token` layout; the bare name is per tensor).
    v.push(CacheDtype::new(Fp8E4m3).per_token().unwrap());
    v.push(CacheDtype::new(Fp8E5m2).per_token().unwrap());
    let (k, vv) = CacheDtype::kivi(Int4, 64);
    v.push(k);
    v.push(vv);
    let (k2, v2) = CacheDtype::kivi(Int2, 32);
    v.push(k2);
    v.push(v2);
    v
}

#[test]
fn llama_cpp_block_layouts_have_their_published_sizes() {
    // q8_0: one f16 scale + 32 int8 = 34 bytes; q4_0: f16 scale + 16 bytes = 18 bytes.
    assert_eq!(Codec::new(CacheDtype::q8_0(), 32).unwrap().unit_bytes, 34);
    assert_eq!(Codec::new(CacheDtype::q4_0(), 32).unwrap().unit_bytes, 18);
    assert_eq!(
        Codec::new(CacheDtype::q8_0(), 128).unwrap().unit_bytes,
        4 * 34
    );
    // int8 default: 128 codes + one f32 scale.
    let c = Codec::new(CacheDtype::new(DtypeKind::Int8), 128).unwrap();
    assert_eq!(c.unit_bytes, 132);
    // int4 default: 64 bytes of nibbles + 4 groups × (f16 scale + f16 zero).
    let c = Codec::new(CacheDtype::new(DtypeKind::Int4), 128).unwrap();
    assert_eq!(c.unit_bytes, 64 + 4 * 4);
    // nf4: 64 bytes + 2 groups of 64 × f16 absmax.
    let c = Codec::new(CacheDtype::new(DtypeKind::Nf4), 128).unwrap();
    assert_eq!(c.unit_bytes, 64 + 2 * 2);
}

#[test]
fn storage_sizes_equal_the_planners_prediction() {
    for dt in all_dtypes() {
        for hd in [32u32, 64, 128, 256] {
            if dt.group_len(hd) > hd {
                continue; // nf4's group of 64 cannot fit a 32-wide head: refused, tested below
            }
            let c = Codec::new(dt, hd).unwrap();
            for units in [1usize, 3, 16] {
                let tokens = units * c.unit_tokens;
                assert_eq!(
                    c.bytes_for(tokens) as u64,
                    dt.quantized_bytes(tokens as u64, hd),
                    "{dt:?} head_dim {hd}"
                );
            }
        }
    }
}

#[test]
fn invalid_layouts_are_refused_with_the_bad_value() {
    let e = Codec::new(CacheDtype::new(DtypeKind::Int4), 48).unwrap_err();
    assert!(e.to_string().contains("head_dim 48"), "{e}");
    let (k, _) = CacheDtype::kivi(DtypeKind::Int4, 0);
    let e = Codec::new(k, 128).unwrap_err();
    assert!(e.to_string().contains("residual"), "{e}");
}

/// Largest error a value may carry after a round trip, from the format's arithmetic.
fn bound(dt: &CacheDtype, group: &[f32], x: f32) -> f32 {
    let absmax = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let lo = group.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = group.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    // f16-stored scales and zero points carry a relative rounding of 2^-11.
    let f16_slack = if dt.scale_bytes == 2 {
        absmax * 2e-3
    } else {
        absmax * 1e-6
    };
    // A per-tensor fp8 cache stores values at the fixed scale 1.0 (no absmax scaling).
    let fp8_scale = |max: f32| {
        if dt.is_per_tensor() {
            PER_TENSOR_SCALE
        } else {
            absmax / max
        }
    };
    match dt.kind {
        DtypeKind::F32 => 0.0,
        DtypeKind::F16 => x.abs() * 2f32.powi(-11) + 6e-8,
        DtypeKind::Bf16 => x.abs() * 2f32.powi(-8),
        // Half a unit in the last place (3 or 2 mantissa bits), or half the subnormal step.
        DtypeKind::Fp8E4m3 => {
            (x.abs() * 2f32.powi(-4)).max(fp8_scale(448.0) * 2f32.powi(-10)) + f16_slack
        }
        DtypeKind::Fp8E5m2 => {
            (x.abs() * 2f32.powi(-3)).max(fp8_scale(57344.0) * 2f32.powi(-17)) + f16_slack
        }
        DtypeKind::Nf4 => absmax * 0.5 * (1.0 - 0.696_192_8) + f16_slack,
        DtypeKind::Int8 | DtypeKind::Int4 | DtypeKind::Int2 => {
            let b = dt.kind.code_bits();
            let step = if dt.zero_point {
                (hi - lo) / ((1u32 << b) - 1) as f32
            } else {
                absmax / ((1u32 << (b - 1)) - 1) as f32
            };
            step * 0.5 + f16_slack * 2.0
        }
    }
}

fn round_trip_within_bound(dt: CacheDtype, hd: u32, data: &[f32]) {
    let c = Codec::new(dt, hd).unwrap();
    let hd = hd as usize;
    let rows = &data[..c.unit_tokens * hd];
    let mut bytes = vec![0u8; c.unit_bytes];
    c.encode_unit(rows, &mut bytes);
    let mut out = vec![0.0f32; hd];
    for t in 0..c.unit_tokens {
        c.decode_row(&bytes, t, &mut out);
        for (ch, &y) in out.iter().enumerate() {
            let x = rows[t * hd + ch];
            let group: Vec<f32> = if c.unit_tokens > 1 {
                (0..c.unit_tokens).map(|tt| rows[tt * hd + ch]).collect()
            } else {
                let g = c.group_of(ch);
                rows[g * c.group..(g + 1) * c.group].to_vec()
            };
            let b = bound(&dt, &group, x);
            assert!(
                (x - y).abs() <= b * 1.0001,
                "{:?}: x={x} decoded {y} err {} > bound {b}",
                dt.kind,
                (x - y).abs()
            );
        }
    }
}

proptest! {
    #[test]
    fn every_dtype_round_trips_within_its_bound(
        data in prop::collection::vec(-8.0f32..8.0, 64 * 64),
        offset in -4.0f32..4.0,
    ) {
        let shifted: Vec<f32> = data.iter().map(|x| x + offset).collect();
        for dt in all_dtypes() {
            round_trip_within_bound(dt, 64, &shifted);
        }
    }
}

#[test]
fn zero_vectors_stay_zero() {
    for dt in all_dtypes() {
        let c = Codec::new(dt, 64).unwrap();
        let rows = vec![0.0f32; c.unit_tokens * 64];
        let mut bytes = vec![0u8; c.unit_bytes];
        c.encode_unit(&rows, &mut bytes);
        let mut out = vec![1.0f32; 64];
        c.decode_row(&bytes, 0, &mut out);
        assert!(out.iter().all(|&v| v == 0.0), "{dt:?}: {out:?}");
    }
}

#[test]
fn fp8_stores_one_byte_per_element_and_refuses_what_it_cannot_scale() {
    // The storage contract of `fp8` (one scale per tensor): 128 channels = 128 bytes, as
    // vLLM's fp8 pages hold; `/token` adds one f32 (132 bytes).
    for kind in [DtypeKind::Fp8E4m3, DtypeKind::Fp8E5m2] {
        let c = Codec::new(CacheDtype::new(kind), 128).unwrap();
        assert_eq!(c.unit_bytes, 128, "{kind:?}");
        let t = Codec::new(CacheDtype::new(kind).per_token().unwrap(), 128).unwrap();
        assert_eq!(t.unit_bytes, 132, "{kind:?}");
    }
    // Exactly representable e4m3 values come back exactly at the fixed scale 1.0
    // (OCP FP8 table: 1.0, 0.5, 448, 2^-9).
    let c = Codec::new(CacheDtype::new(DtypeKind::Fp8E4m3), 32).unwrap();
    let mut rows = vec![0.0f32; 32];
    rows[..4].copy_from_slice(&[1.0, -0.5, 448.0, 2f32.powi(-9)]);
    rows[4] = 1000.0; // saturates at 448, as the engines' fp8 casts do
    let mut bytes = vec![0u8; c.unit_bytes];
    c.encode_unit(&rows, &mut bytes);
    let mut out = vec![0.0f32; 32];
    c.decode_row(&bytes, 0, &mut out);
    assert_eq!(&out[..5], &[1.0, -0.5, 448.0, 2f32.powi(-9), 448.0]);
    // int8 has no fixed scale to fall back on: per tensor is refused, naming the fix.
    let e = Codec::new(CacheDtype::new(DtypeKind::Int8).per_tensor().unwrap(), 128)
        .unwrap_err()
        .to_string();
    assert!(e.contains("int8") && e.contains("per tensor"), "{e}");
}

#[test]
fn int8_codes_are_exact_for_multiples_of_the_scale() {
    // Values k × absmax / 127 for integer k are representable exactly (f32 scale).
    let c = Codec::new(CacheDtype::new(DtypeKind::Int8), 32).unwrap();
    let rows: Vec<f32> = (0..32).map(|i| (i as f32 * 8.0 - 127.0) / 127.0).collect();
    let mut bytes = vec![0u8; c.unit_bytes];
    c.encode_unit(&rows, &mut bytes);
    let mut out = vec![0.0f32; 32];
    c.decode_row(&bytes, 0, &mut out);
    for (x, y) in rows.iter().zip(&out) {
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
}

#[test]
fn a_codec_is_the_same_as_itself_and_its_copies_and_no_other() {
    let dtypes = all_dtypes();
    for (i, a) in dtypes.iter().enumerate() {
        let c = Codec::new(*a, 128).unwrap();
        let copy = c;
        assert!(c.same(&c) && c.same(&copy) && copy.same(&c), "{a:?}");
        assert!(
            !c.same(&Codec::new(*a, 64).unwrap()),
            "{a:?}: head_dim differs"
        );
        for b in &dtypes[i + 1..] {
            assert!(!c.same(&Codec::new(*b, 128).unwrap()), "{a:?} vs {b:?}");
        }
    }
}

/// Rows that probe the encoder's edges: random values at several magnitudes, a constant
/// group, zeros, values exactly between two codes, and the largest magnitudes.
fn probing_rows(d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut rows = Vec::new();
    for mag in [1e-6f32, 0.01, 1.0, 3.7, 1e4] {
        rows.push((0..d).map(|_| next() * mag).collect());
    }
    rows.push(vec![0.25; d]);
    rows.push(vec![0.0; d]);
    // Halfway points of a 0..15 and a −127..127 grid.
    rows.push((0..d).map(|i| (i % 16) as f32 + 0.5).collect());
    rows.push((0..d).map(|i| (i as f32 - 64.0) + 0.5).collect());
    rows.push(
        (0..d)
            .map(|i| if i % 2 == 0 { 6e4 } else { -6e4 })
            .collect(),
    );
    // NF4's midpoints themselves, at scale 1 (the 1.0 sets each group's absmax).
    let mids: Vec<f32> = (0..15)
        .map(|i| 0.5 * (nf4::NF4_LEVELS[i] + nf4::NF4_LEVELS[i + 1]))
        .collect();
    rows.push(
        (0..d)
            .map(|i| if i % 16 == 0 { 1.0 } else { mids[i % 16 - 1] })
            .collect(),
    );
    rows
}

/// `kind`'s rows (the probing rows and a row of `edges`) encoded as the `half` crate encodes
/// them, through `encode_unit` and through `simd` directly (21 values: a whole SIMD pass and
/// a scalar tail).
#[cfg(target_arch = "x86_64")]
fn halves_match_the_half_crate<H>(
    kind: DtypeKind,
    edges: &[f32],
    simd: fn(&[f32], &mut [u8]) -> bool,
    zero: H,
    le_bytes: fn(H) -> [u8; 2],
) where
    H: Copy,
    [H]: HalfFloatSliceExt,
{
    let c = Codec::new(CacheDtype::new(kind), 128).unwrap();
    let mut rows = probing_rows(128, 5);
    rows.push((0..128).map(|i| edges[i % edges.len()]).collect());
    for (i, row) in rows.iter().enumerate() {
        let (mut fast, mut slow) = (vec![0u8; c.unit_bytes], vec![0u8; c.unit_bytes]);
        c.encode_unit(row, &mut fast);
        encode_halves(row, &mut slow, zero, le_bytes);
        assert_eq!(fast, slow, "{kind:?} row {i}");
    }
    let odd: Vec<f32> = (0..21).map(|i| i as f32 * 0.37 - 2.0).collect();
    let (mut fast, mut slow) = (vec![0u8; 42], vec![0u8; 42]);
    if simd(&odd, &mut fast) {
        encode_halves(&odd, &mut slow, zero, le_bytes);
        assert_eq!(fast, slow, "{kind:?}, 21 values");
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn bf16_encoding_writes_the_bytes_of_the_half_crate() {
    // Ties to even either way, a carry into the exponent, rounding up to infinity,
    // subnormals, signed zero, infinities and NaNs (quiet, signalling, with a payload only in
    // the bits bf16 drops).
    let edges = [
        0x3f80_8000,
        0x3f81_8000,
        0x3f80_8001,
        0x3fff_ffff,
        0x7f7f_ffff,
        0x0000_8001,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x7fc0_0000,
        0xff80_0001,
        0x7f80_4000,
        0x3f80_0000,
    ]
    .map(f32::from_bits);
    halves_match_the_half_crate(
        DtypeKind::Bf16,
        &edges,
        halves_x86::encode_bf16,
        half::bf16::ZERO,
        half::bf16::to_le_bytes,
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn f16c_encoding_writes_the_bytes_of_the_half_crate() {
    // f16's largest and smallest normals, its subnormals, ties to even, overflow to infinity
    // and the infinities.
    let edges = [
        65504.0,
        65520.0,
        -70000.0,
        6.1035156e-5,
        5.9604645e-8,
        2.9802322e-8,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    halves_match_the_half_crate(
        DtypeKind::F16,
        &edges,
        halves_x86::encode_f16,
        half::f16::ZERO,
        half::f16::to_le_bytes,
    );
}

#[test]
fn simd_integer_encodings_write_the_bytes_of_the_scalar_one() {
    let kinds = [
        CacheDtype::new(DtypeKind::Int8),
        CacheDtype::new(DtypeKind::Int4),
        CacheDtype::q8_0(),
        CacheDtype::q4_0(),
        CacheDtype::new(DtypeKind::Int4).with_group(16).unwrap(),
        CacheDtype::new(DtypeKind::Int8).with_group(64).unwrap(),
        CacheDtype::new(DtypeKind::Nf4),
        CacheDtype::new(DtypeKind::Fp8E4m3),
        CacheDtype::new(DtypeKind::Fp8E5m2),
        CacheDtype::new(DtypeKind::Fp8E4m3).with_group(32).unwrap(),
        CacheDtype::new(DtypeKind::Fp8E5m2).with_group(64).unwrap(),
    ];
    let mut checked = 0;
    #[cfg(target_arch = "x86_64")]
    for &simd in quantize_x86::available() {
        for dt in kinds {
            for d in [64usize, 128, 256] {
                let c = Codec::new(dt, d as u32).unwrap();
                if !quantize_x86::fits(&c) {
                    continue;
                }
                for (i, row) in probing_rows(d, d as u64).iter().enumerate() {
                    let (mut fast, mut slow) = (vec![0u8; c.unit_bytes], vec![0u8; c.unit_bytes]);
                    // AVX-512 has no fp8 encoding: those rows go to AVX2.
                    if !quantize_x86::encode_row_with(simd, &c, row, &mut fast) {
                        assert!(simd != quantize_x86::Simd::Avx2, "{dt:?} d {d} row {i}");
                        continue;
                    }
                    c.encode_row_scalar(row, &mut slow);
                    assert_eq!(fast, slow, "{simd:?} {dt:?} d {d} row {i}");
                    checked += 1;
                }
            }
        }
    }
    // Without AVX2 there is no second encoding to compare.
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        assert!(checked >= 11 * 3 * 11, "{checked} rows compared");
    }
}

#[test]
fn a_row_with_a_value_that_is_not_finite_is_encoded_by_the_scalar_path() {
    let c = Codec::new(CacheDtype::new(DtypeKind::Int4), 128).unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut row: Vec<f32> = (0..128).map(|i| i as f32 * 0.1).collect();
        row[77] = bad;
        let (mut a, mut b) = (vec![0u8; c.unit_bytes], vec![0u8; c.unit_bytes]);
        c.encode_unit(&row, &mut a);
        c.encode_row_scalar(&row, &mut b);
        assert_eq!(a, b, "{bad}");
    }
}
