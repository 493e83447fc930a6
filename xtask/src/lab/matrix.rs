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
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::{Apt, Assets, Attach, GuestJob, Kernel, PMEM_PFNS, VmResult, run_in_vm};

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
    /// At least `at_least` transitions of `kind` counted by `refwatch check` over its pgmaps:
    /// where one event stands for many pages (a range zap), the pages it names.
    Counted { kind: &'static str, at_least: usize },
    /// No page of any pgmap is left mapped by `refwatch check`'s reckoning at the end.
    NoneMapped,
}

use Attach::{Auto, Fentry, Kprobe};
use Expect::{Counted, DistinctPmemPfns, Events, NoneMapped};

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
    Counted {
        kind: "unmaps",
        at_least: PAGES,
    },
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
    Counted {
        kind: "unmaps",
        at_least: PAGES,
    },
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
    Counted {
        kind: "unmaps",
        at_least: PAGES,
    },
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
    // The default mode: fentry for every entry from 6.1 on.
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
        "refwatch record -o /out/trace.rwt --attach {}{} -- daxload {} 2> /out/record.err || exit $?; \
         refwatch stream --json --trace /out/trace.rwt > /out/events.jsonl 2> /out/stream.err || exit $?; \
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

/// Runs the job of case `id` in a fresh VM (its files under runs/matrix-ID) and judges the
/// result with `assess`; Err carries every reason the case failed.
pub(super) fn run_job(
    id: &str,
    kernel: &Kernel,
    assets: &Assets,
    job: &GuestJob,
    assess: impl FnOnce(&VmResult) -> Vec<String>,
) -> Result<(), Vec<String>> {
    let label = format!("matrix-{}", id.replace('/', "-"));
    let result = run_in_vm(kernel, assets, job, &label).map_err(|e| vec![format!("{e:#}")])?;
    let failures = assess(&result);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
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
    failures.extend(healthy(&out.join("check.json")));
    let counted = counted(&out.join("check.json"));
    match load_events(&out.join("events.jsonl")) {
        Ok(events) => failures.extend(
            case.expect
                .iter()
                .filter_map(|e| check(e, &events, &counted)),
        ),
        Err(e) => failures.push(format!("{e:#}")),
    }
    failures
}

/// The per-pgmap counters of `refwatch check --json`, summed over its pgmaps.
fn counted(check_json: &Path) -> BTreeMap<String, u64> {
    #[derive(Deserialize)]
    struct Check {
        pgmaps: Vec<BTreeMap<String, serde_json::Value>>,
    }
    let text = std::fs::read_to_string(check_json).unwrap_or_default();
    let mut sums = BTreeMap::new();
    for pgmap in serde_json::from_str::<Check>(&text)
        .map(|c| c.pgmaps)
        .unwrap_or_default()
    {
        for (name, value) in pgmap {
            if let Some(n) = value.as_u64() {
                *sums.entry(name).or_default() += n;
            }
        }
    }
    sums
}

/// The lab's kernels are healthy: `refwatch check` must pass with no finding, and say which
/// rules it could not check there.
fn healthy(check_json: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Check {
        findings_total: u64,
        findings: Vec<serde_json::Value>,
        events: u64,
        pgmaps: Vec<serde_json::Value>,
        #[serde(default)]
        calls: std::collections::BTreeMap<String, u64>,
    }
    let text = std::fs::read_to_string(check_json).unwrap_or_default();
    match serde_json::from_str::<Check>(&text) {
        // Every event comes from an entry of a probed function, but for the one event per
        // pgmap that a page's first event may bring along.
        Ok(c) if c.calls.values().sum::<u64>() + (c.pgmaps.len() as u64) < c.events => {
            Some(format!(
                "refwatch check counted {} events but only these entries of the probed functions: {:?}",
                c.events, c.calls
            ))
        }
        Ok(c) if c.findings_total == 0 => None,
        Ok(c) => Some(format!(
            "refwatch check found {} violation(s) on a healthy kernel, first: {}",
            c.findings_total,
            c.findings
                .first()
                .map(|f| f.to_string())
                .unwrap_or_default()
        )),
        Err(e) => Some(format!("check.json: {e} ({})", last_lines(&text, 3))),
    }
}

fn check(expect: &Expect, events: &[Event], counted: &BTreeMap<String, u64>) -> Option<String> {
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
        Counted { kind, at_least } => (
            kind,
            at_least,
            counted.get(kind).copied().unwrap_or(0) as usize,
            "counted by refwatch check",
        ),
        NoneMapped => {
            let mapped = counted.get("mapped_pages").copied().unwrap_or(0);
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

pub(super) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// One VM case of either kind: a daxload case above, or a refwatch_inject case
/// (inject.rs: every injected bug, and `healthy`, on 6.1 and 6.12 in both attach modes).
pub trait VmCase: Sync {
    fn id(&self) -> String;
    fn kernel(&self) -> &'static str;
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>>;
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

impl VmCase for super::inject::Case {
    fn id(&self) -> String {
        format!(
            "{}/inject-{}/{}",
            self.kernel,
            self.scenario,
            self.attach.as_str()
        )
    }
    fn kernel(&self) -> &'static str {
        self.kernel
    }
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        super::inject::Case::run(self, kernel, assets)
    }
}

/// The whole matrix: the daxload cases, the refwatch_inject cases, the real bugs (bugs.rs),
/// the HMM selftest (hmm.rs), the P2PDMA cases (p2pdma.rs), then the script cases.
pub fn all_cases() -> Vec<&'static dyn VmCase> {
    let daxload = CASES.iter().map(|c| c as &dyn VmCase);
    daxload
        .chain(super::inject::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::bugs::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::hmm::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(super::p2pdma::CASES.iter().map(|c| c as &dyn VmCase))
        .chain(SCRIPT_CASES.iter().map(|c| c as &dyn VmCase))
        .collect()
}

/// Runs the cases (two VMs at a time: one TCG thread each on a 2-core machine) and returns
/// (passed, failed). Kernels are fetched up front; a kernel that cannot be had fails its cases.
pub fn run_all(cases: &[&dyn VmCase], assets: &Assets, apt: &Apt) -> (usize, usize) {
    let mut kernels: BTreeMap<&str, Result<Kernel, String>> = BTreeMap::new();
    for case in cases {
        kernels.entry(case.kernel()).or_insert_with(|| {
            super::kernel::spec(case.kernel())
                .and_then(|spec| Kernel::fetch(spec, apt))
                .map_err(|e| format!("{e:#}"))
        });
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let tally = std::sync::Mutex::new((0, 0));
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some(case) =
                    cases.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
                {
                    let started = Instant::now();
                    let outcome = match &kernels[case.kernel()] {
                        Ok(kernel) => case.run(kernel, assets),
                        Err(e) => Err(vec![e.clone()]),
                    };
                    let secs = started.elapsed().as_secs_f64();
                    let mut tally = tally.lock().expect("no panics while held");
                    match outcome {
                        Ok(()) => {
                            tally.0 += 1;
                            println!("PASS {} ({secs:.1}s)", case.id());
                        }
                        Err(reasons) => {
                            tally.1 += 1;
                            println!("FAIL {} ({secs:.1}s)", case.id());
                            for reason in reasons {
                                println!("    {reason}");
                            }
                        }
                    }
                }
            });
        }
    });
    tally.into_inner().expect("no panics while held")
}

/// Cases whose guest script asserts by itself: environment errors (no BTF, no tracefs, two
/// instances, an unreadable release), kills during a recording, and a short soak. The script
/// prints `FAIL: …` lines and exits 1 on failure; the host reports those lines.
pub struct ScriptCase {
    pub kernel: &'static str,
    pub name: &'static str,
    pub script: fn() -> String,
}

/// Shell helpers every script case starts with. `events F` runs `refwatch report --json` on
/// trace F: its status in $rc, the event count in $n, stderr in F.report.err, JSON in F.json.
const SCRIPT_PRELUDE: &str = r#"
failed=0
fail() { echo "FAIL: $*"; failed=1; }
events() { refwatch report --json "$1" > "$1.json" 2> "$1.report.err"; rc=$?; n=$(sed -n 's/^  "events": \([0-9]*\),$/\1/p' "$1.json"); }
wait_for() { for i in $(seq 300); do [ -e "$1" ] && return 0; sleep 0.1; done; fail "$1 never appeared"; }
"#;

fn script(body: &str) -> String {
    format!("{SCRIPT_PRELUDE}\n{body}\nexit $failed\n")
}

/// No BTF (its file replaced by an empty one): refwatch cannot learn the struct layout or check
/// prototypes, so every attaching command refuses with exit 2 naming BTF; `probes` still works.
fn no_btf() -> String {
    script(
        r#"
mount --bind /dev/null /sys/kernel/btf/vmlinux || fail "cannot hide BTF"
refwatch record -o /out/t.rft -d 1 2> /out/record.err; rc=$?
[ $rc = 2 ] || fail "record exit $rc, expected 2"
grep -q 'cannot run on .*struct layout unknown: /sys/kernel/btf/vmlinux' /out/record.err || fail "record: $(cat /out/record.err)"
[ -e /out/t.rft ] && fail "a trace file was left behind"
refwatch stream -d 1 2> /out/stream.err; rc=$?
[ $rc = 2 ] || fail "stream exit $rc, expected 2"
refwatch probes > /out/probes.txt; rc=$?
[ $rc = 0 ] || fail "probes exit $rc"
grep -q '^BTF:      no' /out/probes.txt || fail "probes does not say BTF is missing"
"#,
    )
}

/// The verifier of every lab kernel accepts every kprobe program, and every fentry program of
/// the functions the kernel's plan uses (`probes --verify` exits 2 on any rejection).
fn verifier() -> String {
    script(
        r#"
refwatch probes --verify > /out/verify.txt 2>&1; rc=$?
[ $rc = 0 ] || fail "probes --verify exit $rc: $(tail -5 /out/verify.txt)"
grep -q '^fentry:   allowed' /out/verify.txt || fail "fentry not allowed: $(grep '^fentry' /out/verify.txt)"
grep -q '^verifier: \([0-9]*\)/\1 programs load' /out/verify.txt || fail "$(grep '^verifier' /out/verify.txt)"
"#,
    )
}

/// A ring too small for a GUP storm: events are dropped, counted, and make `check`
/// inconclusive (exit 4, kselftest's skip) rather than a pass.
fn drops_inconclusive() -> String {
    script(
        r#"
refwatch check --json --ring-kib 4 -- daxload fsdax-gup > /out/check.json 2> /out/check.err; rc=$?
[ $rc = 4 ] || fail "check exit $rc, expected 4 (inconclusive): $(tail -3 /out/check.err)"
grep -q '"dropped": 0,' /out/check.json && fail "no drops with a 4 KiB ring"
grep -q '"verdict": "inconclusive"' /out/check.json || fail "verdict: $(grep -A3 '"verdict"' /out/check.json)"
"#,
    )
}

/// What a CI wrapping its tests in refwatch relies on: a failed command is no pass, a check that
/// saw no device memory is inconclusive unless told, `-o` and `--junit` leave stdout to the
/// command, and `-p` keeps another process's page events out in the kernel.
fn ci_options() -> String {
    script(
        r#"
refwatch check -- sh -c 'daxload fsdax-mmap > /dev/null; exit 3' > /out/failed.txt 2>&1; rc=$?
[ $rc = 1 ] || fail "check over a failing command exit $rc, expected 1: $(tail -3 /out/failed.txt)"
grep -q 'status 3' /out/failed.txt || fail "the command's status is not in the text: $(tail -5 /out/failed.txt)"
refwatch check -- true > /out/idle.txt 2>&1; rc=$?
[ $rc = 4 ] || fail "check over an idle command exit $rc, expected 4: $(tail -3 /out/idle.txt)"
refwatch check --allow-idle -- true > /dev/null 2>&1; rc=$?
[ $rc = 0 ] || fail "check --allow-idle over an idle command exit $rc, expected 0"
refwatch check --json -o /out/check.json --junit /out/junit.xml -- sh -c 'echo workload-output; daxload fsdax-mmap > /dev/null' > /out/stdout.txt 2> /out/check.err; rc=$?
[ $rc = 0 ] || fail "check -o exit $rc: $(tail -3 /out/check.err)"
[ "$(cat /out/stdout.txt)" = workload-output ] || fail "stdout is not the command's alone: $(head -3 /out/stdout.txt)"
grep -q '"findings_total": 0' /out/check.json || fail "no verdict in the -o file: $(head -5 /out/check.json)"
grep -q 'name="insert-zero-ref"' /out/junit.xml || fail "no test case per rule: $(head -5 /out/junit.xml)"
refwatch record -o /out/s.rwt --summary /out/summary.txt -- sh -c 'echo workload >&2; daxload fsdax-mmap > /dev/null' 2> /out/record.err || fail "record --summary exit $?: $(tail -3 /out/record.err)"
grep -q 'events, 0 dropped' /out/summary.txt || fail "no summary in --summary's file: $(cat /out/summary.txt)"
[ "$(cat /out/record.err)" = workload ] || fail "stderr is not the command's alone: $(head -3 /out/record.err)"
sh -c 'sleep 4; exec daxload fsdax-mmap' > /dev/null & p=$!
refwatch record -o /out/pid.rwt -p $p -d 25 2> /out/pid.err & r=$!
sleep 2; daxload fsdax-gup > /dev/null
wait $p; wait $r || fail "record -p exit $?: $(tail -3 /out/pid.err)"
refwatch stream --json --trace /out/pid.rwt > /out/pid.jsonl 2> /out/pid-stream.err
n=$(grep -c '"kind":"insert"' /out/pid.jsonl)
[ "$n" -ge 4096 ] || fail "record -p saw $n inserts of its process, expected >= 4096"
others=$(grep '"kind":"\(insert\|get\|put\|free\|unmap\)"' /out/pid.jsonl | grep -vc "\"tgid\":$p,")
[ "$others" = 0 ] || fail "record -p kept $others page events of other processes: $(grep -v "\"tgid\":$p," /out/pid.jsonl | grep '"kind":"\(insert\|get\)"' | head -2)"
"#,
    )
}

/// A process named with terminal escapes (any local user can pick its name) touching device
/// memory with a real bug: refwatch's live outputs on the root terminal and its kernel-log line
/// show the bytes escaped, never raw.
fn hostile_names() -> String {
    script(
        r#"
h=$(printf '/tmp/\033]0;PWN\007\033[2J')
ln -s "$(command -v daxload)" "$h" || fail "cannot make the hostile name"
refwatch live -d 120 > /out/live.txt 2> /out/live.err & l=$!
refwatch stream -d 120 > /out/stream.txt 2> /out/stream.err & s=$!
for i in $(seq 300); do grep -q events /out/live.txt && break; sleep 0.1; done
sleep 2
"$h" bug-pmem-unbind pte > /out/bug.log 2>&1
sleep 1; kill -INT $l $s; wait $l; wait $s
dmesg | grep 'refwatch: ' > /out/kmsg.txt
for f in live.txt stream.txt kmsg.txt; do
  grep -q "$(printf '\033')" /out/$f && fail "$f has a raw ESC"
  grep -q "$(printf '\007')" /out/$f && fail "$f has a raw BEL"
  grep -qF '\x1b]0;PWN\x07' /out/$f || fail "$f does not show the name escaped: $(tail -2 /out/$f)"
done
"#,
    )
}

/// tracefs and debugfs unmounted: kprobes attach through the perf kprobe PMU, so recording works.
fn no_tracefs() -> String {
    script(
        r#"
umount /sys/kernel/tracing; umount /sys/kernel/debug
grep -q tracefs /proc/mounts && fail "tracefs still mounted"
refwatch record -o /out/t.rft -- daxload fsdax-mmap 2> /out/record.err; rc=$?
[ $rc = 0 ] || fail "record exit $rc: $(cat /out/record.err)"
events /out/t.rft
[ $rc = 0 ] && [ "${n:-0}" -ge 4096 ] || fail "report exit $rc, $n events (expected >= 4096)"
"#,
    )
}

/// Two recordings at once: kprobes stack, so both attach and both see the whole workload.
fn two_instances() -> String {
    script(
        r#"
refwatch record -o /out/a.rft -d 120 2> /out/a.err & a=$!
wait_for /out/a.rft
refwatch record -o /out/b.rft -- daxload fsdax-mmap 2> /out/b.err; rc=$?
[ $rc = 0 ] || fail "second record exit $rc: $(cat /out/b.err)"
kill -INT $a; wait $a; rc=$?
[ $rc = 0 ] || fail "first record exit $rc: $(cat /out/a.err)"
events /out/a.rft; na=$n; ra=$rc
events /out/b.rft; nb=$n; rb=$rc
[ $ra = 0 ] && [ $rb = 0 ] || fail "report exits $ra $rb"
[ "${nb:-0}" -ge 4096 ] || fail "second instance saw $nb events"
[ "${na:-0}" -ge "${nb:-0}" ] || fail "first instance saw $na events, the second $nb"
grep -q '"dropped": 0,' /out/a.rft.json && grep -q '"dropped": 0,' /out/b.rft.json || fail "drops"
"#,
    )
}

/// A release refwatch cannot parse: refused with exit 2 naming it (no guessing of a refcount
/// era). A release newer than any known one runs with the newest era's rules.
fn unknown_release() -> String {
    script(
        r#"
real=$(cat /proc/sys/kernel/osrelease)
echo garbage > /tmp/osrelease
mount --bind /tmp/osrelease /proc/sys/kernel/osrelease || fail "cannot fake the release"
refwatch record -o /out/t.rft -d 1 2> /out/garbage.err; rc=$?
[ $rc = 2 ] || fail "garbage release: exit $rc"
grep -q 'kernel release "garbage" has no version refwatch can read' /out/garbage.err || fail "garbage: $(cat /out/garbage.err)"
umount /proc/sys/kernel/osrelease
echo 99.1.0-future > /tmp/osrelease
mount --bind /tmp/osrelease /proc/sys/kernel/osrelease
refwatch probes > /out/probes.txt 2>&1 || fail "probes on 99.1: $(cat /out/probes.txt)"
refwatch record -o /out/future.rft -- daxload fsdax-mmap 2> /out/future.err; rc=$?
[ $rc = 0 ] || fail "future release: exit $rc: $(cat /out/future.err)"
umount /proc/sys/kernel/osrelease
[ "$(cat /proc/sys/kernel/osrelease)" = "$real" ] || fail "release not restored"
"#,
    )
}

/// SIGINT, SIGTERM and SIGKILL at random points of a recording over a DAX workload. INT and TERM
/// end it cleanly: exit 0 and a footer whose count matches every event (report has no warning).
/// KILL leaves a trace cut off after a whole frame (the recorder writes each ring-buffer batch
/// at once): report reads it with a warning.
fn signals() -> String {
    script(
        r#"
for sig in INT TERM KILL INT TERM KILL; do
	t=/out/$sig-$RANDOM.rft
	# A duration far past the kill, and the workload repeated until refwatch is gone: the
	# signal always lands on a running recording, however fast one workload pass is.
	refwatch record --force -o $t -d 120 2> $t.err & p=$!
	wait_for $t
	( while kill -0 $p 2>/dev/null; do daxload fsdax-gup > /dev/null; done ) & w=$!
	# Up to 3 s in: from before the first event to well into the workload (≈20k events a pass).
	sleep $((RANDOM % 30 / 10)).$((RANDOM % 10))
	kill -$sig $p; wait $p; rrc=$?
	wait $w
	events $t
	echo "$sig: record exit $rrc, report exit $rc, $n events, $(cat $t.report.err)"
	if [ $sig = KILL ]; then
		[ $rrc = 137 ] || fail "$sig: record exit $rrc"
		# Cut off after a whole frame, or complete when the kill came after the footer.
		[ $rc = 0 ] || fail "$sig: report exit $rc: $(cat $t.report.err)"
		[ -z "$(cat $t.report.err)" ] || grep -q 'warning: trace cut off' $t.report.err \
			|| fail "$sig: $(cat $t.report.err)"
	else
		[ $rrc = 0 ] || fail "$sig: record exit $rrc: $(cat $t.err)"
		[ $rc = 0 ] && [ -z "$(cat $t.report.err)" ] || fail "$sig: report exit $rc: $(cat $t.report.err)"
		grep -q '"dropped": 0,' $t.json || fail "$sig: footer missing or drops"
	fi
done
"#,
    )
}

/// `seconds` of mixed DAX workloads under `refwatch record`, sampling its RSS every 5 s: no
/// event dropped, a trace that reads clean, and RSS flat (the last sample at most 25% + 4 MiB
/// above the first one after a 20 s warm-up).
pub fn soak_script(seconds: u64) -> String {
    script(&format!(
        r#"
refwatch record -o /out/soak.rft -d {seconds} 2> /out/record.err & p=$!
wait_for /out/soak.rft
( while kill -0 $p 2>/dev/null; do
	for w in fsdax-mmap fsdax-gup fsdax-truncate fsdax-pmd; do kill -0 $p 2>/dev/null && daxload $w > /dev/null; done
done ) &
while kill -0 $p 2>/dev/null; do
	grep VmRSS /proc/$p/status 2>/dev/null | awk -v t=$(cut -d. -f1 /proc/uptime) '{{print t, $2}}' >> /out/rss.txt
	sleep 5
done
wait $p; rc=$?
[ $rc = 0 ] || fail "record exit $rc: $(cat /out/record.err)"
wait
events /out/soak.rft
[ $rc = 0 ] && [ -z "$(cat /out/soak.rft.report.err)" ] || fail "report exit $rc: $(cat /out/soak.rft.report.err)"
grep -q '"dropped": 0,' /out/soak.rft.json || fail "events dropped: $(grep dropped /out/soak.rft.json)"
echo "soak: $n events; RSS samples (uptime, KiB):"; cat /out/rss.txt
awk 'NR == 1 {{ t0 = $1 }} !base && $1 - t0 >= 20 {{ base = $2 }} {{ last = $2 }}
	END {{ if (!base) {{ print "FAIL: no RSS sample after the warm-up"; exit 1 }}
	       if (last > base * 1.25 + 4096) {{ printf "FAIL: RSS grew from %d to %d KiB\n", base, last; exit 1 }} }}' /out/rss.txt || failed=1
"#
    ))
}

fn soak_short() -> String {
    soak_script(60)
}

pub const SCRIPT_CASES: &[ScriptCase] = &[
    ScriptCase {
        kernel: "5.10",
        name: "verifier",
        script: verifier,
    },
    ScriptCase {
        kernel: "6.1",
        name: "verifier",
        script: verifier,
    },
    ScriptCase {
        kernel: "6.12",
        name: "verifier",
        script: verifier,
    },
    ScriptCase {
        kernel: "7.2",
        name: "verifier",
        script: verifier,
    },
    ScriptCase {
        kernel: "7.3",
        name: "verifier",
        script: verifier,
    },
    ScriptCase {
        kernel: "6.1",
        name: "drops-inconclusive",
        script: drops_inconclusive,
    },
    ScriptCase {
        kernel: "6.1",
        name: "env-no-btf",
        script: no_btf,
    },
    ScriptCase {
        kernel: "6.1",
        name: "env-no-tracefs",
        script: no_tracefs,
    },
    ScriptCase {
        kernel: "6.1",
        name: "env-two-instances",
        script: two_instances,
    },
    ScriptCase {
        kernel: "6.1",
        name: "env-unknown-release",
        script: unknown_release,
    },
    ScriptCase {
        kernel: "6.1",
        name: "signals",
        script: signals,
    },
    ScriptCase {
        kernel: "6.1",
        name: "ci-options",
        script: ci_options,
    },
    ScriptCase {
        kernel: "6.1",
        name: "hostile-names",
        script: hostile_names,
    },
    ScriptCase {
        kernel: "7.3",
        name: "soak-1min",
        script: soak_short,
    },
];

/// Runs one script case in a VM with `timeout`: the guest's stdout, or the reasons it failed.
pub fn run_script(
    case: &ScriptCase,
    script: &str,
    timeout: std::time::Duration,
    kernel: &Kernel,
    assets: &Assets,
) -> Result<String, Vec<String>> {
    let job = GuestJob {
        argv: vec!["sh".into(), "-c".into(), script.to_owned()],
        timeout: Some(timeout),
        ..GuestJob::default()
    };
    let label = format!("matrix-{}", case.id().replace('/', "-"));
    let result = run_in_vm(kernel, assets, &job, &label).map_err(|e| vec![format!("{e:#}")])?;
    let stdout = String::from_utf8_lossy(&result.stdout);
    if result.exit_code == 0 {
        return Ok(stdout.into_owned());
    }
    let mut reasons: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .map(str::to_owned)
        .collect();
    reasons.push(format!(
        "exit status {} (stderr: {}; out: {}; console: {})",
        result.exit_code,
        last_lines(&String::from_utf8_lossy(&result.stderr), 5),
        result.out_dir.display(),
        result.console_log.display()
    ));
    Err(reasons)
}

impl VmCase for ScriptCase {
    fn id(&self) -> String {
        format!("{}/{}", self.kernel, self.name)
    }
    fn kernel(&self) -> &'static str {
        self.kernel
    }
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        // Each script is well under a minute of guest time (the soak: 60 s) plus the boot.
        run_script(
            self,
            &(self.script)(),
            std::time::Duration::from_secs(240),
            kernel,
            assets,
        )
        .map(drop)
    }
}
