//! `--watch`: a hardware breakpoint on the refwatch_inject module's page 0 while a scenario
//! runs must report the page's refcount changes, the ones no probe sees (inline in the module)
//! too, each with a kernel stack through the module.

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

pub struct Case {
    pub kernel: &'static str,
    pub scenario: &'static str,
}

/// QEMU's TCG emulates the debug registers, so the guest has its four breakpoint slots.
pub static CASES: [Case; 4] = [
    Case {
        kernel: "6.1",
        scenario: "put-underflow",
    },
    Case {
        kernel: "6.1",
        scenario: "get-from-zero",
    },
    Case {
        kernel: "7.3-src",
        scenario: "put-underflow",
    },
    Case {
        kernel: "7.3-src",
        scenario: "get-from-zero",
    },
];

impl VmCase for Case {
    fn id(&self) -> String {
        format!("{}/watch-{}", self.kernel, self.scenario)
    }
    fn kernel(&self) -> &'static str {
        self.kernel
    }
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        let page0 = format!("{PAGE0:#x}");
        let job = Apt::new()
            .and_then(|apt| inject::build(kernel.spec, &apt))
            .map(|built| {
                inject::refwatch_job(
                    &built,
                    &["stream", "--json", "--watch", &page0],
                    self.scenario,
                    Attach::Auto,
                    Duration::from_secs(180),
                )
            });
        runner::run(&self.id(), kernel, assets, job, assess)
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
