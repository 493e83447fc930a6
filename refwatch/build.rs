use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// The commit refwatch is built from, for `--version`: "unknown" outside a git checkout (a
/// source tarball). Not marked dirty: edits do not rerun this script, so the mark would lie.
fn git_commit() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    // Run again when HEAD moves: HEAD itself, the branch it names, the packed refs.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        // A path that does not exist would make cargo run this script at every build.
        if let Some(path) = git(&["rev-parse", "--git-path", name]).map(|p| dir.join(p))
            && path.exists()
        {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    commit
}

/// Builds refwatch-ebpf with the nightly toolchain and bpf-linker into OUT_DIR, and names the
/// commit built from.
fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-env=REFWATCH_GIT_COMMIT={}", git_commit());
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "refwatch-ebpf")
        .ok_or_else(|| anyhow!("refwatch-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
        .as_str();
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf_package], Toolchain::default())
}
