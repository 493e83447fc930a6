//! Device-private pages under `refwatch check`: the test module refwatch_private
//! (xtask/lab/private) is a fake device whose MEMORY_DEVICE_PRIVATE pages `privload`
//! (xtask/lab/workloads/privload.c) migrates anonymous memory to and faults back, healthy, and
//! with one refcount bug injected per scenario, which refwatch must report exactly once with
//! the module's function on the stack (xtask/lab/private/README.md).

use std::sync::LazyLock;
use std::time::Duration;

use super::checked::{self, Counted, Expect, Injected};
use super::device_memory::{COHERENT_BASE, Memory};
use super::runner::{self, VmCase};
use super::{Apt, Assets, Attach, GuestJob, Kernel, VmResult, inject};
use crate::paths;
use anyhow::{Result, bail};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Migrations there and back, CPU faults, munmap and a teardown at idle: nothing to report.
    Healthy,
    /// A freed page put below zero, read by its next allocation (zone_device_page_init).
    PutUnderflow,
    /// The last reference dropped under the process's device-private entry.
    FreeWhileMapped,
    /// memunmap_pages while a child still holds a device-private entry.
    TeardownBusy,
}

use Scenario::{FreeWhileMapped, Healthy, PutUnderflow, TeardownBusy};

pub struct Case {
    pub kernel: &'static str,
    pub memory: Memory,
    pub scenario: Scenario,
    pub attach: Attach,
}

/// The kernels built with DEVICE_PRIVATE from source, where the module builds.
const KERNELS: &[&str] = &["7.3-src"];
pub const SCENARIOS: [Scenario; 4] = [Healthy, PutUnderflow, FreeWhileMapped, TeardownBusy];
/// On device-coherent memory: the scenarios whose steps do not depend on the memory type
/// (`healthy` counts CPU faults, which coherent pages never take; `free-while-mapped` restores
/// a private page's backing). hmm-tests' coherent variants are the healthy case there.
const COHERENT_SCENARIOS: [Scenario; 2] = [PutUnderflow, TeardownBusy];

/// Every scenario in both attach modes, on device-private memory and, where it applies, on
/// device-coherent memory.
pub static CASES: LazyLock<Vec<Case>> = LazyLock::new(|| {
    let memories = SCENARIOS
        .into_iter()
        .map(|scenario| (Memory::Private, scenario))
        .chain(COHERENT_SCENARIOS.map(|scenario| (Memory::Coherent, scenario)));
    KERNELS
        .iter()
        .flat_map(|&kernel| {
            memories.clone().flat_map(move |(memory, scenario)| {
                [Attach::Kprobe, Attach::Fentry].map(|attach| Case {
                    kernel,
                    memory,
                    scenario,
                    attach,
                })
            })
        })
        .collect()
});

/// The pages `privload healthy` migrates (privload.c's PAGES).
const PAGES: u64 = 16;

const MODULE: &str = "refwatch_private";
const MODULE_SOURCES: &[&str] = &["refwatch_private.c", "refwatch_private.h", "Kbuild"];
const GUEST_MODULE: &str = "/lib/modules/refwatch_private.ko";

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Healthy => "healthy",
            PutUnderflow => "put-underflow",
            FreeWhileMapped => "free-while-mapped",
            TeardownBusy => "teardown-busy",
        }
    }

    /// The finding on `memory`'s pages, and the module's function that does the wrong step.
    fn injected(self, memory: Memory) -> Option<Injected> {
        let (rule, frame) = match self {
            Healthy => return None,
            // Seen at the next allocation: zone_device_page_init ← rwp_alloc_page.
            PutUnderflow => ("put-underflow", "rwp_put_underflow"),
            FreeWhileMapped => ("free-while-mapped", "rwp_free_while_mapped"),
            TeardownBusy => ("teardown-busy", "rwp_teardown"),
        };
        Some(Injected {
            rule,
            type_name: memory.pgmap_type(),
            frame,
            module: MODULE,
        })
    }

    /// What the private pgmap's counters must reach: each allocation (zone_device_page_init)
    /// and each CPU fault (migrate_vma_setup's fault page) is a get, each folio_free a free;
    /// each migration's finalize maps the device page (an insert) on the way there and drops
    /// it (a put) on the way back. Healthy: 16 pages there, back by fault, there again and
    /// freed by munmap. put-underflow allocates and frees without migrating. teardown-busy's
    /// free comes from the child's exit, after memunmap_pages began.
    fn at_least(self) -> Counted {
        let (pages_seen, gets, inserts, puts, frees) = match self {
            Healthy => (PAGES, 3 * PAGES, 2 * PAGES, PAGES, 2 * PAGES),
            PutUnderflow => (1, 2, 0, 0, 2),
            FreeWhileMapped => (1, 1, 1, 0, 2),
            TeardownBusy => (1, 1, 1, 0, 1),
        };
        Counted {
            pgmaps: 1,
            pages_seen,
            gets,
            inserts,
            puts,
            frees,
        }
    }
}

impl Case {
    fn assess(&self, result: &VmResult) -> Vec<String> {
        let name = self.scenario.name();
        let expect = Expect {
            workload: format!("privload {name}"),
            done: format!("privload: {name}: done"),
            injected: self.scenario.injected(self.memory),
            type_name: self.memory.pgmap_type(),
            at_least: self.scenario.at_least(),
        };
        checked::assess(result, self.attach, &expect)
    }

    fn job(&self, kernel: &Kernel) -> Result<GuestJob> {
        // Boot ≈10 s, refwatch attaching and the workload (teardown-busy waits 3 s) well
        // under a minute under TCG.
        let job = checked::job(
            r#"privload "$SCENARIO""#,
            self.attach,
            Some(self.scenario.name()),
            Duration::from_secs(240),
        );
        with_module(kernel, &Apt::new()?, self.memory, job)
    }
}

/// `job` in a guest with the module built for `kernel` and loaded, its pgmap of `memory`.
pub fn with_module(kernel: &Kernel, apt: &Apt, memory: Memory, job: GuestJob) -> Result<GuestJob> {
    if kernel.built().is_none() {
        bail!(
            "kernel {} is Debian's binary, without device-private pages",
            kernel.spec.name
        );
    }
    let src = paths::workspace_root().join("xtask/lab/private");
    let ko = inject::build_module(kernel.spec, apt, &src, MODULE, MODULE_SOURCES)?;
    let params = match memory {
        Memory::Private => String::new(),
        Memory::Coherent => format!(" coherent_phys={COHERENT_BASE:#x}"),
    };
    Ok(GuestJob {
        files: vec![(ko, GUEST_MODULE.to_owned())],
        setup: vec![format!("insmod {GUEST_MODULE}{params}")],
        cmdline: memory.cmdline(),
        ..job
    })
}

impl VmCase for Case {
    fn id(&self) -> String {
        // The private cases keep their names; the others are named by memory type.
        let memory = match self.memory {
            Memory::Private => "private",
            Memory::Coherent => "private-coherent",
        };
        format!(
            "{}/{memory}-{}/{}",
            self.kernel,
            self.scenario.name(),
            self.attach.as_str()
        )
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
