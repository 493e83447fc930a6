//! P2PDMA pages under `refwatch check`: QEMU's NVMe controller memory buffer, mapped and used
//! for O_DIRECT I/O by `p2pload` (xtask/lab/workloads/p2pload.c), healthy and with a reference
//! dropped once too often by the test module refwatch_p2pdma (xtask/lab/p2pdma).
//!
//! The CMB is a BAR of the controller; nvme_map_cmb gives it to the kernel's P2PDMA allocator
//! (pgmap type `p2pdma`), whose `p2pmem/allocate` file maps it with vm_insert_page. O_DIRECT to
//! and from the controller's namespace pins the pages through gup-fast (FOLL_PCI_P2PDMA), and
//! munmap frees them (free_zone_device_folio → p2pdma_folio_free).

use std::time::Duration;

use super::checked::{self, Counted, Expect, Injected};
use super::runner::{self, VmCase};
use super::{Apt, Assets, Attach, Disk, GuestJob, Kernel, VmResult, inject};
use crate::paths;
use anyhow::{Result, bail};

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

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Healthy => "healthy",
            DoublePut => "bug-double-put",
        }
    }

    /// What the p2pdma pgmaps' counters must reach. Healthy: each page inserted once
    /// (vm_insert_page), pinned by the write and by the read (try_grab_folio_fast) and unpinned
    /// at their completion (unpin_user_folio), freed at munmap. The double put: one page
    /// inserted, pinned and unpinned (unpin_user_page) by the module, and freed by its extra put.
    fn at_least(self) -> Counted {
        let pages = match self {
            Healthy => PAGES,
            DoublePut => 1,
        };
        let pins = match self {
            Healthy => 2 * PAGES,
            DoublePut => 1,
        };
        Counted {
            pgmaps: 1,
            pages_seen: pages,
            inserts: pages,
            gets: pins,
            puts: pins,
            frees: pages,
        }
    }
}

impl Case {
    fn assess(&self, result: &VmResult) -> Vec<String> {
        let expect = Expect {
            workload: format!("p2pload {}", self.scenario.name()),
            done: "p2pload: done".into(),
            injected: (self.scenario == DoublePut).then_some(Injected {
                rule: "free-while-mapped",
                type_name: "p2pdma",
                frame: "double_put_write",
                module: MODULE,
            }),
            type_name: "p2pdma",
            at_least: self.scenario.at_least(),
        };
        checked::assess(result, self.attach, &expect)
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
            files,
            setup,
            disks: vec![Disk {
                bytes: NVME_DISK_BYTES,
                device: NVME.into(),
            }],
            // Boot ≈10 s, refwatch attaching and the workload well under a minute under TCG.
            ..checked::job(
                r#"p2pload "$SCENARIO""#,
                self.attach,
                Some(self.scenario.name()),
                Duration::from_secs(240),
            )
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
        runner::run(&self.id(), kernel, assets, self.job(kernel), |result| {
            self.assess(result)
        })
    }
}
