//! Host twins of the kernels' storage codecs and synthetic inputs (kernels/common.cuh and
//! kernels/cache_write.cu), bit for bit: they let the CPU predict exactly what the GPU stores.

use crate::WorkloadError;
use half::{bf16, f16};
use kvbench_planner::{CacheDtype, DtypeKind, GroupAxis};

/// Channels per int4 group (f16 scale + f16 zero point each).
pub const INT4_GROUP: usize = 32;

/// A cache storage format the CUDA kernels implement (ids match `CODEC_*` in common.cuh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuCodec {
    F32,
    F16,
    Bf16,
    Int8,
    Int4,
    Fp8E4m3,
    Fp8E5m2,
}

/// The one scale layout of `kind` the CUDA kernels store: kvbench's default
/// ([`CacheDtype::new`]), except fp8, whose kernel keeps one f32 scale per row (the
/// `/token` layout) where the default is one scale per tensor.
pub fn kernel_layout(kind: DtypeKind) -> CacheDtype {
    match kind {
        DtypeKind::Fp8E4m3 | DtypeKind::Fp8E5m2 => CacheDtype {
            group_size: None,
            scale_bytes: 4,
            zero_point: false,
            ..CacheDtype::new(kind)
        },
        _ => CacheDtype::new(kind),
    }
}

impl GpuCodec {
    /// Every codec the kernels implement.
    pub const ALL: [GpuCodec; 7] = [
        GpuCodec::F32,
        GpuCodec::F16,
        GpuCodec::Bf16,
        GpuCodec::Int8,
        GpuCodec::Int4,
        GpuCodec::Fp8E4m3,
        GpuCodec::Fp8E5m2,
    ];

    /// The `CODEC_*` number the kernels are compiled with.
    pub fn id(self) -> u32 {
        match self {
            GpuCodec::F32 => 0,
            GpuCodec::F16 => 1,
            GpuCodec::Bf16 => 2,
            GpuCodec::Int8 => 3,
            GpuCodec::Int4 => 4,
            GpuCodec::Fp8E4m3 => 5,
            GpuCodec::Fp8E5m2 => 6,
        }
    }

    /// The codec storing `dtype`, or an error naming what the GPU kernels cannot store.
    /// Only [`kernel_layout`] of each kind has a kernel.
    pub fn for_dtype(dtype: &CacheDtype) -> Result<Self, WorkloadError> {
        let codec = match dtype.kind {
            DtypeKind::F32 => GpuCodec::F32,
            DtypeKind::F16 => GpuCodec::F16,
            DtypeKind::Bf16 => GpuCodec::Bf16,
            DtypeKind::Int8 => GpuCodec::Int8,
            DtypeKind::Int4 => GpuCodec::Int4,
            DtypeKind::Fp8E4m3 => GpuCodec::Fp8E4m3,
            DtypeKind::Fp8E5m2 => GpuCodec::Fp8E5m2,
            DtypeKind::Nf4 | DtypeKind::Int2 => {
                return Err(unsupported(dtype, "this dtype has no CUDA kernel"))
            }
        };
        if dtype.is_per_tensor() {
            return Err(unsupported(
                dtype,
                "the CUDA fp8 kernel keeps one scale per head vector; run it as fp8-e4m3/token (or fp8-e5m2/token)",
            ));
        }
        let default = kernel_layout(dtype.kind);
        if dtype.residual != 0 {
            return Err(unsupported(
                dtype,
                "an f16 residual (KIVI) has no CUDA kernel",
            ));
        }
        if dtype.axis != GroupAxis::Token
            || dtype.group_size != default.group_size
            || dtype.scale_bytes != default.scale_bytes
            || dtype.zero_point != default.zero_point
        {
            return Err(unsupported(
                dtype,
                "only the default scale layout (CacheDtype::new) has a CUDA kernel",
            ));
        }
        Ok(codec)
    }

    /// Bytes of the codes of one row (head vector).
    pub fn row_bytes(self, head_dim: usize) -> usize {
        match self {
            GpuCodec::F32 => head_dim * 4,
            GpuCodec::F16 | GpuCodec::Bf16 => head_dim * 2,
            GpuCodec::Int8 | GpuCodec::Fp8E4m3 | GpuCodec::Fp8E5m2 => head_dim,
            GpuCodec::Int4 => head_dim / 2,
        }
    }

    /// 32-bit scale words of one row.
    pub fn scale_words(self, head_dim: usize) -> usize {
        match self {
            GpuCodec::F32 | GpuCodec::F16 | GpuCodec::Bf16 => 0,
            GpuCodec::Int8 | GpuCodec::Fp8E4m3 | GpuCodec::Fp8E5m2 => 1,
            GpuCodec::Int4 => head_dim / INT4_GROUP,
        }
    }

    /// Bytes one row occupies (codes + scales).
    pub fn row_total_bytes(self, head_dim: usize) -> usize {
        self.row_bytes(head_dim) + 4 * self.scale_words(head_dim)
    }

    /// Quantize one row exactly as `store_row<C>` in cache_write.cu does.
    pub fn encode_row(self, x: &[f32]) -> (Vec<u8>, Vec<u32>) {
        match self {
            GpuCodec::F32 => (x.iter().flat_map(|v| v.to_le_bytes()).collect(), vec![]),
            GpuCodec::F16 => (
                x.iter()
                    .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
                    .collect(),
                vec![],
            ),
            GpuCodec::Bf16 => (
                x.iter()
                    .flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes())
                    .collect(),
                vec![],
            ),
            GpuCodec::Int8 => {
                let scale = absmax(x) / 127.0;
                let codes = x
                    .iter()
                    .map(|v| {
                        if scale > 0.0 {
                            (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8 as u8
                        } else {
                            0
                        }
                    })
                    .collect();
                (codes, vec![scale.to_bits()])
            }
            GpuCodec::Fp8E4m3 | GpuCodec::Fp8E5m2 => {
                let (max, enc): (f32, fn(f32) -> u8) = if self == GpuCodec::Fp8E4m3 {
                    (448.0, f32_to_fp8_e4m3)
                } else {
                    (57344.0, f32_to_fp8_e5m2)
                };
                let scale = absmax(x) / max;
                let codes = x
                    .iter()
                    .map(|v| if scale > 0.0 { enc(v / scale) } else { 0 })
                    .collect();
                (codes, vec![scale.to_bits()])
            }
            GpuCodec::Int4 => {
                let mut codes = vec![0u8; x.len() / 2];
                let mut scales = Vec::with_capacity(x.len() / INT4_GROUP);
                for (g, group) in x.chunks(INT4_GROUP).enumerate() {
                    let lo = group.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = group.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let s16 = f16::from_f32((hi - lo) / 15.0);
                    let z16 = f16::from_f32(lo);
                    let (s, z) = (s16.to_f32(), z16.to_f32());
                    for (i, v) in group.iter().enumerate() {
                        let c = if s > 0.0 {
                            ((v - z) / s).round_ties_even().clamp(0.0, 15.0) as u8
                        } else {
                            0
                        };
                        let at = g * INT4_GROUP + i;
                        codes[at / 2] |= c << (4 * (at % 2));
                    }
                    scales.push(s16.to_bits() as u32 | (z16.to_bits() as u32) << 16);
                }
                (codes, scales)
            }
        }
    }

    /// Dequantize one row exactly as `Codec<C>::load16` does.
    pub fn decode_row(self, codes: &[u8], scales: &[u32], head_dim: usize) -> Vec<f32> {
        let scale = || f32::from_bits(scales[0]);
        (0..head_dim)
            .map(|i| match self {
                GpuCodec::F32 => f32::from_le_bytes(codes[4 * i..4 * i + 4].try_into().unwrap()),
                GpuCodec::F16 => {
                    f16::from_bits(u16::from_le_bytes([codes[2 * i], codes[2 * i + 1]])).to_f32()
                }
                GpuCodec::Bf16 => {
                    bf16::from_bits(u16::from_le_bytes([codes[2 * i], codes[2 * i + 1]])).to_f32()
                }
                GpuCodec::Int8 => codes[i] as i8 as f32 * scale(),
                GpuCodec::Fp8E4m3 => fp8_e4m3_to_f32(codes[i]) * scale(),
                GpuCodec::Fp8E5m2 => fp8_e5m2_to_f32(codes[i]) * scale(),
                GpuCodec::Int4 => {
                    let c = (codes[i / 2] >> (4 * (i % 2))) & 0xf;
                    let word = scales[i / INT4_GROUP];
                    let s = f16::from_bits(word as u16).to_f32();
                    let z = f16::from_bits((word >> 16) as u16).to_f32();
                    (c as f32).mul_add(s, z)
                }
            })
            .collect()
    }
}

fn unsupported(dtype: &CacheDtype, why: &str) -> WorkloadError {
    WorkloadError::Invalid(format!(
        "cache dtype {} ({dtype:?}) is not supported on --backend cuda: {why}; use f16, bf16, \
         f32, int8, int4, fp8-e4m3/token or fp8-e5m2/token, or --backend cpu",
        dtype.kind.name()
    ))
}

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// fp8 e4m3 (bias 7, 3 mantissa bits, max 448) to f32; exact.
pub fn fp8_e4m3_to_f32(c: u8) -> f32 {
    let mag = f32::from_bits(((c & 0x7f) as u32) << 20) * 2f32.powi(120);
    if c & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// fp8 e5m2 (bias 15, 2 mantissa bits, max 57344) to f32; exact.
pub fn fp8_e5m2_to_f32(c: u8) -> f32 {
    let mag = f32::from_bits(((c & 0x7f) as u32) << 21) * 2f32.powi(112);
    if c & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// f32 to fp8 e4m3, round to nearest even, saturating at ±448.
pub fn f32_to_fp8_e4m3(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 24) & 0x80) as u8;
    let a = x.abs();
    let code = if a >= 448.0 {
        0x7e
    } else if a < 2f32.powi(-6) {
        (a * 512.0).round_ties_even() as u32
    } else {
        let b = a.to_bits();
        let b = b + 0x7ffff + ((b >> 20) & 1);
        (b >> 20) - ((127 - 7) << 3)
    };
    sign | code as u8
}

/// f32 to fp8 e5m2, round to nearest even, saturating at ±57344.
pub fn f32_to_fp8_e5m2(x: f32) -> u8 {
    let sign = ((x.to_bits() >> 24) & 0x80) as u8;
    let a = x.abs();
    let code = if a >= 57344.0 {
        0x7b
    } else if a < 2f32.powi(-14) {
        (a * 65536.0).round_ties_even() as u32
    } else {
        let b = a.to_bits();
        let b = b + 0xfffff + ((b >> 21) & 1);
        (b >> 21) - ((127 - 15) << 2)
    };
    sign | code as u8
}

/// SplitMix64's output function (Steele et al. 2014), as in common.cuh.
pub fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Element `index` of synthetic stream `key`: uniform in [-1, 1) on a 2^-23 grid.
pub fn synthetic_value(key: u64, index: u64) -> f32 {
    let r = splitmix64(key ^ splitmix64(index));
    ((r >> 40) as i32 - (1 << 23)) as f32 * 2f32.powi(-23)
}

/// Index of element (sequence, position, head, channel) in a synthetic stream.
pub fn synthetic_index(b: u32, pos: u32, head: u32, d: u32) -> u64 {
    ((b as u64) << 42) | ((pos as u64) << 18) | ((head as u64) << 10) | d as u64
}

/// Largest (batch, position, head, channel) the 22/24/8/10-bit index holds.
pub const SYNTHETIC_LIMITS: (u64, u64, u64, u64) = (1 << 22, 1 << 24, 1 << 8, 1 << 10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sizes_match_the_storage_contract() {
        // A row's codes + scales must be exactly CacheDtype::quantized_bytes(1, head_dim).
        for kind in [
            DtypeKind::F32,
            DtypeKind::F16,
            DtypeKind::Bf16,
            DtypeKind::Int8,
            DtypeKind::Int4,
            DtypeKind::Fp8E4m3,
            DtypeKind::Fp8E5m2,
        ] {
            let dtype = kernel_layout(kind);
            let codec = GpuCodec::for_dtype(&dtype).unwrap();
            for hd in [64u32, 128, 256] {
                assert_eq!(
                    codec.row_total_bytes(hd as usize) as u64,
                    dtype.quantized_bytes(1, hd),
                    "{kind:?} hd {hd}"
                );
            }
        }
        // By hand: int8 at head_dim 128 is 128 codes + one f32 scale; int4 is 64 bytes of
        // nibbles + 4 groups × (f16 scale + f16 zero).
        assert_eq!(GpuCodec::Int8.row_total_bytes(128), 132);
        assert_eq!(GpuCodec::Int4.row_total_bytes(128), 80);
    }

    #[test]
    fn layouts_without_a_kernel_are_refused_with_the_dtype_named() {
        for dtype in [
            CacheDtype::new(DtypeKind::Nf4),
            CacheDtype::q8_0(),
            CacheDtype::kivi(DtypeKind::Int4, 128).0,
        ] {
            let err = GpuCodec::for_dtype(&dtype).unwrap_err().to_string();
            assert!(
                err.contains("--backend cpu") && err.contains(dtype.kind.name()),
                "{err}"
            );
        }
    }

    #[test]
    fn fp8_known_codes() {
        // e4m3: 1.0 = 0 0111 000; 448 = 0 1111 110; smallest subnormal 2^-9 = 0x01.
        assert_eq!(f32_to_fp8_e4m3(1.0), 0x38);
        assert_eq!(f32_to_fp8_e4m3(448.0), 0x7e);
        assert_eq!(f32_to_fp8_e4m3(1e6), 0x7e);
        assert_eq!(f32_to_fp8_e4m3(-2.0f32.powi(-9)), 0x81);
        assert_eq!(fp8_e4m3_to_f32(0x7e), 448.0);
        assert_eq!(fp8_e4m3_to_f32(0x01), 2.0f32.powi(-9));
        // 1.0625 is halfway between 1.0 (mantissa 000) and 1.125 (001): ties to even.
        assert_eq!(f32_to_fp8_e4m3(1.0625), 0x38);
        assert_eq!(f32_to_fp8_e4m3(1.1875), 0x3a);
        // e5m2: 1.0 = 0 01111 00; 57344 = 0 11110 11; smallest subnormal 2^-16.
        assert_eq!(f32_to_fp8_e5m2(1.0), 0x3c);
        assert_eq!(f32_to_fp8_e5m2(57344.0), 0x7b);
        assert_eq!(fp8_e5m2_to_f32(0x7b), 57344.0);
        assert_eq!(fp8_e5m2_to_f32(0x01), 2.0f32.powi(-16));
        assert_eq!(fp8_e5m2_to_f32(0xbc), -1.0);
    }

    #[test]
    fn every_finite_fp8_code_round_trips() {
        for c in 0u8..=255 {
            let e4 = c & 0x7f;
            if e4 != 0x7f {
                // 0x7f/0xff are NaN in e4m3
                let v = fp8_e4m3_to_f32(c);
                let back = f32_to_fp8_e4m3(v);
                assert!(back == c || (v == 0.0 && back & 0x7f == 0), "e4m3 {c:#x}");
            }
            if e4 < 0x7c {
                // 0x7c.. are inf/NaN in e5m2
                let v = fp8_e5m2_to_f32(c);
                let back = f32_to_fp8_e5m2(v);
                assert!(back == c || (v == 0.0 && back & 0x7f == 0), "e5m2 {c:#x}");
            }
        }
    }

    #[test]
    fn fp8_rounds_to_the_nearest_code() {
        // Against a brute-force search over all codes for many values.
        for i in 0..4000 {
            let x = (i as f32 - 2000.0) * 0.1137;
            for (enc, dec, max) in [
                (
                    f32_to_fp8_e4m3 as fn(f32) -> u8,
                    fp8_e4m3_to_f32 as fn(u8) -> f32,
                    448.0,
                ),
                (f32_to_fp8_e5m2, fp8_e5m2_to_f32, 57344.0),
            ] {
                let x = x.clamp(-max, max);
                let got = dec(enc(x));
                let best = (0u8..=255)
                    .map(dec)
                    .filter(|v| v.is_finite())
                    .map(|v| (v - x).abs())
                    .fold(f32::INFINITY, f32::min);
                assert_eq!((got - x).abs(), best, "x = {x}");
            }
        }
    }

    #[test]
    fn quantized_rows_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..128).map(|i| synthetic_value(7, i)).collect();
        let amax = absmax(&x);
        for (codec, bound) in [
            (GpuCodec::F32, 0.0),
            (GpuCodec::F16, amax * 2f32.powi(-11)),
            (GpuCodec::Bf16, amax * 2f32.powi(-8)),
            (GpuCodec::Int8, amax / 127.0 / 2.0 * 1.0001),
            (GpuCodec::Fp8E4m3, amax * 2f32.powi(-4)),
            (GpuCodec::Fp8E5m2, amax * 2f32.powi(-3)),
        ] {
            let (codes, scales) = codec.encode_row(&x);
            assert_eq!(codes.len(), codec.row_bytes(128));
            assert_eq!(scales.len(), codec.scale_words(128));
            let y = codec.decode_row(&codes, &scales, 128);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= bound, "{codec:?}: {a} vs {b}");
            }
        }
        // int4: per group, half a step of (max − min) / 15, plus the f16 rounding of scale
        // and zero point.
        let (codes, scales) = GpuCodec::Int4.encode_row(&x);
        let y = GpuCodec::Int4.decode_row(&codes, &scales, 128);
        for (g, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let lo = xs.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let step = (hi - lo) / 15.0;
            for (a, b) in xs.iter().zip(ys) {
                assert!((a - b).abs() <= step * 0.5 + 2e-3, "group {g}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn zero_rows_store_zero() {
        let x = vec![0.0f32; 64];
        for codec in GpuCodec::ALL {
            let (codes, scales) = codec.encode_row(&x);
            assert!(codec
                .decode_row(&codes, &scales, 64)
                .iter()
                .all(|v| *v == 0.0));
        }
    }

    #[test]
    fn synthetic_values_are_uniform_on_the_unit_interval() {
        let n = 100_000;
        let xs: Vec<f32> = (0..n).map(|i| synthetic_value(42, i)).collect();
        assert!(xs.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = xs.iter().map(|x| *x as f64).sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        // U(-1, 1): mean 0, variance 1/3; 5 sigma of the sample mean is 0.009.
        assert!(mean.abs() < 0.009, "mean {mean}");
        assert!((var - 1.0 / 3.0).abs() < 0.01, "var {var}");
        assert_ne!(synthetic_value(1, 0), synthetic_value(2, 0));
    }

    #[test]
    fn splitmix_matches_the_published_sequence() {
        // SplitMix64 seeded with 0: the first output is splitmix64(0) (state += golden gamma
        // first) = 0xe220a8397b1dcdaf, the widely published first value.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn synthetic_index_fields_do_not_overlap() {
        let (b, p, h, d) = SYNTHETIC_LIMITS;
        let max = synthetic_index(
            (b - 1) as u32,
            (p - 1) as u32,
            (h - 1) as u32,
            (d - 1) as u32,
        );
        assert_eq!(max, u64::MAX);
        assert_eq!(synthetic_index(0, 0, 0, 1), 1);
        assert_eq!(synthetic_index(0, 0, 1, 0), 1 << 10);
        assert_eq!(synthetic_index(0, 1, 0, 0), 1 << 18);
        assert_eq!(synthetic_index(1, 0, 0, 0), 1 << 42);
    }

    #[test]
    fn gpu_codecs_agree_with_the_cpu_codecs_within_one_step() {
        // Same layouts and scale rules as the CPU codecs (crate::codec); the CPU multiplies
        // by a reciprocal and rounds half away from zero, so quantized codes may differ by
        // one step, never more. Float kinds must agree bit for bit.
        for kind in [
            DtypeKind::F32,
            DtypeKind::F16,
            DtypeKind::Bf16,
            DtypeKind::Int8,
            DtypeKind::Int4,
            DtypeKind::Fp8E4m3,
            DtypeKind::Fp8E5m2,
        ] {
            let dtype = kernel_layout(kind);
            let cpu = crate::codec::Codec::new(dtype, 128).unwrap();
            let gpu = GpuCodec::for_dtype(&dtype).unwrap();
            assert_eq!(cpu.unit_tokens, 1, "{kind:?}");
            assert_eq!(cpu.unit_bytes, gpu.row_total_bytes(128), "{kind:?}");
            for row in 0..50u64 {
                let x: Vec<f32> = (0..128).map(|i| synthetic_value(row, i) * 3.0).collect();
                let mut unit = vec![0u8; cpu.unit_bytes];
                cpu.encode_unit(&x, &mut unit);
                let mut from_cpu = vec![0f32; 128];
                cpu.decode_row(&unit, 0, &mut from_cpu);
                let (codes, scales) = gpu.encode_row(&x);
                let from_gpu = gpu.decode_row(&codes, &scales, 128);
                let amax = absmax(&x);
                for (i, (a, b)) in from_gpu.iter().zip(&from_cpu).enumerate() {
                    let step = match gpu {
                        GpuCodec::F32 | GpuCodec::F16 | GpuCodec::Bf16 => 0.0,
                        GpuCodec::Int8 => amax / 127.0 * 1.001,
                        // (max − min) / 15 of the group, f16-rounded: at most 2·amax / 15.
                        GpuCodec::Int4 => 2.0 * amax / 15.0 * 1.01,
                        // One code apart: 2^-3 (e4m3) / 2^-2 (e5m2) relative, or a subnormal step.
                        GpuCodec::Fp8E4m3 => {
                            (x[i].abs() * 0.125).max(amax / 448.0 * 2f32.powi(-9)) * 1.01
                        }
                        GpuCodec::Fp8E5m2 => {
                            (x[i].abs() * 0.25).max(amax / 57344.0 * 2f32.powi(-16)) * 1.01
                        }
                    };
                    assert!(
                        (a - b).abs() <= step,
                        "{kind:?} row {row} [{i}]: gpu {a} cpu {b} x {}",
                        x[i]
                    );
                }
            }
        }
    }
}
