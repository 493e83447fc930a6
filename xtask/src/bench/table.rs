//! The Markdown table of a run's [`Figures`]: figure, value, target, and what it was measured on.

use std::fmt::Write as _;

use super::figures::{Device, Figures, HotPath, ReportRun, Scale, Startup, TARGETS, Variant};
use super::stats::BUSY_HOST_CORES;

/// A number with `digits` decimals, or "n/a".
fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |f| format!("{f:.digits$}"))
}

struct Table(String);

impl Table {
    fn row(&mut self, what: &str, value: impl AsRef<str>, target: &str, on: &str) {
        let _ = writeln!(self.0, "| {what} | {} | {target} | {on} |", value.as_ref());
    }
}

pub fn table(f: &Figures) -> String {
    let mut t = Table(String::new());
    t.row("figure", "value", "target", "measured on");
    t.row("---", "---", "---", "---");
    for h in &f.hot_path {
        hot_rows(&mut t, h);
    }
    for d in &f.device {
        device_rows(&mut t, d);
    }
    for s in &f.startup {
        startup_rows(&mut t, s);
    }
    if let Some(a) = &f.analysis {
        t.row(
            "analysis: events/s (refwatch report --json)",
            num(Some(a.events_per_s), 0),
            "≥ 20 M",
            "host",
        );
        t.row(
            "analysis: events per CPU-second (decoder thread included)",
            num(Some(a.events_per_cpu_s), 0),
            "",
            "host",
        );
        t.row(
            "analysis: peak RSS (MiB)",
            format!(
                "{:.1} ({:.1} at a quarter of the events)",
                a.peak_rss_mib, a.quarter_peak_rss_mib
            ),
            "bounded by live pages",
            "host",
        );
        let r = &a.record_rules;
        t.row(
            "record: CPU ns/event writing the trace; with the rules checked too (ratio)",
            format!(
                "{:.0}; {:.0} ({:.2}×)",
                r.write_ns_per_event, r.rules_ns_per_event, r.ratio
            ),
            "",
            "host",
        );
        t.row(
            "record: one sync of the trace at a finding (ms)",
            format!("{:.2}", r.sync_ms),
            "",
            "host",
        );
    }
    if let Some(s) = &f.scale {
        scale_rows(&mut t, s, "host");
    }
    if let Some(tr) = &f.trace {
        t.row(
            "trace: bytes/event",
            format!("{:.2}", tr.bytes_per_event),
            "≤ 12",
            tr.kernel.as_deref().unwrap_or("-"),
        );
    }
    t.0
}

/// The scale part's rows alone (`--only scale`).
pub fn scale_table(s: &Scale) -> String {
    let mut t = Table(String::new());
    t.row("figure", "value", "target", "measured on");
    t.row("---", "---", "---", "---");
    scale_rows(&mut t, s, "host");
    t.0
}

fn hot_rows(t: &mut Table, h: &HotPath) {
    let k = h.kernel.as_str();
    t.row(
        "hot path: untraced churn round (median)",
        format!(
            "{:.4} s (median run {} s)",
            h.baseline_round_s,
            num(h.baseline_s, 3)
        ),
        "",
        k,
    );
    busy_row(t, "hot path", h.host_other_cores, k);
    t.row(
        "hot path: entries per churn round",
        format!(
            "{} (probed functions, kprobe recording)",
            num(h.churn_entries_per_round, 0)
        ),
        "",
        k,
    );
    let i = &h.instructions;
    match &i.error {
        Some(e) => t.row("hot path: instruction counts", format!("n/a: {e}"), "", k),
        None => t.row(
            "hot path: untraced instructions on the workload's vCPU (median)",
            format!(
                "{} per churn round, {} per zap round (all vCPUs: {}, {})",
                num(i.untraced_churn_round, 0),
                num(i.untraced_zap_round, 0),
                num(i.all_vcpus_untraced_churn_round, 0),
                num(i.all_vcpus_untraced_zap_round, 0)
            ),
            "",
            k,
        ),
    }
    for r in &h.tracers {
        let cell = format!(
            "{}× in instructions ({} per unmap-probe entry; all vCPUs {}×); \
             wall clock {}× (median of runs {}×; {}× from entries at {} ns each)",
            num(r.insn_ratio, 4),
            num(r.insn_per_entry, 0),
            num(r.insn_ratio_all_vcpus, 4),
            num(r.ratio, 3),
            num(r.median_run_ratio, 3),
            num(r.ratio_from_entries, 3),
            num(r.per_entry_ns, 0)
        );
        let cell = match (&h.bpftrace_failed, r.variant) {
            (Some(f), Variant::Bpftrace) => {
                let reps = h
                    .runs_s
                    .get(&Variant::Bpftrace)
                    .and_then(|w| w.get("churn"))
                    .map_or(0, Vec::len);
                format!("{cell}, over {reps} repetitions, then it did not start: {f}")
            }
            _ => cell,
        };
        t.row(
            &format!("hot path: {}", r.variant.describe()),
            cell,
            r.target.as_deref().unwrap_or(""),
            k,
        );
    }
    if let Some(reason) = &h.bpftrace_reason {
        t.row(
            &format!("hot path: {}", Variant::Bpftrace.describe()),
            format!("n/a: {reason}"),
            "",
            k,
        );
    }
}

fn device_rows(t: &mut Table, d: &Device) {
    let k = d.kernel.as_str();
    busy_row(t, "device", d.host_other_cores, k);
    if let Some(e) = &d.instructions_error {
        t.row("device: instruction counts", format!("n/a: {e}"), "", k);
    }
    for load in &d.loads {
        let w = load.workload.name();
        t.row(
            &format!("device {w}: untraced round (median of {})", d.repetitions),
            format!(
                "{} instructions on the workload's vCPU ({} on all), {} s: `{}`",
                num(load.untraced_instructions, 0),
                num(load.all_vcpus_untraced_instructions, 0),
                num(load.untraced_seconds, 3),
                load.command
            ),
            "",
            k,
        );
        for r in &load.tracers {
            let mut cell = match (r.rounds, &r.error) {
                (0, Some(e)) => format!("n/a: {e}"),
                _ => format!(
                    "{}× in instructions (all vCPUs {}×; per event {} / {}); wall clock {}×; \
                     {} rounds",
                    num(r.insn_ratio, 3),
                    num(r.insn_ratio_all_vcpus, 3),
                    num(r.insn_per_event, 0),
                    num(r.insn_per_event_all_vcpus, 0),
                    num(r.time_ratio, 3),
                    r.rounds
                ),
            };
            if let Some(x) = &r.delivered {
                let _ = write!(
                    cell,
                    "; {} events, {:.0}/s delivered, {} dropped",
                    x.events, x.events_per_s, x.dropped
                );
            }
            if let (Some(e), 1..) = (&r.error, r.rounds) {
                let _ = write!(cell, "; n/a: {e}");
            }
            t.row(
                &format!("device {w}: {}", r.variant.describe()),
                cell,
                r.target.as_deref().unwrap_or(""),
                k,
            );
        }
    }
    t.row(
        "device: smallest ring without drops (KiB)",
        d.smallest_ring_kib_without_drops
            .map_or("n/a".into(), |k| k.to_string()),
        "",
        k,
    );
    let limit = match d.first_drops() {
        Some(s) => {
            let x = s.delivered.as_ref().expect("first_drops has a result");
            format!(
                "{} KiB: {} of {} dropped at {:.0} events/s offered",
                s.ring_kib,
                x.dropped,
                x.events + x.dropped,
                x.offered_per_s
            )
        }
        None => "no drops down to 4 KiB".into(),
    };
    t.row("device: first drops", limit, "", k);
}

/// A row saying the host was busy during a boot whose figures are wall-clock times.
fn busy_row(t: &mut Table, part: &str, cores: f64, kernel: &str) {
    if cores > BUSY_HOST_CORES {
        t.row(
            &format!("{part}: WARNING, other host processes"),
            format!("{cores:.2} cores busy on average: wall-clock figures unreliable"),
            "quiet host",
            kernel,
        );
    }
}

fn startup_rows(t: &mut Table, s: &Startup) {
    busy_row(t, "startup", s.host_other_cores, &s.kernel);
    for tool in &s.tools {
        let what = match tool.attach {
            Some(mode) => format!("startup: exec to attached, {} --attach {mode}", tool.tool),
            None => format!("startup: exec to attached, {}", tool.tool),
        };
        let mut cell = match (tool.median_ms, &tool.error) {
            (Some(ms), _) => format!(
                "{ms:.0} ms (median of {}; {} to {})",
                tool.ready_ms.len(),
                num(tool.ready_ms.iter().copied().reduce(f64::min), 0),
                num(tool.ready_ms.iter().copied().reduce(f64::max), 0)
            ),
            (None, e) => format!("n/a: {}", e.as_deref().unwrap_or("no result")),
        };
        if let Some(p) = &tool.phases {
            let _ = write!(
                cell,
                "; phases: kallsyms {:.0}, BTF {:.0}, aya load ×{} {:.0}, aya BTF {:.0}, \
                 verifier {:.0}, attach {:.0}, open {:.0} ms",
                p.kallsyms_ms,
                p.btf_ms,
                p.aya_loads,
                p.aya_load_ms,
                p.aya_btf_ms,
                p.verify_ms,
                p.attach_ms,
                p.open_ms
            );
            if let Some((id, ms)) = p.slowest_verify {
                let function = refwatch_common::CATALOG
                    .get(usize::from(id))
                    .map_or("?", |e| e.function);
                let _ = write!(cell, " (slowest to verify: {function}'s, {ms:.0} ms)");
            }
        }
        let target = if tool.attach.is_some() {
            s.target.as_str()
        } else {
            ""
        };
        t.row(&what, cell, target, &s.kernel);
    }
}

fn scale_rows(t: &mut Table, s: &Scale, on: &str) {
    let cell = |r: &ReportRun| {
        format!(
            "{:.0} events/s ({:.0} per CPU-s), peak RSS {:.1} MiB{}",
            r.events_per_s,
            r.events_per_cpu_s,
            r.peak_rss_mib,
            r.rss_bytes_per_page
                .map_or(String::new(), |b| format!(", {b:.1} bytes/page"))
        )
    };
    t.row(
        "scale: today's analysis trace (10 M events); baseline",
        format!(
            "{}; {}",
            cell(&s.today),
            s.today_baseline.as_ref().map_or("n/a".into(), cell)
        ),
        &format!("≥ {:.0} M events/s", TARGETS.scale_events_per_s_min / 1e6),
        on,
    );
    for size in &s.sizes {
        let base = match &size.baseline {
            None => String::new(),
            Some(super::figures::BaselineRun::Ran(r)) => format!("; baseline {}", cell(r)),
            Some(super::figures::BaselineRun::Skipped(why)) => format!("; baseline skipped: {why}"),
        };
        t.row(
            &format!(
                "scale: {} GiB pgmap, {} pages all live",
                size.gib, size.pages
            ),
            format!("{}{base}", cell(&size.refwatch)),
            &s.target,
            on,
        );
    }
}
