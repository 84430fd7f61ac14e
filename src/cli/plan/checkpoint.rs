//! Reading what a model directory says about its weights: config.json's text and the
//! safetensors headers (the first 8 + N bytes of each shard, never the tensor data). The
//! planner does the arithmetic.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use kvbench_planner::safetensors::{self, Header};
use kvbench_planner::weights::{self, Weights};

/// The safetensors shards of a model directory: those its index names, else every
/// `*.safetensors` file in it (sorted). Empty when it has none.
fn shards(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let names = safetensors::index_shards(&text, &index.display().to_string())?;
        return Ok(names.into_iter().map(|n| dir.join(n)).collect());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    out.sort();
    Ok(out)
}

/// The header of one shard, reading only its first 8 + N bytes.
fn read_header(path: &Path) -> anyhow::Result<Header> {
    let name = path.display().to_string();
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {name}"))?;
    let size = f.metadata()?.len();
    let mut first8 = Vec::with_capacity(8);
    f.by_ref().take(8).read_to_end(&mut first8)?;
    let n = safetensors::header_len(&first8, size, &name)?;
    let mut bytes = first8;
    f.take(n).read_to_end(&mut bytes)?;
    Ok(safetensors::parse_header(&bytes, &name)?)
}

/// The weights a model directory's checkpoint stores (safetensors headers), None when it has
/// no safetensors files.
pub fn header_weights(dir: &Path) -> anyhow::Result<Option<Weights>> {
    let files = shards(dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    let headers = files
        .iter()
        .map(|p| read_header(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(weights::from_headers(&headers)))
}

/// config.json of `model_id` (e.g. `Qwen/Qwen3-8B`) in the local Hugging Face cache
/// ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub), the newest snapshot.
pub fn hf_cache_config(model_id: &str) -> Option<PathBuf> {
    let hub = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
        })?;
    let snapshots = hub
        .join(format!("models--{}", model_id.replace('/', "--")))
        .join("snapshots");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    dirs.sort_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    dirs.pop().map(|d| d.join("config.json"))
}
