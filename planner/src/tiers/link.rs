//! Default load bandwidths of the links a tier is reached over, each with its source.

/// A link a KV block travels over when it is loaded from a tier into device memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Name used after `@` in a tier spec, e.g. `pcie5`.
    pub name: &'static str,
    /// Bytes per second in one direction (the load direction).
    pub bytes_per_s: f64,
    /// Where the figure comes from.
    pub source: &'static str,
}

/// PCIe x16 payload rate: transfers/s per lane × 16 lanes × 128b/130b encoding / 8 bits.
const fn pcie_x16(gt_per_s: f64) -> f64 {
    gt_per_s * 1e9 * 16.0 * 128.0 / 130.0 / 8.0
}

/// Every link kvbench knows, fastest first.
pub const LINKS: &[Link] = &[
    Link {
        name: "nvlink-c2c",
        bytes_per_s: 450e9,
        source: "NVIDIA GH200 Grace Hopper: NVLink-C2C 900 GB/s total, 450 GB/s per direction",
    },
    Link {
        name: "dram",
        bytes_per_s: 307.2e9,
        source:
            "8 channels of DDR5-4800 (JEDEC JESD79-5): 8 x 38.4 GB/s, a CPU reading its own RAM",
    },
    Link {
        name: "pcie5",
        bytes_per_s: pcie_x16(32.0),
        source: "PCIe 5.0 x16 (PCI-SIG): 32 GT/s x 16 lanes, 128b/130b = 63.0 GB/s per direction",
    },
    Link {
        name: "400gbe",
        bytes_per_s: 50e9,
        source: "400 Gigabit Ethernet (IEEE 802.3bs) line rate: 400 Gb/s / 8 = 50 GB/s",
    },
    Link {
        name: "pcie4",
        bytes_per_s: pcie_x16(16.0),
        source: "PCIe 4.0 x16 (PCI-SIG): 16 GT/s x 16 lanes, 128b/130b = 31.5 GB/s per direction",
    },
    Link {
        name: "nvme5",
        bytes_per_s: 14.5e9,
        source: "PCIe 5.0 x4 NVMe SSD sequential read, e.g. Crucial T705 datasheet: 14,500 MB/s",
    },
    Link {
        name: "100gbe",
        bytes_per_s: 12.5e9,
        source: "100 Gigabit Ethernet (IEEE 802.3ba) line rate: 100 Gb/s / 8 = 12.5 GB/s",
    },
    Link {
        name: "nvme4",
        bytes_per_s: 7.45e9,
        source: "PCIe 4.0 x4 NVMe SSD sequential read, e.g. Samsung 990 PRO datasheet: 7,450 MB/s",
    },
    Link {
        name: "25gbe",
        bytes_per_s: 3.125e9,
        source: "25 Gigabit Ethernet (IEEE 802.3by) line rate: 25 Gb/s / 8 = 3.125 GB/s",
    },
];

/// The link called `name` (case-insensitive), if kvbench knows it.
pub fn link(name: &str) -> Option<&'static Link> {
    LINKS.iter().find(|l| l.name.eq_ignore_ascii_case(name))
}

/// The known link names, for error messages.
pub fn link_names() -> String {
    LINKS.iter().map(|l| l.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcie_rates_match_the_published_per_direction_figures() {
        // PCI-SIG quotes ~31.5 GB/s (Gen4 x16) and ~63 GB/s (Gen5 x16) per direction.
        assert!((link("pcie4").unwrap().bytes_per_s / 1e9 - 31.508).abs() < 0.01);
        assert!((link("pcie5").unwrap().bytes_per_s / 1e9 - 63.015).abs() < 0.01);
    }

    #[test]
    fn ethernet_is_line_rate_over_eight() {
        assert_eq!(link("25GbE").unwrap().bytes_per_s, 25e9 / 8.0);
        assert_eq!(link("100gbe").unwrap().bytes_per_s, 100e9 / 8.0);
        assert_eq!(link("400gbe").unwrap().bytes_per_s, 400e9 / 8.0);
    }

    #[test]
    fn registry_is_sorted_fastest_first_with_unique_names() {
        for pair in LINKS.windows(2) {
            assert!(pair[0].bytes_per_s >= pair[1].bytes_per_s, "{:?}", pair);
        }
        let mut names: Vec<_> = LINKS.iter().map(|l| l.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), LINKS.len());
        assert!(link("pcie6").is_none());
    }
}
