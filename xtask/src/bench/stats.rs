//! Medians, process timing (wait4) and the host's load while a figure is measured.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cmd;

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// CPU the host spends on processes other than xtask and its children (the VM). The guest's
/// clock is the host's: a busy host slows some repetitions and not others (a compile beside
/// the run moved a ratio by 10 %), so the table says when the host was not quiet.
pub struct HostLoad {
    at: Instant,
    busy: f64,
    own: f64,
}

/// Other processes' average use, in cores, above which the table flags the hot-path ratios.
pub const BUSY_HOST_CORES: f64 = 0.1;

impl HostLoad {
    pub fn start() -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            busy: host_busy_seconds()?,
            own: own_cpu_seconds(),
        })
    }

    /// Cores kept busy on average by other processes since `start`.
    pub fn others_cores(&self) -> Result<f64> {
        let busy = host_busy_seconds()? - self.busy;
        let own = own_cpu_seconds() - self.own;
        Ok(((busy - own) / self.at.elapsed().as_secs_f64()).max(0.0))
    }
}

/// Non-idle CPU time of the whole host, from the first line of /proc/stat.
fn host_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("/proc/stat: no cpu line")?;
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4))
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf has no preconditions.
    Ok(busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// CPU time of xtask and of its children that were waited for (the VM, once it exited).
fn own_cpu_seconds() -> f64 {
    [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            // SAFETY: a zeroed rusage is a valid out-parameter.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(who, &mut usage) };
            cpu_seconds(&usage)
        })
        .sum()
}

/// Wall seconds, CPU seconds and peak RSS (KiB) of a process, from wait4.
pub struct Timed {
    pub secs: f64,
    pub cpu: f64,
    pub rss_kib: u64,
}

/// Runs `cmd` to completion, timed.
pub fn timed(cmd: &mut Command) -> Result<Timed> {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting `{}`", cmd::describe(cmd)))?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; the pid is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("`{}` failed (wait status {status})", cmd::describe(cmd));
    }
    Ok(Timed {
        secs,
        cpu: cpu_seconds(&usage),
        rss_kib: usage.ru_maxrss as u64,
    })
}

/// User plus system time of an rusage.
fn cpu_seconds(usage: &libc::rusage) -> f64 {
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
