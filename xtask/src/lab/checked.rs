//! A workload run under `refwatch check --json` in the guest, and what its cases read back:
//! the guest script, check's JSON, and the judging every such case shares.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::runner::last_lines;
use super::{Attach, GuestJob, VmResult};

/// The guest script: `workload` (a shell command line) under `refwatch check --attach
/// $ATTACH`, its output in /out/workload.log and its status in /out/workload.rc, check's JSON,
/// stderr and status beside them. The workload's own status is kept out of check's verdict:
/// the case judges it apart, so that a workload failing on its own is never read as refwatch.
pub fn script(workload: &str) -> String {
    format!(
        r#"
refwatch check --json --attach "$ATTACH" -- \
    sh -c '{workload} > /out/workload.log 2>&1; echo $? > /out/workload.rc' \
    > /out/check.json 2> /out/check.err
echo $? > /out/check.rc
dmesg > /out/dmesg.txt
"#
    )
}

/// The guest job running `script(workload)`, with the attach mode and, for a workload that
/// takes one, its scenario in the environment (`$ATTACH`, `$SCENARIO`).
pub fn job(workload: &str, attach: Attach, scenario: Option<&str>, timeout: Duration) -> GuestJob {
    let mut env = vec![("ATTACH".into(), attach.as_str().into())];
    env.extend(scenario.map(|s| ("SCENARIO".into(), s.into())));
    GuestJob {
        argv: vec!["sh".into(), "-c".into(), script(workload)],
        env,
        timeout: Some(timeout),
        ..GuestJob::default()
    }
}

/// `refwatch check --json` (live or `--trace`), the fields the cases read.
#[derive(Deserialize)]
pub struct Check {
    pub attach: String,
    pub events: u64,
    /// None when unknown: `--trace` of a trace cut off before its footer.
    pub dropped: Option<u64>,
    pub findings_total: u64,
    pub rules: Vec<Rule>,
    pub findings: Vec<Finding>,
    pub pgmaps: Vec<Pgmap>,
    /// Entries of each attached function (absent from older traces).
    #[serde(default)]
    pub calls: BTreeMap<String, u64>,
}

/// One rule's line of the verdict: how many findings it made, and whether it could check.
#[derive(Deserialize)]
pub struct Rule {
    pub id: String,
    pub count: u64,
    pub state: String,
    pub reason: Option<String>,
}

#[derive(Deserialize)]
pub struct Finding {
    pub rule: String,
    pub pfn: u64,
    pub pgmap: FindingPgmap,
    #[serde(default)]
    pub stack: Vec<String>,
}

#[derive(Deserialize)]
pub struct FindingPgmap {
    #[serde(rename = "type")]
    pub type_name: String,
    pub start: Option<u64>,
    pub end: Option<u64>,
}

#[derive(Deserialize)]
pub struct Pgmap {
    #[serde(rename = "type")]
    pub type_name: String,
    pub pages_seen: u64,
    pub inserts: u64,
    pub gets: u64,
    pub puts: u64,
    pub frees: u64,
    pub unmaps: u64,
    pub mapped_pages: u64,
}

/// What the pgmaps of one type counted, summed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub pgmaps: usize,
    pub pages_seen: u64,
    pub inserts: u64,
    pub gets: u64,
    pub puts: u64,
    pub frees: u64,
}

impl Check {
    /// check's JSON in the file at `path`; Err names the file and what it holds at its end.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        serde_json::from_str(&text).map_err(|e| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            format!("{name}: {e} ({})", last_lines(&text, 3))
        })
    }

    pub fn counted(&self, type_name: &str) -> Counted {
        self.pgmaps
            .iter()
            .filter(|p| p.type_name == type_name)
            .fold(Counted::default(), |c, p| Counted {
                pgmaps: c.pgmaps + 1,
                pages_seen: c.pages_seen + p.pages_seen,
                inserts: c.inserts + p.inserts,
                gets: c.gets + p.gets,
                puts: c.puts + p.puts,
                frees: c.frees + p.frees,
            })
    }

    /// The rules that found something, with their counts.
    pub fn findings_by_rule(&self) -> Vec<(String, u64)> {
        self.rules
            .iter()
            .filter(|r| r.count > 0)
            .map(|r| (r.id.clone(), r.count))
            .collect()
    }

    /// One counter of every pgmap, summed.
    pub fn total(&self, counter: impl Fn(&Pgmap) -> u64) -> u64 {
        self.pgmaps.iter().map(counter).sum()
    }

    /// Every finding, one line each, for a failure message.
    pub fn describe_findings(&self) -> String {
        self.findings
            .iter()
            .map(|f| {
                format!(
                    "{} at pfn {:#x} ({}; {})",
                    f.rule,
                    f.pfn,
                    f.pgmap.type_name,
                    f.stack.join(" < ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Counted {
    /// One line per counter of `self` (the pgmaps of type `type_name`) below `want`'s.
    pub fn shortfalls(&self, want: &Counted, type_name: &str) -> Vec<String> {
        [
            ("pgmaps", self.pgmaps as u64, want.pgmaps as u64),
            ("pages seen", self.pages_seen, want.pages_seen),
            ("inserts", self.inserts, want.inserts),
            ("gets", self.gets, want.gets),
            ("puts", self.puts, want.puts),
            ("frees", self.frees, want.frees),
        ]
        .into_iter()
        .filter(|(_, got, want)| got < want)
        .map(|(what, got, want)| format!("{type_name} pgmaps: {what} {got}, expected ≥ {want}"))
        .collect()
    }
}

/// The one finding an injected bug must give: its rule, on a page of a pgmap of `type_name`,
/// with `frame` (a function of `module`, gcc may split it into `.cold`) on its stack.
pub struct Injected {
    pub rule: &'static str,
    pub type_name: &'static str,
    pub frame: &'static str,
    pub module: &'static str,
}

/// Whether the stack line `line` is in `frame`, a function of `module`: gcc may split it, as
/// in `inj_put_underflow.cold+0x38/0x5d [refwatch_inject]`.
pub fn in_frame(line: &str, frame: &str, module: &str) -> bool {
    line.strip_prefix(frame)
        .is_some_and(|rest| rest.starts_with('+') || rest.starts_with(".cold+"))
        && line.ends_with(&format!("[{module}]"))
}

impl Check {
    /// Why the run itself is not what was asked: another attach mode, dropped events.
    pub fn judge_run(&self, attach: Attach) -> Vec<String> {
        let mut failures = Vec::new();
        // fentry mode keeps a kprobe where fentry cannot go (the caller-filtered unmap probe on
        // vm_normal_page): "fentry+kprobe".
        if !self.attach.split('+').any(|m| m == attach.as_str()) {
            failures.push(format!(
                "attached with {}, asked for {}",
                self.attach,
                attach.as_str()
            ));
        }
        match self.dropped {
            Some(0) => {}
            Some(n) => failures.push(format!("{n} of {} events dropped", self.events)),
            None => failures.push("drops unknown".into()),
        }
        // fentry programs and trampolines are frames of the stacks they take: refwatch drops
        // them by their kallsyms module, read after attaching.
        if let Some(own) = self
            .findings
            .iter()
            .flat_map(|f| &f.stack)
            .find(|s| s.ends_with("[bpf]"))
        {
            failures.push(format!("refwatch's own frame on a finding's stack: {own}"));
        }
        failures
    }

    /// None on a healthy run (`injected` None), else why the findings are not what was asked.
    pub fn judge_findings(&self, injected: Option<&Injected>) -> Option<String> {
        let Some(want) = injected else {
            return (self.findings_total > 0).then(|| {
                format!(
                    "{} finding(s) on a healthy kernel: {}",
                    self.findings_total,
                    self.describe_findings()
                )
            });
        };
        let right = |f: &Finding| {
            f.rule == want.rule
                && f.pgmap.type_name == want.type_name
                && f.stack.iter().any(|s| in_frame(s, want.frame, want.module))
        };
        (self.findings_total != 1 || !self.findings.iter().all(right)).then(|| {
            format!(
                "expected one {} finding on a {} page with {} [{}] on its stack, got {}: {}",
                want.rule,
                want.type_name,
                want.frame,
                want.module,
                self.findings_total,
                self.describe_findings()
            )
        })
    }
}

/// What came back from the guest.
pub struct Outcome {
    pub failures: Vec<String>,
    pub check: Option<Check>,
    /// The workload's output and exit status (as text).
    pub log: String,
    pub status: String,
}

/// What a case of a workload that ends by saying it is done asks of its run.
pub struct Expect {
    /// The workload as a failure names it (`p2pload healthy`), and the line its output has
    /// when it did its part.
    pub workload: String,
    pub done: String,
    /// The one finding an injected bug must give; None: a healthy run, no finding.
    pub injected: Option<Injected>,
    /// The type of the workload's pgmaps, and what their counters must reach at least.
    pub type_name: &'static str,
    pub at_least: Counted,
}

/// Judges such a case: check's run, the workload's own status, the findings and the counters.
/// check exits 1 on an injected bug, 0 on a healthy run.
pub fn assess(result: &VmResult, attach: Attach, expect: &Expect) -> Vec<String> {
    let want_status = if expect.injected.is_some() { "1" } else { "0" };
    let outcome = read(result, attach, want_status);
    let mut failures = outcome.failures;
    if outcome.status != "0" || !outcome.log.contains(&expect.done) {
        failures.push(format!(
            "{} failed on its own (status {}): {}",
            expect.workload,
            outcome.status,
            last_lines(&outcome.log, 3)
        ));
    }
    if let Some(check) = outcome.check {
        failures.extend(check.judge_findings(expect.injected.as_ref()));
        failures.extend(
            check
                .counted(expect.type_name)
                .shortfalls(&expect.at_least, expect.type_name),
        );
    }
    failures
}

/// Reads /out: check's exit status against `want_status`, its JSON, the attach mode it used
/// and its drops. The workload's own output and status are left to the case.
pub fn read(result: &VmResult, attach: Attach, want_status: &str) -> Outcome {
    let out = &result.out_dir;
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let mut failures = Vec::new();
    let status = read("check.rc");
    if status.trim() != want_status {
        failures.push(format!(
            "check exit {}, expected {want_status}: {}",
            status.trim(),
            last_lines(&read("check.err"), 3)
        ));
    }
    let check = match Check::read(&out.join("check.json")) {
        Ok(check) => Some(check),
        Err(e) => {
            failures.push(e);
            None
        }
    };
    if let Some(check) = &check {
        failures.extend(check.judge_run(attach));
    }
    Outcome {
        failures,
        check,
        log: read("workload.log"),
        status: read("workload.rc").trim().to_owned(),
    }
}
