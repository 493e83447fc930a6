//! `cargo xtask setup`: installs what the build and the VM lab need on a fresh Debian 12 machine,
//! and on any other says what to install. Every step checks first, so a second run changes
//! nothing and needs no network.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, note};
use crate::dist;
use crate::paths;

/// A Debian package the lab runs on the host, and what it provides (for other systems).
pub type Package = (&'static str, &'static str);

/// The VM, the guest's userland, the kernel package tooling and the compiler for the static
/// workloads.
const LAB_PACKAGES: &[Package] = &[
    ("qemu-system-x86", "qemu-system-x86_64"),
    (
        "busybox-static",
        "a statically linked /bin/busybox (the guest's userland)",
    ),
    ("e2fsprogs", "mkfs.ext4"),
    ("cpio", "cpio"),
    ("kmod", "modinfo"),
    ("xz-utils", "xz"),
    ("zstd", "zstd"),
    ("gzip", "gzip"),
    ("tar", "tar"),
    ("gcc", "gcc"),
    (
        "libc6-dev",
        "the C library's headers and static libc (the lab workloads)",
    ),
    // refwatch_inject.ko: the Debian 12 kernels' headers build with gcc-12 through make.
    ("gcc-12", "gcc-12"),
    ("make", "make"),
    ("ndctl", "ndctl"),
    // mkfs.xfs for the guest: the real bugs' XFS cases.
    ("xfsprogs", "mkfs.xfs"),
    // The lab kernels built from Debian's source (lab/build.rs): kbuild's host tools, objtool
    // (libelf) and pahole for BTF.
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("libelf-dev", "libelf's headers (objtool)"),
    ("libssl-dev", "OpenSSL's headers (kbuild's host tools)"),
    ("dwarves", "pahole (the kernel's BTF)"),
    // The Perfetto export's check reads it with Perfetto's own schema (PyPI's perfetto).
    ("python3-venv", "python3 with venv"),
    (
        "debian-archive-keyring",
        "Debian's archive keys (the lab fetches Debian's kernels)",
    ),
];

pub fn run() -> Result<()> {
    install_debian_packages(LAB_PACKAGES)?;
    toolchain()?;
    note("setup: done");
    Ok(())
}

/// PyPI's `perfetto` (its trace schema, perfetto_trace_pb2), pinned, in a venv of the cache.
const PERFETTO: &str = "perfetto==0.59.1";

/// The venv's python, with [`PERFETTO`] installed the first time the test asks for it (only
/// `cargo xtask test` needs it, for the Perfetto check).
pub fn perfetto_python() -> Result<PathBuf> {
    let venv = paths::cache_root()?.join("python");
    let python = venv.join("bin/python3");
    let stamp = venv.join(PERFETTO);
    if stamp.exists() {
        return Ok(python);
    }
    note(format_args!("setup: {PERFETTO} into {}", venv.display()));
    cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    cmd::run(Command::new(&python).args(["-m", "pip", "install", "-q", PERFETTO]))?;
    std::fs::write(&stamp, "")?;
    Ok(python)
}

/// What building refwatch needs besides stable Rust: the nightly's rust-src and bpf-linker
/// for the eBPF programs, and the musl target for the static binary.
pub fn toolchain() -> Result<()> {
    add_rust_src()?;
    install_bpf_linker()?;
    add_musl_target()
}

/// Installs whichever of `packages` are missing (apt-get update first, only then). Without
/// apt-get, says what they provide instead: building refwatch needs none of them.
pub fn install_debian_packages(packages: &[Package]) -> Result<()> {
    if !cmd::succeeds(Command::new("apt-get").arg("--version")) {
        let needs: Vec<String> = packages
            .iter()
            .map(|(pkg, provides)| format!("  {provides} (Debian: {pkg})"))
            .collect();
        note(format_args!(
            "setup: no apt-get here, so nothing is installed. Building refwatch needs only \
             rustup and a C compiler (cc, as the linker); the VM lab needs these, and fetches \
             Debian's kernels with apt-get (a Debian or Ubuntu host):\n{}",
            needs.join("\n")
        ));
        return Ok(());
    }
    let missing: Vec<&str> = packages
        .iter()
        .map(|(pkg, _)| *pkg)
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

fn add_musl_target() -> Result<()> {
    // In the workspace, so that rustup answers for the toolchain rust-toolchain.toml pins.
    let installed = cmd::output(
        Command::new("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(paths::workspace_root()),
    )?;
    if installed.lines().any(|t| t.trim() == dist::TARGET) {
        note(format_args!("setup: {} already installed", dist::TARGET));
        return Ok(());
    }
    note(format_args!("setup: adding the {} target", dist::TARGET));
    cmd::run(
        Command::new("rustup")
            .args(["target", "add", dist::TARGET])
            .current_dir(paths::workspace_root()),
    )
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
