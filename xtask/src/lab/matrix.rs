//! The VM test matrix: which scenario runs on which kernel in which attach mode, and what
//! refwatch must have seen. Each case boots a VM, records the workload with `refwatch record`,
//! and asserts on the host on the trace's events (`stream --json --trace`) and on
//! `check --json --trace`.
//!
//! Expected numbers come from tracefs kprobe counts on the same kernels (docs/lab.md, "Why the
//! matrix expects what it expects"): a 16 MiB file touched page by page is 4096 PTE faults. When
//! refwatch disagrees with a number here, find out which side is right and record it next to the
//! expectation and in that doc.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::checked::{Check, Pgmap};
use super::runner::{VmCase, last_lines, run_job};
use super::{Assets, Attach, GuestJob, Kernel, PMEM_PFNS, VmResult};

/// 16 MiB of 4 KiB pages: what every fsdax workload maps and touches.
const PAGES: usize = 4096;

pub struct Case {
    pub kernel: &'static str,
    /// A `daxload` subcommand (xtask/lab/workloads/daxload.c).
    pub scenario: &'static str,
    pub attach: Attach,
    /// Hot probes to attach (`--with`), off by default where no rule needs them.
    pub with: &'static [&'static str],
    /// Beyond these, every case needs exit status 0, a summary line and zero dropped events.
    pub expect: &'static [Expect],
}

pub enum Expect {
    /// At least `at_least` events of `kind` on distinct pfns inside the emulated pmem.
    DistinctPmemPfns { kind: &'static str, at_least: usize },
    /// At least `at_least` events of `kind`, wherever (pgmap events carry no page).
    Events { kind: &'static str, at_least: usize },
    /// At least `at_least` pages unmapped by `refwatch check`'s reckoning over its pgmaps:
    /// where one event stands for many pages (a range zap), the pages it names.
    Unmapped { at_least: usize },
    /// No page of any pgmap is left mapped by `refwatch check`'s reckoning at the end.
    NoneMapped,
}

use Attach::{Auto, Fentry, Kprobe};
use Expect::{DistinctPmemPfns, Events, NoneMapped, Unmapped};

/// 5.10–6.12 map fsdax pages by pfn without taking a reference (insert_pfn); nothing is
/// freed at munmap, which zaps the whole range (one unmap_page_range event) and with it the
/// 4096 PTEs inserted there, which refwatch counts as unmaps of their pages.
const MMAP_6: &[Expect] = &[
    DistinctPmemPfns {
        kind: "insert",
        at_least: PAGES,
    },
    Events {
        kind: "unmap",
        at_least: 1,
    },
    Unmapped { at_least: PAGES },
    NoneMapped,
];
/// mremap moves the 4096 PTEs (move_page_tables: one remap event); the munmap at the new
/// address then zaps them all, and nothing is left mapped at the old one.
const MREMAP_6: &[Expect] = &[
    DistinctPmemPfns {
        kind: "insert",
        at_least: PAGES,
    },
    Events {
        kind: "remap",
        at_least: 1,
    },
    Unmapped { at_least: PAGES },
    NoneMapped,
];
/// The same with the per-PTE unmap probe asked for where unmap_page_range is left out:
/// vm_normal_page from unmap_page_range, whose caller filter reads the return address (at
/// the stack pointer for kprobes, above the arguments in an fentry trampoline).
const MMAP_6_PTE_UNMAPS: &[Expect] = &[
    DistinctPmemPfns {
        kind: "insert",
        at_least: PAGES,
    },
    DistinctPmemPfns {
        kind: "unmap",
        at_least: PAGES,
    },
    Unmapped { at_least: PAGES },
    NoneMapped,
];
/// 7.x takes a folio reference per PTE (vmf_insert_page_mkwrite) and frees each page at
/// munmap (free_zone_device_folio: 4096 hits).
const MMAP_7: &[Expect] = &[
    DistinctPmemPfns {
        kind: "insert",
        at_least: PAGES,
    },
    DistinctPmemPfns {
        kind: "free",
        at_least: PAGES,
    },
];
/// 6.1 pins through try_grab_page (4099 hits: 3 outside the file) and unpins through
/// __put_devmap_managed_page_refs (4096, refs=GUP_PIN_COUNTING_BIAS).
const GUP_6: &[Expect] = &[
    DistinctPmemPfns {
        kind: "insert",
        at_least: PAGES,
    },
    DistinctPmemPfns {
        kind: "get",
        at_least: PAGES,
    },
    DistinctPmemPfns {
        kind: "put",
        at_least: PAGES,
    },
];
/// 7.x pins through try_grab_folio (4099 hits).
const GUP_7: &[Expect] = &[
    DistinctPmemPfns {
        kind: "insert",
        at_least: PAGES,
    },
    DistinctPmemPfns {
        kind: "get",
        at_least: PAGES,
    },
    DistinctPmemPfns {
        kind: "free",
        at_least: PAGES,
    },
];
/// The hole punch unmaps every page before freeing its blocks; the two passes after it fault
/// pages in again (insert_pfn / vmf_insert_page_mkwrite 12288 in all, free 12288 on 7.2),
/// possibly on the same pfns, so only one pass's worth of distinct pfns is required.
const TRUNCATE_6: &[Expect] = MMAP_6;
const TRUNCATE_7: &[Expect] = MMAP_7;
/// Huge faults: 6.1 maps a PMD by pfn (vmf_insert_pfn_pmd, inlined), so there may be no
/// probe-able event; in the lab ext4's placement made all 4096 faults PTE ones (insert_pfn
/// 4096), but that is not guaranteed, so only the generic checks apply.
const PMD_6: &[Expect] = &[];
/// 7.x takes a folio reference per PMD: 16 MiB aligned is vmf_insert_folio_pmd 8 and
/// free_zone_device_folio 8 (tracefs counts in the lab).
const PMD_7: &[Expect] = &[
    Events {
        kind: "insert",
        at_least: 8,
    },
    Events {
        kind: "free",
        at_least: 8,
    },
];
/// Reconfiguring to device-dax maps a new pgmap (memremap_pages); 4 KiB alignment gives one
/// PTE fault per page.
const DEVDAX: &[Expect] = &[
    Events {
        kind: "pgmap_add",
        at_least: 1,
    },
    DistinctPmemPfns {
        kind: "insert",
        at_least: PAGES,
    },
];
/// Disabling the namespace unmaps its pgmap (memunmap_pages).
const TEARDOWN: &[Expect] = &[Events {
    kind: "pgmap_remove",
    at_least: 1,
}];
/// 7.x with its unmap probe asked for (off by default: a mapping holds a reference and a
/// mapcount, so no rule needs it): munmap zaps every PTE through folio_remove_rmap_ptes.
const MMAP_7_UNMAPS: &[Expect] = &[
    DistinctPmemPfns {
        kind: "insert",
        at_least: PAGES,
    },
    DistinctPmemPfns {
        kind: "unmap",
        at_least: PAGES,
    },
    DistinctPmemPfns {
        kind: "free",
        at_least: PAGES,
    },
];

const fn case(
    kernel: &'static str,
    scenario: &'static str,
    attach: Attach,
    expect: &'static [Expect],
) -> Case {
    Case {
        kernel,
        scenario,
        attach,
        with: &[],
        expect,
    }
}

const fn with(mut case: Case, functions: &'static [&'static str]) -> Case {
    case.with = functions;
    case
}

pub const CASES: &[Case] = &[
    case("6.1", "fsdax-mmap", Kprobe, MMAP_6),
    case("6.1", "fsdax-gup", Kprobe, GUP_6),
    case("6.1", "fsdax-truncate", Kprobe, TRUNCATE_6),
    case("6.1", "fsdax-pmd", Kprobe, PMD_6),
    case("6.1", "devdax", Kprobe, DEVDAX),
    case("6.1", "teardown", Kprobe, TEARDOWN),
    case("6.1", "fsdax-mmap", Fentry, MMAP_6),
    // The default mode: a kprobe for every entry that takes one.
    case("6.1", "fsdax-gup", Auto, GUP_6),
    case("7.2", "fsdax-mmap", Kprobe, MMAP_7),
    case("7.2", "fsdax-gup", Kprobe, GUP_7),
    case("7.2", "fsdax-truncate", Kprobe, TRUNCATE_7),
    case("7.2", "fsdax-pmd", Kprobe, PMD_7),
    case("7.2", "devdax", Kprobe, DEVDAX),
    case("7.2", "teardown", Kprobe, TEARDOWN),
    case("7.2", "fsdax-mmap", Fentry, MMAP_7),
    with(
        case("7.2", "fsdax-mmap", Fentry, MMAP_7_UNMAPS),
        &["folio_remove_rmap_ptes"],
    ),
    with(
        case("6.1", "fsdax-mmap", Fentry, MMAP_6_PTE_UNMAPS),
        &["vm_normal_page"],
    ),
    case("6.1", "fsdax-mremap", Kprobe, MREMAP_6),
    case("6.12", "fsdax-mremap", Fentry, MREMAP_6),
    case("7.2", "fsdax-mremap", Kprobe, MMAP_7),
    case("7.3", "fsdax-mmap", Kprobe, MMAP_7),
    case("7.3", "fsdax-gup", Kprobe, GUP_7),
    case("7.3", "fsdax-truncate", Kprobe, TRUNCATE_7),
    case("7.3", "fsdax-pmd", Kprobe, PMD_7),
    case("7.3", "devdax", Kprobe, DEVDAX),
    case("7.3", "teardown", Kprobe, TEARDOWN),
    case("7.3", "fsdax-mmap", Fentry, MMAP_7),
    case("5.10", "fsdax-mmap", Kprobe, MMAP_6),
    case("6.12", "fsdax-mmap", Kprobe, MMAP_6),
    case("6.12", "fsdax-mmap", Fentry, MMAP_6),
];

/// The guest side of a case: the workload runs once, under `refwatch record`; the trace is
/// then replayed as JSON lines (`stream --trace`) and judged by `check --trace`, so the record
/// path, the trace format and the aggregator are all exercised on what the kernel did. The
/// trace comes back in /out for inspection.
fn job(case: &Case) -> GuestJob {
    let script = format!(
        "refwatch record -o /out/trace.rwt --attach {}{} -- daxload {} \
         2> /out/record.err || exit $?; \
         refwatch stream --json --trace /out/trace.rwt \
         > /out/events.jsonl 2> /out/stream.err || exit $?; \
         refwatch check --json --trace /out/trace.rwt > /out/check.json 2> /out/check.err",
        case.attach.as_str(),
        case.with
            .iter()
            .map(|f| format!(" --with {f}"))
            .collect::<String>(),
        case.scenario
    );
    GuestJob {
        argv: vec!["sh".into(), "-c".into(), script],
        // Boot ≈10 s and a workload ≈2 s under TCG; kprobes slow the workload, not by minutes.
        timeout: Some(std::time::Duration::from_secs(180)),
        ..GuestJob::default()
    }
}

/// One line of `refwatch stream --json`; fields the assertions do not use are ignored.
#[derive(Deserialize)]
struct Event {
    kind: String,
    pfn: Option<u64>,
}

#[derive(Deserialize)]
struct SummaryLine {
    summary: Summary,
}

#[derive(Deserialize)]
struct Summary {
    events: u64,
    dropped: u64,
}

/// Runs one case; Err carries every reason it failed.
pub fn run(case: &Case, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
    run_job(&case.id(), kernel, assets, &job(case), |result| {
        assess(case, result)
    })
}

fn assess(case: &Case, result: &VmResult) -> Vec<String> {
    let mut failures = Vec::new();
    let out = &result.out_dir;
    let stream_err = std::fs::read_to_string(out.join("stream.err")).unwrap_or_default();
    if result.exit_code != 0 {
        failures.push(format!(
            "exit status {} (stream.err: {}; console: {})",
            result.exit_code,
            last_lines(&stream_err, 5),
            result.console_log.display()
        ));
    }
    match summary(&stream_err) {
        Some(s) if s.dropped > 0 => {
            failures.push(format!("{} of {} events dropped", s.dropped, s.events))
        }
        Some(_) => {}
        None => failures.push("no {\"summary\":…} line on stderr".into()),
    }
    let check = match Check::read(&out.join("check.json")) {
        Ok(check) => Some(check),
        Err(e) => {
            failures.push(e);
            None
        }
    };
    failures.extend(check.as_ref().and_then(healthy));
    match load_events(&out.join("events.jsonl")) {
        Ok(events) => failures.extend(
            case.expect
                .iter()
                .filter_map(|e| unmet(e, &events, check.as_ref())),
        ),
        Err(e) => failures.push(format!("{e:#}")),
    }
    failures
}

/// The lab's kernels are healthy: `refwatch check` must pass with no finding, and say which
/// rules it could not check there.
fn healthy(c: &Check) -> Option<String> {
    // Every event comes from an entry of a probed function, but for the one event per pgmap
    // that a page's first event may bring along.
    if c.calls.values().sum::<u64>() + (c.pgmaps.len() as u64) < c.events {
        return Some(format!(
            "refwatch check counted {} events but only these entries of the probed \
             functions: {:?}",
            c.events, c.calls
        ));
    }
    (c.findings_total > 0).then(|| {
        format!(
            "refwatch check found {} violation(s) on a healthy kernel: {}",
            c.findings_total,
            c.describe_findings()
        )
    })
}

/// Why `expect` is not met by the trace's events and check's counters, if it is not.
fn unmet(expect: &Expect, events: &[Event], check: Option<&Check>) -> Option<String> {
    let total = |counter: fn(&Pgmap) -> u64| check.map_or(0, |c| c.total(counter));
    let (kind, at_least, seen, what) = match *expect {
        DistinctPmemPfns { kind, at_least } => {
            let pfns: HashSet<u64> = events
                .iter()
                .filter(|e| e.kind == kind)
                .filter_map(|e| e.pfn)
                .filter(|pfn| PMEM_PFNS.contains(pfn))
                .collect();
            (kind, at_least, pfns.len(), "distinct pmem pfns")
        }
        Events { kind, at_least } => (
            kind,
            at_least,
            events.iter().filter(|e| e.kind == kind).count(),
            "events",
        ),
        Unmapped { at_least } => (
            "unmaps",
            at_least,
            total(|p| p.unmaps) as usize,
            "counted by refwatch check",
        ),
        NoneMapped => {
            let mapped = total(|p| p.mapped_pages);
            return (mapped > 0)
                .then(|| format!("{mapped} page(s) left mapped by refwatch check's reckoning"));
        }
    };
    (seen < at_least).then(|| {
        format!(
            "{kind}: {seen} {what}, expected ≥ {at_least} (all kinds: {:?})",
            kinds(events)
        )
    })
}

fn kinds(events: &[Event]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e.kind.as_str()).or_default() += 1;
    }
    counts
}

fn summary(stderr: &str) -> Option<Summary> {
    stderr
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<SummaryLine>(line).ok())
        .map(|l| l.summary)
}

fn load_events(path: &Path) -> Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("events.jsonl line {}: {line}", n + 1))
        })
        .collect()
}

impl VmCase for Case {
    fn id(&self) -> String {
        let with: String = self.with.iter().map(|f| format!("+{f}")).collect();
        format!(
            "{}/{}/{}{with}",
            self.kernel,
            self.scenario,
            self.attach.as_str()
        )
    }
    fn kernel(&self) -> &'static str {
        self.kernel
    }
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        run(self, kernel, assets)
    }
}

/// The whole matrix: the daxload cases, the refwatch_inject cases and their `--watch` cases
/// (watch.rs), the real bugs (bugs.rs), the HMM selftest (hmm.rs), the P2PDMA cases
/// (p2pdma.rs), the device-private cases (private.rs), then the script cases.
pub fn all_cases() -> Vec<&'static dyn VmCase> {
    let daxload = CASES.iter().map(|c| c as &dyn VmCase);
    daxload
        .chain(super::inject::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::watch::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::bugs::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::hmm::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::p2pdma::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::private::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::scripts::CASES.iter().map(|c| c as &dyn VmCase))
        .collect()
}

#[cfg(test)]
mod tests {
    /// Runs are kept under runs/matrix-ID and `--filter` picks by id: two cases, one id would
    /// share both.
    #[test]
    fn case_ids_are_unique() {
        let mut ids: Vec<String> = super::all_cases().iter().map(|c| c.id()).collect();
        let all = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all);
    }
}
