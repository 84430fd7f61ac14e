//! Markdown tables and the number formats a reader wants in them.

/// A markdown table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MdTable {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

impl MdTable {
    /// A table with these headers.
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        MdTable {
            headers: headers.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Renders as GitHub-flavoured markdown (the export layer's one markdown writer).
    pub fn render(&self) -> String {
        crate::export::markdown::table(&self.headers, &self.rows)
    }
}

/// A number with about 4 significant digits; integers whole, tiny values in exponent form.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    if v != 0.0 && v.abs() < 1e-3 {
        return format!("{v:.2e}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 4) as usize;
    let s = format!("{v:.digits$}");
    // Trailing zeros claim a precision the figure does not have.
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Bytes in binary units (KiB, MiB, GiB), as memory is sized.
pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if !v.is_finite() {
        return "–".into();
    }
    let mut x = v;
    let mut u = 0;
    while x.abs() >= 1024.0 && u < UNITS.len() - 1 {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{x:.0} B")
    } else {
        format!("{} {}", num((x * 100.0).round() / 100.0), UNITS[u])
    }
}

/// A fraction as a percentage with one decimal.
pub fn pct(fraction: f64) -> String {
    if fraction.is_finite() {
        format!("{:.1}%", fraction * 100.0)
    } else {
        "–".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(131_072.0), "128 KiB");
        // REFERENCE.md: 32 layers × 1024 tokens × 2 × 32 heads × 128 × 2 bytes = 512 MiB.
        assert_eq!(bytes(536_870_912.0), "512 MiB");
        // Llama-3-70B at 4096 tokens: 327,680 × 4096 = 1.25 GiB.
        assert_eq!(bytes(327_680.0 * 4096.0), "1.25 GiB");
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(num(1234.5678), "1235");
        assert_eq!(num(12.345678), "12.35");
        assert_eq!(num(0.012345), "0.0123");
        assert_eq!(num(42.0), "42");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(0.00001234), "1.23e-5");
        assert_eq!(pct(0.4567), "45.7%");
    }

    #[test]
    fn tables_render_and_escape_pipes() {
        let mut t = MdTable::new(&["a", "b"]);
        t.rows.push(vec!["1".into(), "x|y".into()]);
        assert_eq!(t.render(), "| a | b |\n| --- | --- |\n| 1 | x\\|y |\n");
    }
}
