//! Tier specs as written on the command line: `name:size[@link|@rate]`, comma-separated.

use super::link::{link, link_names};

/// What kind of memory a tier is; it decides the default link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TierKind {
    /// Device memory: the working cache, nothing to load.
    Hbm,
    /// Host memory, reached over PCIe (or NVLink-C2C).
    Dram,
    /// Local SSD.
    Ssd,
    /// A store on other machines (Redis, Mooncake, a cloud KV store), reached over Ethernet.
    Remote,
}

impl TierKind {
    /// The names a tier of this kind may be given.
    const NAMES: &'static [(&'static str, TierKind)] = &[
        ("hbm", TierKind::Hbm),
        ("gpu", TierKind::Hbm),
        ("dram", TierKind::Dram),
        ("host", TierKind::Dram),
        ("ram", TierKind::Dram),
        ("ssd", TierKind::Ssd),
        ("nvme", TierKind::Ssd),
        ("disk", TierKind::Ssd),
        ("remote", TierKind::Remote),
        ("redis", TierKind::Remote),
        ("net", TierKind::Remote),
    ];

    /// The kind named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<TierKind> {
        let lower = name.to_ascii_lowercase();
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, k)| *k)
    }

    /// Link a block crosses by default when loaded from this tier; `None` for device memory.
    pub fn default_link(self) -> Option<&'static str> {
        match self {
            TierKind::Hbm => None,
            TierKind::Dram => Some("pcie5"),
            TierKind::Ssd => Some("nvme4"),
            TierKind::Remote => Some("100gbe"),
        }
    }
}

/// One tier: how much KV it holds and how fast a block comes back from it.
#[derive(Debug, Clone, PartialEq)]
pub struct TierSpec {
    /// The name as written, e.g. `dram`.
    pub name: String,
    pub kind: TierKind,
    /// Bytes the tier gives to the KV cache.
    pub capacity_bytes: u64,
    /// Load rate into device memory, bytes/s; `None` for device memory (resident).
    pub load_bytes_per_s: Option<f64>,
    /// The link name, or `custom` for an explicit rate.
    pub link: String,
}

/// A tier list a user wrote that kvbench cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierSpecError {
    #[error("empty tier list: give tiers as name:size, e.g. hbm:80GiB,dram:512GiB,ssd:4TiB")]
    Empty,
    #[error("tier `{0}` has no size: write it as name:size, e.g. dram:512GiB")]
    MissingSize(String),
    #[error("unknown tier `{name}`{hint}: use hbm, dram (host), ssd (nvme, disk) or remote (redis, net)")]
    UnknownTier { name: String, hint: String },
    #[error("bad size `{0}`: use a positive number with a unit B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 512GiB")]
    BadSize(String),
    #[error(
        "unknown link `{name}` in tier `{tier}`: use one of {known}, or a rate such as 25GB/s"
    )]
    UnknownLink {
        tier: String,
        name: String,
        known: String,
    },
    #[error("bad rate `{0}`: use a positive number with GB/s, MB/s or TB/s, e.g. 25GB/s")]
    BadRate(String),
    #[error("tier list `{0}` has an empty item: separate tiers by single commas, e.g. dram:512GiB,ssd:4TiB")]
    EmptyItem(String),
    #[error("tier `{0}` is listed twice: give each tier once")]
    Duplicate(String),
    #[error("tier `{0}` is device memory and loads nothing: drop the `@...` part")]
    RateOnDevice(String),
}

/// Parse `hbm:80GiB,dram:512GiB@pcie4,ssd:4TiB@6GB/s` into tier specs, in the order given.
pub fn parse_tiers(list: &str) -> Result<Vec<TierSpec>, TierSpecError> {
    let mut tiers: Vec<TierSpec> = Vec::new();
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.iter().all(|s| s.is_empty()) {
        return Err(TierSpecError::Empty);
    }
    for item in items {
        if item.is_empty() {
            return Err(TierSpecError::EmptyItem(list.to_string()));
        }
        let tier = parse_tier(item)?;
        if tiers
            .iter()
            .any(|t| t.name.eq_ignore_ascii_case(&tier.name))
        {
            return Err(TierSpecError::Duplicate(tier.name));
        }
        tiers.push(tier);
    }
    if tiers.is_empty() {
        return Err(TierSpecError::Empty);
    }
    Ok(tiers)
}

/// Parse one `name:size[@link|@rate]`.
pub fn parse_tier(item: &str) -> Result<TierSpec, TierSpecError> {
    let (name, rest) = item
        .split_once(':')
        .ok_or_else(|| TierSpecError::MissingSize(item.to_string()))?;
    let name = name.trim();
    let kind = TierKind::from_name(name).ok_or_else(|| TierSpecError::UnknownTier {
        name: name.to_string(),
        hint: suggestion(name),
    })?;
    let (size, over) = match rest.split_once('@') {
        Some((s, l)) => (s.trim(), Some(l.trim())),
        None => (rest.trim(), None),
    };
    let capacity_bytes = parse_size(size)?;
    let (load_bytes_per_s, link_name) = match (kind, over) {
        (TierKind::Hbm, Some(_)) => return Err(TierSpecError::RateOnDevice(name.to_string())),
        (TierKind::Hbm, None) => (None, "resident".to_string()),
        (_, Some(l)) => match link(l) {
            Some(known) => (Some(known.bytes_per_s), known.name.to_string()),
            // A number, signed or not, is a rate (a negative one is refused as such).
            None if l
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.')) =>
            {
                (Some(parse_rate(l)?), "custom".to_string())
            }
            None => {
                return Err(TierSpecError::UnknownLink {
                    tier: name.to_string(),
                    name: l.to_string(),
                    known: link_names(),
                })
            }
        },
        (_, None) => {
            let default = link(kind.default_link().expect("non-device tiers have a link"))
                .expect("default links are in the registry");
            (Some(default.bytes_per_s), default.name.to_string())
        }
    };
    Ok(TierSpec {
        name: name.to_string(),
        kind,
        capacity_bytes,
        load_bytes_per_s,
        link: link_name,
    })
}

/// A "did you mean" for a misspelt tier name, or nothing.
fn suggestion(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    TierKind::NAMES
        .iter()
        .map(|(n, _)| (strsim::levenshtein(n, &lower), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default()
}

/// Split `512GiB` into (512.0, "GiB").
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let value: f64 = text[..split].parse().ok()?;
    (value.is_finite() && value > 0.0).then_some((value, text[split..].trim()))
}

/// Bytes in a size such as `80GiB`, `4TiB`, `1.5TB` or `4096B` (the planner's one size reader).
pub fn parse_size(text: &str) -> Result<u64, TierSpecError> {
    crate::units::parse_size(text).map_err(|_| TierSpecError::BadSize(text.to_string()))
}

/// Bytes per second in a rate such as `25GB/s`.
pub fn parse_rate(text: &str) -> Result<f64, TierSpecError> {
    let bad = || TierSpecError::BadRate(text.to_string());
    let (value, unit) = number_and_unit(text).ok_or_else(bad)?;
    let scale = match unit {
        "MB/s" => 1e6,
        "GB/s" => 1e9,
        "TB/s" => 1e12,
        _ => return Err(bad()),
    };
    Ok(value * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_items_and_negative_rates_say_what_they_are() {
        // `dram:1TiB,,ssd:1TiB` was accepted; `@-5GB/s` was an "unknown link".
        let e = parse_tiers("dram:1TiB,,ssd:1TiB").unwrap_err().to_string();
        assert!(e.contains("empty item"), "{e}");
        let e = parse_tiers("dram:1TiB@-5GB/s").unwrap_err().to_string();
        assert!(e.contains("bad rate `-5GB/s`"), "{e}");
        assert!(matches!(parse_tiers(" , "), Err(TierSpecError::Empty)));
    }

    #[test]
    fn the_issue_example_parses_with_default_links() {
        let tiers = parse_tiers("hbm:80GiB,dram:512GiB,ssd:4TiB").unwrap();
        assert_eq!(tiers.len(), 3);
        assert_eq!(tiers[0].kind, TierKind::Hbm);
        assert_eq!(tiers[0].capacity_bytes, 80 << 30);
        assert_eq!(tiers[0].load_bytes_per_s, None);
        assert_eq!(tiers[1].capacity_bytes, 512 << 30);
        assert_eq!(tiers[1].link, "pcie5");
        assert_eq!(tiers[2].capacity_bytes, 4u64 << 40);
        assert_eq!(tiers[2].link, "nvme4");
        assert_eq!(tiers[2].load_bytes_per_s, Some(7.45e9));
    }

    #[test]
    fn links_and_rates_override_the_default() {
        let tiers = parse_tiers("host:1TB@nvlink-c2c, redis:10TB@25GB/s").unwrap();
        assert_eq!(tiers[0].capacity_bytes, 1_000_000_000_000);
        assert_eq!(tiers[0].load_bytes_per_s, Some(450e9));
        assert_eq!(tiers[1].kind, TierKind::Remote);
        assert_eq!(tiers[1].link, "custom");
        assert_eq!(tiers[1].load_bytes_per_s, Some(25e9));
        assert_eq!(parse_rate("1.5TB/s").unwrap(), 1.5e12);
    }

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("4096B").unwrap(), 4096);
        assert_eq!(parse_size("1.5GiB").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("2kb").unwrap(), 2000);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
    }

    #[test]
    fn bad_input_names_the_value() {
        assert_eq!(parse_tiers(" , ").unwrap_err(), TierSpecError::Empty);
        assert_eq!(
            parse_tiers("dram").unwrap_err(),
            TierSpecError::MissingSize("dram".into())
        );
        let e = parse_tiers("dramm:1GiB").unwrap_err().to_string();
        assert!(
            e.contains("`dramm`") && e.contains("did you mean `dram`"),
            "{e}"
        );
        let e = parse_tiers("dram:12 parsecs").unwrap_err().to_string();
        assert!(e.contains("`12 parsecs`"), "{e}");
        assert!(matches!(
            parse_tiers("dram:0GiB").unwrap_err(),
            TierSpecError::BadSize(_)
        ));
        let e = parse_tiers("ssd:1TiB@pcie9").unwrap_err().to_string();
        assert!(e.contains("`pcie9`") && e.contains("pcie5"), "{e}");
        assert!(matches!(
            parse_tiers("ssd:1TiB@7Gb/s").unwrap_err(),
            TierSpecError::BadRate(_)
        ));
        assert!(matches!(
            parse_tiers("hbm:80GiB@pcie5").unwrap_err(),
            TierSpecError::RateOnDevice(_)
        ));
        assert_eq!(
            parse_tiers("dram:1GiB,DRAM:2GiB").unwrap_err(),
            TierSpecError::Duplicate("DRAM".into())
        );
    }
}
