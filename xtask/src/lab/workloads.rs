//! The lab's C workloads (xtask/lab/workloads), built static with the host gcc so the guest
//! needs no libc for them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::cmd;
use crate::paths;

/// Where the workloads live in the guest; it is on the guest's PATH.
pub const GUEST_DIR: &str = "/usr/lib/refwatch-lab";

const PROGRAMS: &[&str] = &["daxload", "benchload", "p2pload", "privload"];

/// Compiles every workload into target/lab/workloads and returns (program name, binary).
pub fn build() -> Result<Vec<(&'static str, PathBuf)>> {
    let root = paths::workspace_root();
    let out_dir = root.join("target/lab/workloads");
    paths::create_dir(&out_dir)?;
    PROGRAMS
        .iter()
        .map(|name| {
            let source = root.join("xtask/lab/workloads").join(format!("{name}.c"));
            let binary = out_dir.join(name);
            // Build beside and rename: a concurrent lab run may be copying the old binary.
            let tmp = out_dir.join(format!("{name}.{}.tmp", std::process::id()));
            cmd::run(
                Command::new("gcc")
                    .args(["-O2", "-static", "-Wall", "-Wextra", "-Werror", "-o"])
                    .arg(&tmp)
                    .arg(&source),
            )?;
            std::fs::rename(&tmp, &binary)
                .with_context(|| format!("installing {}", binary.display()))?;
            Ok((*name, binary))
        })
        .collect()
}
