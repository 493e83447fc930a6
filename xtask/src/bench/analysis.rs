//! On the host: `refwatch report --json` on big traces made of copies of a recorded one
//! (events/s, peak RSS), what checking rules costs `record`, and bytes per trace event.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::figures::{Analysis, ReportRun, Rerecord, TARGETS, TraceSizes, TraceStats};
use super::guest::trace_stats;
use super::stats::timed;
use crate::cmd;

pub fn analysis(
    tool: &Path,
    refwatch: &Path,
    source: &Path,
    work: &Path,
    events: u64,
) -> Result<Analysis> {
    // Peak RSS at a quarter of the events too: bounded by live pages, it must not grow.
    let small = report_on_copies(
        tool,
        refwatch,
        source,
        &work.join("quarter.rwt"),
        events / 4,
    )?;
    let big = report_on_copies(tool, refwatch, source, &work.join("big.rwt"), events)?;
    let record_rules: Rerecord = serde_json::from_str(&cmd::output(
        Command::new(tool)
            .arg("rerecord")
            .arg(work.join("quarter.rwt"))
            .arg(work.join("rerecord.rwt")),
    )?)?;
    Ok(Analysis {
        kernel: big.stats.kernel.clone(),
        host: "this machine (release build)".into(),
        source: source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        events: big.stats.events,
        trace_bytes: big.stats.bytes,
        seconds: big.run.seconds,
        events_per_s: big.run.events_per_s,
        cpu_seconds: big.run.cpu_seconds,
        events_per_cpu_s: big.run.events_per_cpu_s,
        peak_rss_mib: big.run.peak_rss_mib,
        quarter_events: small.stats.events,
        quarter_peak_rss_mib: small.run.peak_rss_mib,
        record_rules,
        target_events_per_s_min: TARGETS.analysis_events_per_s_min,
    })
}

pub fn trace_sizes(tool: &Path, dir: &Path, names: &[&str]) -> Result<TraceSizes> {
    let mut traces = std::collections::BTreeMap::new();
    for name in names {
        let path = dir.join(name);
        if path.exists() {
            traces.insert((*name).to_owned(), trace_stats(tool, &path)?);
        }
    }
    let (events, bytes) = traces
        .values()
        .fold((0, 0), |(e, b), t: &TraceStats| (e + t.events, b + t.bytes));
    Ok(TraceSizes {
        kernel: traces.values().next().map(|t| t.kernel.clone()),
        bytes_per_event: bytes as f64 / events.max(1) as f64,
        traces,
        target_max: TARGETS.trace_bytes_per_event_max,
    })
}

/// A timed report and the stats of the trace it read.
pub struct Report {
    pub stats: TraceStats,
    pub run: ReportRun,
}

/// `refwatch report --json` on a trace of about `events` events made of copies of `source`.
pub fn report_on_copies(
    tool: &Path,
    refwatch: &Path,
    source: &Path,
    trace: &Path,
    events: u64,
) -> Result<Report> {
    cmd::run(
        Command::new(tool)
            .arg("replicate")
            .arg(source)
            .arg(trace)
            .arg(events.to_string()),
    )?;
    // Best of three: the figure is the analyzer's speed, not the host's noise.
    best_report(tool, refwatch, trace, 3, None)
}

/// The fastest of `runs` reports on `trace`; bytes of RSS per page where the trace keeps
/// `pages` live at its peak.
pub fn best_report(
    tool: &Path,
    refwatch: &Path,
    trace: &Path,
    runs: usize,
    pages: Option<u64>,
) -> Result<Report> {
    let stats = trace_stats(tool, trace)?;
    let mut best = None;
    for _ in 0..runs {
        let run = timed(
            Command::new(refwatch)
                .arg("report")
                .arg(trace)
                .arg("--json"),
        )?;
        if best
            .as_ref()
            .is_none_or(|b: &super::stats::Timed| run.secs < b.secs)
        {
            best = Some(run);
        }
    }
    let best = best.expect("at least one run");
    let rss_mib = best.rss_kib as f64 / 1024.0;
    Ok(Report {
        run: ReportRun {
            events: stats.events,
            seconds: best.secs,
            events_per_s: stats.events as f64 / best.secs,
            cpu_seconds: best.cpu,
            events_per_cpu_s: stats.events as f64 / best.cpu,
            peak_rss_mib: rss_mib,
            rss_bytes_per_page: pages.map(|p| rss_mib * 1048576.0 / p as f64),
        },
        stats,
    })
}
