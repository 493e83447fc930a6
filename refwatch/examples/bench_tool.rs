//! Helpers of `cargo xtask bench` that need refwatch's own code (trace format, catalog).
//! Built with `cargo build --release -p refwatch --example bench_tool`; not part of refwatch.
//!
//! - `stats TRACE`: JSON {events, dropped, calls, bytes, bytes_per_event, span_ns, kernel}.
//! - `replicate IN OUT EVENTS`: a trace of about EVENTS events made of copies of IN's events,
//!   each copy shifted in time after the previous one, its pages moved to a different window
//!   of the same pgmap (so copies do not overlap) and its tasks given other pids.
//! - `rerecord TRACE OUT`: writes TRACE's events again as `refwatch record` does, in batches
//!   of 1024, side by side in one run: the trace alone, then the trace and the rules (what
//!   record adds to put findings in the kernel log, syncing the file at each), 5 rounds each,
//!   interleaved; then one write and sync of the file alone (what a finding adds). JSON
//!   {events, write_ns_per_event, rules_ns_per_event, ratio, findings, sync_ms}.
//! - `scale FACTS OUT PAGES`: a synthetic trace of one process mapping a fsdax pgmap of
//!   PAGES pages whole (one insert per page), pinning and unpinning every page through GUP,
//!   then unmapping it (one range zap) before the pgmap's teardown: every page live at once at
//!   the peak. The plan is today's for the kernel of FACTS (`refwatch probes --facts`, e.g.
//!   refwatch/tests/facts/6.1.json: range zaps), all of it attached in kprobe mode.
//! - `bpftrace TRACE`: a bpftrace script hooking the functions the trace's recording attached,
//!   with the same in-kernel filter as refwatch (the page's zone bits == ZONE_DEVICE), that
//!   counts device hits per probe. Prints "ready" once attached.
//! - `bpftrace --print TRACE`: the same script printing a line per event instead ("PROBE PAGE"
//!   for a device page, "PROBE" for a pgmap or range event): what a tracer that delivers every
//!   event to user space does, as refwatch does.
//! - `bpftrace --print-stacks TRACE`: the same with each event's kernel stack (`kstack`), as
//!   `refwatch record` takes by default.
//! - `functions TRACE`: the functions the trace's recording attached, one a line (for
//!   `perf probe`).

use std::{fmt::Write as _, path::Path, process::ExitCode};

use anyhow::{Context, Result, bail};
use refwatch::{
    facts::KernelFacts,
    output::Existing,
    plan::{self, AttachMode, Resolution},
    trace::{Footer, Header, TraceReader, TraceWriter},
};
use refwatch_common::{Arg, At, CATALOG, Event, EventKind};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["stats", trace] => stats(Path::new(trace)),
        ["replicate", input, output, events] => events
            .parse()
            .context("EVENTS")
            .and_then(|n| replicate(Path::new(input), Path::new(output), n)),
        ["bpftrace", trace] => bpftrace(Path::new(trace), Delivery::Count),
        ["bpftrace", "--print", trace] => bpftrace(Path::new(trace), Delivery::Print),
        ["bpftrace", "--print-stacks", trace] => bpftrace(Path::new(trace), Delivery::PrintStacks),
        ["functions", trace] => functions(Path::new(trace)),
        ["rerecord", trace, output] => rerecord(Path::new(trace), Path::new(output)),
        ["scale", template, output, pages] => pages
            .parse()
            .context("PAGES")
            .and_then(|n| scale(Path::new(template), Path::new(output), n)),
        _ => Err(anyhow::anyhow!(
            "usage: bench_tool stats TRACE | replicate IN OUT EVENTS | rerecord TRACE OUT | \
             scale TEMPLATE OUT PAGES | bpftrace [--print|--print-stacks] TRACE | functions TRACE"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_tool: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn open(path: &Path) -> Result<TraceReader<std::fs::File>> {
    TraceReader::open(path).with_context(|| path.display().to_string())
}

/// Streams: the big traces of the analysis figure hold millions of events.
fn stats(path: &Path) -> Result<()> {
    let mut reader = open(path)?;
    let (mut n, mut first, mut last) = (0u64, None, 0);
    while let Some(ev) = reader.next_event()? {
        n += 1;
        first.get_or_insert(ev.ts_ns);
        last = ev.ts_ns;
    }
    let bytes = std::fs::metadata(path)?.len();
    println!(
        "{}",
        serde_json::json!({
            "kernel": reader.header().kernel,
            "events": n,
            "dropped": reader.footer().map(|f| f.dropped),
            "calls": reader.footer().map(|f| &f.calls),
            "bytes": bytes,
            "bytes_per_event": bytes as f64 / n.max(1) as f64,
            "span_ns": first.map_or(0, |f| last.saturating_sub(f)),
        })
    );
    Ok(())
}

fn is_page_event(ev: &Event) -> bool {
    !matches!(
        EventKind::from_u8(ev.kind),
        Some(EventKind::PgmapAdd | EventKind::PgmapRemove) | None
    )
}

/// See the module doc. Median CPU time of each variant's rounds (the process is single-threaded).
fn rerecord(input: &Path, output: &Path) -> Result<()> {
    use refwatch::aggregate::{Aggregator, KernelView};
    let mut reader = open(input)?;
    let mut events = Vec::new();
    while let Some(&ev) = reader.next_event()? {
        events.push(ev);
    }
    let header = reader.header().clone();
    let stacks: std::collections::HashMap<i32, Vec<String>> = events
        .iter()
        .map(|e| (e.stack_id, reader.stack(e.stack_id).to_vec()))
        .collect();
    let round = |rules: bool| -> Result<(f64, u64)> {
        let mut w = TraceWriter::create(output, &header, Existing::Replace)?;
        let mut agg = rules.then(|| Aggregator::new(KernelView::from_plan(&header.plan)));
        let mut findings = 0;
        let started = cpu_seconds();
        for batch in events.chunks(1024) {
            for ev in batch {
                w.event(ev, |id| stacks.get(&id).cloned().unwrap_or_default())?;
            }
            w.flush()?;
            if let Some(agg) = &mut agg {
                let before = agg.total_findings();
                for ev in batch {
                    agg.observe(ev);
                }
                if agg.total_findings() > before {
                    findings += agg.total_findings() - before;
                    w.sync()?;
                }
            }
        }
        let secs = cpu_seconds() - started;
        w.finish(Footer::default())?;
        Ok((secs, findings))
    };
    let (mut write, mut rules, mut findings) = (Vec::new(), Vec::new(), 0);
    for _ in 0..5 {
        write.push(round(false)?.0);
        let (secs, n) = round(true)?;
        rules.push(secs);
        findings = n;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (write, rules) = (median(&mut write), median(&mut rules));
    let mut w = TraceWriter::create(output, &header, Existing::Replace)?;
    let sync = std::time::Instant::now();
    w.sync()?;
    let sync_ms = sync.elapsed().as_secs_f64() * 1e3;
    let per = |secs: f64| secs * 1e9 / events.len().max(1) as f64;
    println!(
        "{}",
        serde_json::json!({
            "events": events.len(),
            "write_ns_per_event": per(write),
            "rules_ns_per_event": per(rules),
            "ratio": rules / write,
            "findings": findings,
            "sync_ms": sync_ms,
        })
    );
    Ok(())
}

/// This process's user plus system CPU time.
fn cpu_seconds() -> f64 {
    // SAFETY: a zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn replicate(input: &Path, output: &Path, target: u64) -> Result<()> {
    let mut reader = open(input)?;
    let mut events = Vec::new();
    while let Some(&ev) = reader.next_event()? {
        events.push(ev);
    }
    let mut header = reader.header().clone();
    if events.is_empty() {
        bail!("{} has no events", input.display());
    }
    let page_size = header.layout.as_ref().map_or(64, |l| l.page_size);
    // The pgmap's pfn range (from its pgmap event) bounds where copies of the pages may go.
    let range = events
        .iter()
        .find(|e| !is_page_event(e) && e.extra2 > e.extra)
        .map(|e| (e.extra, e.extra2));
    let pfns = events.iter().filter(|e| is_page_event(e)).map(|e| e.pfn);
    let (lo, hi) = (pfns.clone().min().unwrap_or(0), pfns.max().unwrap_or(0));
    let width = hi - lo + 1;
    let windows = match range {
        Some((start, end)) if end > start + width => ((end - start) / width).max(1),
        _ => 1,
    };
    let base = range.map_or(lo, |r| r.0);
    let span = events.last().unwrap().ts_ns - events.first().unwrap().ts_ns + 1_000;
    let copies = target.div_ceil(events.len() as u64);
    header.synthetic = true;
    header.command = vec![format!("replicated {copies}x from {}", input.display())];
    let mut w = TraceWriter::create(output, &header, Existing::Replace)?;
    for k in 0..copies {
        let window = k % windows;
        for ev in &events {
            let mut e = *ev;
            e.ts_ns += k * span;
            e.pid_tgid += (k % 1000) << 32 | (k % 1000);
            if is_page_event(ev) {
                // Move the copy's pages into window `window` of the pgmap, keeping their order.
                let to = base + window * width + (ev.pfn - lo);
                e.page = e
                    .page
                    .wrapping_add(to.wrapping_sub(ev.pfn).wrapping_mul(page_size));
                e.pfn = to;
            } else if k > 0 {
                continue; // the pgmap exists once
            }
            w.event(&e, |id| reader.stack(id).to_vec())?;
        }
    }
    let n = w.events();
    w.finish(Footer {
        dropped: 0,
        end: "replicated".into(),
        ..Footer::default()
    })?;
    eprintln!(
        "{}: {n} events ({copies} copies, {windows} pfn windows)",
        output.display()
    );
    Ok(())
}

/// See the module doc. The events are those of a healthy 6.1 kernel (FS_DAX idle at 1; a
/// PTE insert takes no reference).
fn scale(facts: &Path, output: &Path, pages: u64) -> Result<()> {
    const MAP: u64 = 0x7f00_0000_0000;
    let facts: KernelFacts = serde_json::from_str(
        &std::fs::read_to_string(facts).with_context(|| facts.display().to_string())?,
    )?;
    let mut plan = plan::resolve(&facts, AttachMode::Kprobe);
    for p in &mut plan.probes {
        if p.resolution == Resolution::Use {
            p.attached = Some(Ok(AttachMode::Kprobe));
        }
    }
    let probe = |function: &str| -> Result<u8> {
        plan.attached()
            .find(|p| p.function == function)
            .map(|p| p.id)
            .with_context(|| format!("{} does not use {function}", facts.release))
    };
    let add = probe("memremap_pages")?;
    let insert = probe("__vm_insert_mixed")?;
    let get = probe("try_grab_page")?;
    let put = probe("__put_devmap_managed_page_refs")?;
    let zap = probe("unmap_page_range")?;
    let remove = probe("memunmap_pages")?;
    let fsdax = plan
        .pgmap_types
        .iter()
        .find(|(_, name)| *name == "fsdax")
        .map(|(&raw, _)| raw)
        .context("no fsdax pgmap type in the facts")?;
    let header = Header {
        kernel: facts.release.clone(),
        layout: facts.layout.clone().ok(),
        plan,
        command: vec![format!("bench_tool scale {pages}")],
        synthetic: true,
    };
    let mut w = Synth {
        w: TraceWriter::create(output, &header, Existing::Replace)?,
        ts: 0,
        pgmap_type: fsdax,
    };
    let end = Synth::BASE_PFN + pages;
    w.emit(add, EventKind::PgmapAdd, 0, 0, (Synth::BASE_PFN, end))?;
    let pfns = || Synth::BASE_PFN..end;
    for (i, pfn) in pfns().enumerate() {
        let at = MAP + i as u64 * 4096;
        w.emit(insert, EventKind::Insert, pfn, 1, (at, Synth::MM))?;
    }
    // One reference each, no GUP flags.
    for pfn in pfns() {
        w.emit(get, EventKind::Get, pfn, 1, (1, 0))?;
    }
    for pfn in pfns() {
        w.emit(put, EventKind::Put, pfn, 2, (1, 0))?;
    }
    // munmap: one zap of the whole VMA, its mm in `page`.
    w.emit(zap, EventKind::Unmap, 0, 0, (MAP, MAP + pages * 4096))?;
    w.emit(remove, EventKind::PgmapRemove, 0, 0, (Synth::BASE_PFN, end))?;
    let n = w.w.events();
    w.w.finish(Footer {
        end: "synthetic".into(),
        ..Footer::default()
    })?;
    eprintln!("{}: {n} events over {pages} pages", output.display());
    Ok(())
}

/// Writes the events of `bench_tool scale`: one task, one stack, 100 ns apart.
struct Synth {
    w: TraceWriter<std::io::BufWriter<std::fs::File>>,
    ts: u64,
    pgmap_type: u8,
}

impl Synth {
    const BASE_PFN: u64 = 0x100_0000;
    const VMEMMAP: u64 = 0xffff_ea00_0000_0000;
    const PGMAP: u64 = 0xffff_8881_0000_2000;
    const MM: u64 = 0xffff_8881_0a3c_4400;

    /// A page event of `pfn` (0: a pgmap or range event) with `extra`, `extra2`.
    fn emit(
        &mut self,
        probe: u8,
        kind: EventKind,
        pfn: u64,
        refcount: i32,
        (extra, extra2): (u64, u64),
    ) -> Result<()> {
        self.ts += 100;
        let range = kind == EventKind::Unmap;
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"scale");
        let ev = Event {
            ts_ns: self.ts,
            pid_tgid: 4242 << 32 | 4242,
            pfn,
            page: match (range, pfn) {
                (true, _) => Self::MM,
                (false, 0) => 0,
                (false, _) => Self::VMEMMAP + pfn * 64,
            },
            pgmap: if range { 0 } else { Self::PGMAP },
            extra,
            extra2,
            refcount,
            mapcount: 0,
            stack_id: 1,
            cpu: 0,
            probe,
            kind: kind as u8,
            pgmap_type: if range {
                refwatch_common::event::PGMAP_TYPE_UNKNOWN
            } else {
                self.pgmap_type
            },
            flags: 0,
            _pad: [0; 6],
            comm,
        };
        self.w.event(&ev, |_| vec!["bench_tool scale".into()])?;
        Ok(())
    }
}

/// What the bpftrace script does with an event.
#[derive(Clone, Copy)]
enum Delivery {
    /// A count per probe in a map, read once at exit.
    Count,
    /// A line per event, through bpftrace's perf ring to its output.
    Print,
    /// The same with the event's kernel stack.
    PrintStacks,
}

impl Delivery {
    /// The action for an event of `map`'s kind (device, pgmap, range); `page` is set for a
    /// device page.
    fn action(self, map: &str, page: bool) -> String {
        match (self, page) {
            (Delivery::Count, _) => format!("@{map}[probe] = count();"),
            (Delivery::Print, true) => "printf(\"%s %lx\\n\", probe, $page);".into(),
            (Delivery::Print, false) => "printf(\"%s\\n\", probe);".into(),
            (Delivery::PrintStacks, true) => {
                "printf(\"%s %lx%s\\n\", probe, $page, kstack);".into()
            }
            (Delivery::PrintStacks, false) => "printf(\"%s%s\\n\", probe, kstack);".into(),
        }
    }
}

fn bpftrace(path: &Path, delivery: Delivery) -> Result<()> {
    let reader = open(path)?;
    let header = reader.header();
    let layout = header.layout.as_ref().context("the trace has no layout")?;
    let mut s = String::new();
    let what = match delivery {
        Delivery::Count => "count per probe",
        Delivery::Print => "a line per event",
        Delivery::PrintStacks => "a line per event and its kernel stack",
    };
    writeln!(
        s,
        "// refwatch's probe set on {}: zone(page) == ZONE_DEVICE, {what}.",
        header.kernel
    )?;
    writeln!(s, "BEGIN {{ printf(\"ready\\n\"); }}")?;
    let zone = format!(
        "(((*(uint64 *)($page + {})) >> {}) & {:#x}) == {}",
        layout.off_flags, layout.zones_shift, layout.zones_mask, layout.zone_device
    );
    let vmemmap = "(*(uint64 *)kaddr(\"vmemmap_base\"))";
    for entry in header.plan.attached() {
        let probe = CATALOG
            .get(entry.id as usize)
            .context("probe id out of the catalog")?;
        let page = match probe.arg {
            Arg::Page(n) | Arg::Folio(n) => format!("$page = arg{n};"),
            Arg::PfnT(n) => format!(
                "if ((arg{n} & 0x3000000000000000) != 0x3000000000000000) {{ return; }} \
                 $page = {vmemmap} + (arg{n} & 0xfffffffffffff) * {};",
                layout.page_size
            ),
            Arg::Pte(n) => format!(
                "if ((arg{n} & 0x201) != 0x201) {{ return; }} \
                 $page = {vmemmap} + ((arg{n} & 0xffffffffff000) >> 12) * {};",
                layout.page_size
            ),
            Arg::PmdPtr(_)
            | Arg::Pgmap(_)
            | Arg::PgmapScan(_)
            | Arg::DaxEntry { .. }
            | Arg::FaultPage(_)
            | Arg::Migration { .. } => {
                writeln!(
                    s,
                    "kprobe:{} {{ {} }}",
                    probe.function,
                    delivery.action("pgmap", false)
                )?;
                continue;
            }
            // As refwatch: only ranges of mms that had a device page inserted count.
            Arg::Range { vma, .. } | Arg::Move { vma, .. } => {
                writeln!(
                    s,
                    "kprobe:{} {{ if (@mms[*(uint64 *)(arg{vma} + {})]) {{ {} }} }}",
                    probe.function,
                    layout.off_vma_mm,
                    delivery.action("range", false)
                )?;
                continue;
            }
        };
        let remember_mm = match probe.at {
            Some(At::Args { vma, .. }) => {
                format!("@mms[*(uint64 *)(arg{vma} + {})] = 1;", layout.off_vma_mm)
            }
            Some(At::Vmf(n)) => format!(
                "@mms[*(uint64 *)(*(uint64 *)(arg{n} + {}) + {})] = 1;",
                layout.off_vmf_vma, layout.off_vma_mm
            ),
            None => String::new(),
        };
        writeln!(
            s,
            "kprobe:{} {{ {page} if ({zone}) {{ {} {remember_mm} }} }}",
            probe.function,
            delivery.action("device", true)
        )?;
    }
    print!("{s}");
    Ok(())
}

fn functions(path: &Path) -> Result<()> {
    let reader = open(path)?;
    for entry in reader.header().plan.attached() {
        let probe = CATALOG
            .get(entry.id as usize)
            .context("probe id out of the catalog")?;
        println!("{}", probe.function);
    }
    Ok(())
}
