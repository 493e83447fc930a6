//! `cargo xtask bench --only scale`: the aggregator at the size of real pmem, on the host.
//!
//! For each pgmap size, `bench_tool scale` writes a synthetic trace of a process mapping the
//! whole device, pinning and unpinning every page, then unmapping it (3 events a page, every
//! page live at the peak; about 23 bytes a page on disk, so 1 TiB's 268 M pages make a 6 GB
//! file, written, read once by each refwatch measured and deleted), and `refwatch report
//! --json` is timed on it with its peak RSS. Beside it, at the same time, today's analysis
//! figure: a trace of 10 M events made of copies of a small recorded one. `--baseline` times
//! another refwatch build on the same traces (skipped where it would not fit in half the
//! memory available: the bytes a page it took at the size before, or ~720 if none).

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::analysis::{best_report, report_on_copies};
use super::figures::{BaselineRun, ReportRun, Scale, ScaleSize};
use crate::cmd::{self, note};

/// pages in a GiB of 4 KiB pages.
const PAGES_PER_GIB: u64 = 1 << 18;
/// The page histories' cap (refwatch's aggregate::histories): 65,536 rings of 528 bytes.
pub const HISTORY_BYTES: u64 = 65_536 * 528;
/// What a baseline from before the page-state budget kept per live page (measured), for the
/// first size.
const BASELINE_BYTES_PER_PAGE: f64 = 720.0;

pub struct Binaries<'a> {
    pub tool: &'a Path,
    pub refwatch: &'a Path,
    pub baseline: Option<&'a Path>,
}

pub fn scale(bins: &Binaries, work: &Path, gibs: &[u64]) -> Result<Scale> {
    let root = crate::paths::workspace_root();
    let facts = root.join("refwatch/tests/facts/6.1.json");
    let recorded = root.join("refwatch/tests/traces/6.1-fsdax-mmap.rwt");
    let today = |refwatch: &Path| -> Result<ReportRun> {
        let r = report_on_copies(
            bins.tool,
            refwatch,
            &recorded,
            &work.join("today.rwt"),
            10_000_000,
        )?;
        Ok(r.run)
    };
    let mut sizes = Vec::new();
    // The baseline's bytes a page at the size before: its memory grows at least linearly.
    let mut baseline_per_page = BASELINE_BYTES_PER_PAGE;
    for &gib in gibs {
        let pages = gib * PAGES_PER_GIB;
        let trace = work.join("scale.rwt");
        note(format_args!("scale: {gib} GiB pgmap ({pages} pages)"));
        cmd::run(
            Command::new(bins.tool)
                .arg("scale")
                .arg(&facts)
                .arg(&trace)
                .arg(pages.to_string()),
        )?;
        // Once: a trace this big is not read thrice.
        let report = |refwatch: &Path| -> Result<ReportRun> {
            Ok(best_report(bins.tool, refwatch, &trace, 1, Some(pages))?.run)
        };
        let refwatch = report(bins.refwatch)?;
        let baseline = match bins.baseline {
            Some(b) if pages as f64 * baseline_per_page <= available_bytes()? as f64 / 2.0 => {
                let run = report(b)?;
                baseline_per_page = run.rss_bytes_per_page.unwrap_or(baseline_per_page);
                Some(BaselineRun::Ran(run))
            }
            Some(_) => Some(BaselineRun::Skipped(
                "would not fit in half the memory available".into(),
            )),
            None => None,
        };
        let trace_bytes = std::fs::metadata(&trace)?.len();
        std::fs::remove_file(&trace)?;
        sizes.push(ScaleSize {
            gib,
            pages,
            trace_bytes,
            refwatch,
            baseline,
        });
    }
    Ok(Scale {
        host: "this machine (release build)".into(),
        workload:
            "one process maps a whole fsdax pgmap, pins and unpins every page, unmaps it (6.1 plan)"
                .into(),
        today: today(bins.refwatch)?,
        today_baseline: bins.baseline.map(today).transpose()?,
        sizes,
        target: "≥ 20 M events/s; memory not growing with the pgmap: 35 MiB of histories, \
                 ~14 bytes a page of chunks in mixed states, ~100 bytes a run (pages and ≤6.14 \
                 mappings)"
            .into(),
    })
}

/// MemAvailable from /proc/meminfo.
fn available_bytes() -> Result<u64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    let kib = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(kib * 1024)
}
