//! A private apt configuration under the lab cache: it downloads kernel packages from any
//! Debian suite without touching the system's /etc/apt or its package state.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use anyhow::{Context, Result};

use crate::cmd::{self, note};
use crate::paths;

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Every suite a kernel in the table comes from (bookworm-security serves the current 6.1).
const SOURCES: &[(&str, &str)] = &[
    (MIRROR, "bullseye"),
    (MIRROR, "bookworm"),
    (SECURITY_MIRROR, "bookworm-security"),
    (MIRROR, "bookworm-backports"),
    (MIRROR, "trixie-backports"),
    (MIRROR, "sid"),
];

/// Suites whose source packages are fetched (qemu's, for its plugin header).
const SOURCE_SUITES: &[(&str, &str)] = &[(MIRROR, "bookworm")];

pub struct Apt {
    dir: PathBuf,
    updated: Once,
}

impl Apt {
    pub fn new() -> Result<Self> {
        let dir = paths::lab_cache()?.join("apt");
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "empty",
            "debs",
            "sources",
        ] {
            paths::create_dir(&dir.join(sub))?;
        }
        let line = |kind: &str, (uri, suite): &(&str, &str)| {
            format!("{kind} [signed-by={KEYRING}] {uri} {suite} main\n")
        };
        let sources: String = SOURCES
            .iter()
            .map(|s| line("deb", s))
            .chain(SOURCE_SUITES.iter().map(|s| line("deb-src", s)))
            .collect();
        let list = dir.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&list, sources)
                .with_context(|| format!("writing {}", list.display()))?;
        }
        Ok(Self {
            dir,
            updated: Once::new(),
        })
    }

    fn apt(&self, program: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut cmd = Command::new(program);
        // The lab's stdout carries only the guest command's output.
        cmd.stdout(std::io::stderr());
        for opt in [
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            format!("Dir::Etc::SourceParts={}", d("empty")),
            format!("Dir::Etc::Preferences={}", d("empty/none")),
            format!("Dir::Etc::PreferencesParts={}", d("empty")),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            "Dir::State::Status=/dev/null".into(),
            "APT::Architecture=amd64".into(),
            "APT::Architectures=amd64".into(),
            "Acquire::Languages=none".into(),
            // The system's appstream hook would fetch metadata we never read.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            // Downloads land in our cache dir, which the _apt user cannot write.
            "APT::Sandbox::User=root".into(),
        ] {
            cmd.arg("-o").arg(opt);
        }
        cmd
    }

    /// Refreshes the package lists at most once per xtask process, and only when a package
    /// is actually missing from the cache.
    fn update(&self) -> Result<()> {
        let mut result = Ok(());
        self.updated.call_once(|| {
            note("apt: refreshing package lists (private config)");
            result = cmd::run(self.apt("apt-get").args(["update", "-q"]));
        });
        result
    }

    /// Returns the .deb for `name` at `version`, downloading it on a cache miss. The archives
    /// keep only the newest Debian revision of a package (bookworm-security replaced
    /// linux-kbuild-6.1 6.1.192-2 by -3): where the pinned one is gone, the newest served
    /// revision of the same upstream release stands in, and the lab says so.
    pub fn download(&self, name: &str, version: &str) -> Result<PathBuf> {
        let debs = self.dir.join("debs");
        if let Some(found) = find_deb(&debs, name, version)? {
            return Ok(found);
        }
        self.update()?;
        let pinned = self.fetch(name, version, &debs);
        if pinned.is_ok() {
            return pinned;
        }
        let Some(other) = self.same_upstream(name, version)? else {
            return pinned.with_context(|| {
                format!("{name}: no revision of {version}'s upstream release is served")
            });
        };
        note(format_args!(
            "apt: {name}={version} is no longer served; using {other}, the same upstream release"
        ));
        match find_deb(&debs, name, &other)? {
            Some(found) => Ok(found),
            None => self.fetch(name, &other, &debs),
        }
    }

    fn fetch(&self, name: &str, version: &str, debs: &Path) -> Result<PathBuf> {
        note(format_args!("apt: downloading {name}={version}"));
        cmd::run(
            self.apt("apt-get")
                .args(["download", "-q"])
                .arg(format!("{name}={version}"))
                .current_dir(debs),
        )
        .with_context(|| format!("downloading {name}={version}"))?;
        find_deb(debs, name, version)?.with_context(|| {
            format!(
                "apt-get download left no .deb for {name}={version} in {}",
                debs.display()
            )
        })
    }

    /// The newest served version of `name` whose upstream part (before the Debian revision)
    /// is `version`'s.
    fn same_upstream(&self, name: &str, version: &str) -> Result<Option<String>> {
        let upstream = |v: &str| {
            v.rsplit_once('-')
                .map_or(v.to_owned(), |(u, _)| u.to_owned())
        };
        // Captured: apt() sends stdout to stderr.
        let listing = cmd::output(
            self.apt("apt-cache")
                .stdout(std::process::Stdio::piped())
                .arg("madison")
                .arg(name),
        )?;
        // madison lists the newest first: "NAME | VERSION | URL SUITE/main amd64 Packages".
        Ok(listing
            .lines()
            .filter_map(|line| line.split('|').nth(1).map(str::trim))
            .find(|v| upstream(v) == upstream(version))
            .map(str::to_owned))
    }

    /// One file of a source package's upstream tarball (e.g. `include/qemu/qemu-plugin.h` of
    /// `qemu`), extracted under the cache; downloaded on a cache miss.
    pub fn source_file(&self, package: &str, member: &str) -> Result<PathBuf> {
        let dir = self.dir.join("sources").join(package);
        let file = dir.join(member);
        if file.exists() {
            return Ok(file);
        }
        paths::create_dir(&dir)?;
        self.update()?;
        note(format_args!(
            "apt: downloading the {package} source package"
        ));
        cmd::run(
            self.apt("apt-get")
                .args(["source", "--download-only", "-q", package])
                .current_dir(&dir),
        )
        .with_context(|| format!("downloading the {package} source package"))?;
        let orig = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(".orig.tar."))
            })
            .with_context(|| format!("no upstream tarball of {package} in {}", dir.display()))?;
        let text = cmd::output(
            Command::new("tar")
                .arg("-xOf")
                .arg(&orig)
                .args(["--wildcards", &format!("*/{member}")]),
        )?;
        paths::create_dir(file.parent().context("member path")?)?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        Ok(file)
    }
}

/// apt names files `NAME_VERSION_ARCH.deb` with the version's ':' escaped as "%3a".
fn find_deb(dir: &Path, name: &str, version: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{name}_{}_", version.replace(':', "%3a"));
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if file.starts_with(&prefix) && file.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}
