//! Time to watching: from exec to the moment the command after `--` may start, for `refwatch
//! check` in each attach mode and for bpftrace with the same probes (`-c`), interleaved in one
//! boot; refwatch's own phase timings beside it (`REFWATCH_PHASES`).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use refwatch_common::startup::{PHASES_ENV, Phases};

use super::figures::{Attach, Startup, StartupTool};
use super::guest::{Bench, Measured};
use super::stats::median;
use crate::lab::GuestJob;

/// A tracer started under `benchload stamp`, whose command is `benchload stamp` too.
#[derive(Clone, Copy, PartialEq)]
enum Tracer {
    Refwatch(Attach),
    Bpftrace,
}

impl Tracer {
    fn name(self) -> String {
        match self {
            Tracer::Refwatch(mode) => format!("refwatch-{mode}"),
            Tracer::Bpftrace => "bpftrace".into(),
        }
    }

    /// The guest's command line; its output goes to /out/NAME-REP.txt.
    fn command(self, rep: impl std::fmt::Display) -> String {
        let name = self.name();
        match self {
            Tracer::Refwatch(mode) => format!(
                "{PHASES_ENV}=/out/{name}-{rep}.json benchload stamp \
                 refwatch check --attach {mode} -- benchload stamp > /out/{name}-{rep}.txt 2>&1"
            ),
            Tracer::Bpftrace => format!(
                "benchload stamp bpftrace -c 'benchload stamp' /bench/refwatch.bt \
                 > /out/{name}-{rep}.txt 2>&1"
            ),
        }
    }
}

pub fn startup(bench: &Bench, name: &str) -> Result<Startup> {
    let kernel = bench.kernel(name)?;
    let sizes = bench.sizes;
    let mut tracers = vec![
        Tracer::Refwatch(Attach::Kprobe),
        Tracer::Refwatch(Attach::Fentry),
    ];
    let mut files = Vec::new();
    let bpftrace_reason = match bench.bpftrace_job_files(name)? {
        Ok(f) => {
            files = f;
            tracers.push(Tracer::Bpftrace);
            None
        }
        Err(reason) => Some(reason),
    };
    // A first start of each warms the page cache (binaries, BTF) and is not counted.
    let mut script = String::from("cd /tmp\n");
    for t in &tracers {
        writeln!(script, "{}", t.command("warm"))?;
    }
    for rep in 0..sizes.startup_reps {
        // Rotated, so no tracer always follows the same one.
        for i in 0..tracers.len() {
            writeln!(
                script,
                "{}",
                tracers[(i + rep) % tracers.len()].command(rep)
            )?;
        }
    }
    writeln!(script, "exit 0")?;
    let job = GuestJob {
        files,
        timeout: Some(Duration::from_secs(1800)),
        ..GuestJob::default()
    };
    let Measured {
        out,
        host_other_cores,
    } = bench.measure(&kernel, &script, job, &format!("startup-{name}"))?;
    let tools = tracers
        .iter()
        .map(|&t| measured(t, &out, sizes.startup_reps))
        .chain(bpftrace_reason.map(|reason| StartupTool {
            tool: "bpftrace -c".into(),
            attach: None,
            ready_ms: Vec::new(),
            median_ms: None,
            phases: None,
            error: Some(reason),
        }))
        .collect();
    Ok(Startup {
        kernel: kernel.spec.release.to_owned(),
        repetitions: sizes.startup_reps,
        host_other_cores,
        tools,
        target: "refwatch below bpftrace".into(),
    })
}

/// One tracer's repetitions: the two stamps of each (before exec, the command's start).
fn measured(t: Tracer, out: &Path, reps: usize) -> StartupTool {
    let mut ready_ms = Vec::new();
    let mut phases = Vec::new();
    let mut error = None;
    for rep in 0..reps {
        let text = std::fs::read_to_string(out.join(format!("{}-{rep}.txt", t.name())))
            .unwrap_or_default();
        let stamps: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("stamp seconds=")?.trim().parse().ok())
            .collect();
        match stamps[..] {
            [exec, ready, ..] => ready_ms.push((ready - exec) * 1e3),
            _ => {
                error.get_or_insert_with(|| {
                    let tail: Vec<&str> = text.lines().rev().take(3).collect();
                    format!("repetition {rep}: {}", tail.join("; "))
                });
            }
        }
        let json = std::fs::read_to_string(out.join(format!("{}-{rep}.json", t.name())));
        if let Some(p) = json.ok().and_then(|j| serde_json::from_str(&j).ok()) {
            phases.push(p);
        }
    }
    let (tool, attach) = match t {
        Tracer::Refwatch(mode) => ("refwatch check", Some(mode)),
        Tracer::Bpftrace => ("bpftrace -c", None),
    };
    StartupTool {
        tool: tool.into(),
        attach,
        median_ms: median(ready_ms.clone()),
        ready_ms,
        phases: median_phases(&phases),
        error,
    }
}

/// The median of each phase over the repetitions (the slowest program: the first one's).
fn median_phases(runs: &[Phases]) -> Option<Phases> {
    let first = *runs.first()?;
    let fields: [fn(&mut Phases) -> &mut f64; 7] = [
        |p| &mut p.kallsyms_ms,
        |p| &mut p.btf_ms,
        |p| &mut p.aya_load_ms,
        |p| &mut p.aya_btf_ms,
        |p| &mut p.verify_ms,
        |p| &mut p.attach_ms,
        |p| &mut p.open_ms,
    ];
    let mut out = first;
    for field in fields {
        let values = runs.iter().map(|p| *field(&mut p.clone())).collect();
        *field(&mut out) = median(values).unwrap_or(0.0);
    }
    Some(out)
}
