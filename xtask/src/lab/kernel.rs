//! The kernels the lab boots: one table of exact Debian package versions, fetched once into
//! the cache through the private apt config, unpacked and indexed with depmod.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::apt::Apt;
use super::build::{self, Built, Recipe};
use crate::cmd::{self, note};
use crate::paths;

pub struct KernelSpec {
    /// Short name used on the command line and in the test matrix.
    pub name: &'static str,
    /// `uname -r` in the guest, and the directory under lib/modules.
    pub release: &'static str,
    pub origin: Origin,
}

/// Where a lab kernel comes from.
pub enum Origin {
    /// Debian's binary packages.
    Debian {
        /// Packages (name, exact version) whose contents make up the tree.
        packages: &'static [(&'static str, &'static str)],
        /// Header packages (same versions) for building the test module (lab/inject.rs);
        /// empty where no module is built for that kernel.
        headers: &'static [(&'static str, &'static str)],
    },
    /// Built by the lab from Debian's source package (lab/build.rs): not a Debian binary.
    Built(&'static Recipe),
}

/// Versions as the archive served them when pinned (suite in the comment). Sid drops old
/// versions quickly: when a pin stops being served, bump it here, re-run the matrix on it, and
/// update docs/lab.md ("The kernels") and the catalog's `checked` fields.
pub const KERNELS: &[KernelSpec] = &[
    // bullseye
    KernelSpec {
        name: "5.10",
        release: "5.10.0-32-amd64",
        origin: Origin::Debian {
            packages: &[("linux-image-5.10.0-32-amd64-unsigned", "5.10.223-1")],
            headers: &[],
        },
    },
    // bookworm-security
    KernelSpec {
        name: "6.1",
        release: "6.1.0-56-amd64",
        origin: Origin::Debian {
            packages: &[("linux-image-6.1.0-56-amd64-unsigned", "6.1.192-2")],
            // The headers' Makefile calls the host's gcc-12 (Debian 12), installed by
            // `xtask setup`.
            headers: &[
                ("linux-headers-6.1.0-56-amd64", "6.1.192-2"),
                ("linux-headers-6.1.0-56-common", "6.1.192-2"),
                ("linux-kbuild-6.1", "6.1.192-3"),
            ],
        },
    },
    // bookworm-backports
    KernelSpec {
        name: "6.12",
        release: "6.12.95+deb12-amd64",
        origin: Origin::Debian {
            packages: &[(
                "linux-image-6.12.95+deb12-amd64-unsigned",
                "6.12.95-1~bpo12+1",
            )],
            headers: &[
                ("linux-headers-6.12.95+deb12-amd64", "6.12.95-1~bpo12+1"),
                ("linux-headers-6.12.95+deb12-common", "6.12.95-1~bpo12+1"),
                ("linux-kbuild-6.12.95+deb12", "6.12.95-1~bpo12+1"),
            ],
        },
    },
    // sid: from 7.x on the image package is a metapackage over binary + modules (+ base).
    KernelSpec {
        name: "7.2",
        release: "7.2.13+deb14-amd64",
        origin: Origin::Debian {
            packages: &[
                ("linux-binary-7.2.13+deb14-amd64", "7.2.13-1"),
                ("linux-modules-7.2.13+deb14-amd64", "7.2.13-1"),
                ("linux-base-7.2.13+deb14-amd64", "7.2.13-1"),
            ],
            headers: &[],
        },
    },
    // trixie-backports
    KernelSpec {
        name: "7.3",
        release: "7.3.4+deb13-amd64",
        origin: Origin::Debian {
            packages: &[
                ("linux-binary-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
                ("linux-modules-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
                ("linux-base-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1"),
            ],
            headers: &[],
        },
    },
    // Built by the lab from the same Debian sources (bookworm-backports, trixie-backports),
    // with device-private pages, P2PDMA and the HMM test driver.
    KernelSpec {
        name: "6.12-src",
        release: "6.12.95-refwatch-src",
        origin: Origin::Built(&Recipe {
            source: ("linux-source-6.12", "6.12.95-1~bpo12+1"),
            fragments: &[&build::GUEST],
            localversion: "-refwatch-src",
        }),
    },
    KernelSpec {
        name: "7.3-src",
        release: "7.3.4-refwatch-src",
        origin: Origin::Built(&Recipe {
            source: ("linux-source-7.3", "7.3.4-1~bpo13+1"),
            fragments: &[&build::GUEST],
            localversion: "-refwatch-src",
        }),
    },
    // 6.12-src and 7.3-src with the kernel's own debug options, for `cargo xtask debug-kernel`.
    KernelSpec {
        name: "6.12-src-debug",
        release: "6.12.95-refwatch-debug",
        origin: Origin::Built(&Recipe {
            source: ("linux-source-6.12", "6.12.95-1~bpo12+1"),
            fragments: &[&build::GUEST, &build::DEBUG],
            localversion: "-refwatch-debug",
        }),
    },
    KernelSpec {
        name: "7.3-src-debug",
        release: "7.3.4-refwatch-debug",
        origin: Origin::Built(&Recipe {
            source: ("linux-source-7.3", "7.3.4-1~bpo13+1"),
            fragments: &[&build::GUEST, &build::DEBUG],
            localversion: "-refwatch-debug",
        }),
    },
];

impl KernelSpec {
    /// (major, minor) of the release, as the probe catalog's eras count them.
    pub fn version(&self) -> (u8, u8) {
        let mut parts = self
            .release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }
}

pub fn spec(name: &str) -> Result<&'static KernelSpec> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        let names: Vec<_> = KERNELS.iter().map(|k| k.name).collect();
        format!("unknown kernel {name:?}; known: {}", names.join(", "))
    })
}

/// A kernel unpacked in the cache: its root looks like `/` of an installed system.
pub struct Kernel {
    pub spec: &'static KernelSpec,
    tree: PathBuf,
    /// The lab's build, for a kernel built from source.
    built: Option<Built>,
}

const COMPLETE_MARKER: &str = ".refwatch-complete";

impl Kernel {
    /// Returns the cached tree, fetching and unpacking it first if needed. A tree without the
    /// completion marker is a leftover of an interrupted fetch and is rebuilt.
    pub fn fetch(spec: &'static KernelSpec, apt: &Apt) -> Result<Self> {
        let packages = match &spec.origin {
            Origin::Debian { packages, .. } => packages,
            Origin::Built(recipe) => {
                let built = build::ensure(spec.name, spec.release, recipe, apt)?;
                return Ok(Self {
                    spec,
                    tree: built.tree.clone(),
                    built: Some(built),
                });
            }
        };
        let tree = paths::lab_cache()?.join("kernels").join(spec.release);
        let kernel = Self {
            spec,
            tree,
            built: None,
        };
        if kernel.tree.join(COMPLETE_MARKER).exists() {
            return Ok(kernel);
        }
        note(format_args!(
            "kernel {}: fetching {}",
            spec.name, spec.release
        ));
        if kernel.tree.exists() {
            std::fs::remove_dir_all(&kernel.tree)
                .with_context(|| format!("removing partial {}", kernel.tree.display()))?;
        }
        extract_packages(apt, packages, &kernel.tree)?;
        kernel.index_modules()?;
        std::fs::write(kernel.tree.join(COMPLETE_MARKER), "")?;
        Ok(kernel)
    }

    /// The lab's build of a kernel built from source; None for Debian's binaries.
    pub fn built(&self) -> Option<&Built> {
        self.built.as_ref()
    }

    pub fn modules_dir(&self) -> PathBuf {
        self.tree.join("lib/modules").join(self.spec.release)
    }

    pub fn vmlinuz(&self) -> Result<PathBuf> {
        let candidates = [
            self.tree
                .join("boot")
                .join(format!("vmlinuz-{}", self.spec.release)),
            self.modules_dir().join("vmlinuz"),
        ];
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "no vmlinuz for {} in {}",
                    self.spec.release,
                    self.tree.display()
                )
            })
    }

    /// Packages ship no modules.dep; 7.x also installs under usr/lib only (merged /usr), while
    /// depmod and modprobe with `-b`/`-d` look under lib/modules.
    fn index_modules(&self) -> Result<()> {
        let lib = self.tree.join("lib");
        if !lib.exists() && self.tree.join("usr/lib/modules").is_dir() {
            std::os::unix::fs::symlink("usr/lib", &lib).context("linking lib to usr/lib")?;
        }
        cmd::run(
            Command::new("depmod")
                .arg("-b")
                .arg(&self.tree)
                .arg(self.spec.release),
        )
    }

    /// The uncompressed .ko files to insmod, dependencies first, for each requested module
    /// (names or aliases); built-in modules are skipped. Decompressed copies are cached.
    pub fn module_load_order(&self, modules: &[&str]) -> Result<Vec<PathBuf>> {
        // The host's /etc/modprobe.d must not apply (ndctl's turns libnvdimm into an
        // `install` command); an empty config dir inside the tree replaces it.
        let config = self.tree.join("etc/modprobe.d");
        paths::create_dir(&config)?;
        let mut order: Vec<PathBuf> = Vec::new();
        for module in modules {
            let listing = cmd::output(
                Command::new("modprobe")
                    .arg("-C")
                    .arg(&config)
                    .arg("-d")
                    .arg(&self.tree)
                    .args(["-S", self.spec.release, "--show-depends", module]),
            )
            .with_context(|| format!("resolving module {module} for {}", self.spec.release))?;
            for line in listing.lines() {
                let Some(path) = line
                    .strip_prefix("insmod ")
                    .and_then(|rest| rest.split_whitespace().next())
                else {
                    continue;
                };
                let ko = self.decompressed(Path::new(path))?;
                if !order.contains(&ko) {
                    order.push(ko);
                }
            }
        }
        Ok(order)
    }

    fn decompressed(&self, module: &Path) -> Result<PathBuf> {
        let file = module
            .file_name()
            .and_then(|n| n.to_str())
            .context("module path without a name")?;
        let (stem, tool) = if let Some(stem) = file.strip_suffix(".ko.xz") {
            (stem, Some("xz"))
        } else if let Some(stem) = file.strip_suffix(".ko.zst") {
            (stem, Some("zstd"))
        } else if let Some(stem) = file.strip_suffix(".ko") {
            (stem, None)
        } else {
            bail!("unexpected module file {}", module.display());
        };
        let Some(tool) = tool else {
            return Ok(module.to_path_buf());
        };
        let out = self.tree.join(".ko-cache").join(format!("{stem}.ko"));
        if !out.exists() {
            paths::create_dir(out.parent().expect("has a parent"))?;
            let tmp = out.with_extension("tmp");
            let file = std::fs::File::create(&tmp)?;
            cmd::run(Command::new(tool).arg("-dc").arg(module).stdout(file))?;
            std::fs::rename(&tmp, &out)?;
        }
        Ok(out)
    }
}

/// Unpacks the exact package versions into `dest` (also meant for header packages).
pub fn extract_packages(apt: &Apt, packages: &[(&str, &str)], dest: &Path) -> Result<()> {
    paths::create_dir(dest)?;
    for (name, version) in packages {
        let deb = apt.download(name, version)?;
        note(format_args!(
            "unpacking {}",
            deb.file_name().unwrap_or_default().to_string_lossy()
        ));
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_release() {
        let version = |name| spec(name).unwrap().version();
        assert_eq!(version("6.1"), (6, 1));
        assert_eq!(version("6.12"), (6, 12));
        assert_eq!(version("7.3-src"), (7, 3));
    }
}
