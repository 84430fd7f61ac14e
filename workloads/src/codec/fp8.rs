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
    fn mantissa_bits(self) -> i32 {
        match self {
            Fp8::E4m3 => 3,
            Fp8::E5m2 => 2,
        }
    }

    fn bias(self) -> i32 {
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

    /// Encode with round-to-nearest-even; magnitudes beyond `max()` saturate (no inf/NaN).
    pub fn encode(self, x: f32) -> u8 {
        let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
        let a = x.abs();
        if a.is_nan() || a == 0.0 {
            return sign;
        }
        let m = self.mantissa_bits();
        let min_exp = 1 - self.bias();
        // Exponent of the binade `a` falls in, clamped to the subnormal range's exponent.
        let e = (a.log2().floor() as i32).max(min_exp);
        let quantum = (2.0f32).powi(e - m);
        let r = ((a / quantum).round_ties_even() * quantum).min(self.max());
        if r == 0.0 {
            return sign;
        }
        let e = (r.log2().floor() as i32).max(min_exp);
        let bits = if r < (2.0f32).powi(min_exp) {
            // Subnormal: exponent field 0, value = mant × 2^(min_exp − m).
            (r / (2.0f32).powi(min_exp - m)) as u32
        } else {
            let mant = ((r / (2.0f32).powi(e) - 1.0) * (1 << m) as f32) as u32;
            (((e + self.bias()) as u32) << m) | mant
        };
        sign | bits as u8
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
