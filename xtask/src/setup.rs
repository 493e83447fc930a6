//! `cargo xtask setup`: installs what the build and the VM lab need on a fresh Debian 12 machine.
//! Every step checks first, so a second run changes nothing and needs no network.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, note};
use crate::paths;

/// Debian packages the lab runs on the host: the VM, the guest's userland, the kernel
/// package tooling and the compiler for the static workloads.
const DEBIAN_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "e2fsprogs",
    "cpio",
    "kmod",
    "xz-utils",
    "zstd",
    "gzip",
    "tar",
    "gcc",
    "libc6-dev",
    // refwatch_inject.ko: the Debian 12 kernels' headers build with gcc-12 through make.
    "gcc-12",
    "make",
    "ndctl",
    // mkfs.xfs for the guest: the real bugs' XFS cases.
    "xfsprogs",
    // The lab kernels built from Debian's source (lab/build.rs): kbuild's host tools, objtool
    // (libelf) and pahole for BTF.
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "debian-archive-keyring",
];

pub fn run() -> Result<()> {
    install_debian_packages(DEBIAN_PACKAGES)?;
    add_rust_src()?;
    install_bpf_linker()?;
    note("setup: done");
    Ok(())
}

/// Installs whichever of `packages` are missing (apt-get update first, only then).
pub fn install_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        note("setup: Debian packages already installed");
        return Ok(());
    }
    note(format_args!("setup: installing {}", missing.join(" ")));
    cmd::run(Command::new("apt-get").arg("update").arg("-q"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn dpkg_installed(pkg: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", pkg]))
        .is_ok_and(|status| status == "installed")
}

fn add_rust_src() -> Result<()> {
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]));
    if let Ok(sysroot) = sysroot
        && Path::new(sysroot.trim())
            .join("lib/rustlib/src/rust/library")
            .is_dir()
    {
        note("setup: nightly rust-src already installed");
        return Ok(());
    }
    note("setup: adding rust-src to the nightly toolchain");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn install_bpf_linker() -> Result<()> {
    // bpf-linker loads the nightly's libLLVM, which only `rustup run nightly` puts on the
    // library path (cargo +nightly, as aya-build uses it, does the same).
    if cmd::succeeds(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"])) {
        note("setup: bpf-linker already installed");
        return Ok(());
    }
    let prefix = llvm_prefix()?;
    note(format_args!(
        "setup: building bpf-linker against the nightly's libLLVM (LLVM_PREFIX={})",
        prefix.display()
    ));
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", &prefix),
    )
}

/// bpf-linker's build wants `$LLVM_PREFIX/lib/libLLVM.so`; the nightly ships that library
/// under a versioned name, so a prefix of one symlink reuses it instead of installing LLVM.
fn llvm_prefix() -> Result<PathBuf> {
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let libdir = Path::new(sysroot.trim()).join("lib");
    let lib = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.22.1-rust-"))
        });
    let Some(lib) = lib else {
        bail!("no libLLVM.so.22.1-rust-* in {}", libdir.display());
    };
    let prefix = paths::cache_root()?.join("llvm-prefix");
    let link = prefix.join("lib/libLLVM.so");
    paths::create_dir(&prefix.join("lib"))?;
    if std::fs::read_link(&link).ok().as_deref() != Some(lib.as_path()) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {} to {}", link.display(), lib.display()))?;
    }
    Ok(prefix)
}
