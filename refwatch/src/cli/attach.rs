//! Opening a session for the commands that watch the running kernel, and a sink that feeds
//! the aggregator.

use anyhow::{Result, bail};
use refwatch::{
    aggregate::{Aggregator, KernelView},
    announce::Announcer,
    capture::Sink,
    plan::Plan,
    session::{Kernel, Session, SessionOptions},
    summary::Summary,
    watch_slots::{Change, Slots},
};
use refwatch_common::{Event, globals::Layout};

use super::RunArgs;

/// Loads and attaches (inside a tokio runtime); also returns the struct layout for traces.
pub fn open(args: &RunArgs) -> Result<(Session, Option<Layout>)> {
    if let Some(pid) = args.pid
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        bail!("--pid {pid}: no such process");
    }
    let kernel = Kernel::inspect()?;
    let layout = kernel.facts.layout.clone().ok();
    let session = Session::open(
        kernel,
        &SessionOptions {
            attach: args.attach,
            skip: args.skip.clone(),
            with: args.with.clone(),
            ring_bytes: args.ring_kib * 1024,
            pid: args.pid,
            watch: args.watch.clone(),
            auto_watch: !args.no_auto_watch,
            stacks: !args.no_stacks,
        },
    )?;
    // Watchpoints are extra: the probes carry on without the ones the CPU cannot give.
    for w in &session.watchpoints {
        match &w.armed {
            Ok(()) => eprintln!("refwatch: watching pfn {:#x}'s refcount (--watch)", w.pfn),
            Err(e) => eprintln!("refwatch: --watch {:#x}: no breakpoint: {e}", w.pfn),
        }
    }
    Ok((session, layout))
}

/// Feeds every event to the aggregator, puts each finding in the kernel log as soon as its
/// batch is read, and chooses the pages that get breakpoints.
pub struct Aggregate {
    pub agg: Aggregator,
    /// None when replaying a trace: its findings belong to another kernel, or an older boot.
    announcer: Option<Announcer>,
    /// None when replaying a trace.
    slots: Option<Slots>,
}

impl Aggregate {
    pub fn new(session: &Session, args: &RunArgs) -> Self {
        let asked = session
            .watchpoints
            .iter()
            .filter(|w| w.armed.is_ok())
            .map(|w| w.pfn);
        Self {
            agg: Aggregator::new(KernelView::from_plan(&session.plan)),
            announcer: Some(Announcer::new()),
            slots: Some(Slots::new(asked, !args.no_auto_watch)),
        }
    }

    pub fn replay(plan: &Plan) -> Self {
        Self {
            agg: Aggregator::new(KernelView::from_plan(plan)),
            announcer: None,
            slots: None,
        }
    }

    /// Feeds a batch; returns how many findings it raised (already in the kernel log). The
    /// breakpoints it calls for are [`Self::rearm`]'s to place.
    pub fn feed(&mut self, events: &[Event]) -> u64 {
        let before = self.agg.total_findings();
        for ev in events {
            let kept = self.agg.findings().len();
            self.agg.observe(ev);
            if let Some(slots) = &mut self.slots {
                slots.observe(ev, &self.agg, kept);
            }
        }
        match &mut self.announcer {
            Some(a) => a.announce(&self.agg),
            None => self.agg.total_findings() - before,
        }
    }

    /// Arms and releases the breakpoints the last batches called for, and says so on stderr.
    pub fn rearm(&mut self, session: &mut Session) {
        let Some(slots) = &mut self.slots else {
            return;
        };
        while let Some(change) = slots.next_change() {
            match change {
                Change::Arm { pfn, why } => match session.arm(pfn) {
                    Ok(()) => eprintln!("refwatch: watching pfn {pfn:#x}'s refcount ({why})"),
                    Err(e) => {
                        eprintln!("refwatch: pfn {pfn:#x} ({why}): no breakpoint: {e}");
                        slots.refused(pfn);
                    }
                },
                Change::Release { pfn, why } => {
                    session.disarm(pfn);
                    eprintln!("refwatch: pfn {pfn:#x}'s breakpoint released: {why}");
                }
            }
        }
    }

    pub fn summary(&self, session: &mut Session) -> Summary {
        let (dropped, calls) = (session.dropped(), session.calls());
        Summary::build(
            &self.agg,
            &session.plan.clone(),
            Some(dropped),
            calls,
            |id| session.stack(id).to_vec(),
        )
    }
}

impl Sink for Aggregate {
    fn events(&mut self, session: &mut Session, events: &[Event]) -> Result<bool> {
        self.feed(events);
        self.rearm(session);
        Ok(true)
    }
}
