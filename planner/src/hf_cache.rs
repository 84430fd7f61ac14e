//! Where a Hugging Face model's config.json sits in the local hub cache, as pure path
//! arithmetic (the binary does the looking): huggingface_hub keeps a repo `org/name` under
//! `<cache>/models--org--name/`, with `refs/main` naming the snapshot and the files under
//! `snapshots/<commit>/`. The cache is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.

use std::path::{Path, PathBuf};

use crate::error::PlanError;

/// The environment the cache location depends on (values of the variables, if set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HfEnv {
    pub hf_hub_cache: Option<PathBuf>,
    pub hf_home: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

/// Checks a repo id (`org/name`) and returns its cache folder name (`models--org--name`).
pub fn repo_folder(repo_id: &str) -> Result<String, PlanError> {
    let parts: Vec<&str> = repo_id.trim().split('/').collect();
    let ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match parts.as_slice() {
        [org, name] if ok(org) && ok(name) => Ok(format!("models--{org}--{name}")),
        _ => Err(PlanError::InvalidValue {
            what: "model".to_string(),
            value: repo_id.to_string(),
            fix: "a Hugging Face model is named org/name, e.g. Qwen/Qwen3-8B".to_string(),
        }),
    }
}

/// The hub cache folders to look in, most specific first (duplicates removed).
pub fn cache_roots(env: &HfEnv) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(p) = &env.hf_hub_cache {
        roots.push(p.clone());
    }
    if let Some(p) = &env.hf_home {
        roots.push(p.join("hub"));
    }
    if let Some(p) = &env.xdg_cache_home {
        roots.push(p.join("huggingface").join("hub"));
    }
    if let Some(p) = &env.home {
        roots.push(p.join(".cache").join("huggingface").join("hub"));
    }
    roots.dedup();
    roots
}

/// The model folders (`<root>/models--org--name`) where `repo_id` may be cached.
pub fn model_dirs(repo_id: &str, env: &HfEnv) -> Result<Vec<PathBuf>, PlanError> {
    let folder = repo_folder(repo_id)?;
    Ok(cache_roots(env).iter().map(|r| r.join(&folder)).collect())
}

/// The config.json of the snapshot a model folder's `refs/main` names (its text, trimmed).
pub fn snapshot_config(model_dir: &Path, commit: &str) -> PathBuf {
    model_dir
        .join("snapshots")
        .join(commit.trim())
        .join("config.json")
}

/// The one line said when no cached config.json was found.
pub fn not_cached_message(repo_id: &str, looked: &[PathBuf]) -> String {
    let places: Vec<String> = looked.iter().map(|p| p.display().to_string()).collect();
    format!(
        "model '{repo_id}' is not in the registry and its config.json is not in the Hugging Face cache (looked in {}); fetch it with `huggingface-cli download {repo_id} config.json` (or `hf download`), or pass --config path/config.json",
        if places.is_empty() {
            "no cache folder: set HF_HUB_CACHE or HF_HOME".to_string()
        } else {
            places.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_huggingface_hub_precedence() {
        let env = HfEnv {
            hf_hub_cache: Some("/fast/hub".into()),
            hf_home: Some("/data/hf".into()),
            xdg_cache_home: None,
            home: Some("/home/u".into()),
        };
        let dirs = model_dirs("Qwen/Qwen3-8B", &env).unwrap();
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/fast/hub/models--Qwen--Qwen3-8B"),
                PathBuf::from("/data/hf/hub/models--Qwen--Qwen3-8B"),
                PathBuf::from("/home/u/.cache/huggingface/hub/models--Qwen--Qwen3-8B"),
            ]
        );
        assert_eq!(
            snapshot_config(&dirs[0], "abc123\n"),
            PathBuf::from("/fast/hub/models--Qwen--Qwen3-8B/snapshots/abc123/config.json")
        );
    }

    #[test]
    fn bad_repo_ids_are_refused_and_the_message_says_where_it_looked() {
        assert!(repo_folder("../etc").is_err());
        assert!(repo_folder("a/b/c").is_err());
        assert!(repo_folder("noslash").is_err());
        let m = not_cached_message("org/x", &[PathBuf::from("/c/models--org--x")]);
        assert!(m.contains("/c/models--org--x") && m.contains("huggingface-cli download org/x"));
    }
}
