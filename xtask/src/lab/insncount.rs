//! The instruction-count TCG plugin (xtask/lab/insncount): guest instructions between the
//! markers benchload executes, a cost measure the host's load does not move.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use super::Apt;
use crate::{cmd, paths};

/// Builds the plugin against qemu-plugin.h of Debian's qemu source (bookworm: the host's 7.2).
pub fn build(apt: &Apt) -> Result<PathBuf> {
    let header = apt.source_file("qemu", "include/qemu/qemu-plugin.h")?;
    let root = paths::workspace_root();
    let out = root.join("target/lab/insncount.so");
    paths::create_dir(out.parent().context("plugin path")?)?;
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(header.parent().context("header path")?)
            .arg("-o")
            .arg(&out)
            .arg(root.join("xtask/lab/insncount/insncount.c")),
    )?;
    Ok(out)
}

/// The instruction counts of a marks file ("mark VCPU TOTAL" lines), in order.
pub fn marks(text: &str) -> Vec<u64> {
    text.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse().ok()).collect()
}
