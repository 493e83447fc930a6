//! Booting a kernel + generated initramfs under QEMU (TCG) and collecting what the guest
//! wrote to its results disk.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::guest::{self, Assets, COMMAND_STARTED, GuestJob};
use super::kernel::Kernel;
use crate::cmd::{self, note};
use crate::paths;

/// memmap=256M!1G reserves [1 GiB, 1.25 GiB) as legacy pmem: pfns 0x40000..0x50000.
pub const PMEM_PFNS: std::ops::Range<u64> = 0x40000..0x50000;
const CMDLINE: &str = "console=ttyS0 panic=-1 loglevel=4 memmap=256M!1G";
/// Sparse; only the tar the guest writes takes space.
const RESULTS_DISK_BYTES: u64 = 512 << 20;
/// The guest's /lab/result (stdout, stderr, status, infra-error) inside the results tar.
const RESULT_META: &str = "lab/result";

pub struct VmResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The command's exit status; 125 when the guest never finished it (see `unfinished`).
    pub exit_code: i32,
    /// Why the guest never got past the command (it hung or died after a kernel crash): only
    /// for jobs that allow it ([`GuestJob::may_crash`]); the console log is what remains.
    pub unfinished: Option<String>,
    /// What the guest left under /out.
    pub out_dir: PathBuf,
    pub console_log: PathBuf,
}

impl VmResult {
    /// Copies what the guest left under /out into `to`, created (empty when it left nothing).
    pub fn copy_out(&self, to: &Path) -> Result<()> {
        paths::create_dir(to)?;
        if self.out_dir.is_dir() {
            cmd::run(
                Command::new("cp")
                    .arg("-a")
                    .arg("-T")
                    .arg(&self.out_dir)
                    .arg(to),
            )
            .with_context(|| format!("copying the guest's /out to {}", to.display()))?;
        }
        Ok(())
    }
}

enum Boot {
    /// The guest wrote a result (the command ran, or the lab's /init reported an error).
    Finished,
    /// No result: the kernel or /init never got there. Worth one retry.
    Failed(String),
    /// The command started and the guest never finished it, in a job that allows a crash.
    Crashed(String),
}

/// Runs `job` in a fresh VM. Files of the run (initramfs, console log, results) are kept in
/// the lab cache under runs/`label`. An Err is a failure of the lab, never of the command.
pub fn run_in_vm(
    kernel: &Kernel,
    assets: &Assets,
    job: &GuestJob,
    label: &str,
) -> Result<VmResult> {
    let run_dir = paths::lab_cache()?.join("runs").join(label);
    if run_dir.exists() {
        fs::remove_dir_all(&run_dir).with_context(|| format!("clearing {}", run_dir.display()))?;
    }
    paths::create_dir(&run_dir)?;
    let initrd = run_dir.join("initramfs.gz");
    guest::build_initramfs(kernel, assets, job, run_dir.join("staging"), &initrd)?;
    fs::remove_dir_all(run_dir.join("staging"))?;

    let console_log = run_dir.join("console.log");
    let results = run_dir.join("result");
    let mut failure = String::new();
    for attempt in 1..=2 {
        match boot(kernel, job, &initrd, &run_dir, &console_log, attempt)? {
            Boot::Finished => {
                fs::remove_file(&initrd)?;
                return collect(&run_dir, &results, console_log);
            }
            Boot::Failed(why) => {
                note(format_args!(
                    "{}: boot attempt {attempt} failed: {why}",
                    kernel.spec.name
                ));
                failure = why;
            }
            Boot::Crashed(why) => {
                note(format_args!(
                    "{}: the guest did not finish the command ({why}): keeping its console log",
                    kernel.spec.name
                ));
                let _ = fs::remove_file(&initrd);
                return Ok(VmResult {
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    exit_code: 125,
                    unfinished: Some(why),
                    out_dir: results.join("out"),
                    console_log,
                });
            }
        }
    }
    bail!(
        "kernel {} did not run the job ({failure}); console log {}:\n{}",
        kernel.spec.name,
        console_log.display(),
        tail(&console_log, 40)
    )
}

/// A VM outlives nothing: when xtask is killed, its qemu gets SIGKILL (the thread that spawned
/// it waits for it, so only xtask's death ends that thread first).
fn die_with_parent(qemu: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions.
    unsafe {
        qemu.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // xtask died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("xtask exited while starting qemu"));
            }
            Ok(())
        });
    }
}

fn boot(
    kernel: &Kernel,
    job: &GuestJob,
    initrd: &Path,
    run_dir: &Path,
    console_log: &Path,
    attempt: u32,
) -> Result<Boot> {
    let disk = run_dir.join("results.img");
    sparse_image(&disk, RESULTS_DISK_BYTES)?;

    let mut qemu = Command::new("qemu-system-x86_64");
    // thread=single: multi-threaded TCG oopsed with a stray int3 in about 1 of 35 boots of 7.2.
    qemu.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "qemu64",
        "-smp",
        "2",
        "-m",
        "2G",
        "-no-reboot",
    ])
    // No NIC: nothing uses one, and its option ROM costs boot time.
    .args(["-nic", "none"])
    .args(&job.qemu_args)
    .arg("-kernel")
    .arg(kernel.vmlinuz()?)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(
        std::iter::once(CMDLINE)
            .chain(job.cmdline.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" "),
    )
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", disk.display()));
    for (i, extra) in job.disks.iter().enumerate() {
        let image = run_dir.join(format!("disk{i}.img"));
        sparse_image(&image, extra.bytes)?;
        qemu.arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=disk{i}",
                image.display()
            ))
            .arg("-device")
            .arg(format!("{},drive=disk{i}", extra.device));
    }
    if job.interactive {
        qemu.arg("-nographic");
    } else {
        qemu.args(["-display", "none", "-monitor", "none", "-serial"])
            .arg(format!("file:{}", console_log.display()))
            .stdin(Stdio::null());
    }
    note(format_args!(
        "{}: booting {} (attempt {attempt}; console: {})",
        kernel.spec.name,
        kernel.spec.release,
        if job.interactive {
            "this terminal".into()
        } else {
            console_log.display().to_string()
        }
    ));
    let started = Instant::now();
    // A stale log would be echoed as this boot's progress before qemu truncates it.
    if console_log.exists() {
        fs::rename(
            console_log,
            console_log.with_extension(format!("attempt{}.log", attempt - 1)),
        )?;
    }
    die_with_parent(&mut qemu);
    let mut child = qemu
        .spawn()
        .with_context(|| format!("starting `{}`", cmd::describe(&qemu)))?;
    let mut progress = ProgressTail::default();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if !job.interactive {
            progress.show(console_log, kernel.spec.name, started);
        }
        if job.timeout.is_some_and(|limit| started.elapsed() > limit) {
            let _ = child.kill();
            let _ = child.wait();
            let why = format!("timed out after {:.0?}", started.elapsed());
            if progress.command_started && job.may_crash {
                return Ok(Boot::Crashed(why));
            }
            // A command that hangs would hang again: only a boot that never got to it is retried.
            if progress.command_started {
                bail!(
                    "the guest command {why}; console log {}:\n{}",
                    console_log.display(),
                    tail(console_log, 40)
                );
            }
            return Ok(Boot::Failed(why));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    progress.show(console_log, kernel.spec.name, started);
    note(format_args!(
        "{}: VM exited after {:.1?}",
        kernel.spec.name,
        started.elapsed()
    ));
    if !status.success() {
        if progress.command_started && job.may_crash {
            return Ok(Boot::Crashed(format!("qemu exited with {status}")));
        }
        return Ok(Boot::Failed(format!("qemu exited with {status}")));
    }

    let results = run_dir.join("result");
    if results.exists() {
        fs::remove_dir_all(&results)?;
    }
    paths::create_dir(&results)?;
    // A disk the guest never wrote is all zeros, which tar reads as an empty archive.
    let extracted = cmd::succeeds(
        Command::new("tar")
            .arg("-xf")
            .arg(&disk)
            .arg("-C")
            .arg(&results),
    );
    let meta = results.join(RESULT_META);
    if !(extracted && (meta.join("status").exists() || meta.join("infra-error").exists())) {
        if progress.command_started && job.may_crash {
            return Ok(Boot::Crashed(
                "the guest stopped without writing results".into(),
            ));
        }
        return Ok(Boot::Failed("the guest wrote no results".into()));
    }
    fs::remove_file(&disk)?;
    Ok(Boot::Finished)
}

/// A fresh image of `bytes`, all holes: a boot never sees an earlier attempt's data.
fn sparse_image(path: &Path, bytes: u64) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.set_len(bytes)?;
    Ok(())
}

fn collect(run_dir: &Path, results: &Path, console_log: PathBuf) -> Result<VmResult> {
    let meta = results.join(RESULT_META);
    if let Ok(why) = fs::read_to_string(meta.join("infra-error")) {
        bail!(
            "the lab's /init failed: {}; console log {}:\n{}",
            why.trim(),
            console_log.display(),
            tail(&console_log, 40)
        );
    }
    let read = |name: &str| fs::read(meta.join(name)).unwrap_or_default();
    let status = String::from_utf8_lossy(&read("status")).trim().to_owned();
    let exit_code = status.parse().with_context(|| {
        format!(
            "bad exit status {status:?} from the guest (run dir {})",
            run_dir.display()
        )
    })?;
    Ok(VmResult {
        stdout: read("stdout"),
        stderr: read("stderr"),
        exit_code,
        unfinished: None,
        out_dir: results.join("out"),
        console_log,
    })
}

/// Echoes the guest's "lab: " progress lines from the console log as they appear.
#[derive(Default)]
struct ProgressTail {
    command_started: bool,
    offset: u64,
    partial: String,
}

impl ProgressTail {
    fn show(&mut self, log: &Path, name: &str, started: Instant) {
        let Ok(mut file) = fs::File::open(log) else {
            return;
        };
        let mut new = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut new).is_err() {
            return;
        }
        self.offset += new.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&new));
        let Some(end) = self.partial.rfind('\n') else {
            return;
        };
        for line in self.partial[..end].lines() {
            if let Some(msg) = line.trim_end_matches('\r').strip_prefix("lab: ") {
                self.command_started |= msg == COMMAND_STARTED;
                note(format_args!(
                    "{name} +{:.1}s: {msg}",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        self.partial.drain(..=end);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
