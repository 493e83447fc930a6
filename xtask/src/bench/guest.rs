//! Running a bench job in the VM lab, and what the guest's tools need: bpftrace's files and
//! its script, traces' stats, the workloads' result lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Sizes;
use super::figures::TraceStats;
use super::stats::HostLoad;
use crate::cmd;
use crate::lab::{Apt, Assets, GuestJob, Kernel, run_in_vm};
use crate::paths;

/// A Debian package of a tool the guest runs, and its binary in the package.
pub struct DebTool {
    pub package: &'static str,
    pub version: &'static str,
    pub binary: &'static str,
    /// It parses C with the kernel's user-space headers (bpftrace without the kernel's BTF).
    pub uapi_headers: bool,
}

/// The peers' tools, from the same Debian release as the default (6.1, bookworm) guest
/// kernel; the host has the same packages installed for their libraries.
pub const BPFTRACE: DebTool = DebTool {
    package: "bpftrace",
    version: "0.17.0-1",
    binary: "usr/bin/bpftrace",
    uapi_headers: true,
};
pub const FIO: DebTool = DebTool {
    package: "fio",
    version: "3.33-3",
    binary: "usr/bin/fio",
    uapi_headers: false,
};
pub const PERF: DebTool = DebTool {
    package: "linux-perf",
    version: "6.1.192-3",
    binary: "usr/bin/perf",
    uapi_headers: false,
};
/// The kernel's user-space headers. bpftrace 0.17's C front end includes `linux/types.h`
/// wherever it cannot read the kernel's BTF, as on 5.10 (`bpftrace --info`: "btf: no").
const UAPI_HEADERS: DebTool = DebTool {
    package: "linux-libc-dev",
    version: "6.1.192-3",
    binary: "usr/include/linux/types.h",
    uapi_headers: false,
};
/// Where bpftrace's front end finds them: the multiarch `asm` at the plain path.
const UAPI_DIRS: &[(&str, &str)] = &[
    ("usr/include/linux", "/usr/include/linux"),
    ("usr/include/asm-generic", "/usr/include/asm-generic"),
    ("usr/include/x86_64-linux-gnu/asm", "/usr/include/asm"),
];

/// The shell functions every bench guest program starts with, then `own`.
pub fn script(own: &str) -> String {
    format!("{}{own}", include_str!("../../lab/scripts/bench-common.sh"))
}

/// What every VM part of the bench runs with.
pub struct Bench<'a> {
    pub apt: &'a Apt,
    pub assets: &'a Assets,
    pub sizes: &'a Sizes,
    /// Where the jobs' scripts and outputs go.
    pub work: &'a Path,
    /// bench_tool.
    pub tool: &'a Path,
}

/// A job's output directory, and the host's load besides it while it ran.
pub struct Measured {
    pub out: PathBuf,
    pub host_other_cores: f64,
}

impl Bench<'_> {
    /// The lab kernel `name`, fetched.
    pub fn kernel(&self, name: &str) -> Result<Kernel> {
        Kernel::fetch(crate::lab::kernel_spec(name)?, self.apt)
    }

    /// Boots `kernel` on `script` in `job` (its files, setup, limits), collects the output
    /// under `work/name` and measures the host's other load meanwhile.
    pub fn measure(
        &self,
        kernel: &Kernel,
        script: &str,
        mut job: GuestJob,
        name: &str,
    ) -> Result<Measured> {
        let host = HostLoad::start()?;
        let host_script = self.work.join(format!("{name}.sh"));
        std::fs::write(&host_script, script)?;
        job.files.push((host_script, "/bench/run.sh".into()));
        job.argv = vec!["sh".into(), "/bench/run.sh".into()];
        let label = format!("bench-{name}-{}", std::process::id());
        let result = run_in_vm(kernel, self.assets, &job, &label)?;
        let out = self.work.join(name);
        result.copy_out(&out)?;
        std::fs::write(out.join("stdout"), &result.stdout)?;
        std::fs::write(out.join("stderr"), &result.stderr)?;
        if result.exit_code != 0 {
            bail!(
                "the {name} job exited {} in the guest:\n{}",
                result.exit_code,
                String::from_utf8_lossy(&result.stderr)
            );
        }
        Ok(Measured {
            out,
            host_other_cores: host.others_cores()?,
        })
    }

    /// QEMU's options for the instruction-count plugin, and the marks file it writes.
    pub fn insncount(&self, label: &str) -> Result<(Vec<String>, PathBuf)> {
        let marks = self.work.join(format!("{label}.marks"));
        let plugin = format!(
            "{},out={}",
            crate::lab::insncount::build(self.apt)?.display(),
            marks.display()
        );
        Ok((vec!["-plugin".to_owned(), plugin], marks))
    }

    /// bpftrace's script with refwatch's probe set and filter on `kernel`, at a guest path,
    /// and bpftrace's files; or why bpftrace cannot run there.
    pub fn bpftrace_job_files(
        &self,
        kernel: &str,
    ) -> Result<Result<Vec<(PathBuf, String)>, String>> {
        let reference = reference_trace(self.work, kernel);
        let release = crate::lab::kernel_spec(kernel)?.release;
        if !reference.exists()
            || trace_stats(self.tool, &reference)
                .map(|s| s.kernel)
                .ok()
                .as_deref()
                != Some(release)
        {
            return Ok(Err(format!(
                "no trace recorded on {kernel} to derive the probe set from"
            )));
        }
        let script = cmd::output(Command::new(self.tool).arg("bpftrace").arg(&reference))?;
        let host = self.work.join(format!("refwatch-{kernel}.bt"));
        std::fs::write(&host, script)?;
        let mut files = vec![(host, "/bench/refwatch.bt".to_owned())];
        match BPFTRACE.files(self.apt) {
            Ok(f) => files.extend(f),
            Err(e) => return Ok(Err(format!("{e:#}"))),
        }
        Ok(Ok(files))
    }
}

/// Key=value pairs of the first line of `text` that starts with `prefix` (benchload's result
/// lines, e.g. "storm seconds=S pages=N").
pub fn fields(text: &str, prefix: &str) -> Option<BTreeMap<String, f64>> {
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// `bench_tool stats` of a trace: its kernel, events, and the footer's drops and calls.
pub fn trace_stats(tool: &Path, trace: &Path) -> Result<TraceStats> {
    serde_json::from_str(&cmd::output(Command::new(tool).arg("stats").arg(trace))?)
        .with_context(|| format!("bench_tool stats {}", trace.display()))
}

/// The storm trace recorded on `kernel` in the device part, which the bpftrace script is
/// derived from (its plan and layout).
pub fn reference_trace(work: &Path, kernel: &str) -> PathBuf {
    work.join(format!("device-{kernel}/storm-kprobe.rwt"))
}

/// A bookworm package unpacked in the lab cache (once: `tool.binary` is there after).
fn unpacked(apt: &Apt, tool: &DebTool) -> Result<PathBuf> {
    let tree = paths::lab_cache()?
        .join("tools")
        .join(format!("{}-{}", tool.package, tool.version));
    if !tree.join(tool.binary).exists() {
        crate::lab::extract_packages(apt, &[(tool.package, tool.version)], &tree)?;
    }
    Ok(tree)
}

/// The uapi headers bpftrace's front end may ask for, at their guest paths.
fn uapi_header_files(apt: &Apt) -> Result<Vec<(PathBuf, String)>> {
    let tree = unpacked(apt, &UAPI_HEADERS)?;
    let mut files = Vec::new();
    for (host, guest) in UAPI_DIRS {
        let mut dirs = vec![(tree.join(host), (*guest).to_owned())];
        while let Some((dir, guest)) = dirs.pop() {
            for entry in
                std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            {
                let entry = entry?;
                let to = format!("{guest}/{}", entry.file_name().to_string_lossy());
                if entry.file_type()?.is_dir() {
                    dirs.push((entry.path(), to));
                } else {
                    files.push((entry.path(), to));
                }
            }
        }
    }
    Ok(files)
}

impl DebTool {
    /// What the guest needs to run it: its binary and libraries, and the uapi headers where
    /// it asks for them.
    pub fn files(&self, apt: &Apt) -> Result<Vec<(PathBuf, String)>> {
        let mut files = deb_tool_files(apt, self)?;
        if self.uapi_headers {
            files.extend(uapi_header_files(apt)?);
        }
        Ok(files)
    }
}

/// A bookworm tool's .deb unpacked in the lab cache, its binary at the same path in the
/// guest; its libraries come from the host (a Debian 12 host, the same release), found with
/// ldd.
fn deb_tool_files(apt: &Apt, tool: &DebTool) -> Result<Vec<(PathBuf, String)>> {
    let binary = unpacked(apt, tool)?.join(tool.binary);
    let ldd = Command::new("ldd")
        .arg(&binary)
        .output()
        .context("running ldd")?;
    let listing = String::from_utf8_lossy(&ldd.stdout);
    let missing: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("not found"))
        .map(str::trim)
        .collect();
    if !missing.is_empty() {
        bail!(
            "host lacks {}'s libraries ({}); `apt-get install {}` provides them",
            tool.package,
            missing.join(", "),
            tool.package
        );
    }
    let mut files = vec![(binary, format!("/{}", tool.binary))];
    for line in listing.lines() {
        if let Some(path) = line
            .split("=>")
            .last()
            .and_then(|p| p.split_whitespace().next())
            .filter(|p| p.starts_with('/'))
        {
            files.push((PathBuf::from(path), path.to_owned()));
        }
    }
    Ok(files)
}
