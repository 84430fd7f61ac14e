//! fp8 formats (OCP FP8: e4m3 "fn" with max 448 and no infinities, e5m2 with max 57344):
//! round-to-nearest-even encoding with saturation, and 256-entry decode tables.

use std::sync::OnceLock;

/// One of the two OCP fp8 formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8 {
    /// 4 exponent bits (bias 7), 3 mantissa bits; largest finite 448.
    E4m3,
    /// 5 exponent bits (bias 15), 2 mantissa bits; largest finite 57344.
    E5m2,
}

impl Fp8 {
    pub(crate) fn mantissa_bits(self) -> i32 {
        match self {
            Fp8::E4m3 => 3,
            Fp8::E5m2 => 2,
        }
    }

    pub(crate) fn bias(self) -> i32 {
        match self {
            Fp8::E4m3 => 7,
            Fp8::E5m2 => 15,
        }
    }

    /// Largest finite magnitude.
    pub fn max(self) -> f32 {
        match self {
            Fp8::E4m3 => 448.0,
            Fp8::E5m2 => 57344.0,
        }
    }

    /// The code of `max()`: exponent field and mantissa of 1.75 · 2^emax (0x7e, 0x7b).
    pub(crate) fn max_code(self) -> u32 {
        match self {
            Fp8::E4m3 => 0x7e,
            Fp8::E5m2 => 0x7b,
        }
    }

    /// Encode with round-to-nearest-even; magnitudes beyond `max()` saturate (no inf/NaN),
    /// NaN encodes as a signed zero. Works on the f32 bits (a prompt fill encodes every
    /// element, so no logarithms or powers): a normal result is the f32 exponent and
    /// mantissa rounded to `m` bits and re-biased; a subnormal one is the value counted in
    /// the smallest quantum, which is exact because that quantum is a power of two.
    pub fn encode(self, x: f32) -> u8 {
        let bits = x.to_bits();
        let sign = ((bits >> 24) & 0x80) as u8;
        let a = f32::from_bits(bits & 0x7fff_ffff);
        if a.is_nan() {
            return sign;
        }
        if a >= self.max() {
            return sign | self.max_code() as u8;
        }
        let m = self.mantissa_bits();
        let min_exp = 1 - self.bias();
        let code = if a < f32::from_bits(((min_exp + 127) as u32) << 23) {
            // a / 2^(min_exp − m), by the exponent: 0..=2^m (2^m is the smallest normal's code).
            let quanta = a * f32::from_bits(((m - min_exp + 127) as u32) << 23);
            quanta.round_ties_even() as u32
        } else {
            let shift = 23 - m as u32;
            let magnitude = bits & 0x7fff_ffff;
            let lsb = (magnitude >> shift) & 1;
            let rounded = (magnitude + (1 << (shift - 1)) - 1 + lsb) >> shift;
            // A carry out of the mantissa moves into the exponent, as it should.
            let rebias = ((127 - self.bias()) as u32) << m;
            (rounded - rebias).min(self.max_code())
        };
        sign | code as u8
    }

    /// Decode one code (exact).
    pub fn decode_exact(self, code: u8) -> f32 {
        let m = self.mantissa_bits();
        let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
        let exp = ((code & 0x7f) >> m) as i32;
        let mant = (code & ((1 << m) - 1)) as f32;
        let scale = (1 << m) as f32;
        let mag = if exp == 0 {
            mant / scale * (2.0f32).powi(1 - self.bias())
        } else {
            (1.0 + mant / scale) * (2.0f32).powi(exp - self.bias())
        };
        sign * mag
    }

    /// The 256-entry decode table of this format.
    pub fn table(self) -> &'static [f32; 256] {
        static E4M3: OnceLock<[f32; 256]> = OnceLock::new();
        static E5M2: OnceLock<[f32; 256]> = OnceLock::new();
        let cell = match self {
            Fp8::E4m3 => &E4M3,
            Fp8::E5m2 => &E5M2,
        };
        cell.get_or_init(|| std::array::from_fn(|c| self.decode_exact(c as u8)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoding by its arithmetic definition (the first round's encoder): the binade's
    /// quantum, round to nearest even, saturate.
    fn encode_by_arithmetic(fmt: Fp8, x: f32) -> u8 {
        let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
        let a = x.abs();
        if a.is_nan() || a == 0.0 {
            return sign;
        }
        let m = fmt.mantissa_bits();
        let min_exp = 1 - fmt.bias();
        let e = (a.log2().floor() as i32).max(min_exp);
        let quantum = (2.0f32).powi(e - m);
        let r = ((a / quantum).round_ties_even() * quantum).min(fmt.max());
        if r == 0.0 {
            return sign;
        }
        let e = (r.log2().floor() as i32).max(min_exp);
        let bits = if r < (2.0f32).powi(min_exp) {
            (r / (2.0f32).powi(min_exp - m)) as u32
        } else {
            let mant = ((r / (2.0f32).powi(e) - 1.0) * (1 << m) as f32) as u32;
            (((e + fmt.bias()) as u32) << m) | mant
        };
        sign | bits as u8
    }

    #[test]
    fn bit_encoding_agrees_with_the_arithmetic_definition() {
        for fmt in [Fp8::E4m3, Fp8::E5m2] {
            // Every code's value, the midpoints between neighbours (the ties) and one f32
            // step either side of each, then a sweep over all f32 bit patterns.
            let mut probes = vec![0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
            let values: Vec<f32> = (0..=0x7fu8)
                .map(|c| fmt.decode_exact(c))
                .filter(|v| v.is_finite())
                .collect();
            for pair in values.windows(2) {
                let mid = (pair[0] + pair[1]) / 2.0;
                for v in [pair[0], mid] {
                    let b = v.to_bits();
                    probes.extend([v, f32::from_bits(b + 1), f32::from_bits(b.max(1) - 1)]);
                }
            }
            probes.extend((0..=u32::MAX).step_by(4093).map(f32::from_bits));
            for x in probes {
                for x in [x, -x] {
                    assert_eq!(
                        fmt.encode(x),
                        encode_by_arithmetic(fmt, x),
                        "{fmt:?} {x:e} ({:#010x})",
                        x.to_bits()
                    );
                }
            }
        }
    }

    #[test]
    fn ties_go_to_the_even_code() {
        // 1.0625 lies halfway between 1.0 (0x38) and 1.125 (0x39): even 0x38 wins;
        // 1.1875, halfway between 0x39 and 1.25 (0x3a), goes up to 0x3a.
        assert_eq!(Fp8::E4m3.encode(1.0625), 0x38);
        assert_eq!(Fp8::E4m3.encode(1.1875), 0x3a);
        // Subnormal tie: 2^-10 is half the smallest subnormal 2^-9, so it rounds to 0.
        assert_eq!(Fp8::E4m3.encode(2f32.powi(-10)), 0x00);
        assert_eq!(Fp8::E4m3.encode(3.0 * 2f32.powi(-10)), 0x02);
        // 464 lies halfway between 448 and 480 (not finite in e4m3fn): saturates to 448.
        assert_eq!(Fp8::E4m3.encode(464.0), 0x7e);
    }

    #[test]
    fn known_codes_of_the_ocp_spec() {
        // OCP 8-bit Floating Point Specification (2023), table 1.
        assert_eq!(Fp8::E4m3.decode_exact(0x7e), 448.0);
        assert_eq!(Fp8::E4m3.decode_exact(0x01), 2f32.powi(-9));
        assert_eq!(Fp8::E4m3.decode_exact(0x08), 2f32.powi(-6));
        assert_eq!(Fp8::E4m3.decode_exact(0x38), 1.0);
        assert_eq!(Fp8::E5m2.decode_exact(0x7b), 57344.0);
        assert_eq!(Fp8::E5m2.decode_exact(0x01), 2f32.powi(-16));
        assert_eq!(Fp8::E5m2.decode_exact(0x3c), 1.0);
        assert_eq!(Fp8::E4m3.encode(1.0), 0x38);
        assert_eq!(Fp8::E4m3.encode(-448.0), 0xfe);
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        assert_eq!(Fp8::E4m3.decode_exact(Fp8::E4m3.encode(1e6)), 448.0);
        assert_eq!(Fp8::E5m2.decode_exact(Fp8::E5m2.encode(-1e9)), -57344.0);
    }

    #[test]
    fn every_finite_code_round_trips() {
        for fmt in [Fp8::E4m3, Fp8::E5m2] {
            for c in 0..=255u8 {
                let v = fmt.decode_exact(c);
                if v.is_finite() && v.abs() <= fmt.max() && v != 0.0 {
                    assert_eq!(fmt.encode(v), c, "{fmt:?} code {c:#x} = {v}");
                }
            }
        }
    }

    #[test]
    fn encode_picks_the_nearest_code() {
        // Brute force: the nearest finite code (ties to even) over a sweep of values.
        for fmt in [Fp8::E4m3, Fp8::E5m2] {
            let finite: Vec<f32> = (0..=255u8)
                .map(|c| fmt.decode_exact(c))
                .filter(|v| v.abs() <= fmt.max())
                .collect();
            let mut x = -fmt.max();
            while x < fmt.max() {
                let got = fmt.decode_exact(fmt.encode(x));
                let best = finite
                    .iter()
                    .map(|v| (v - x).abs())
                    .fold(f32::INFINITY, f32::min);
                assert!((got - x).abs() <= best, "{fmt:?} {x}: got {got}");
                x += fmt.max() / 997.0 + x.abs() * 0.013;
            }
        }
    }
}
