//! GPU registry: memory, bandwidth, dense FP16/FP8 rates, with sources.

use serde::Serialize;

use crate::error::PlanError;
use crate::registry::normalize;

/// One GPU model as the planner sizes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuSpec {
    /// Short canonical name, e.g. `h100-sxm`.
    pub key: &'static str,
    /// Full name, e.g. "NVIDIA H100 SXM5 80GB".
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// Memory as the vendor sells it, in GB (10^9 bytes) — or GiB where the vendor means GiB.
    pub memory_gb: f64,
    /// Memory the CUDA/ROCm runtime reports as total (what vLLM multiplies by
    /// gpu_memory_utilization), in bytes.
    pub usable_bytes: u64,
    /// Where `usable_bytes` comes from.
    pub usable_source: &'static str,
    /// Peak memory bandwidth, GB/s (10^9 bytes per second).
    pub bandwidth_gbps: f64,
    /// Dense (no sparsity) FP16/BF16 tensor rate, TFLOPS.
    pub fp16_tflops: f64,
    /// Dense FP8 tensor rate, TFLOPS, where the GPU has FP8.
    pub fp8_tflops: Option<f64>,
    /// Vendor datasheet for memory, bandwidth and rates.
    pub source: &'static str,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn gib(x: f64) -> u64 {
    (x * GIB).round() as u64
}

/// Every GPU in the registry.
pub fn all() -> Vec<GpuSpec> {
    const VLLM_LOG: &str =
        "total_gpu_memory vLLM logs on 80 GB cards (79.11-79.33 GiB seen, by driver and ECC)";
    const SMI_EST: &str = "estimate: nvidia-smi total less ~0.5 GiB the driver keeps";
    const CARD_24GB: &str =
        "total_gpu_memory vLLM logs on 24 GB data-center cards (22.06-22.07 GiB)";
    vec![
        GpuSpec {
            key: "h100-sxm",
            name: "NVIDIA H100 SXM5 80GB",
            aliases: &["h100", "h100-80gb", "h100-sxm5", "h100-hbm3"],
            memory_gb: 80.0,
            usable_bytes: gib(79.19),
            usable_source: VLLM_LOG,
            bandwidth_gbps: 3350.0,
            fp16_tflops: 989.4,
            fp8_tflops: Some(1978.9),
            source: "https://www.nvidia.com/en-us/data-center/h100/ (datasheet; dense = half the sparsity figure)",
        },
        GpuSpec {
            key: "h100-pcie",
            name: "NVIDIA H100 PCIe 80GB",
            aliases: &["h100pcie"],
            memory_gb: 80.0,
            usable_bytes: gib(79.19),
            usable_source: VLLM_LOG,
            bandwidth_gbps: 2000.0,
            fp16_tflops: 756.0,
            fp8_tflops: Some(1513.0),
            source: "https://www.nvidia.com/en-us/data-center/h100/ (datasheet, PCIe column; dense)",
        },
        GpuSpec {
            key: "h200",
            name: "NVIDIA H200 SXM 141GB",
            aliases: &["h200-sxm", "h200-141gb"],
            memory_gb: 141.0,
            usable_bytes: gib(139.8),
            usable_source: SMI_EST,
            bandwidth_gbps: 4800.0,
            fp16_tflops: 989.4,
            fp8_tflops: Some(1978.9),
            source: "https://www.nvidia.com/en-us/data-center/h200/ (datasheet; dense)",
        },
        GpuSpec {
            key: "a100-80gb",
            name: "NVIDIA A100 SXM4 80GB",
            aliases: &["a100-80", "a100-sxm-80gb", "a100"],
            memory_gb: 80.0,
            usable_bytes: gib(79.15),
            usable_source: VLLM_LOG,
            bandwidth_gbps: 2039.0,
            fp16_tflops: 312.0,
            fp8_tflops: None,
            source: "https://www.nvidia.com/en-us/data-center/a100/ (datasheet, 80GB SXM; dense)",
        },
        GpuSpec {
            key: "a100-40gb",
            name: "NVIDIA A100 SXM4 40GB",
            aliases: &["a100-40", "a100-sxm-40gb"],
            memory_gb: 40.0,
            usable_bytes: gib(39.50),
            usable_source: "total_gpu_memory vLLM logs on A100 40GB (39.49-39.50 GiB)",
            bandwidth_gbps: 1555.0,
            fp16_tflops: 312.0,
            fp8_tflops: None,
            source: "https://www.nvidia.com/en-us/data-center/a100/ (datasheet, 40GB; dense)",
        },
        GpuSpec {
            key: "l4",
            name: "NVIDIA L4 24GB",
            aliases: &[],
            memory_gb: 24.0,
            usable_bytes: gib(22.06),
            usable_source: CARD_24GB,
            bandwidth_gbps: 300.0,
            fp16_tflops: 121.0,
            fp8_tflops: Some(242.5),
            source: "https://www.nvidia.com/en-us/data-center/l4/ (datasheet; dense = half the sparsity figure)",
        },
        GpuSpec {
            key: "l40s",
            name: "NVIDIA L40S 48GB",
            aliases: &[],
            memory_gb: 48.0,
            usable_bytes: gib(44.4),
            usable_source: SMI_EST,
            bandwidth_gbps: 864.0,
            fp16_tflops: 362.05,
            fp8_tflops: Some(733.0),
            source: "https://www.nvidia.com/en-us/data-center/l40s/ (datasheet; dense = half the sparsity figure)",
        },
        GpuSpec {
            key: "a10g",
            name: "NVIDIA A10G 24GB (AWS G5)",
            aliases: &["a10"],
            memory_gb: 24.0,
            usable_bytes: gib(22.06),
            usable_source: CARD_24GB,
            bandwidth_gbps: 600.0,
            fp16_tflops: 70.0,
            fp8_tflops: None,
            source: "https://aws.amazon.com/ec2/instance-types/g5/ (24 GB, 600 GB/s); FP16 rate an estimate: NVIDIA publishes no A10G datasheet (the A10's is 125 dense)",
        },
        GpuSpec {
            key: "rtx4090",
            name: "NVIDIA GeForce RTX 4090 24GB",
            aliases: &["4090", "rtx-4090"],
            memory_gb: 24.0,
            usable_bytes: gib(23.55),
            usable_source: "total_gpu_memory a vLLM log shows on an RTX 4090 (23.55 GiB)",
            bandwidth_gbps: 1008.0,
            fp16_tflops: 165.2,
            fp8_tflops: Some(330.3),
            source: "NVIDIA Ada Lovelace architecture whitepaper v2.1, appendix table (FP32 accumulate, dense)",
        },
        GpuSpec {
            key: "rtx3090",
            name: "NVIDIA GeForce RTX 3090 24GB",
            aliases: &["3090", "rtx-3090"],
            memory_gb: 24.0,
            usable_bytes: gib(23.69),
            usable_source: SMI_EST,
            bandwidth_gbps: 936.0,
            fp16_tflops: 71.0,
            fp8_tflops: None,
            source: "NVIDIA Ampere GA102 GPU architecture whitepaper, table 9 (FP32 accumulate, dense)",
        },
        GpuSpec {
            key: "b200",
            name: "NVIDIA B200 180GB (HGX B200)",
            aliases: &["b200-sxm"],
            memory_gb: 180.0,
            usable_bytes: gib(178.4),
            usable_source: SMI_EST,
            bandwidth_gbps: 8000.0,
            fp16_tflops: 2250.0,
            fp8_tflops: Some(4500.0),
            source: "https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200 per GPU; dense = half the sparsity figure)",
        },
        GpuSpec {
            key: "mi300x",
            name: "AMD Instinct MI300X 192GB",
            aliases: &["mi300"],
            memory_gb: 192.0,
            usable_bytes: gib(191.98),
            usable_source: "estimate: ROCm reports the full 192 GiB less a few MiB",
            bandwidth_gbps: 5300.0,
            fp16_tflops: 1307.4,
            fp8_tflops: Some(2614.9),
            source: "https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html (dense)",
        },
    ]
}

/// Finds a GPU by name (`h100`, `H100-SXM`, `nvidia h200`, ...); unknown names list the nearest.
pub fn find(name: &str) -> Result<GpuSpec, PlanError> {
    let wanted = normalize(name).trim_start_matches("nvidia").to_string();
    let wanted = wanted.trim_start_matches("amd").to_string();
    let gpus = all();
    let names = |g: &GpuSpec| {
        let mut n = vec![g.key];
        n.extend_from_slice(g.aliases);
        n
    };
    if let Some(g) = gpus
        .iter()
        .find(|g| names(g).iter().any(|n| normalize(n) == wanted))
    {
        return Ok(g.clone());
    }
    let mut scored: Vec<(f64, &str)> = gpus
        .iter()
        .map(|g| {
            let best = names(g)
                .iter()
                .map(|n| strsim::jaro_winkler(&wanted, &normalize(n)))
                .fold(0.0, f64::max);
            (best, g.key)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    Err(PlanError::UnknownGpu {
        name: name.to_string(),
        suggestions: scored
            .iter()
            .take(2)
            .map(|s| s.1)
            .collect::<Vec<_>>()
            .join(", "),
        known: gpus.iter().map(|g| g.key).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h100_has_about_79_2_gib_usable() {
        let g = find("h100").unwrap();
        assert_eq!(g.key, "h100-sxm");
        let usable = g.usable_bytes as f64 / GIB;
        assert!((usable - 79.2).abs() < 0.05, "{usable}");
        // Usable is below the marketed 80 GB only by what the driver keeps: 80 GiB > usable.
        assert!(g.usable_bytes < 80 * (1 << 30));
    }

    #[test]
    fn names_are_forgiving_and_unknown_ones_suggest() {
        assert_eq!(find("NVIDIA H200").unwrap().key, "h200");
        assert_eq!(find("RTX-4090").unwrap().key, "rtx4090");
        assert_eq!(find("a100-40gb").unwrap().key, "a100-40gb");
        let err = find("h300").unwrap_err().to_string();
        assert!(err.contains("'h300'") && err.contains("h100-sxm"), "{err}");
    }

    #[test]
    fn registry_covers_the_issue_list_with_sane_figures() {
        for key in [
            "h100-sxm",
            "h100-pcie",
            "h200",
            "a100-40gb",
            "a100-80gb",
            "l4",
            "l40s",
            "a10g",
            "rtx4090",
            "rtx3090",
            "b200",
            "mi300x",
        ] {
            let g = find(key).unwrap();
            // Usable memory lies between 90% and 100% of the marketed size (GB or GiB).
            let ratio = g.usable_bytes as f64 / (g.memory_gb * GIB);
            assert!(
                (0.90..=1.0).contains(&ratio),
                "{key}: usable/marketed {ratio}"
            );
            // FP8, where present, is twice the FP16 dense rate on every listed part.
            if let Some(fp8) = g.fp8_tflops {
                assert!((fp8 / g.fp16_tflops - 2.0).abs() < 0.03, "{key}");
            }
            assert!(!g.source.is_empty());
        }
    }
}
