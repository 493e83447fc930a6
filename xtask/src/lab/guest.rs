//! What runs inside the VM: the job description, the generated /init and the initramfs that
//! carries the kernel's modules, the tools, refwatch and the workloads.
//!
//! Guest conventions (other lab code and tests rely on them):
//! - the emulated pmem is /dev/pmem0 (memmap=256M!1G: pfns 0x40000..0x50000), ext4 mounted
//!   `-o dax` at /mnt/dax;
//! - PATH = /include:/usr/lib/refwatch-lab:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin;
//!   refwatch is /usr/local/bin/refwatch, `--include` files are in /include;
//! - the job's stdout, stderr and exit status, and everything under /out, go back to the host
//!   as a tar written to the raw disk /dev/vda.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::initramfs::Initramfs;
use super::kernel::Kernel;
use super::workloads;
use crate::cmd;

/// Modules (names or aliases) the guest needs: legacy pmem + the pmem block driver, device-dax
/// for the devdax scenarios, ext4 and its checksum, XFS (the real bugs' XFS cases), and
/// virtio-blk for the results disk.
const MODULES: &[&str] = &[
    "nd_e820",
    "nd_pmem",
    "dax_pmem",
    "device_dax",
    "crc32c",
    "ext4",
    "xfs",
    "virtio_pci",
    "virtio_blk",
];

/// A fixed UUID for mkfs: it also seeds the htree hash, so mke2fs never blocks on getrandom()
/// in a guest that has no entropy source under TCG.
const FS_UUID: &str = "5eb3d6e0-6d8a-4d0a-9d7e-6c6f6b7e1a01";

pub const GUEST_PATH: &str =
    "/include:/usr/lib/refwatch-lab:/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin";

/// Host programs copied into the guest with their shared libraries.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"),
    ("/usr/bin/ndctl", "/usr/bin/ndctl"),
    ("/usr/sbin/mkfs.xfs", "/usr/sbin/mkfs.xfs"),
];

/// Programs built in this workspace that every guest gets.
pub struct Assets {
    pub refwatch: PathBuf,
    pub workloads: Vec<(&'static str, PathBuf)>,
}

impl Assets {
    /// Builds refwatch (the static release binary users install) and the workloads; cheap
    /// when nothing changed.
    pub fn build() -> Result<Self> {
        Ok(Self {
            refwatch: crate::dist::build_static()?,
            workloads: workloads::build()?,
        })
    }
}

/// The progress line /init prints right before the command.
pub const COMMAND_STARTED: &str = "running the command";

#[derive(Default, Clone)]
pub struct GuestJob {
    /// The command; stdin is /dev/null. Ignored when `interactive`.
    pub argv: Vec<String>,
    /// An interactive shell on the console instead of `argv`.
    pub interactive: bool,
    /// Host files or directories copied into /include.
    pub includes: Vec<PathBuf>,
    /// Extra host files at given guest paths (e.g. a test module).
    pub files: Vec<(PathBuf, String)>,
    /// Shell lines run after /mnt/dax is mounted and before the command (e.g. an insmod).
    pub setup: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Extra kernel command-line words, after the lab's own (e.g. a memmap= for a test module).
    pub cmdline: Vec<String>,
    /// Wall-clock limit for one boot; None waits forever (interactive use).
    pub timeout: Option<Duration>,
    /// Extra QEMU options (e.g. a TCG plugin).
    pub qemu_args: Vec<String>,
    /// Extra block devices, each backed by a fresh sparse image in the run dir.
    pub disks: Vec<Disk>,
    /// The command may crash the guest kernel (a real bug's reproducer): a guest that hangs
    /// or dies after the command started is a result (its console log), not a lab failure.
    pub may_crash: bool,
}

/// A block device the guest gets on top of the results disk, e.g. an NVMe controller.
#[derive(Clone)]
pub struct Disk {
    /// The image's size; it is sparse, so only what the guest writes takes space.
    pub bytes: u64,
    /// The `-device` option without its `drive=`, e.g. `nvme,serial=lab,cmb_size_mb=16`.
    pub device: String,
}

/// Single-quotes a word for the guest's shell.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

pub fn build_initramfs(
    kernel: &Kernel,
    assets: &Assets,
    job: &GuestJob,
    staging: PathBuf,
    out: &Path,
) -> Result<()> {
    let mut initramfs = Initramfs::new(staging)?;
    add_busybox(&mut initramfs)?;
    for dir in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/run",
        "/root",
        "/mnt/dax",
        "/out",
        "/include",
        "/lab/result",
    ] {
        initramfs.add_dir(dir)?;
    }
    for (host, guest) in HOST_TOOLS {
        initramfs.add_executable(Path::new(host), guest)?;
    }
    initramfs.add_file(Path::new("/etc/mke2fs.conf"), "/etc/mke2fs.conf")?;
    initramfs.add_executable(&assets.refwatch, "/usr/local/bin/refwatch")?;
    for (name, binary) in &assets.workloads {
        initramfs.add_file(binary, &format!("{}/{name}", workloads::GUEST_DIR))?;
    }

    let mut module_names = Vec::new();
    // The lab's own builds have these built in (kconfig/guest.config).
    let modules = match kernel.built() {
        Some(_) => Vec::new(),
        None => kernel.module_load_order(MODULES)?,
    };
    for ko in modules {
        let name = ko
            .file_name()
            .and_then(|n| n.to_str())
            .context("module without a name")?;
        let guest = format!("/lib/modules/{}/{name}", kernel.spec.release);
        initramfs.add_file(&ko, &guest)?;
        module_names.push(guest);
    }
    for include in &job.includes {
        let name = include
            .file_name()
            .with_context(|| format!("{} has no file name", include.display()))?;
        let guest = format!("/include/{}", name.to_string_lossy());
        if include.is_dir() {
            initramfs.add_tree(include, &guest)?;
        } else {
            initramfs.add_file(include, &guest)?;
        }
    }
    for (host, guest) in &job.files {
        initramfs.add_file(host, guest)?;
    }
    initramfs.add_bytes("/init", init_script(&module_names, job), 0o755)?;
    initramfs.write(out)
}

/// busybox-static is the guest's whole userland: one binary, linked under every applet name.
fn add_busybox(initramfs: &mut Initramfs) -> Result<()> {
    initramfs.add_file(Path::new("/bin/busybox"), "/bin/busybox")?;
    let applets = cmd::output(Command::new("/bin/busybox").arg("--list-full"))?;
    for applet in applets
        .lines()
        .filter(|a| !a.is_empty() && *a != "bin/busybox")
    {
        initramfs.add_symlink("/bin/busybox", applet)?;
    }
    Ok(())
}

fn init_script(modules: &[String], job: &GuestJob) -> String {
    // Not fatal: some modules refuse the emulated CPU (crc32c-intel needs SSE4.2, which
    // qemu64 lacks) and a generic fallback is loaded too; the device checks below decide.
    let insmods: String = modules
        .iter()
        .map(|m| format!("insmod {m} || echo \"insmod {m} failed\"\n"))
        .collect();
    let env: String = job
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", quote(v)))
        .collect();
    let setup: String = job
        .setup
        .iter()
        .map(|line| format!("{line} || fail {}\n", quote(line)))
        .collect();
    let run = if job.interactive {
        "setsid cttyhack sh -l\necho $? > /lab/result/status\n".to_owned()
    } else {
        let argv: Vec<String> = job.argv.iter().map(|a| quote(a)).collect();
        format!(
            "{} </dev/null >/lab/result/stdout 2>/lab/result/stderr\n\
             echo $? > /lab/result/status\n",
            argv.join(" ")
        )
    };
    format!(
        r#"#!/bin/sh
# Generated by `cargo xtask lab`. Lines starting "lab: " are progress the host shows.
export PATH={GUEST_PATH} HOME=/root TERM=${{TERM:-linux}}
{env}
finish() {{
	sync
	tar -cf /dev/vda -C / lab/result out 2>/dev/null || echo "lab: writing results to /dev/vda failed"
	sync
	poweroff -f
}}
# An error in the lab itself (not the command) is reported as such, without a retry.
fail() {{
	echo "lab: FAILED: $*" | tee /lab/result/infra-error
	finish
}}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
# 5.10 still charges BPF maps to RLIMIT_MEMLOCK.
ulimit -l unlimited
echo "lab: init on $(uname -r), loading modules"
{insmods}
for i in $(seq 100); do [ -b /dev/pmem0 ] && [ -b /dev/vda ] && break; sleep 0.1; done
[ -b /dev/pmem0 ] || fail "no /dev/pmem0"
[ -b /dev/vda ] || fail "no /dev/vda"
mkfs.ext4 -q -F -b 4096 -U {FS_UUID} -E hash_seed={FS_UUID} /dev/pmem0 ||
    fail "mkfs.ext4 /dev/pmem0"
mount -t ext4 -o dax /dev/pmem0 /mnt/dax || fail "mount -o dax /dev/pmem0"
{setup}
cd /tmp
echo "lab: {COMMAND_STARTED}"
{run}
echo "lab: command exited $(cat /lab/result/status)"
finish
"#
    )
}
