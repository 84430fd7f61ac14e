//! Memory sizes as people write them (`58.5GiB`, `80GB`) and as tables show them.

use crate::error::PlanError;

/// Reads a byte size: a number with an optional unit (B, KB, MB, GB, TB in powers of 1000;
/// KiB, MiB, GiB, TiB in powers of 1024; case-insensitive, spaces allowed).
pub fn parse_size(text: &str) -> Result<u64, PlanError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| PlanError::BadSize(text.to_string()))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(PlanError::BadSize(text.to_string())),
    };
    let bytes = value * scale;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(PlanError::BadSize(text.to_string()));
    }
    Ok(bytes.round() as u64)
}

/// Bytes in binary units with three significant figures: `512 MiB`, `1.25 GiB`, `640 KiB`.
pub fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes:.0} B");
    }
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    // 1.00 GiB reads better as 1 GiB.
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text} {}", UNITS[unit])
}

/// A count with thousands separators: `1533536` -> `1,533,536`.
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_and_decimal_units() {
        assert_eq!(parse_size("58.5GiB").unwrap(), 62_813_896_704);
        assert_eq!(parse_size("80GB").unwrap(), 80_000_000_000);
        assert_eq!(parse_size("512 MiB").unwrap(), 536_870_912);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "GiB", "-1GiB", "1.2.3GB", "5 parsecs", "0"] {
            let err = parse_size(bad).unwrap_err().to_string();
            assert!(err.contains("58.5GiB"), "{bad}: {err}");
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(format_bytes(536_870_912.0), "512 MiB");
        assert_eq!(format_bytes(1_342_177_280.0), "1.25 GiB");
        assert_eq!(format_bytes(327_680.0), "320 KiB");
        assert_eq!(format_bytes(70_272.0), "68.6 KiB");
        assert_eq!(format_bytes(1024.0 * 1024.0 * 1024.0), "1 GiB");
        assert_eq!(format_bytes(12.0), "12 B");
        assert_eq!(format_count(1_533_536), "1,533,536");
        assert_eq!(format_count(999), "999");
    }
}
