//! Where things live: the workspace and the per-user cache shared by every xtask command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `$XDG_CACHE_HOME/refwatch` or `~/.cache/refwatch`: survives `cargo clean`, since kernels
/// are slow to fetch.
pub fn cache_root() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("refwatch"))
}

pub fn lab_cache() -> Result<PathBuf> {
    Ok(cache_root()?.join("lab"))
}

pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}
