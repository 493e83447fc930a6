//! P2PDMA pages under `refwatch check`: QEMU's NVMe controller memory buffer, mapped and used
//! for O_DIRECT I/O by `p2pload` (xtask/lab/workloads/p2pload.c), healthy and with a reference
//! dropped once too often by the test module refwatch_p2pdma (xtask/lab/p2pdma).
//!
//! The CMB is a BAR of the controller; nvme_map_cmb gives it to the kernel's P2PDMA allocator
//! (pgmap type `p2pdma`), whose `p2pmem/allocate` file maps it with vm_insert_page. O_DIRECT to
//! and from the controller's namespace pins the pages through gup-fast (FOLL_PCI_P2PDMA), and
//! munmap frees them (free_zone_device_folio → p2pdma_folio_free).

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

use super::matrix::{VmCase, last_lines};
use super::{Apt, Assets, Attach, Disk, GuestJob, Kernel, VmResult, inject};
use crate::paths;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `p2pload healthy`: nothing to report, and every step of the pages seen.
    Healthy,
    /// `p2pload bug-double-put`: the module's extra put frees a mapped page.
    DoublePut,
}

pub struct Case {
    pub kernel: &'static str,
    pub scenario: Scenario,
    pub attach: Attach,
}

use Attach::{Fentry, Kprobe};
use Scenario::{DoublePut, Healthy};

/// The kernels built with PCI_P2PDMA and the NVMe driver.
pub const CASES: &[Case] = &[
    Case {
        kernel: "7.3-src",
        scenario: Healthy,
        attach: Kprobe,
    },
    Case {
        kernel: "7.3-src",
        scenario: Healthy,
        attach: Fentry,
    },
    Case {
        kernel: "7.3-src",
        scenario: DoublePut,
        attach: Kprobe,
    },
    Case {
        kernel: "7.3-src",
        scenario: DoublePut,
        attach: Fentry,
    },
];

/// The controller: a 16 MiB CMB (2 MiB-aligned, as memremap_pages needs) with read and write
/// data support, so the kernel publishes it as P2PDMA memory; a small namespace.
const NVME: &str = "nvme,serial=refwatch-p2p,cmb_size_mb=16";
const NVME_DISK_BYTES: u64 = 64 << 20;

/// The pages `p2pload healthy` maps, writes from and reads into (p2pload.c's PAGES).
const PAGES: u64 = 64;

const MODULE: &str = "refwatch_p2pdma";
const MODULE_SOURCES: &[&str] = &["refwatch_p2pdma.c", "Kbuild"];
const GUEST_MODULE: &str = "/lib/modules/refwatch_p2pdma.ko";

/// The guest script: the workload under `refwatch check`, its own output and status in /out.
const SCRIPT: &str = r#"
refwatch check --json --attach "$ATTACH" -- sh -c 'p2pload "$SCENARIO" > /out/p2pload.log 2>&1; echo $? > /out/p2pload.rc' > /out/check.json 2> /out/check.err
echo $? > /out/check.rc
dmesg > /out/dmesg.txt
"#;

#[derive(Deserialize)]
struct Check {
    attach: String,
    dropped: u64,
    findings_total: u64,
    findings: Vec<Finding>,
    pgmaps: Vec<Pgmap>,
}

#[derive(Deserialize)]
struct Finding {
    rule: String,
    pfn: u64,
    pgmap: FindingPgmap,
    #[serde(default)]
    stack: Vec<String>,
}

#[derive(Deserialize)]
struct FindingPgmap {
    #[serde(rename = "type")]
    type_name: String,
}

#[derive(Deserialize)]
struct Pgmap {
    #[serde(rename = "type")]
    type_name: String,
    pages_seen: u64,
    inserts: u64,
    gets: u64,
    puts: u64,
    frees: u64,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Healthy => "healthy",
            DoublePut => "bug-double-put",
        }
    }

    /// What the p2pdma pgmaps' counters must reach: (pages seen, inserts, gets, puts, frees).
    /// Healthy: each page inserted once (vm_insert_page), pinned by the write and by the read
    /// (try_grab_folio_fast) and unpinned at their completion (unpin_user_folio), freed at
    /// munmap. The double put: one page inserted, pinned and unpinned (unpin_user_page) by the
    /// module, and freed by its extra put.
    fn at_least(self) -> [(&'static str, u64); 5] {
        match self {
            Healthy => [
                ("pages seen", PAGES),
                ("inserts", PAGES),
                ("gets", 2 * PAGES),
                ("puts", 2 * PAGES),
                ("frees", PAGES),
            ],
            DoublePut => [
                ("pages seen", 1),
                ("inserts", 1),
                ("gets", 1),
                ("puts", 1),
                ("frees", 1),
            ],
        }
    }
}

impl Case {
    fn assess(&self, result: &VmResult) -> Vec<String> {
        let out = &result.out_dir;
        let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
        let mut failures = Vec::new();
        let log = read("p2pload.log");
        if read("p2pload.rc").trim() != "0" || !log.contains("p2pload: done") {
            failures.push(format!(
                "p2pload {} failed on its own (status {}): {}",
                self.scenario.name(),
                read("p2pload.rc").trim(),
                last_lines(&log, 3)
            ));
        }
        let want_rc = if self.scenario == Healthy { "0" } else { "1" };
        if read("check.rc").trim() != want_rc {
            failures.push(format!(
                "check exit {}, expected {want_rc}: {}",
                read("check.rc").trim(),
                last_lines(&read("check.err"), 3)
            ));
        }
        let text = read("check.json");
        match serde_json::from_str::<Check>(&text) {
            Err(e) => failures.push(format!("check.json: {e} ({})", last_lines(&text, 3))),
            Ok(check) => failures.extend(self.judge(&check)),
        }
        if !failures.is_empty() {
            failures.push(format!("console {}", result.console_log.display()));
        }
        failures
    }

    fn judge(&self, check: &Check) -> Vec<String> {
        let mut failures = Vec::new();
        // fentry mode keeps a kprobe where fentry cannot go: "fentry+kprobe".
        if !check.attach.split('+').any(|m| m == self.attach.as_str()) {
            failures.push(format!(
                "attached with {}, asked for {}",
                check.attach,
                self.attach.as_str()
            ));
        }
        if check.dropped > 0 {
            failures.push(format!("{} events dropped", check.dropped));
        }
        match self.scenario {
            Healthy => {
                if let Some(f) = check.findings.first() {
                    failures.push(format!(
                        "{} finding(s) on a healthy kernel, first {} at pfn {:#x}",
                        check.findings_total, f.rule, f.pfn
                    ));
                }
            }
            DoublePut => {
                let frame = |s: &String| {
                    s.starts_with("double_put_write+") && s.ends_with(&format!("[{MODULE}]"))
                };
                let right = |f: &Finding| {
                    f.rule == "free-while-mapped"
                        && f.pgmap.type_name == "p2pdma"
                        && f.stack.iter().any(frame)
                };
                if check.findings_total != 1 || !check.findings.iter().all(right) {
                    failures.push(format!(
                        "expected one free-while-mapped finding on a p2pdma page with \
                         double_put_write [{MODULE}] on its stack, got {}: {:?}",
                        check.findings_total,
                        check
                            .findings
                            .iter()
                            .map(|f| format!(
                                "{} at pfn {:#x} ({}; {})",
                                f.rule,
                                f.pfn,
                                f.pgmap.type_name,
                                f.stack.join(" < ")
                            ))
                            .collect::<Vec<_>>()
                    ));
                }
            }
        }
        let p2p: Vec<&Pgmap> = check
            .pgmaps
            .iter()
            .filter(|p| p.type_name == "p2pdma")
            .collect();
        let sum = |f: fn(&Pgmap) -> u64| p2p.iter().map(|p| f(p)).sum::<u64>();
        let seen = [
            sum(|p| p.pages_seen),
            sum(|p| p.inserts),
            sum(|p| p.gets),
            sum(|p| p.puts),
            sum(|p| p.frees),
        ];
        for ((what, want), got) in self.scenario.at_least().into_iter().zip(seen) {
            if got < want {
                failures.push(format!(
                    "p2pdma pgmaps ({}): {what} {got}, expected ≥ {want}",
                    p2p.len()
                ));
            }
        }
        failures
    }

    fn job(&self, kernel: &Kernel) -> Result<GuestJob> {
        if kernel.built().is_none() {
            bail!(
                "kernel {} is Debian's binary, without P2PDMA",
                kernel.spec.name
            );
        }
        let (files, setup) = match self.scenario {
            Healthy => (Vec::new(), Vec::new()),
            DoublePut => {
                let src = paths::workspace_root().join("xtask/lab/p2pdma");
                let ko =
                    inject::build_module(kernel.spec, &Apt::new()?, &src, MODULE, MODULE_SOURCES)?;
                (
                    vec![(ko, GUEST_MODULE.to_owned())],
                    vec![format!("insmod {GUEST_MODULE}")],
                )
            }
        };
        Ok(GuestJob {
            argv: vec!["sh".into(), "-c".into(), SCRIPT.into()],
            files,
            setup,
            env: vec![
                ("ATTACH".into(), self.attach.as_str().into()),
                ("SCENARIO".into(), self.scenario.name().into()),
            ],
            disks: vec![Disk {
                bytes: NVME_DISK_BYTES,
                device: NVME.into(),
            }],
            // Boot ≈10 s, refwatch attaching and the workload well under a minute under TCG.
            timeout: Some(Duration::from_secs(240)),
            ..GuestJob::default()
        })
    }
}

impl VmCase for Case {
    fn id(&self) -> String {
        let name = match self.scenario {
            Healthy => "p2pdma".to_owned(),
            DoublePut => format!("p2pdma-{}", self.scenario.name()),
        };
        format!("{}/{name}/{}", self.kernel, self.attach.as_str())
    }

    fn kernel(&self) -> &'static str {
        self.kernel
    }

    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        let job = self.job(kernel).map_err(|e| vec![format!("{e:#}")])?;
        super::matrix::run_job(&self.id(), kernel, assets, &job, |result| {
            self.assess(result)
        })
    }
}
