//! Watchpoints: a hardware breakpoint on the refwatch_inject module's page 0 while a scenario
//! runs must report the page's refcount changes, the ones no probe sees (inline in the module)
//! too, each with a kernel stack through the module. Asked for with `--watch`, or armed by
//! refwatch itself on the page of a finding.

use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::inject::{self, PFNS};
use super::runner::{self, VmCase, last_lines};
use super::{Apt, Assets, Attach, Kernel, VmResult};

/// The module's page 0, which every scenario maps and works on.
const PAGE0: u64 = PFNS.start;
/// The module's source functions: a frame of one is `name+0x…/0x… [refwatch_inject]`.
const MODULE: &str = "[refwatch_inject]";

/// How page 0 comes to be watched.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Arming {
    /// `refwatch stream --watch PAGE0`.
    Asked,
    /// `refwatch record` alone: refwatch arms the page when the scenario's finding is made.
    Auto,
}

pub struct Case {
    pub kernel: &'static str,
    pub scenario: &'static str,
    pub arming: Arming,
}

const fn case(kernel: &'static str, scenario: &'static str, arming: Arming) -> Case {
    Case {
        kernel,
        scenario,
        arming,
    }
}

/// QEMU's TCG emulates the debug registers, so the guest has its four breakpoint slots. The
/// auto cases need a write of page 0 after the finding: inject's restore of the count
/// (`set_page_count`, inline in the module) is one in each of them (not on 7.x's
/// insert-zero-ref, whose page stays at 0).
pub static CASES: [Case; 10] = [
    case("6.1", "put-underflow", Arming::Asked),
    case("6.1", "get-from-zero", Arming::Asked),
    case("6.12", "put-underflow", Arming::Asked),
    case("6.12", "get-from-zero", Arming::Auto),
    case("7.3-src", "put-underflow", Arming::Asked),
    case("7.3-src", "get-from-zero", Arming::Asked),
    case("6.1", "get-from-zero", Arming::Auto),
    case("6.1", "insert-zero-ref", Arming::Auto),
    case("7.3-src", "get-from-zero", Arming::Auto),
    case("7.3-src", "put-underflow", Arming::Auto),
];

/// How long inject waits after the finding before it restores the page: refwatch reads the
/// event, makes the finding and arms the breakpoint in well under this even under TCG.
const AUTO_GRACE_MS: u32 = 3000;

impl VmCase for Case {
    fn id(&self) -> String {
        match self.arming {
            Arming::Asked => format!("{}/watch-{}", self.kernel, self.scenario),
            Arming::Auto => format!("{}/watch-auto-{}", self.kernel, self.scenario),
        }
    }
    fn kernel(&self) -> &'static str {
        self.kernel
    }
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        let built = Apt::new()
            .and_then(|apt| inject::build(kernel.spec, &apt))
            .map_err(|e| vec![format!("{e:#}")])?;
        let timeout = Duration::from_secs(180);
        match self.arming {
            Arming::Asked => {
                let page0 = format!("{PAGE0:#x}");
                let job = inject::refwatch_job(
                    &built,
                    &["stream", "--json", "--watch", &page0],
                    self.scenario,
                    Attach::Auto,
                    timeout,
                );
                runner::run(&self.id(), kernel, assets, Ok(job), assess)
            }
            Arming::Auto => {
                let job = inject::module_job(&built, auto_script(self.scenario), timeout);
                runner::run(&self.id(), kernel, assets, Ok(job), |r| self.assess_auto(r))
            }
        }
    }
}

/// `refwatch record` without `--watch` over the scenario (waiting after its wrong step), then
/// page 0's story from the trace.
fn auto_script(scenario: &str) -> Vec<String> {
    let script = format!(
        "refwatch record -o /out/trace.rwt -- sh -c \
           'exec inject -w {AUTO_GRACE_MS} {scenario} > /out/inject.log 2>&1' 2> /out/record.err
         echo $? > /out/record.rc
         refwatch report /out/trace.rwt --json --page {PAGE0:#x} \
         > /out/page.json 2> /out/report.err"
    );
    vec!["sh".into(), "-c".into(), script]
}

/// An event of `report --page --json`.
#[derive(Deserialize)]
struct Entry {
    kind: String,
    #[serde(default)]
    findings: Vec<String>,
    #[serde(default)]
    stack: Vec<String>,
}

#[derive(Deserialize)]
struct Story {
    entries: Vec<Entry>,
}

impl Case {
    /// refwatch said it armed page 0 for the scenario's finding and released it later; page
    /// 0's story has the finding, then watch events with stacks, one written by the module.
    fn assess_auto(&self, result: &VmResult) -> Vec<String> {
        let read =
            |name: &str| std::fs::read_to_string(result.out_dir.join(name)).unwrap_or_default();
        let record_err = read("record.err");
        let mut failures = Vec::new();
        if read("record.rc").trim() != "0" {
            failures.push(format!(
                "record exit {:?}: {}",
                read("record.rc").trim(),
                last_lines(&record_err, 3)
            ));
        }
        let armed = format!(
            "watching pfn {PAGE0:#x}'s refcount (finding {})",
            self.scenario
        );
        let released = format!("pfn {PAGE0:#x}'s breakpoint released");
        for line in [&armed, &released] {
            if !record_err.contains(line.as_str()) {
                failures.push(format!(
                    "record's stderr lacks {line:?}: {}",
                    last_lines(&record_err, 5)
                ));
            }
        }
        let stories: Vec<Story> = match serde_json::from_str(&read("page.json")) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("page.json: {e}: {}", read("report.err").trim()));
                return failures;
            }
        };
        let entries = stories
            .into_iter()
            .flat_map(|s| s.entries)
            .collect::<Vec<_>>();
        let found = entries
            .iter()
            .position(|e| e.findings.iter().any(|f| f == self.scenario));
        let watched: Vec<&Entry> = match found {
            Some(i) => entries[i..].iter().filter(|e| e.kind == "watch").collect(),
            None => {
                failures.push(format!(
                    "page {PAGE0:#x}'s story has no {} finding",
                    self.scenario
                ));
                Vec::new()
            }
        };
        if watched.is_empty() {
            failures.push(format!(
                "no watch event on page {PAGE0:#x} after the finding"
            ));
        }
        if watched.iter().any(|e| e.stack.is_empty()) {
            failures.push("a watch event without a stack".into());
        }
        if !watched
            .iter()
            .any(|e| e.stack.first().is_some_and(|f| f.ends_with(MODULE)))
        {
            failures.push("no watch event written inline by the module (its restore)".into());
        }
        if !failures.is_empty() {
            failures.push(format!("console {}", result.console_log.display()));
        }
        failures
    }
}

/// The fields of `refwatch stream --json` lines the assertions read.
#[derive(Deserialize)]
struct Line {
    kind: String,
    pfn: Option<u64>,
    #[serde(default)]
    stack: Vec<String>,
}

/// Watch events on page 0, every one with a stack, and at least one written by the module's
/// own code (its innermost frame is the module's: an inline change). Not every write is on the
/// module's behalf: from 6.15 `inject`'s own munmap puts the page too.
fn assess(result: &VmResult) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&result.stdout);
    let watched: Vec<Line> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.kind == "watch" && l.pfn == Some(PAGE0))
        .collect();
    let stderr = String::from_utf8_lossy(&result.stderr);
    let mut failures = Vec::new();
    if watched.is_empty() {
        failures.push(format!(
            "no watch event on pfn {PAGE0:#x}; exit {}; stderr: {}",
            result.exit_code,
            last_lines(&stderr, 5)
        ));
    }
    let without_stack = watched.iter().filter(|l| l.stack.is_empty()).count();
    if without_stack > 0 {
        failures.push(format!(
            "{without_stack} of {} watch events without a stack",
            watched.len()
        ));
    }
    if !watched
        .iter()
        .any(|l| l.stack.first().is_some_and(|f| f.ends_with(MODULE)))
    {
        failures.push("no watch event written inline by the module".into());
    }
    failures
}
