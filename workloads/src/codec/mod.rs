//! Quantization codecs: how one head's K or V rows are stored in bytes, for every cache dtype.
//!
//! A codec stores *units*: one token's head vector for dtypes grouped along the token
//! (`GroupAxis::Token`), or `group` consecutive tokens for channel-grouped keys (KIVI,
//! `GroupAxis::Channel`). A unit's bytes are its packed codes (row-major, low bits first)
//! followed by one parameter record per group: a scale, and for asymmetric dtypes a zero
//! point, each `scale_bytes` wide (2 = f16, 4 = f32). The size of `n` tokens is exactly
//! `CacheDtype::quantized_bytes(n, head_dim)`, the figure the planner predicts.
//!
//! Every integer-like code decodes as `code × scale + bias` with one (scale, bias) per group,
//! which lets the kernels dequantize inside their dot products (see `cpu/`).

pub mod fp8;
#[cfg(target_arch = "x86_64")]
mod halves_x86;
pub mod nf4;
#[cfg(target_arch = "x86_64")]
mod quantize_x86;

use fp8::Fp8;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use kvbench_planner::{CacheDtype, DtypeKind, GroupAxis};
use nf4::{nearest_level, NF4_LEVELS};

/// A dtype/head_dim combination the codecs cannot store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{dtype} groups of {group} do not divide head_dim {head_dim}; use a head_dim that is a multiple of {group} or another group size")]
    GroupDoesNotDivide {
        dtype: &'static str,
        group: u32,
        head_dim: u32,
    },
    #[error(
        "{dtype} with scale_bytes {scale_bytes} is not supported; scales are f16 (2) or f32 (4)"
    )]
    ScaleWidth {
        dtype: &'static str,
        scale_bytes: u32,
    },
    #[error("{dtype} with one scale per tensor is not supported: only fp8 has a fixed per-tensor scale (1.0, vLLM's default k_scale); use {dtype} (per head vector) or {dtype}/gN")]
    PerTensor { dtype: &'static str },
    #[error("{dtype} is symmetric by construction; it cannot take a zero point")]
    ZeroPoint { dtype: &'static str },
    #[error("{dtype} grouped per channel needs an f16 residual of at least its group ({group} tokens), got {residual}")]
    ChannelNeedsResidual {
        dtype: &'static str,
        group: u32,
        residual: u32,
    },
}

/// The scale of a per-tensor fp8 cache (`fp8`, `fp8-e4m3`, `fp8-e5m2`): vLLM's default
/// `k_scale = v_scale = 1.0` when the checkpoint carries no calibrated scales
/// (vllm/attention/layer.py), so values are stored as fp8 directly and saturate at the
/// format's maximum (448 for e4m3).
pub const PER_TENSOR_SCALE: f32 = 1.0;

/// How codes turn back into values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    F32,
    F16,
    Bf16,
    /// fp8 code × scale.
    Fp8(Fp8),
    /// Unsigned `bits`-wide code × scale + bias (symmetric codes are offset binary).
    Int {
        bits: u32,
        asymmetric: bool,
    },
    /// NF4 level × absmax.
    Nf4,
}

/// The storage format of one head's K or V rows in a given cache dtype.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Codec {
    pub dtype: CacheDtype,
    pub head_dim: usize,
    pub quant: Quant,
    /// Elements per scale group (head_dim for float kinds).
    pub group: usize,
    /// Tokens per unit: 1, or the group size for channel-grouped keys.
    pub unit_tokens: usize,
    /// Bytes of one unit (codes + group parameters).
    pub unit_bytes: usize,
    /// Bytes of one token's codes inside a unit.
    pub row_code_bytes: usize,
}

impl Codec {
    /// Whether `other` is this format: by address first (every segment of one store points
    /// at one codec), by value otherwise. The kernels ask for every piece of a tile.
    #[inline]
    pub fn same(&self, other: &Codec) -> bool {
        std::ptr::eq(self, other) || self == other
    }

    /// Validate `dtype` for `head_dim` and derive its byte layout.
    pub fn new(dtype: CacheDtype, head_dim: u32) -> Result<Self, CodecError> {
        let name = dtype.kind.name();
        let quant = match dtype.kind {
            DtypeKind::F32 => Quant::F32,
            DtypeKind::F16 => Quant::F16,
            DtypeKind::Bf16 => Quant::Bf16,
            DtypeKind::Fp8E4m3 => Quant::Fp8(Fp8::E4m3),
            DtypeKind::Fp8E5m2 => Quant::Fp8(Fp8::E5m2),
            DtypeKind::Int8 | DtypeKind::Int4 | DtypeKind::Int2 => Quant::Int {
                bits: dtype.kind.code_bits(),
                asymmetric: dtype.zero_point,
            },
            DtypeKind::Nf4 => Quant::Nf4,
        };
        let group = dtype.group_len(head_dim);
        if dtype.is_per_tensor() && !matches!(quant, Quant::Fp8(_)) {
            return Err(CodecError::PerTensor { dtype: name });
        }
        if !dtype.kind.is_float() && !dtype.is_per_tensor() {
            if !matches!(dtype.scale_bytes, 2 | 4) {
                return Err(CodecError::ScaleWidth {
                    dtype: name,
                    scale_bytes: dtype.scale_bytes,
                });
            }
            if dtype.zero_point && matches!(quant, Quant::Fp8(_) | Quant::Nf4) {
                return Err(CodecError::ZeroPoint { dtype: name });
            }
        }
        let unit_tokens = match (dtype.kind.is_float(), dtype.axis) {
            (false, GroupAxis::Channel) => {
                if dtype.residual < group {
                    return Err(CodecError::ChannelNeedsResidual {
                        dtype: name,
                        group,
                        residual: dtype.residual,
                    });
                }
                group as usize
            }
            _ => {
                if !dtype.kind.is_float() && !head_dim.is_multiple_of(group) {
                    return Err(CodecError::GroupDoesNotDivide {
                        dtype: name,
                        group,
                        head_dim,
                    });
                }
                1
            }
        };
        let hd = head_dim as usize;
        let row_code_bits = hd * dtype.kind.code_bits() as usize;
        if !row_code_bits.is_multiple_of(8) {
            return Err(CodecError::GroupDoesNotDivide {
                dtype: name,
                group: 8 / dtype.kind.code_bits(),
                head_dim,
            });
        }
        Ok(Codec {
            dtype,
            head_dim: hd,
            quant,
            group: if dtype.kind.is_float() {
                hd
            } else {
                group as usize
            },
            unit_tokens,
            unit_bytes: dtype.quantized_bytes(unit_tokens as u64, head_dim) as usize,
            row_code_bytes: row_code_bits / 8,
        })
    }

    /// Bytes to store `tokens` tokens (a multiple of `unit_tokens`).
    pub fn bytes_for(&self, tokens: usize) -> usize {
        debug_assert_eq!(tokens % self.unit_tokens, 0);
        tokens / self.unit_tokens * self.unit_bytes
    }

    /// Code bits per element.
    pub fn bits(&self) -> usize {
        self.dtype.kind.code_bits() as usize
    }

    /// Groups per unit (one parameter record each).
    pub fn groups_per_unit(&self) -> usize {
        match self.dtype.axis {
            GroupAxis::Channel if self.unit_tokens > 1 => self.head_dim,
            _ => self.head_dim / self.group,
        }
    }

    fn param_bytes(&self) -> usize {
        self.dtype.group_overhead_bytes() as usize
    }

    fn params_offset(&self) -> usize {
        self.unit_tokens * self.row_code_bytes
    }

    fn read_scalar(&self, b: &[u8]) -> f32 {
        if self.dtype.scale_bytes == 2 {
            f16::from_le_bytes([b[0], b[1]]).to_f32()
        } else {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }

    /// Round a scale/zero to what storage keeps, and write it.
    fn write_scalar(&self, v: f32, out: &mut [u8]) -> f32 {
        if self.dtype.scale_bytes == 2 {
            let h = f16::from_f32(v);
            out[..2].copy_from_slice(&h.to_le_bytes());
            h.to_f32()
        } else {
            out[..4].copy_from_slice(&v.to_le_bytes());
            v
        }
    }

    /// (scale, bias) of group `g` of a unit: a code decodes to `code × scale + bias`
    /// (for fp8 and nf4, `code` is the decoded level and bias is 0).
    #[inline]
    pub fn group_params(&self, unit: &[u8], g: usize) -> (f32, f32) {
        if self.dtype.is_per_tensor() {
            return (PER_TENSOR_SCALE, 0.0);
        }
        let pb = self.param_bytes();
        let off = self.params_offset() + g * pb;
        let scale = self.read_scalar(&unit[off..]);
        match self.quant {
            Quant::Int { bits, asymmetric } => {
                if asymmetric {
                    let zero = self.read_scalar(&unit[off + pb / 2..]);
                    (scale, zero)
                } else {
                    (scale, -((1u32 << (bits - 1)) as f32) * scale)
                }
            }
            _ => (scale, 0.0),
        }
    }

    /// Raw code of element `c` of row `t` in a unit.
    #[inline]
    pub fn code(&self, unit: &[u8], t: usize, c: usize) -> u32 {
        let b = self.bits();
        let bit = (t * self.head_dim + c) * b;
        ((unit[bit / 8] >> (bit % 8)) as u32) & ((1u32 << b) - 1)
    }

    fn put_code(&self, unit: &mut [u8], t: usize, c: usize, code: u32) {
        let b = self.bits();
        let bit = (t * self.head_dim + c) * b;
        let mask = (((1u32 << b) - 1) << (bit % 8)) as u8;
        unit[bit / 8] = (unit[bit / 8] & !mask) | ((code << (bit % 8)) as u8 & mask);
    }

    /// Group of element `c` of row `t`.
    #[inline]
    pub fn group_of(&self, c: usize) -> usize {
        if self.unit_tokens > 1 {
            c
        } else {
            c / self.group
        }
    }

    /// Store `rows` (`unit_tokens × head_dim` values) as one unit.
    pub fn encode_unit(&self, rows: &[f32], out: &mut [u8]) {
        let hd = self.head_dim;
        debug_assert_eq!(rows.len(), self.unit_tokens * hd);
        debug_assert_eq!(out.len(), self.unit_bytes);
        match self.quant {
            Quant::F32 => {
                for (o, x) in out.chunks_exact_mut(4).zip(rows) {
                    o.copy_from_slice(&x.to_le_bytes());
                }
            }
            Quant::F16 => {
                #[cfg(target_arch = "x86_64")]
                if halves_x86::encode_f16(rows, out) {
                    return;
                }
                encode_halves(rows, out, f16::ZERO, f16::to_le_bytes)
            }
            Quant::Bf16 => {
                #[cfg(target_arch = "x86_64")]
                if halves_x86::encode_bf16(rows, out) {
                    return;
                }
                encode_halves(rows, out, bf16::ZERO, bf16::to_le_bytes)
            }
            _ if self.unit_tokens == 1 => {
                #[cfg(target_arch = "x86_64")]
                if quantize_x86::encode_row(self, rows, out) {
                    return;
                }
                self.encode_row_scalar(rows, out);
            }
            _ => {
                // Channel groups (KIVI keys): one channel over the unit's tokens.
                let pb = self.param_bytes();
                let po = self.params_offset();
                let (mut stack, mut heap) = ([0u32; 256], Vec::new());
                let codes = code_buffer(&mut stack, &mut heap, self.unit_tokens);
                let mut vals = vec![0.0f32; self.unit_tokens];
                for ch in 0..hd {
                    for (t, v) in vals.iter_mut().enumerate() {
                        *v = rows[t * hd + ch];
                    }
                    let params = &mut out[po + ch * pb..po + (ch + 1) * pb];
                    self.quantize_group(&vals, params, codes);
                    for (t, &code) in codes.iter().enumerate() {
                        self.put_code(out, t, ch, code);
                    }
                }
            }
        }
    }

    /// [`Codec::encode_unit`] of one row in token groups, element by element (the reference
    /// the SIMD encodings are tested against).
    fn encode_row_scalar(&self, rows: &[f32], out: &mut [u8]) {
        let pb = self.param_bytes();
        let po = self.params_offset();
        let (mut stack, mut heap) = ([0u32; 256], Vec::new());
        let codes = code_buffer(&mut stack, &mut heap, self.group);
        for (g, vals) in rows.chunks_exact(self.group).enumerate() {
            let params = &mut out[po + g * pb..po + (g + 1) * pb];
            self.quantize_group(vals, params, codes);
            self.put_codes(out, g * self.group, codes);
        }
    }

    /// Write consecutive codes starting at element `first` of row 0.
    fn put_codes(&self, unit: &mut [u8], first: usize, codes: &[u32]) {
        match self.bits() {
            8 => unit[first..first + codes.len()]
                .iter_mut()
                .zip(codes)
                .for_each(|(b, &c)| *b = c as u8),
            4 if first.is_multiple_of(2) && codes.len().is_multiple_of(2) => unit
                [first / 2..(first + codes.len()) / 2]
                .iter_mut()
                .zip(codes.chunks_exact(2))
                .for_each(|(b, c)| *b = (c[0] | (c[1] << 4)) as u8),
            _ => {
                for (i, &c) in codes.iter().enumerate() {
                    self.put_code(unit, 0, first + i, c);
                }
            }
        }
    }

    /// Choose and write one group's parameters; its codes go to `codes`.
    fn quantize_group(&self, vals: &[f32], params: &mut [u8], codes: &mut [u32]) {
        let (lo, hi) = extremes(vals);
        let absmax = hi.max(-lo).max(0.0);
        let vals = vals.iter().copied();
        match self.quant {
            Quant::Fp8(fmt) if self.dtype.is_per_tensor() => {
                // Nothing stored per group: codes at the tensor's fixed scale.
                fill_codes(codes, vals.map(|x| fmt.encode(x / PER_TENSOR_SCALE) as u32))
            }
            Quant::Fp8(fmt) => {
                let scale = self.write_scalar(absmax / fmt.max(), params);
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                fill_codes(codes, vals.map(|x| fmt.encode(x * inv) as u32))
            }
            Quant::Nf4 => {
                let scale = self.write_scalar(absmax, params);
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                fill_codes(codes, vals.map(|x| nearest_level(x * inv) as u32))
            }
            Quant::Int {
                bits,
                asymmetric: true,
            } => {
                let levels = ((1u32 << bits) - 1) as f32;
                let pb = params.len() / 2;
                let scale = self.write_scalar((hi - lo) / levels, &mut params[..pb]);
                let zero = self.write_scalar(lo, &mut params[pb..]);
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                fill_codes(
                    codes,
                    vals.map(|x| round_clamped((x - zero) * inv, 0.0, levels) as u32),
                )
            }
            Quant::Int {
                bits,
                asymmetric: false,
            } => {
                let qmax = ((1u32 << (bits - 1)) - 1) as f32;
                let off = 1i32 << (bits - 1);
                let scale = self.write_scalar(absmax / qmax, params);
                let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                fill_codes(
                    codes,
                    vals.map(|x| (round_clamped(x * inv, -qmax, qmax) + off) as u32),
                )
            }
            Quant::F32 | Quant::F16 | Quant::Bf16 => unreachable!("float kinds have no groups"),
        }
    }

    /// Value of element `c` of row `t` of a unit (slow path; kernels have their own).
    #[inline]
    pub fn value(&self, unit: &[u8], t: usize, c: usize) -> f32 {
        match self.quant {
            Quant::F32 => {
                let o = (t * self.head_dim + c) * 4;
                f32::from_le_bytes([unit[o], unit[o + 1], unit[o + 2], unit[o + 3]])
            }
            Quant::F16 => {
                let o = (t * self.head_dim + c) * 2;
                f16::from_le_bytes([unit[o], unit[o + 1]]).to_f32()
            }
            Quant::Bf16 => {
                let o = (t * self.head_dim + c) * 2;
                bf16::from_le_bytes([unit[o], unit[o + 1]]).to_f32()
            }
            Quant::Fp8(fmt) => {
                let (s, _) = self.group_params(unit, self.group_of(c));
                fmt.table()[self.code(unit, t, c) as usize] * s
            }
            Quant::Nf4 => {
                let (s, _) = self.group_params(unit, self.group_of(c));
                NF4_LEVELS[self.code(unit, t, c) as usize] * s
            }
            Quant::Int { .. } => {
                let (s, b) = self.group_params(unit, self.group_of(c));
                self.code(unit, t, c) as f32 * s + b
            }
        }
    }

    /// Decode row `t` of a unit into `out` (`head_dim` values).
    pub fn decode_row(&self, unit: &[u8], t: usize, out: &mut [f32]) {
        for (c, o) in out.iter_mut().enumerate().take(self.head_dim) {
            *o = self.value(unit, t, c);
        }
    }
}

/// Values a 16-bit float encoding converts at a time.
const CONVERT_RUN: usize = 256;

/// `rows` as f16 or bf16 codes: converted a run at a time (the half crate's slice
/// conversion uses F16C where the CPU has it), then stored little-endian.
fn encode_halves<H>(rows: &[f32], out: &mut [u8], zero: H, le_bytes: fn(H) -> [u8; 2])
where
    H: Copy,
    [H]: HalfFloatSliceExt,
{
    let mut buf = [zero; CONVERT_RUN];
    for (o, x) in out
        .chunks_mut(2 * CONVERT_RUN)
        .zip(rows.chunks(CONVERT_RUN))
    {
        let b = &mut buf[..x.len()];
        b.convert_from_f32_slice(x);
        for (o, &h) in o.chunks_exact_mut(2).zip(b.iter()) {
            o.copy_from_slice(&le_bytes(h));
        }
    }
}

/// (min, max) of `vals`, ignoring NaN as `f32::min`/`max` do; 16 lanes at a time, so the
/// loop vectorizes (an encoding runs once per row and head).
fn extremes(vals: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; 16], [f32::NEG_INFINITY; 16]);
    let mut chunks = vals.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            lo[i] = lo[i].min(c[i]);
            hi[i] = hi[i].max(c[i]);
        }
    }
    for (i, &x) in chunks.remainder().iter().enumerate() {
        lo[i] = lo[i].min(x);
        hi[i] = hi[i].max(x);
    }
    let lo = lo.iter().fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    (lo, hi)
}

/// Room for one group's `n` codes: on the stack when the group is small (every default
/// layout), as an encoding runs once per row and head.
fn code_buffer<'a>(stack: &'a mut [u32; 256], heap: &'a mut Vec<u32>, n: usize) -> &'a mut [u32] {
    if n <= stack.len() {
        return &mut stack[..n];
    }
    heap.resize(n, 0);
    heap
}

/// The nearest integer to `x` (ties to even) within the whole numbers `lo..=hi`
/// (|lo|, |hi| < 2^22; NaN gives `lo`), without a libm call or a float-to-int conversion,
/// so that a group's loop vectorizes: after adding 1.5·2^23 the integer is the low bits.
#[inline]
fn round_clamped(x: f32, lo: f32, hi: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    let y = x.max(lo).min(hi) + MAGIC;
    y.to_bits() as i32 - MAGIC.to_bits() as i32
}

fn fill_codes(codes: &mut [u32], it: impl Iterator<Item = u32>) {
    for (c, v) in codes.iter_mut().zip(it) {
        *c = v;
    }
}

#[cfg(test)]
mod tests;
