//! `--model org/name` outside the registry: its config.json from the local Hugging Face
//! cache. The paths come from `kvbench_planner::hf_cache`; only the reading is here.

use std::path::PathBuf;

use kvbench_planner::hf_cache::{model_dirs, not_cached_message, snapshot_config, HfEnv};

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The cached config.json of `repo_id` (its text and path): the snapshot `refs/main` names,
/// else any snapshot holding one; an error line saying where it looked when none is found.
pub fn cached_config(repo_id: &str) -> anyhow::Result<(String, PathBuf)> {
    let env = HfEnv {
        hf_hub_cache: env_path("HF_HUB_CACHE"),
        hf_home: env_path("HF_HOME"),
        xdg_cache_home: env_path("XDG_CACHE_HOME"),
        home: env_path("HOME"),
    };
    let dirs = model_dirs(repo_id, &env)?;
    for dir in &dirs {
        let mut candidates = Vec::new();
        if let Ok(commit) = std::fs::read_to_string(dir.join("refs").join("main")) {
            candidates.push(snapshot_config(dir, &commit));
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("snapshots")) {
            let mut snaps: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path().join("config.json")))
                .collect();
            snaps.sort();
            candidates.extend(snaps);
        }
        for path in candidates {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return Ok((text, path));
            }
        }
    }
    anyhow::bail!("{}", not_cached_message(repo_id, &dirs))
}
