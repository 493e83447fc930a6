//! An initramfs assembled in a staging directory and packed as a gzip'ed newc cpio.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd;
use crate::paths;

pub struct Initramfs {
    root: PathBuf,
}

impl Initramfs {
    /// Starts from an empty staging directory (anything left there is removed).
    pub fn new(staging: PathBuf) -> Result<Self> {
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("clearing {}", staging.display()))?;
        }
        paths::create_dir(&staging)?;
        Ok(Self { root: staging })
    }

    fn host_path(&self, guest: &str) -> Result<PathBuf> {
        let path = self.root.join(guest.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            paths::create_dir(parent)?;
        }
        Ok(path)
    }

    pub fn add_dir(&mut self, guest: &str) -> Result<()> {
        paths::create_dir(&self.root.join(guest.trim_start_matches('/')))
    }

    /// Copies a host file's contents (following symlinks) and mode.
    pub fn add_file(&mut self, host: &Path, guest: &str) -> Result<()> {
        let dest = self.host_path(guest)?;
        fs::copy(host, &dest)
            .with_context(|| format!("copying {} into the initramfs", host.display()))?;
        Ok(())
    }

    pub fn add_bytes(&mut self, guest: &str, data: impl AsRef<[u8]>, mode: u32) -> Result<()> {
        let dest = self.host_path(guest)?;
        fs::write(&dest, data).with_context(|| format!("writing {}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    pub fn add_symlink(&mut self, target: &str, guest: &str) -> Result<()> {
        let dest = self.host_path(guest)?;
        std::os::unix::fs::symlink(target, &dest)
            .with_context(|| format!("linking {}", dest.display()))
    }

    /// Copies a host directory recursively, keeping symlinks as they are.
    pub fn add_tree(&mut self, host: &Path, guest: &str) -> Result<()> {
        let dest = self.host_path(guest)?;
        cmd::run(Command::new("cp").arg("-a").arg("-T").arg(host).arg(&dest))
    }

    /// Copies a dynamically linked host program together with the shared libraries and the
    /// loader that ldd reports, at the same paths; static programs are copied alone.
    pub fn add_executable(&mut self, host: &Path, guest: &str) -> Result<()> {
        self.add_file(host, guest)?;
        for lib in shared_libraries(host)? {
            let guest_lib = lib.to_str().context("non-UTF-8 library path")?.to_owned();
            if !self.root.join(guest_lib.trim_start_matches('/')).exists() {
                self.add_file(&lib, &guest_lib)?;
            }
        }
        Ok(())
    }

    /// Packs the staging directory; the kernel only accepts the newc format.
    pub fn write(&self, out: &Path) -> Result<()> {
        let archive =
            fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut find = Command::new("find")
            .args([".", "-print0"])
            .current_dir(&self.root)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting find")?;
        let mut cpio = Command::new("cpio")
            .args([
                "--null",
                "--create",
                "--format=newc",
                "--quiet",
                "--owner=0:0",
            ])
            .current_dir(&self.root)
            .stdin(find.stdout.take().expect("piped"))
            .stdout(Stdio::piped())
            .spawn()
            .context("starting cpio")?;
        let gzip = Command::new("gzip")
            .arg("-1")
            .stdin(cpio.stdout.take().expect("piped"))
            .stdout(archive)
            .status()
            .context("running gzip")?;
        let (find, cpio) = (find.wait()?, cpio.wait()?);
        if !(find.success() && cpio.success() && gzip.success()) {
            bail!(
                "packing {} failed: find {find}, cpio {cpio}, gzip {gzip}",
                self.root.display()
            );
        }
        Ok(())
    }
}

fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .with_context(|| format!("running ldd on {}", program.display()))?;
    // ldd exits 1 for static programs ("not a dynamic executable").
    if !out.status.success() {
        return Ok(Vec::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}
