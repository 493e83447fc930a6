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
            .args([
                "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-I",
            ])
            .arg(header.parent().context("header path")?)
            .arg("-o")
            .arg(&out)
            .arg(root.join("xtask/lab/insncount/insncount.c")),
    )?;
    Ok(out)
}

/// One marker's counts: all vCPUs', and those of the vCPU that executed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub vcpu: u32,
    pub total: u64,
    pub own: u64,
}

/// The marks of a marks file ("mark VCPU TOTAL OWN" lines), in order.
pub fn marks(text: &str) -> Vec<Mark> {
    text.lines()
        .filter_map(|l| {
            let mut w = l
                .strip_prefix("mark ")?
                .split_whitespace()
                .map(str::parse::<u64>);
            let (vcpu, total, own) = (w.next()?.ok()?, w.next()?.ok()?, w.next()?.ok()?);
            Some(Mark {
                vcpu: u32::try_from(vcpu).ok()?,
                total,
                own,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_every_complete_line() {
        let text = "mark 1 100 60\nmark 1 250 150\nmark 0 7\nnoise\nmark 2 300 10\n";
        assert_eq!(
            marks(text),
            vec![
                Mark {
                    vcpu: 1,
                    total: 100,
                    own: 60
                },
                Mark {
                    vcpu: 1,
                    total: 250,
                    own: 150
                },
                Mark {
                    vcpu: 2,
                    total: 300,
                    own: 10
                },
            ]
        );
    }
}
