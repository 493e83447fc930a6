//! `cargo xtask debug-kernel`: what the kernel's own debugging says of each injected and real
//! bug, beside what refwatch says of it on the same source built without that debugging.
//!
//! "Why not boot a debug kernel?" is a fair question: CONFIG_DEBUG_VM turns the refcount
//! assertions on (VM_BUG_ON_FOLIO in folio_get and put_page_testzero, the checks of
//! free_zone_device_folio), CONFIG_DEBUG_PAGE_REF adds the page_ref_* tracepoints, and
//! PAGE_OWNER the allocation stacks that bad_page prints. Each scenario boots twice: on the
//! plain kernel under `refwatch check`, and on the debug build of the same source alone, with
//! the page_ref tracepoints enabled on the scenario's pfns and every kernel message on the
//! console. The tables are measured, not asserted: like the bench they are a comparison, not a
//! CI gate.

use std::fmt::Write as _;
use std::ops::Range;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::bugs::{self, Verdict};
use super::device_memory::Memory;
use super::guest::COMMAND_STARTED;
use super::{Apt, Assets, GuestJob, Kernel, inject, kernel, private, run_in_vm};

/// A kernel refwatch runs on, and the same source built with the debug options.
struct Pair {
    plain: &'static str,
    debug: &'static str,
    /// Debian's kernel whose real-bug cases (lab/bugs.rs) share this source.
    real_bugs_of: &'static str,
    /// The test modules' scenarios run here too (they need a build with DEVICE_PRIVATE).
    injected: bool,
}

const PAIRS: [Pair; 2] = [
    Pair {
        plain: "7.3-src",
        debug: "7.3-src-debug",
        real_bugs_of: "7.3",
        injected: true,
    },
    // For the real bugs 7.3 no longer has (truncate-busy, fixed in 6.15): refwatch on Debian's
    // own 6.12 binary, the debug build from the same 6.12.95 source.
    Pair {
        plain: "6.12",
        debug: "6.12-src-debug",
        real_bugs_of: "6.12",
        injected: false,
    },
];

/// Where a device-private pgmap lands: `request_free_mem_region` takes free physical address
/// space from the top down, far above the guest's RAM and pmem (256 GiB and up).
const PRIVATE_PFNS: Range<u64> = (1 << 26)..(1 << 40);
/// Everything on the console (the lab's own loglevel hides warnings), and the allocation
/// stacks PAGE_OWNER keeps only when asked.
const DEBUG_CMDLINE: &[&str] = &["loglevel=8", "page_owner=on"];
/// One boot: the module's or reproducer's few seconds, a debug kernel's slower boot.
const TIMEOUT: Duration = Duration::from_secs(240);

#[derive(clap::Args)]
pub struct DebugKernelArgs {
    /// Also write every row, with all the kernel said, as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Only the scenarios whose plain kernel and name (`7.3-src injected healthy`) contain
    /// this.
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
}

/// One bug (or the healthy control), as either kernel runs it.
enum Scenario {
    /// `inject SCENARIO` over the refwatch_inject module.
    Injected(&'static str),
    /// `privload SCENARIO` over the refwatch_private module (device-private pages).
    Private(private::Scenario),
    /// A real bug's reproducer (`daxload bug-*`), from the pair's row of the real-bug matrix.
    Real(&'static bugs::Case),
}

impl Scenario {
    fn all(pair: &Pair) -> Vec<Scenario> {
        let injected = inject::SCENARIOS
            .iter()
            .map(|s| Scenario::Injected(s))
            .chain(private::SCENARIOS.map(Scenario::Private))
            .filter(|_| pair.injected);
        let real = bugs::CASES
            .iter()
            .filter(|c| c.kernel == pair.real_bugs_of)
            .map(Scenario::Real);
        injected.chain(real).collect()
    }

    fn name(&self) -> String {
        match self {
            Scenario::Injected(s) => format!("injected {s}"),
            Scenario::Private(s) => format!("injected device-private {}", s.name()),
            Scenario::Real(case) => {
                let fs = if case.fs == bugs::Fs::Xfs {
                    " (xfs)"
                } else {
                    ""
                };
                format!("real {}{fs}", case.reproducer.join(" "))
            }
        }
    }

    /// The user-space command that does the bug.
    fn command(&self) -> String {
        match self {
            Scenario::Injected(s) => format!("inject {s}"),
            Scenario::Private(s) => format!("privload {}", s.name()),
            Scenario::Real(case) => format!("daxload {}", case.reproducer.join(" ")),
        }
    }

    fn pfns(&self) -> Range<u64> {
        match self {
            Scenario::Injected(_) => inject::PFNS,
            Scenario::Private(_) => PRIVATE_PFNS,
            Scenario::Real(case) => case.pfns(),
        }
    }

    /// What the real-bug matrix expects refwatch to say: the one fact the table takes from it.
    fn expected(&self) -> Option<Verdict> {
        match self {
            Scenario::Injected(_) | Scenario::Private(_) => None,
            Scenario::Real(case) => Some(case.verdict),
        }
    }

    fn job(&self, kernel: &Kernel, apt: &Apt, script: String) -> Result<GuestJob> {
        Ok(match self {
            Scenario::Injected(_) => {
                let built = inject::build(kernel.spec, apt)?;
                let argv = ["sh", "-c", &script].map(String::from).to_vec();
                GuestJob {
                    may_crash: true,
                    ..inject::module_job(&built, argv, TIMEOUT)
                }
            }
            Scenario::Private(_) => {
                let job = GuestJob {
                    argv: ["sh", "-c", &script].map(String::from).to_vec(),
                    may_crash: true,
                    timeout: Some(TIMEOUT),
                    ..GuestJob::default()
                };
                private::with_module(kernel, apt, Memory::Private, job)?
            }
            Scenario::Real(case) => case.job(script, TIMEOUT),
        })
    }
}

/// refwatch on the plain kernel: the command under `check`; the findings' kernel-log lines
/// reach the console as they are made.
fn plain_script(command: &str) -> String {
    format!(
        "refwatch check --json -- sh -c 'exec {command} > /out/command.log 2>&1' \
         > /out/check.json 2> /out/check.err\n"
    )
}

/// The debug kernel alone: the page_ref tracepoints on the scenario's pfns, counted (with the
/// ring's overruns) once the command is done, when the kernel survives it.
fn debug_script(command: &str, pfns: &Range<u64>) -> String {
    format!(
        r#"
t=/sys/kernel/tracing
echo 65536 > $t/buffer_size_kb
echo 'pfn >= {lo} && pfn < {hi}' > $t/events/page_ref/filter
echo 1 > $t/events/page_ref/enable
sh -c 'exec {command}' > /out/command.log 2>&1
echo 0 > $t/events/page_ref/enable
cat $t/per_cpu/cpu*/stats | awk '/^(entries|overrun):/ {{ n += $2 }} END {{ print n }}' \
    > /out/page_ref.count
"#,
        lo = pfns.start,
        hi = pfns.end,
    )
}

/// What the kernel printed of its own after the command started.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
struct KernelSaid {
    /// Each report's first line (WARNING, kernel BUG, Bad page, an oops), in order.
    reports: Vec<Report>,
    /// `page dumped because: …` lines: the failed assertion of a VM_BUG_ON_PAGE/FOLIO.
    dumped_because: Vec<String>,
    /// refwatch's kernel-log lines (`refwatch: RULE pfn …`), on the plain kernel.
    refwatch: Vec<String>,
    /// Whether refwatch's first line came before the kernel's first report.
    refwatch_first: bool,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
struct Report {
    kind: ReportKind,
    line: String,
    /// The function the report was raised in (its `RIP:` line), where it printed one.
    at: Option<String>,
    /// The task that was running (the `Comm:` of its CPU line).
    task: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum ReportKind {
    Warning,
    Bug,
    BadPage,
    Oops,
}

impl ReportKind {
    fn of(line: &str) -> Option<Self> {
        [
            ("WARNING:", ReportKind::Warning),
            ("kernel BUG at", ReportKind::Bug),
            ("BUG: Bad page", ReportKind::BadPage),
            ("BUG: unable to handle", ReportKind::Oops),
            ("general protection fault", ReportKind::Oops),
        ]
        .into_iter()
        .find_map(|(marker, kind)| line.contains(marker).then_some(kind))
    }

    fn as_str(self) -> &'static str {
        match self {
            ReportKind::Warning => "WARNING",
            ReportKind::Bug => "kernel BUG",
            ReportKind::BadPage => "Bad page",
            ReportKind::Oops => "oops",
        }
    }
}

/// Reads the console from the command's start on.
fn read_console(console: &str) -> KernelSaid {
    let lines: Vec<&str> = console
        .lines()
        .skip_while(|l| !l.contains(COMMAND_STARTED))
        .map(strip_timestamp)
        .collect();
    let mut said = KernelSaid::default();
    let mut first_report = None;
    let mut first_refwatch = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(kind) = ReportKind::of(line) {
            first_report.get_or_insert(i);
            // The RIP and Comm lines follow within the report's first dozen lines.
            let after = &lines[i + 1..lines.len().min(i + 40)];
            said.reports.push(Report {
                kind,
                line: line.to_string(),
                at: after
                    .iter()
                    .find_map(|l| l.split_once("RIP: 0010:").map(|(_, f)| symbol(f))),
                task: std::iter::once(line)
                    .chain(after)
                    .find_map(|l| l.split_once(" Comm: ").map(|(_, c)| word(c))),
            });
        } else if let Some((_, why)) = line.split_once("page dumped because: ") {
            said.dumped_because.push(why.to_string());
        } else if line.starts_with("refwatch: ") {
            first_refwatch.get_or_insert(i);
            said.refwatch.push(line.to_string());
        }
    }
    said.refwatch_first = match (first_refwatch, first_report) {
        (Some(r), Some(k)) => r < k,
        (Some(_), None) => true,
        (None, _) => false,
    };
    said
}

/// `[   12.345678] text` → `text`.
fn strip_timestamp(line: &str) -> &str {
    match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
        Some((_, rest)) => rest,
        None => line,
    }
}

/// `free_zone_device_folio+0x1c/0x90` → `free_zone_device_folio`.
fn symbol(text: &str) -> String {
    word(text).split('+').next().unwrap_or_default().to_string()
}

fn word(text: &str) -> String {
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// One row of the table.
#[derive(Serialize)]
struct Row {
    scenario: String,
    plain_kernel: &'static str,
    debug_kernel: &'static str,
    refwatch: Side,
    debug: Side,
    /// page_ref events on the scenario's pfns on the debug kernel; None when the guest did not
    /// survive the command to count them.
    page_ref_events: Option<u64>,
    /// For real bugs: what the real-bug matrix expects of refwatch.
    expected: Option<String>,
}

#[derive(Serialize)]
struct Side {
    said: KernelSaid,
    /// The guest hung or died after the command started.
    crashed: bool,
    /// `check`'s findings by rule, on the plain kernel; None where its JSON never got out.
    findings: Option<Vec<(String, u64)>>,
}

pub fn main(args: DebugKernelArgs) -> std::process::ExitCode {
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask debug-kernel: {err:#}");
            std::process::ExitCode::from(super::INFRA_FAILURE)
        }
    }
}

fn run(args: DebugKernelArgs) -> Result<()> {
    crate::setup::run()?;
    let apt = Apt::new()?;
    let assets = Assets::build()?;
    let mut rows = Vec::new();
    for pair in &PAIRS {
        let scenarios: Vec<_> = Scenario::all(pair)
            .into_iter()
            .map(|s| (s.name(), s))
            .filter(|(name, _)| {
                let id = format!("{} {name}", pair.plain);
                args.filter.as_ref().is_none_or(|f| id.contains(f))
            })
            .collect();
        if scenarios.is_empty() {
            continue;
        }
        let plain = Kernel::fetch(kernel::spec(pair.plain)?, &apt)?;
        let debug = Kernel::fetch(kernel::spec(pair.debug)?, &apt)?;
        for (name, scenario) in scenarios {
            crate::cmd::note(format_args!("debug-kernel: {} {name}", pair.plain));
            let command = scenario.command();
            let refwatch = boot(
                &plain,
                &assets,
                &scenario.job(&plain, &apt, plain_script(&command))?,
            )?;
            let mut job = scenario.job(&debug, &apt, debug_script(&command, &scenario.pfns()))?;
            job.cmdline
                .extend(DEBUG_CMDLINE.iter().map(|w| w.to_string()));
            let (debug_side, page_ref_events) = boot_counting(&debug, &assets, &job)?;
            rows.push(Row {
                scenario: name,
                plain_kernel: pair.plain,
                debug_kernel: pair.debug,
                refwatch,
                debug: debug_side,
                page_ref_events,
                expected: scenario.expected().map(|v| match v {
                    Verdict::Flagged(rule) => rule.to_string(),
                    Verdict::Silent => "nothing".to_string(),
                }),
            });
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| path.display().to_string())?;
    }
    print!("{}", markdown(&rows));
    Ok(())
}

fn boot(kernel: &Kernel, assets: &Assets, job: &GuestJob) -> Result<Side> {
    Ok(boot_counting(kernel, assets, job)?.0)
}

/// Boots one job and reads what both the console and /out say.
fn boot_counting(kernel: &Kernel, assets: &Assets, job: &GuestJob) -> Result<(Side, Option<u64>)> {
    let label = format!("debug-kernel-{}-{}", kernel.spec.name, std::process::id());
    let result = run_in_vm(kernel, assets, job, &label)?;
    let console = std::fs::read_to_string(&result.console_log)
        .with_context(|| format!("reading {}", result.console_log.display()))?;
    let read = |name: &str| std::fs::read_to_string(result.out_dir.join(name)).ok();
    let findings = read("check.json")
        .and_then(|text| serde_json::from_str::<super::checked::Check>(&text).ok())
        .map(|check| check.findings_by_rule());
    let side = Side {
        said: read_console(&console),
        crashed: result.unfinished.is_some(),
        findings,
    };
    let count = read("page_ref.count").and_then(|n| n.trim().parse().ok());
    Ok((side, count))
}

/// The README's tables, one per pair of kernels.
fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let (plain, debug) = (row.plain_kernel, row.debug_kernel);
        if i == 0 || rows[i - 1].plain_kernel != plain {
            let _ = writeln!(
                out,
                "{}| scenario | refwatch on {plain} | {debug} says | page_ref events |\n\
                 |---|---|---|---|",
                if i == 0 { "" } else { "\n" }
            );
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.scenario,
            refwatch_cell(&row.refwatch),
            debug_cell(&row.debug),
            row.page_ref_events
                .map_or_else(|| "lost in the crash".to_string(), |n| n.to_string()),
        );
    }
    out
}

fn refwatch_cell(side: &Side) -> String {
    let mut cell = if let Some(findings) = side.findings.as_ref().filter(|f| !f.is_empty()) {
        findings
            .iter()
            .map(|(rule, n)| format!("{rule} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    } else if !side.said.refwatch.is_empty() {
        // The guest died before check's JSON got out: its kernel-log lines remain.
        let mut rules: Vec<&str> = side
            .said
            .refwatch
            .iter()
            .filter_map(|l| l.strip_prefix("refwatch: ")?.split_whitespace().next())
            .collect();
        rules.dedup();
        rules.join(", ")
    } else if side.findings.is_some() {
        "nothing".to_string()
    } else {
        "no verdict: check's JSON never got out".to_string()
    };
    if let Some(report) = side.said.reports.first() {
        let order = if side.said.refwatch_first {
            "before"
        } else {
            "after"
        };
        let _ = write!(
            cell,
            "; its log line {order} the kernel's {}",
            report.kind.as_str()
        );
    }
    cell
}

fn debug_cell(side: &Side) -> String {
    let mut parts: Vec<String> = side
        .said
        .reports
        .iter()
        .map(|r| {
            let at =
                r.at.as_deref()
                    .map(|f| format!(" in {f}"))
                    .unwrap_or_default();
            let task = r
                .task
                .as_deref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default();
            format!("{}{at}{task}", r.kind.as_str())
        })
        .collect();
    parts.dedup();
    parts.extend(side.said.dumped_because.iter().map(|w| format!("`{w}`")));
    if parts.is_empty() {
        parts.push("nothing".to_string());
    }
    if side.crashed {
        parts.push("the guest did not finish".to_string());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_bug_on_folio_is_read_with_its_assertion_function_and_task() {
        let console = "\
[    1.0] lab: running the command
[    2.1] refwatch: put-underflow pfn 0x60000 …
[    2.2] page: refcount:0 mapcount:0 mapping:0000000000000000 index:0x0 pfn:0x60000
[    2.2] page dumped because: VM_BUG_ON_FOLIO(folio_ref_count(folio) == 0)
[    2.2] ------------[ cut here ]------------
[    2.2] kernel BUG at include/linux/mm.h:1234!
[    2.3] Oops: invalid opcode: 0000 [#1] SMP NOPTI
[    2.3] CPU: 0 UID: 0 PID: 99 Comm: inject Not tainted 7.3.4-refwatch-debug #1
[    2.3] RIP: 0010:inj_put_underflow+0x4a/0x60 [refwatch_inject]
";
        let said = read_console(console);
        assert_eq!(said.reports.len(), 1);
        let report = &said.reports[0];
        assert_eq!(report.kind, ReportKind::Bug);
        assert_eq!(report.at.as_deref(), Some("inj_put_underflow"));
        assert_eq!(report.task.as_deref(), Some("inject"));
        assert_eq!(
            said.dumped_because,
            ["VM_BUG_ON_FOLIO(folio_ref_count(folio) == 0)"]
        );
        assert!(said.refwatch_first);
    }

    #[test]
    fn what_came_before_the_command_is_not_the_scenarios() {
        let console = "\
WARNING: CPU: 0 PID: 1 at boot.c:1 early+0x0/0x1
lab: running the command
lab: command exited 0
";
        assert_eq!(read_console(console), KernelSaid::default());
    }
}
