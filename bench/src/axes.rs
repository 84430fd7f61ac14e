//! Parsing the names on each sweep axis (`--strategy`, `--workload`, `--backend`, `--tier`,
//! shapes from the registry), with errors that name the bad value and list the valid ones.

use kvbench_planner::registry;
use kvbench_planner::ModelShape;
use kvbench_workloads::{Backend, Strategy, Tier, WorkloadKind};

/// A name on an axis that is not known, or a shape that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AxisError {
    #[error("--{axis} {value:?} is not known; valid: {valid}")]
    Unknown {
        axis: &'static str,
        value: String,
        valid: &'static str,
    },
    #[error("--strategy offload needs --tier (host, disk or redis), e.g. --strategy offload --tier host")]
    OffloadWithoutTier,
    #[error("--layers {asked} is more than {model} has ({has}); give at most {has}")]
    TooManyLayers { model: String, asked: u32, has: u32 },
    #[error("{0}")]
    Model(String),
}

/// `none`, `concat`, `contiguous`, `paged`, `offload` (once per `tiers` entry) or
/// `offload-host|disk|redis`.
pub fn parse_strategies(names: &[String], tiers: &[Tier]) -> Result<Vec<Strategy>, AxisError> {
    let mut out = Vec::new();
    for name in names {
        match name.trim().to_ascii_lowercase().as_str() {
            "none" | "no-cache" => out.push(Strategy::None),
            "concat" => out.push(Strategy::Concat),
            "contiguous" => out.push(Strategy::Contiguous),
            "paged" => out.push(Strategy::Paged),
            "offload" => {
                if tiers.is_empty() {
                    return Err(AxisError::OffloadWithoutTier);
                }
                out.extend(tiers.iter().map(|&t| Strategy::Offload(t)));
            }
            other => match other.strip_prefix("offload-").map(parse_tier) {
                Some(Ok(t)) => out.push(Strategy::Offload(t)),
                _ => {
                    return Err(AxisError::Unknown {
                        axis: "strategy",
                        value: name.clone(),
                        valid: "none, concat, contiguous, paged, offload (with --tier), \
                                offload-host, offload-disk, offload-redis",
                    })
                }
            },
        }
    }
    Ok(out)
}

/// `host`, `disk` or `redis`.
pub fn parse_tier(name: &str) -> Result<Tier, AxisError> {
    match name.trim().to_ascii_lowercase().as_str() {
        "host" | "ram" | "dram" => Ok(Tier::Host),
        "disk" | "ssd" => Ok(Tier::Disk),
        "redis" => Ok(Tier::Redis),
        _ => Err(AxisError::Unknown {
            axis: "tier",
            value: name.into(),
            valid: "host, disk, redis",
        }),
    }
}

/// `decoder` or `attention`.
pub fn parse_kind(name: &str) -> Result<WorkloadKind, AxisError> {
    match name.trim().to_ascii_lowercase().as_str() {
        "decoder" => Ok(WorkloadKind::Decoder),
        "attention" | "attn" => Ok(WorkloadKind::Attention),
        _ => Err(AxisError::Unknown {
            axis: "workload",
            value: name.into(),
            valid: "decoder, attention",
        }),
    }
}

/// `cpu` or `cuda`.
pub fn parse_backend(name: &str) -> Result<Backend, AxisError> {
    match name.trim().to_ascii_lowercase().as_str() {
        "cpu" => Ok(Backend::Cpu),
        "cuda" | "gpu" => Ok(Backend::Cuda),
        _ => Err(AxisError::Unknown {
            axis: "backend",
            value: name.into(),
            valid: "cpu, cuda",
        }),
    }
}

/// The MLP width of an explicit shape without `--intermediate`: Llama's is about 3.5 ×
/// hidden, rounded up to a multiple of 64 (computed in u64; saturates at u32::MAX).
pub fn default_intermediate(hidden: u32) -> u32 {
    let wide = (u64::from(hidden) * 7 / 2).div_ceil(64) * 64;
    u32::try_from(wide).unwrap_or(u32::MAX)
}

/// A registry model's shape, cut to its first `layers` layers when asked.
pub fn registry_shape(name: &str, layers: Option<u32>) -> Result<ModelShape, AxisError> {
    let info = registry::find(name).map_err(|e| AxisError::Model(e.to_string()))?;
    let mut shape = info.shape;
    shape.name = info.key.to_string();
    if let Some(n) = layers {
        cut_layers(&mut shape, n)?;
    }
    Ok(shape)
}

/// The shape in a Hugging Face `config.json`, named after the file's folder (or stem).
pub fn config_shape(path: &std::path::Path, layers: Option<u32>) -> Result<ModelShape, AxisError> {
    let text =
        crate::input::read_text(path, crate::input::CONFIG_CAP, "config.json").map_err(|e| {
            AxisError::Model(format!(
                "--config: {e}; give the path of a Hugging Face config.json"
            ))
        })?;
    let name = config_name(path);
    let info = kvbench_planner::config::parse_config(&text, &name)
        .map_err(|e| AxisError::Model(format!("--config {}: {e}", path.display())))?;
    let mut shape = info.shape;
    shape.name = name;
    if let Some(n) = layers {
        cut_layers(&mut shape, n)?;
    }
    Ok(shape)
}

/// `models/Qwen2.5-7B/config.json` → `Qwen2.5-7B`; `qwen.json` → `qwen`.
fn config_name(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("config");
    if stem == "config" {
        if let Some(dir) = path
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|d| d.to_str())
        {
            return dir.to_string();
        }
    }
    stem.to_string()
}

/// Keep the first `n` layers (and their attention kinds).
pub fn cut_layers(shape: &mut ModelShape, n: u32) -> Result<(), AxisError> {
    if n > shape.layers {
        return Err(AxisError::TooManyLayers {
            model: shape.name.clone(),
            asked: n,
            has: shape.layers,
        });
    }
    shape.layers = n;
    shape.layer_kinds.truncate(n as usize);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn strategies_and_offload_tiers() {
        assert_eq!(
            parse_strategies(&s(&["none", "Paged"]), &[]).unwrap(),
            [Strategy::None, Strategy::Paged]
        );
        assert_eq!(
            parse_strategies(&s(&["offload"]), &[Tier::Host, Tier::Disk]).unwrap(),
            [Strategy::Offload(Tier::Host), Strategy::Offload(Tier::Disk)]
        );
        assert_eq!(
            parse_strategies(&s(&["offload-redis"]), &[]).unwrap(),
            [Strategy::Offload(Tier::Redis)]
        );
        assert_eq!(
            parse_strategies(&s(&["offload"]), &[]).unwrap_err(),
            AxisError::OffloadWithoutTier
        );
        let e = parse_strategies(&s(&["pagd"]), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"pagd\"") && e.contains("paged"), "{e}");
    }

    #[test]
    fn kinds_backends_tiers() {
        assert_eq!(parse_kind("attention").unwrap(), WorkloadKind::Attention);
        assert_eq!(parse_backend("CUDA").unwrap(), Backend::Cuda);
        assert_eq!(parse_tier("disk").unwrap(), Tier::Disk);
        assert!(parse_kind("mlp")
            .unwrap_err()
            .to_string()
            .contains("decoder, attention"));
        assert!(parse_backend("tpu")
            .unwrap_err()
            .to_string()
            .contains("\"tpu\""));
    }

    #[test]
    fn registry_models_with_fewer_layers() {
        // Llama-3.1-8B: 32 layers, 32 q heads, 8 KV heads, head_dim 128 (config.json).
        let shape = registry_shape("llama3-8b", Some(2)).unwrap();
        assert_eq!(
            (shape.layers, shape.q_heads, shape.kv_heads, shape.head_dim),
            (2, 32, 8, 128)
        );
        assert_eq!(shape.layer_kinds.len(), 2);
        let e = registry_shape("llama3-8b", Some(99))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--layers 99") && e.contains("32"), "{e}");
        let e = registry_shape("no-such-model-xyz", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-model-xyz"), "{e}");
    }

    #[test]
    fn config_json_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("Qwen2.5-7B");
        std::fs::create_dir(&folder).unwrap();
        let path = folder.join("config.json");
        // Qwen2.5-7B's published config.json (the fields that shape the cache).
        std::fs::write(
            &path,
            r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":3584,"intermediate_size":18944,
            "num_attention_heads":28,"num_hidden_layers":28,"num_key_value_heads":4,
            "max_position_embeddings":32768,"sliding_window":131072,"use_sliding_window":false,
            "vocab_size":152064,"model_type":"qwen2"}"#,
        )
        .unwrap();
        let shape = config_shape(&path, Some(3)).unwrap();
        assert_eq!(shape.name, "Qwen2.5-7B");
        assert_eq!(
            (shape.layers, shape.q_heads, shape.kv_heads, shape.head_dim),
            (3, 28, 4, 128)
        );
        let e = config_shape(&dir.path().join("missing.json"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
    }
}
