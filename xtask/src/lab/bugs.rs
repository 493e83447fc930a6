//! The real-bug matrix: ZONE_DEVICE refcount bugs that Debian's own kernels carry, reproduced
//! from user space by `daxload bug-*`, and what refwatch must say about each on each kernel:
//! the bug's rule where the kernel has the bug, nothing where upstream fixed it.
//!
//! Each case runs the reproducer under `refwatch check` with a `refwatch record` beside it,
//! then judges the trace (`check --trace`, `stream --trace`, `report`). Where the bug goes on
//! to crash the kernel (an oops in the reproducer's own process), the finding must already be
//! in the kernel log: the console must show its `refwatch:` line before the oops. A guest that
//! hangs after the crash is the bug's expected outcome, not a lab failure: its console log is
//! judged alone.

use std::path::Path;
use std::time::Duration;

use super::checked::{Check, Finding};
use super::runner::{VmCase, last_lines, run_job};
use super::{Assets, GuestJob, Kernel, PMEM_PFNS, VmResult};

/// What refwatch must report for a reproducer on a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Findings of this rule, and of no other, on pages of the emulated pmem.
    Flagged(&'static str),
    /// No finding: the kernel does the right thing (upstream fixed it, or it waits).
    Silent,
}

/// The filesystem on /mnt/dax while the reproducer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fs {
    /// The lab's own: ext4 `-o dax` on /dev/pmem0.
    Ext4,
    /// XFS `-o dax` on a second emulated pmem, /dev/pmem1 ([`XFS_PFNS`]): mkfs.xfs wants more
    /// than the 256 MiB of /dev/pmem0.
    Xfs,
}

/// memmap=384M!0x54000000: [1.3125 GiB, 1.6875 GiB), apart from /dev/pmem0's range so that
/// the two stay two regions.
const XFS_MEMMAP: &str = "memmap=384M!0x54000000";
const XFS_PFNS: std::ops::Range<u64> = 0x54000..0x6c000;
/// A fixed UUID: mkfs.xfs would otherwise wait for entropy the TCG guest does not have.
const XFS_SETUP: &str = "umount /mnt/dax && \
    mkfs.xfs -q -f -m reflink=0,uuid=5eb3d6e0-6d8a-4d0a-9d7e-6c6f6b7e1a02 /dev/pmem1 && \
    mount -t xfs -o dax /dev/pmem1 /mnt/dax";

pub struct Case {
    pub kernel: &'static str,
    /// `daxload` arguments.
    pub reproducer: &'static [&'static str],
    pub fs: Fs,
    pub verdict: Verdict,
    /// What the kernel itself says, for the README table and failure messages.
    pub kernel_says: &'static str,
}

use Fs::{Ext4, Xfs};
use Verdict::{Flagged, Silent};

const TRUNCATE: &[&str] = &["bug-truncate-pipe", "truncate"];
const PUNCH: &[&str] = &["bug-truncate-pipe", "punch"];
const EVICT: &[&str] = &["bug-truncate-pipe", "evict"];
const UNBIND_PTE: &[&str] = &["bug-pmem-unbind", "pte"];
const UNBIND_PMD: &[&str] = &["bug-pmem-unbind", "pmd"];
const DEVDAX: &[&str] = &["bug-devdax-unbind-pipe"];

const fn case(
    kernel: &'static str,
    reproducer: &'static [&'static str],
    verdict: Verdict,
    kernel_says: &'static str,
) -> Case {
    Case {
        kernel,
        reproducer,
        fs: Ext4,
        verdict,
        kernel_says,
    }
}

const fn on_xfs(mut case: Case) -> Case {
    case.fs = Xfs;
    case
}

const WARN_ONCE: &str = "WARNING in dax_disassociate_entry, once per boot";
const WAITS: &str = "nothing: the truncate waits until the pipe lets go of the page";
const OOPS_EXIT: &str = "an oops when the mapping process unmaps or exits";
const OOPS_PIPE: &str = "an oops in page_cache_pipe_buf_release when the pipe is drained";

pub const CASES: &[Case] = &[
    // 1. fsdax blocks taken back while a pipe still references the page (fixed in 6.15).
    case("5.10", TRUNCATE, Flagged("truncate-busy"), WARN_ONCE),
    case("6.1", TRUNCATE, Flagged("truncate-busy"), WARN_ONCE),
    case("6.1", PUNCH, Flagged("truncate-busy"), WARN_ONCE),
    case("6.1", EVICT, Flagged("truncate-busy"), WARN_ONCE),
    case("6.12", TRUNCATE, Flagged("truncate-busy"), WARN_ONCE),
    case("7.2", TRUNCATE, Silent, WAITS),
    case("7.3", TRUNCATE, Silent, WAITS),
    case("7.3", EVICT, Silent, WAITS),
    // The same on XFS: its truncate and hole punch give blocks back through the same function.
    on_xfs(case("6.1", TRUNCATE, Flagged("truncate-busy"), WARN_ONCE)),
    on_xfs(case("6.12", PUNCH, Flagged("truncate-busy"), WARN_ONCE)),
    on_xfs(case("7.3", TRUNCATE, Silent, WAITS)),
    // 2. pmem unbound under a live ext4-DAX mapping (no fix for ext4).
    case("5.10", UNBIND_PTE, Flagged("teardown-busy"), "nothing"),
    case("6.1", UNBIND_PTE, Flagged("teardown-busy"), "nothing"),
    case("6.12", UNBIND_PMD, Flagged("teardown-busy"), "nothing"),
    case("7.2", UNBIND_PMD, Flagged("teardown-busy"), OOPS_EXIT),
    case("7.3", UNBIND_PMD, Flagged("teardown-busy"), OOPS_EXIT),
    // 3. device-dax unbound while a pipe holds one of its pages (5.18+ does not wait).
    case(
        "5.10",
        DEVDAX,
        Silent,
        "nothing: the unbind waits until the pipe is drained",
    ),
    case("6.1", DEVDAX, Flagged("teardown-busy"), OOPS_PIPE),
    case("6.12", DEVDAX, Flagged("teardown-busy"), OOPS_PIPE),
    case("7.2", DEVDAX, Flagged("teardown-busy"), OOPS_PIPE),
    case("7.3", DEVDAX, Flagged("teardown-busy"), OOPS_PIPE),
];

/// The guest script: the reproducer under `refwatch check`, a `refwatch record` beside it,
/// then the trace judged offline. Every output lands in /out.
fn script(reproducer: &[&str]) -> String {
    format!(
        r#"
refwatch record -o /out/trace.rwt -d 600 2> /out/record.err & r=$!
refwatch live -d 600 > /out/live.txt 2> /out/live.err & l=$!
for i in $(seq 300); do [ -e /out/trace.rwt ] && break; sleep 0.1; done
for i in $(seq 300); do grep -q events /out/live.txt && break; sleep 0.1; done
refwatch check --json -- sh -c 'exec daxload {args} > /out/daxload.log 2>&1' \
    > /out/check.json 2> /out/check.err
echo $? > /out/check.rc
kill -INT $r $l; wait $r; echo $? > /out/record.rc; wait $l; echo $? > /out/live.rc
refwatch check --json --trace /out/trace.rwt > /out/check-trace.json 2> /out/check-trace.err
refwatch stream --json --trace /out/trace.rwt > /out/events.jsonl 2> /out/stream.err
refwatch report /out/trace.rwt > /out/report.txt 2>&1
dmesg > /out/dmesg.txt
"#,
        args = reproducer.join(" ")
    )
}

/// What the kernel prints when it oopses.
const OOPS_MARKERS: &[&str] = &[
    "BUG: unable to handle",
    "Oops:",
    "general protection fault",
    "kernel BUG at",
];

impl Case {
    /// A guest job running `script` with the reproducer's filesystem on /mnt/dax; the
    /// reproducer may crash the guest.
    pub fn job(&self, script: String, timeout: Duration) -> GuestJob {
        let (setup, cmdline) = match self.fs {
            Ext4 => (vec![], vec![]),
            Xfs => (vec![XFS_SETUP.to_owned()], vec![XFS_MEMMAP.to_owned()]),
        };
        GuestJob {
            argv: vec!["sh".into(), "-c".into(), script],
            setup,
            cmdline,
            timeout: Some(timeout),
            may_crash: true,
            ..GuestJob::default()
        }
    }

    /// The pfns of the pmem the reproducer's filesystem lives on.
    pub fn pfns(&self) -> std::ops::Range<u64> {
        match self.fs {
            Ext4 => PMEM_PFNS,
            Xfs => XFS_PFNS,
        }
    }

    fn assess(&self, result: &VmResult) -> Vec<String> {
        let mut failures = Vec::new();
        let console = std::fs::read_to_string(&result.console_log).unwrap_or_default();
        let lines: Vec<&str> = console.lines().collect();
        let refwatch_line = lines.iter().position(|l| l.contains("refwatch: "));
        let oops = lines
            .iter()
            .position(|l| OOPS_MARKERS.iter().any(|m| l.contains(m)));
        let console_log = result.console_log.display();
        match (self.verdict, refwatch_line, oops) {
            (Flagged(rule), Some(i), _) if !lines[i].contains(&format!("refwatch: {rule} pfn")) => {
                failures.push(format!(
                    "the first refwatch line on the console is not {rule}: {}",
                    lines[i]
                ));
            }
            (Flagged(_), Some(i), Some(o)) if o < i => {
                failures.push(format!(
                    "the oops (console line {o}) came before refwatch's line ({i}): {console_log}"
                ));
            }
            (Flagged(rule), None, _) => failures.push(format!(
                "no `refwatch: {rule}` line on the console: {console_log}"
            )),
            (Silent, Some(i), _) => failures.push(format!(
                "refwatch spoke where the kernel is right: {}",
                lines[i]
            )),
            (Silent, _, Some(o)) => failures.push(format!("the kernel oopsed: {}", lines[o])),
            _ => {}
        }
        if let Some(why) = &result.unfinished {
            // Only a crash the finding predicted may stop the guest.
            if !(matches!(self.verdict, Flagged(_)) && oops.is_some()) {
                failures.push(format!(
                    "the guest never finished ({why}); console: {console_log}"
                ));
            }
            return failures;
        }
        let out = &result.out_dir;
        let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
        let want_rc = if self.verdict == Silent { "0" } else { "1" };
        if read("check.rc").trim() != want_rc {
            failures.push(format!(
                "check exit {}, expected {want_rc}: {} | {}",
                read("check.rc").trim(),
                last_lines(&read("check.err"), 2),
                last_lines(&read("daxload.log"), 3)
            ));
        }
        for name in ["record", "live"] {
            let rc = read(&format!("{name}.rc"));
            if rc.trim() != "0" {
                let err = read(&format!("{name}.err"));
                failures.push(format!(
                    "{name} exit {}: {}",
                    rc.trim(),
                    last_lines(&err, 3)
                ));
            }
        }
        for name in ["check.json", "check-trace.json"] {
            failures.extend(self.judge(&out.join(name)));
        }
        let stream_findings = read("events.jsonl")
            .lines()
            .filter(|l| l.contains(r#""kind":"finding""#))
            .count();
        let (report, live) = (read("report.txt"), read("live.txt"));
        match self.verdict {
            Flagged(rule) => {
                if stream_findings == 0 {
                    failures.push("stream --trace printed no finding".into());
                }
                for (name, text) in [("report", &report), ("live", &live)] {
                    if !text.contains(&format!("[{rule}]")) {
                        failures.push(format!(
                            "{name} has no [{rule}] block: {}",
                            last_lines(text, 3)
                        ));
                    }
                }
            }
            Silent if stream_findings > 0 => failures.push(format!(
                "stream --trace printed {stream_findings} finding(s)"
            )),
            Silent => {}
        }
        failures
    }

    /// The findings of `check --json` (live or from the trace) against the verdict.
    fn judge(&self, path: &Path) -> Option<String> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let check = match Check::read(path) {
            Ok(c) => c,
            Err(e) => return Some(e),
        };
        match self.verdict {
            Silent if check.findings_total > 0 => Some(format!(
                "{name}: {} finding(s), first {}",
                check.findings_total, check.findings[0].rule
            )),
            Silent => None,
            Flagged(rule) => {
                let wrong: Vec<&Finding> = check
                    .findings
                    .iter()
                    .filter(|f| f.rule != rule || !self.pfns().contains(&f.pfn))
                    .collect();
                if check.findings_total == 0 {
                    return Some(format!("{name}: no finding, expected {rule}"));
                }
                wrong.first().map(|f| {
                    format!(
                        "{name}: {} finding(s) not {rule} on a pmem pfn, first {} at pfn {:#x}",
                        wrong.len(),
                        f.rule,
                        f.pfn
                    )
                })
            }
        }
    }
}

impl VmCase for Case {
    fn id(&self) -> String {
        let fs = if self.fs == Xfs { "-xfs" } else { "" };
        format!("{}/{}{fs}", self.kernel, self.reproducer.join("-"))
    }

    fn kernel(&self) -> &'static str {
        self.kernel
    }

    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        // Boot ≈10 s, the reproducer a few seconds plus its grace for refwatch, two refwatch
        // instances attaching, then the offline judging.
        let job = self.job(script(self.reproducer), Duration::from_secs(240));
        run_job(&self.id(), kernel, assets, &job, |result| {
            let says = |f: String| format!("{f} (kernel says: {})", self.kernel_says);
            self.assess(result).into_iter().map(says).collect()
        })
    }
}
