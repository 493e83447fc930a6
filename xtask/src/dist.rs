//! `cargo xtask dist`: one static refwatch for x86-64, with its man pages and shell
//! completions, in target/dist: what to copy to a machine that has no Rust toolchain.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;
use crate::paths;

/// musl links everything in: the binary runs on any x86-64 Linux, whatever its libc.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the static refwatch (release); cheap when nothing changed. Returns its path.
pub fn build_static() -> Result<PathBuf> {
    let root = paths::workspace_root();
    cmd::note(format_args!(
        "building refwatch (release, static, {TARGET})"
    ));
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "refwatch", "--target", TARGET])
            .current_dir(&root),
    )?;
    Ok(root.join("target").join(TARGET).join("release/refwatch"))
}

pub fn run() -> Result<()> {
    crate::setup::toolchain()?;
    let binary = build_static()?;
    let dist = paths::workspace_root().join("target/dist");
    // Stale pages of a subcommand that is gone would otherwise stay.
    if dist.exists() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("removing {}", dist.display()))?;
    }
    paths::create_dir(&dist)?;
    let installed = dist.join("refwatch");
    std::fs::copy(&binary, &installed)
        .with_context(|| format!("copying {} to {}", binary.display(), installed.display()))?;
    cmd::run(Command::new(&installed).arg("generate").arg(&dist))?;
    cmd::note(format_args!(
        "dist: {} (static refwatch, man pages, bash/zsh/fish completions)",
        dist.display()
    ));
    Ok(())
}
