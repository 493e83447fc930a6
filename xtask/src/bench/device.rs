//! Device events: the fsdax fault + GUP pin storm (`benchload storm`) and fio's mmap engine on
//! /mnt/dax, untraced, under `refwatch record` and `refwatch check` in each attach mode, under
//! bpftrace printing each event and under `perf record` on the same functions (each with and
//! without stacks), and under empty programs on them (the floor), interleaved in one boot.
//! Ratios of median rounds in guest instructions on the workload's vCPU (insncount plugin)
//! and what each tracer delivered; then the storm with smaller and smaller rings.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use super::figures::{
    Attach, Delivered, Device, DeviceLoad, DeviceTracer, DeviceVariant, Storm, TARGETS, Workload,
};
use super::guest::{self, Bench, Measured, fields, trace_stats};
use super::insns::{self, Counted, Rounds};
use super::stats::median;
use crate::lab::GuestJob;

/// Ring sizes tried, largest first, until drops appear.
const RINGS_KIB: &[u32] = &[4096, 256, 64, 16, 4];

/// The traces kept from the device boot (the trace-size figure reads them).
pub const TRACES: &[&str] = &["storm-kprobe.rwt", "storm-fentry.rwt", "gup.rwt"];

/// What a marked round was.
type Round = (DeviceVariant, Workload);

pub fn device(bench: &Bench, name: &str) -> Result<Device> {
    let kernel = bench.kernel(name)?;
    let sizes = bench.sizes;
    let label = format!("device-{name}");
    // On one vCPU, as the hot path: the instructions judged are that vCPU's.
    let storm = format!(
        "taskset -c 1 benchload storm {} {}",
        sizes.storm_passes, sizes.storm_mib
    );
    let fio = format!(
        "taskset -c 1 benchload run fio --name=dax --filename=/mnt/dax/fio --ioengine=mmap \
         --rw=randrw --bs=4k --size={}M --io_size={}M --output=/tmp/fio.txt",
        sizes.fio_mib, sizes.fio_io_mib
    );
    // The reference recording and fio's first run are marked before the rounds.
    let warmup_rounds = 2;
    let mut script = guest::script(include_str!("../../lab/scripts/bench-device.sh"))
        .replace("STORM", &storm)
        .replace("FIO", &fio);
    let variants = DeviceVariant::ALL;
    for rep in 0..sizes.reps {
        for work in Workload::ALL {
            // Rotate the order each repetition so no variant always runs first.
            for i in 0..variants.len() {
                let v = variants[(i + rep) % variants.len()];
                writeln!(script, "run {} {rep} {}", v.name(), work.name())?;
            }
        }
    }
    // Then smaller and smaller rings until events are dropped (marked too, after the rounds),
    // and a GUP trace for the trace-size figure.
    for kib in RINGS_KIB {
        writeln!(
            script,
            "refwatch record -o /out/ring-{kib}.rwt --attach kprobe --ring-kib {kib} -- {storm} \
             > /out/ring-{kib}.txt 2>&1"
        )?;
    }
    writeln!(
        script,
        "refwatch record -o /out/gup.rwt --attach kprobe -- daxload fsdax-gup > /out/gup.txt 2>&1"
    )?;
    writeln!(script, "exit 0")?;

    let mut files = vec![(
        bench.tool.to_owned(),
        "/usr/local/bin/bench_tool".to_owned(),
    )];
    let mut tool_errors = BTreeMap::new();
    for (variants, tool) in [
        (&[][..], &guest::FIO),
        (
            &[
                DeviceVariant::Bpftrace,
                DeviceVariant::BpftraceStacks,
                DeviceVariant::FloorKprobe,
                DeviceVariant::FloorFentry,
            ][..],
            &guest::BPFTRACE,
        ),
        (
            &[DeviceVariant::Perf, DeviceVariant::PerfStacks][..],
            &guest::PERF,
        ),
    ] {
        match tool.files(bench.apt) {
            Ok(f) => files.extend(f),
            Err(e) if !variants.is_empty() => {
                for &v in variants {
                    tool_errors.insert(Some(v), format!("{e:#}"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    let (qemu_args, marks_file) = bench.insncount(&label)?;
    let job = GuestJob {
        files,
        qemu_args,
        timeout: Some(Duration::from_secs(3600)),
        ..GuestJob::default()
    };
    let Measured {
        out,
        host_other_cores,
    } = bench.measure(&kernel, &script, job, &label)?;
    let stdout = std::fs::read_to_string(out.join("stdout"))?;
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    let results = results(&stdout);
    if !results
        .iter()
        .any(|&(v, w, _)| (v, w) == (DeviceVariant::Base, Workload::Storm))
    {
        bail!("no untraced storm result; guest output:\n{stdout}");
    }
    let rounds: Vec<Round> = results.iter().map(|&(v, w, _)| (v, w)).collect();
    let swept = RINGS_KIB
        .iter()
        .filter(|kib| read(&format!("ring-{kib}.txt")).contains("storm "))
        .count();
    let counted = insns::count(
        &rounds,
        &std::fs::read_to_string(&marks_file)?,
        (warmup_rounds, swept),
    );
    let mut seconds: BTreeMap<Round, Vec<f64>> = BTreeMap::new();
    for &(v, w, s) in &results {
        seconds.entry((v, w)).or_default().push(s);
    }
    // Why a peer has no rows: its files, or what the guest said when it failed to start.
    let failed = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|s| s.trim().to_owned())
    };
    for v in DeviceVariant::ALL {
        let prefix = match v {
            _ if v.runs_bpftrace() => format!("BPFTRACE_FAILED {} ", v.name()),
            DeviceVariant::Perf | DeviceVariant::PerfStacks => "PERF_FAILED ".to_owned(),
            _ => continue,
        };
        if let Some(why) = failed(&prefix) {
            tool_errors.entry(Some(v)).or_insert(why);
        }
    }
    let outcome = Outcome {
        tool: bench.tool,
        out: &out,
        seconds,
        counted: counted.as_ref().ok(),
        tool_errors,
    };
    let loads = Workload::ALL
        .into_iter()
        .map(|work| match work {
            Workload::Storm => outcome.load(work, &storm),
            Workload::Fio => outcome.load(work, &fio),
        })
        .collect();
    let ring_sweep: Vec<Storm> = RINGS_KIB
        .iter()
        .map(|&kib| sweep(bench.tool, &out, kib))
        .collect();
    let smallest_ring_kib_without_drops = ring_sweep
        .iter()
        .rfind(|r| r.delivered.as_ref().is_some_and(|d| d.dropped == 0))
        .map(|r| r.ring_kib);
    for kib in RINGS_KIB {
        std::fs::remove_file(out.join(format!("ring-{kib}.rwt"))).ok();
    }
    Ok(Device {
        kernel: kernel.spec.release.to_owned(),
        repetitions: sizes.reps,
        estimator: "median guest instructions per round on the workload's vCPU (QEMU TCG \
                    plugin); delivered: the last repetition"
            .into(),
        host_other_cores,
        loads,
        instructions_error: counted.err(),
        ring_sweep,
        smallest_ring_kib_without_drops,
        target_dropped: TARGETS.device_dropped,
    })
}

/// What the device boot left, read into each workload's figures.
struct Outcome<'a> {
    tool: &'a Path,
    out: &'a Path,
    /// Each round's own time, by what it was.
    seconds: BTreeMap<Round, Vec<f64>>,
    counted: Option<&'a Counted<Round>>,
    /// Why a peer could not run (its .deb, or it never started in the guest).
    tool_errors: BTreeMap<Option<DeviceVariant>, String>,
}

impl Outcome<'_> {
    fn typical_s(&self, r: Round) -> Option<f64> {
        self.seconds.get(&r).cloned().and_then(median)
    }

    fn load(&self, work: Workload, command: &str) -> DeviceLoad {
        let base = (DeviceVariant::Base, work);
        let c = self.counted;
        DeviceLoad {
            workload: work,
            command: command.to_owned(),
            untraced_instructions: c.and_then(|c| c.own.typical(base)),
            all_vcpus_untraced_instructions: c.and_then(|c| c.all.typical(base)),
            untraced_seconds: self.typical_s(base),
            tracers: DeviceVariant::ALL
                .into_iter()
                .filter(|&v| v != DeviceVariant::Base)
                .map(|v| self.tracer(v, work))
                .collect(),
        }
    }

    /// What `record` in kprobe mode delivered of `work`: the events a floor's probes saw.
    fn record_kprobe(&self, work: Workload) -> Option<Delivered> {
        let v = DeviceVariant::RecordKprobe;
        let secs = self.typical_s((v, work))?;
        delivered(self.tool, self.out, v, work, secs).ok().flatten()
    }

    fn tracer(&self, v: DeviceVariant, work: Workload) -> DeviceTracer {
        let (round, base) = ((v, work), (DeviceVariant::Base, work));
        let delivered = self
            .typical_s(round)
            .ok_or_else(|| "no result".to_owned())
            .and_then(|secs| delivered(self.tool, self.out, v, work, secs));
        let (delivered, error) = match delivered {
            Ok(d) => (d, None),
            Err(e) => (
                None,
                Some(self.tool_errors.get(&Some(v)).cloned().unwrap_or(e)),
            ),
        };
        // A floor delivers nothing: its hits are those of the same workload under `record`.
        let of = |d: &Delivered| (d.events + d.dropped) as f64;
        let offered = match v.is_floor() {
            true => self.record_kprobe(work).as_ref().map(of),
            false => delivered.as_ref().map(of),
        };
        let added = |r: &Rounds<Round>| {
            r.typical(round)
                .zip(r.typical(base))
                .zip(offered)
                .map(|((n, b), e)| (n - b) / e)
        };
        let c = self.counted;
        DeviceTracer {
            variant: v,
            attach: v.attach(),
            rounds: self.seconds.get(&round).map_or(0, Vec::len),
            insn_ratio: c.and_then(|c| c.own.ratio(round, base)),
            insn_ratio_all_vcpus: c.and_then(|c| c.all.ratio(round, base)),
            insn_per_event: c.and_then(|c| added(&c.own)),
            insn_per_event_all_vcpus: c.and_then(|c| added(&c.all)),
            time_ratio: self
                .typical_s(round)
                .zip(self.typical_s(base))
                .map(|(s, b)| s / b),
            delivered,
            target: v.target(work).map(str::to_owned),
            error,
        }
    }
}

/// The storm under `record` with a `kib` KiB ring.
fn sweep(tool: &Path, out: &Path, kib: u32) -> Storm {
    let text = std::fs::read_to_string(out.join(format!("ring-{kib}.txt"))).unwrap_or_default();
    let secs = fields(&text, "storm ").and_then(|f| f.get("seconds").copied());
    let (delivered, error) = match secs {
        Some(s) => match record_delivered(tool, &out.join(format!("ring-{kib}.rwt")), s) {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        },
        None => (
            None,
            Some(text.lines().last().unwrap_or("no output").to_owned()),
        ),
    };
    Storm {
        attach: Attach::Kprobe,
        ring_kib: kib,
        delivered,
        error,
    }
}

/// The guest's "RESULT variant=V rep=R work=W storm|run seconds=S …" lines, in order.
fn results(stdout: &str) -> Vec<(DeviceVariant, Workload, f64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("RESULT ")?.split_whitespace();
            let variant = words.next()?.strip_prefix("variant=")?;
            let work = words.nth(1)?.strip_prefix("work=")?;
            let v = DeviceVariant::ALL
                .into_iter()
                .find(|v| v.name() == variant)?;
            let w = Workload::ALL.into_iter().find(|w| w.name() == work)?;
            Some((v, w, fields(line, "RESULT ")?.get("seconds").copied()?))
        })
        .collect()
}

fn rates(seconds: f64, events: u64, dropped: u64) -> Delivered {
    Delivered {
        seconds,
        events,
        dropped,
        events_per_s: events as f64 / seconds,
        offered_per_s: (events + dropped) as f64 / seconds,
    }
}

/// Events and drops of a `refwatch record` trace, from its footer.
fn record_delivered(tool: &Path, trace: &Path, seconds: f64) -> Result<Delivered, String> {
    let st = trace_stats(tool, trace).map_err(|e| format!("{e:#}"))?;
    Ok(rates(seconds, st.events, st.dropped.unwrap_or(0)))
}

/// What `v` delivered of `work` in its last repetition, from the files the guest left; None
/// for the untraced run.
fn delivered(
    tool: &Path,
    out: &Path,
    v: DeviceVariant,
    work: Workload,
    seconds: f64,
) -> Result<Option<Delivered>, String> {
    let read = |f: String| std::fs::read_to_string(out.join(&f)).map_err(|e| format!("{f}: {e}"));
    let w = work.name();
    let d = match v {
        DeviceVariant::Base
        | DeviceVariant::Again
        | DeviceVariant::FloorKprobe
        | DeviceVariant::FloorFentry => return Ok(None),
        DeviceVariant::RecordKprobe | DeviceVariant::RecordFentry => {
            let mode = v.attach().unwrap_or(Attach::Kprobe);
            record_delivered(tool, &out.join(format!("{w}-{mode}.rwt")), seconds)?
        }
        DeviceVariant::NoStacksKprobe | DeviceVariant::NoStacksFentry => {
            record_delivered(tool, &out.join(format!("{w}-{}.rwt", v.name())), seconds)?
        }
        DeviceVariant::CheckKprobe | DeviceVariant::CheckFentry => {
            let summary: serde_json::Value =
                serde_json::from_str(&read(format!("{}-{w}.json", v.name()))?)
                    .map_err(|e| format!("check's summary: {e}"))?;
            let n = |k: &str| summary.get(k).and_then(serde_json::Value::as_u64);
            let events = n("events").ok_or("check's summary has no events")?;
            rates(seconds, events, n("dropped").unwrap_or(0))
        }
        DeviceVariant::Bpftrace | DeviceVariant::BpftraceStacks => {
            let f = fields(&read(format!("{}-{w}.delivered", v.name()))?, "events=")
                .ok_or("no bpftrace counts")?;
            let n = |k: &str| f.get(k).copied().unwrap_or(0.0) as u64;
            rates(seconds, n("events"), n("dropped"))
        }
        DeviceVariant::Perf | DeviceVariant::PerfStacks => {
            let stats = read(format!("{}-{w}.stats", v.name()))?;
            let count = |kind: &str| {
                stats.lines().find_map(|l| {
                    let rest = l.trim_start().strip_prefix(kind)?;
                    rest.split_whitespace().next()?.parse::<u64>().ok()
                })
            };
            let events = count("SAMPLE events:").ok_or_else(|| {
                format!(
                    "perf report --stats: {}",
                    stats.lines().last().unwrap_or("no output")
                )
            })?;
            // LOST records, each for a run of samples the ring had no room for.
            rates(seconds, events, count("LOST events:").unwrap_or(0))
        }
    };
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_read_both_workloads_lines() {
        let stdout = "LOG base 0 storm: x\n\
            RESULT variant=base rep=0 work=storm storm seconds=0.25 pages=4096 passes=8\n\
            RESULT variant=check-fentry rep=2 work=fio run seconds=1.5 status=0\n\
            RESULT variant=nosuch rep=0 work=fio run seconds=1\n";
        assert_eq!(
            results(stdout),
            vec![
                (DeviceVariant::Base, Workload::Storm, 0.25),
                (DeviceVariant::CheckFentry, Workload::Fio, 1.5),
            ]
        );
    }
}
