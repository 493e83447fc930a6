//! Lab kernels built from Debian's `linux-source-*` packages with the lab's own config: what
//! Debian's binary kernels leave out (device-private pages, P2PDMA, the HMM test driver).
//!
//! A build is cached by source version, config and compiler; the cached tree is laid out like
//! an unpacked Debian kernel (`boot/vmlinuz-RELEASE`, `lib/modules/RELEASE`), plus the build
//! directory that out-of-tree modules (the test module) build against.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::apt::Apt;
use crate::cmd::{self, note};
use crate::paths;

/// A config fragment applied over `allnoconfig`.
pub struct Fragment {
    pub name: &'static str,
    pub text: &'static str,
}

/// The guest: console, initramfs, virtio, pmem, ZONE_DEVICE of every type, BTF and probes.
pub const GUEST: Fragment = Fragment {
    name: "guest.config",
    text: include_str!("kconfig/guest.config"),
};

/// The guest with the kernel's own debugging (DEBUG_VM, DEBUG_PAGE_REF, PAGE_OWNER), for the
/// comparison of lab/debug_kernel.rs.
pub const DEBUG: Fragment = Fragment {
    name: "debug.config",
    text: include_str!("kconfig/debug.config"),
};

/// How one lab kernel is built.
pub struct Recipe {
    /// The `linux-source-X.Y` package and its exact version.
    pub source: (&'static str, &'static str),
    /// Applied in order over `allnoconfig`; a later line wins.
    pub fragments: &'static [&'static Fragment],
    /// `LOCALVERSION`: the release is the source's version followed by it.
    pub localversion: &'static str,
}

/// A finished build.
pub struct Built {
    /// The unpacked source, for programs built from its tools/ (the HMM selftest).
    pub src: PathBuf,
    /// The install root: `boot/vmlinuz-RELEASE` and `lib/modules/RELEASE`.
    pub tree: PathBuf,
    /// The kbuild output directory, for `make -C BUILD M=…` of out-of-tree modules.
    pub build: PathBuf,
}

const COMPLETE_MARKER: &str = ".refwatch-complete";
/// How often the build says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Returns the cached build of `recipe` for the kernel named `name` with release `release`,
/// building it first if needed (minutes: it says how far it got as it goes).
pub fn ensure(name: &str, release: &str, recipe: &Recipe, apt: &Apt) -> Result<Built> {
    let config = recipe
        .fragments
        .iter()
        .map(|f| format!("# --- {}\n{}", f.name, f.text))
        .collect::<String>();
    let compiler = cmd::output(Command::new("gcc").arg("--version"))?;
    let pahole = cmd::output(Command::new("pahole").arg("--version"))
        .context("pahole (Debian's dwarves) is needed for BTF; `cargo xtask setup` installs it")?;
    let key = fnv1a(
        [recipe.source.1, &config, &compiler, &pahole, release]
            .join("\0")
            .as_bytes(),
    );
    let dir = paths::lab_cache()?
        .join("built")
        .join(format!("{release}-{key:016x}"));
    let built = Built {
        src: dir.join("src"),
        tree: dir.join("tree"),
        build: dir.join("build"),
    };
    // Two xtask runs (or worktrees) sharing the cache build a kernel once: the second waits.
    let builds = dir.parent().expect("has a parent");
    paths::create_dir(builds)?;
    let lock = std::fs::File::create(builds.join(format!("{release}-{key:016x}.lock")))?;
    if lock.try_lock().is_err() {
        note(format_args!(
            "kernel {name}: another xtask is building it; waiting"
        ));
        lock.lock()?;
    }
    if dir.join(COMPLETE_MARKER).exists() {
        return Ok(built);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the partial build {}", dir.display()))?;
    }
    let src = &built.src;
    paths::create_dir(src)?;
    paths::create_dir(&built.build)?;

    let (package, version) = recipe.source;
    let deb = apt.download(package, version)?;
    note(format_args!("kernel {name}: unpacking {package}"));
    // The package holds one tarball, usr/src/linux-source-X.Y.tar.xz, of one top directory.
    cmd::run(
        Command::new("sh")
            .args([
                "-c",
                r#"dpkg-deb --fsys-tarfile "$1" |
                    tar -xO --wildcards './usr/src/linux-source-*.tar.xz' | xz -dc |
                    tar -x -C "$2" --strip-components=1"#,
                "unpack",
            ])
            .arg(&deb)
            .arg(src),
    )?;

    let fragment = dir.join("lab.config");
    std::fs::write(&fragment, &config)?;
    let make = |args: &[&str]| {
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(src)
            .arg(format!("O={}", built.build.display()))
            .arg(format!("LOCALVERSION={}", recipe.localversion))
            .args(args);
        make
    };
    cmd::output(make(&["allnoconfig"]).arg(format!("KCONFIG_ALLCONFIG={}", fragment.display())))?;
    let resolved = std::fs::read_to_string(built.build.join(".config"))?;
    let lost = lost_lines(&config, &resolved);
    if !lost.is_empty() {
        bail!(
            "kernel {name}: {package} {version} does not take these config lines (a dependency \
             is missing or the option is gone): {}",
            lost.join(", ")
        );
    }

    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    note(format_args!(
        "kernel {name}: building {release} from {package} {version} with {jobs} jobs \
         (once; cached in {})",
        dir.display()
    ));
    compile(
        name,
        make(&[&format!("-j{jobs}"), "bzImage", "modules"]),
        &dir.join("build.log"),
    )?;
    let made = std::fs::read_to_string(built.build.join("include/config/kernel.release"))?;
    if made.trim() != release {
        bail!(
            "kernel {name}: the build says its release is {:?}, the kernel table {release:?}",
            made.trim()
        );
    }
    cmd::output(
        make(&["modules_install", "INSTALL_MOD_STRIP=1"])
            .arg(format!("INSTALL_MOD_PATH={}", built.tree.display())),
    )?;
    let boot = built.tree.join("boot");
    paths::create_dir(&boot)?;
    std::fs::copy(
        built.build.join("arch/x86/boot/bzImage"),
        boot.join(format!("vmlinuz-{release}")),
    )?;
    std::fs::write(dir.join(COMPLETE_MARKER), "")?;
    Ok(built)
}

/// Runs the compile, printing progress every [`PROGRESS_EVERY`]; the whole output goes to
/// `log`, whose end is shown if the build fails.
fn compile(name: &str, mut make: Command, log: &Path) -> Result<()> {
    let started = Instant::now();
    let log_file = std::fs::File::create(log)?;
    let mut child = make
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file.try_clone()?)
        .spawn()
        .with_context(|| format!("starting `{}`", cmd::describe(&make)))?;
    let mut log_file = log_file;
    let mut compiled = 0usize;
    let mut last_note = Instant::now();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        std::io::Write::write_all(&mut log_file, format!("{line}\n").as_bytes())?;
        if line.trim_start().starts_with("CC ") {
            compiled += 1;
        }
        if last_note.elapsed() >= PROGRESS_EVERY {
            last_note = Instant::now();
            note(format_args!(
                "kernel {name}: {compiled} files compiled in {}s",
                started.elapsed().as_secs()
            ));
        }
    }
    let status = child.wait()?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!(
            "kernel {name}: the build failed ({status}); the end of {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    note(format_args!(
        "kernel {name}: built ({compiled} files) in {}s",
        started.elapsed().as_secs()
    ));
    Ok(())
}

/// The fragment's `CONFIG_…=…` and `# CONFIG_… is not set` lines missing from the resolved
/// config: kconfig drops a request whose dependencies are not met without a word.
fn lost_lines(fragment: &str, resolved: &str) -> Vec<String> {
    let resolved: std::collections::HashSet<&str> = resolved.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with("CONFIG_") || (l.starts_with("# CONFIG_") && l.ends_with(" is not set"))
        })
        .filter(|l| !resolved.contains(l))
        .map(str::to_owned)
        .collect()
}

/// FNV-1a: a cache key that stays the same across Rust releases (std's hasher does not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_kconfig_dropped_is_reported() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n";
        let resolved = "CONFIG_A=y\n# CONFIG_B is not set\n# CONFIG_C is not set\n";
        assert_eq!(lost_lines(fragment, resolved), ["CONFIG_B=m"]);
    }

    #[test]
    fn every_fragment_line_is_a_config_line_or_a_comment() {
        for line in [GUEST, DEBUG]
            .iter()
            .flat_map(|f| f.text.lines())
            .map(str::trim)
        {
            assert!(
                line.is_empty() || line.starts_with("CONFIG_") || line.starts_with('#'),
                "{line}"
            );
        }
    }
}
