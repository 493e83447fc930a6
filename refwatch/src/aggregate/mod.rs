//! The aggregator: a pure state machine from events to per-page/per-pgmap state and findings.
//! No I/O and no clock, so a live capture and a recorded trace give the same answer.

mod histories;
mod mappings;
mod pages;
mod rules;
mod state;
#[cfg(test)]
pub(crate) mod synth;
mod tasks;
#[cfg(test)]
mod tests;
mod view;

use std::collections::{BTreeMap, HashMap};

use refwatch_common::{
    Arg, CATALOG, Event, EventKind, Probe, RefModel,
    catalog::Level,
    event::{PGMAP_TYPE_UNKNOWN, probe_function},
    model::{Counts, Hit, MemoryType, moved},
};
use serde::Serialize;

use mappings::Mappings;
use pages::{Pages, Slot};
use rules::PageView;
pub use rules::{Coverage, Rule};
use state::Step;
pub use state::{Counters, PgmapState, Transition};
use tasks::Tasks;
pub use view::KernelView;

use crate::event::EventExt;

/// Findings kept with their details; beyond this only the per-rule counts grow.
pub const KEPT_FINDINGS: usize = 1000;

/// The pgmap a finding's page belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PgmapRef {
    #[serde(serialize_with = "hex")]
    pub address: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    pub start: Option<u64>,
    pub end: Option<u64>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub detail: String,
    pub pfn: u64,
    /// The `struct page *`, 0 where no event named it.
    #[serde(serialize_with = "hex")]
    pub page: u64,
    /// Who still holds the page, as far as refwatch saw the mappings and references being
    /// taken: "mapped at ADDR in mm MM by TASK", "reference from FUNCTION by TASK".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<String>,
    pub pgmap: PgmapRef,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub ts_ns: u64,
    /// Kernel stack id; the caller symbolizes it (the aggregator has no kernel to ask).
    #[serde(skip)]
    pub stack_id: i32,
    /// The page's transitions up to and including the one that broke the rule, oldest first.
    pub recent: Vec<Transition>,
}

#[derive(Clone, Debug, Default)]
pub struct Aggregator {
    ctx: Option<KernelView>,
    pages: Pages,
    /// The tasks of the steps the pages remember.
    tasks: Tasks,
    /// Live pgmaps by address.
    pgmaps: BTreeMap<u64, PgmapState>,
    /// Pgmaps whose teardown started, oldest first, bounded.
    retired: Vec<PgmapState>,
    /// Device PTEs by (mm, user address) → pfn, where unmaps come as zapped ranges
    /// ([`KernelView::keyed`]): bounded by the device pages mapped.
    mappings: Mappings,
    /// The PTEs of a range zap's current batch.
    zap_batch: Vec<((u64, u64), u64)>,
    /// Pages the teardown scan found held, until their pgmap's event comes.
    held: Vec<Held>,
    /// The last reference seen taken on each page of a type whose return to idle no probe
    /// sees (GENERIC, P2PDMA): such pages are not kept live, and this says who may still
    /// hold one at a teardown. Bounded by [`MAX_GRABS`].
    grabs: HashMap<u64, Grab>,
    events: u64,
    by_rule: BTreeMap<Rule, u64>,
    findings: Vec<Finding>,
}

/// Retired pgmaps kept for the summary.
const RETIRED: usize = 64;

/// Grabs remembered on pages whose idle is invisible; past it, new ones are not.
const MAX_GRABS: usize = 1 << 16;

/// PTEs a range zap takes from the mapping table at a time.
const ZAP_BATCH: usize = 1 << 16;

/// Base pages of a PMD mapping (x86-64).
const PMD_PAGES: u64 = 512;
const PAGE_SIZE: u64 = 4096;
/// `sizeof(struct page)` on every kernel refwatch supports (x86-64, 64-byte pages).
const STRUCT_PAGE: u64 = 64;

/// A page the teardown scan found held: the kernel's own counts.
#[derive(Clone, Copy, Debug)]
struct Held {
    pfn: u64,
    page: u64,
    pgmap: u64,
    refcount: i32,
    mapcount: i32,
}

/// The last reference seen taken on a page not kept live.
#[derive(Clone, Copy, Debug)]
struct Grab {
    pgmap: u64,
    step: Step,
}

/// A page a teardown leaves busy, and why.
struct Busy {
    page: u64,
    why: Vec<String>,
}

impl Aggregator {
    pub fn new(ctx: KernelView) -> Self {
        Self {
            ctx: Some(ctx),
            ..Self::default()
        }
    }

    /// With room for `cap` page histories, to test their eviction, and with or without runs
    /// of pages in one state.
    #[cfg(test)]
    pub(crate) fn with_history_cap(ctx: KernelView, cap: usize, compact: bool) -> Self {
        Self {
            pages: Pages::with_histories(cap, compact),
            ..Self::new(ctx)
        }
    }

    pub fn context(&self) -> &KernelView {
        self.ctx.as_ref().expect("built with new()")
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Findings so far (the first [`KEPT_FINDINGS`] of them).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    pub fn count(&self, rule: Rule) -> u64 {
        self.by_rule.get(&rule).copied().unwrap_or(0)
    }

    pub fn total_findings(&self) -> u64 {
        self.by_rule.values().sum()
    }

    /// Live pgmaps, then retired ones.
    pub fn pgmaps(&self) -> impl Iterator<Item = &PgmapState> {
        self.pgmaps.values().chain(&self.retired)
    }

    /// Pages tracked right now (bounded by live device pages).
    pub fn live_pages(&self) -> usize {
        self.pages.len()
    }

    /// References above idle and mapped pages of a pgmap, from the pages tracked now.
    /// References count only for types whose return to idle is visible.
    pub fn load(&self, pgmap: u64) -> (i64, u64) {
        let model = self.context().model;
        self.pages
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.pgmap == pgmap)
            .fold((0, 0), |(refs, mapped), p| {
                let above = match model.idle(p.ty) {
                    Some(i) if model.idle_visible(p.ty) => (p.refcount - i).max(0),
                    _ => 0,
                };
                (refs + above, mapped + u64::from(p.mapped > 0))
            })
    }

    /// A live page's (refcount, mapped) as refwatch reckons them after its last event; None
    /// for a page refwatch keeps no state of (idle).
    pub fn page_counts(&self, pfn: u64) -> Option<(i64, i64)> {
        self.pages.get(pfn).map(|p| (p.refcount, p.mapped))
    }

    /// Whether refwatch cannot tell `pfn`'s refcount: a page whose return to idle passes no
    /// probe (GENERIC; P2PDMA before 6.15) with a reference seen taken and not seen given
    /// back. Only the kernel's own count (a watchpoint, the teardown scan) says where it is.
    pub fn untrusted(&self, pfn: u64) -> bool {
        self.grabs.contains_key(&pfn)
    }

    /// Feeds one event; returns how many findings it raised.
    pub fn observe(&mut self, ev: &Event) -> usize {
        self.events += 1;
        if self.tasks.due() {
            let grabs = self.grabs.values().map(|g| g.step.task);
            self.tasks.sweep(self.pages.held_tasks().chain(grabs));
        }
        let Some(kind) = ev.event_kind() else {
            return 0;
        };
        if kind == EventKind::Watch {
            self.watch(ev);
            return 0;
        }
        let Some(probe) = CATALOG.get(ev.probe as usize) else {
            return 0;
        };
        match kind {
            EventKind::PgmapAdd => {
                self.pgmap_add(ev);
                0
            }
            EventKind::PgmapRemove => self.pgmap_remove(ev),
            EventKind::Unmap if probe.is_range() => {
                self.range_unmap(ev);
                0
            }
            EventKind::Remap => {
                self.range_move(ev);
                0
            }
            EventKind::Held => {
                self.held.push(Held {
                    pfn: ev.pfn,
                    page: ev.page,
                    pgmap: ev.pgmap,
                    refcount: ev.refcount,
                    mapcount: ev.mapcount,
                });
                0
            }
            _ => self.page_event(ev, kind, probe),
        }
    }

    /// A watchpoint hit goes into a tracked page's history: it is any write of the count,
    /// inline or not, so no rule judges it and refwatch's reckoning of the page stays as the
    /// probes left it. One thing it does tell: on a page whose return to idle no probe sees, a
    /// hit at idle is that return, so its last grab no longer holds it.
    fn watch(&mut self, ev: &Event) {
        let model = self.context().model;
        let idle = model
            .idle(self.context().pg_type(ev.pgmap_type))
            .unwrap_or(0);
        if i64::from(ev.refcount) <= idle {
            self.grabs.remove(&ev.pfn);
        }
        if self.pages.get(ev.pfn).is_none() {
            return;
        }
        let step = Step {
            ts_ns: ev.ts_ns,
            refs: 0,
            refcount: ev.refcount,
            mapcount: ev.mapcount,
            task: self.tasks.hold_event(ev),
            probe: ev.probe,
            kind: EventKind::Watch,
        };
        self.pages.push_step(ev.pfn, step);
    }

    fn pgmap_add(&mut self, ev: &Event) {
        // The programs forget a pgmap at memunmap_pages and learn it again from the next page
        // they see of it: on 5.10 the teardown's own puts. It is the same pgmap, going away.
        let discovered = ev.flags & refwatch_common::event::flags::DISCOVERED != 0;
        if discovered
            && !self.pgmaps.contains_key(&ev.pgmap)
            && self.retired.iter().any(|p| p.address == ev.pgmap)
        {
            return;
        }
        let ty = self.context().pg_type(ev.pgmap_type);
        let pg = self.pgmaps.entry(ev.pgmap).or_insert_with(|| PgmapState {
            address: ev.pgmap,
            raw_type: ev.pgmap_type,
            ty,
            ranges: Vec::new(),
            discovered: ev.flags & refwatch_common::event::flags::DISCOVERED != 0,
            teardown: false,
            counters: Counters::default(),
        });
        let range = (ev.extra, ev.extra2);
        if range.0 < range.1 && !pg.ranges.contains(&range) {
            pg.ranges.push(range);
        }
    }

    fn pgmap_remove(&mut self, ev: &Event) -> usize {
        // A pgmap torn down without a page of it ever seen (an idle namespace) still belongs
        // in the summary: learn it from the event, which carries its type and first range.
        if !self.pgmaps.contains_key(&ev.pgmap) {
            self.pgmap_add(ev);
            // Not added when it is one torn down already (a corrupt trace removing it twice).
            let Some(pg) = self.pgmaps.get_mut(&ev.pgmap) else {
                return 0;
            };
            pg.discovered = true;
        }
        let busy = self.busy_at_teardown(ev);
        let raised = busy.len();
        let maps = self.mappings_of(|pfn| self.pages.get(pfn).is_some_and(|p| p.pgmap == ev.pgmap));
        for (pfn, busy) in busy {
            let detail = format!("memunmap_pages with the page busy: {}", busy.why.join(", "));
            let mut finding = self.finding(
                Rule::TeardownBusy,
                detail,
                ev,
                pfn,
                ev.pgmap,
                maps.get(&pfn),
            );
            finding.page = busy.page;
            self.raise(finding);
        }
        self.grabs.retain(|_, grab| grab.pgmap != ev.pgmap);
        let pages = &self.pages;
        self.mappings
            .retain(|pfn| pages.get(pfn).is_none_or(|p| p.pgmap != ev.pgmap));
        self.pages.remove_pgmap(ev.pgmap);
        if let Some(mut pg) = self.pgmaps.remove(&ev.pgmap) {
            pg.teardown = true;
            if self.retired.len() == RETIRED {
                self.retired.remove(0);
            }
            self.retired.push(pg);
        }
        raised
    }

    /// The pages memunmap_pages leaves busy: referenced above idle (the kernel's counts where
    /// the teardown scan ran; refwatch's estimate in traces from before it; none where the
    /// kernel waits for references itself, ≤5.17), or mapped (the kernel's mapcount, 6.15+;
    /// the inserts not yet zapped before).
    fn busy_at_teardown(&mut self, ev: &Event) -> BTreeMap<u64, Busy> {
        let ctx = self.ctx.as_ref().expect("built with new()");
        let model = ctx.model;
        let scanned = CATALOG
            .get(ev.probe as usize)
            .is_some_and(|p| matches!(p.arg, Arg::PgmapScan(_)));
        let ty = self
            .pgmaps
            .get(&ev.pgmap)
            .map_or(MemoryType::Unknown, |pg| pg.ty);
        let mut busy: BTreeMap<u64, Busy> = BTreeMap::new();
        let mut add = |pfn: u64, page: u64, why: String| {
            busy.entry(pfn)
                .or_insert(Busy {
                    page,
                    why: Vec::new(),
                })
                .why
                .push(why);
        };
        let (held, rest): (Vec<Held>, Vec<Held>) =
            self.held.drain(..).partition(|h| h.pgmap == ev.pgmap);
        self.held = rest;
        if model.teardown_busy_harmless(ty) {
            return busy;
        }
        for h in held.iter().filter(|_| scanned) {
            let idle = model.idle(ty).unwrap_or(0);
            if i64::from(h.refcount) > idle {
                add(
                    h.pfn,
                    h.page,
                    format!("refcount {} above idle {idle}", h.refcount),
                );
            }
            if h.mapcount > 0 {
                add(h.pfn, h.page, format!("mapcount {}", h.mapcount));
            }
        }
        for (pfn, p) in self.pages.iter().filter(|(_, p)| p.pgmap == ev.pgmap) {
            let estimated = !scanned && model != RefModel::AllOneBased;
            if let Some(i) = model
                .idle(p.ty)
                .filter(|&i| estimated && model.idle_visible(p.ty) && p.refcount > i)
            {
                add(
                    pfn,
                    p.page,
                    format!("refcount {} above idle {i}", p.refcount),
                );
            }
            if p.mapped > 0 && !(scanned && model == RefModel::ZeroBased) {
                add(pfn, p.page, format!("{} mapping(s) left", p.mapped));
            }
        }
        busy
    }

    /// The (mm, user address) pairs mapping each page `wanted` picks (by pfn), from the inserts
    /// not zapped.
    fn mappings_of(&self, wanted: impl Fn(u64) -> bool) -> BTreeMap<u64, Vec<(u64, u64)>> {
        let mut maps: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
        for (at, pfn) in self.mappings.iter().filter(|&(_, pfn)| wanted(pfn)) {
            maps.entry(pfn).or_default().push(at);
        }
        maps
    }

    /// Who holds page `pfn`: the mappings not yet zapped (`maps`), and the references its
    /// history (or, for a page not kept live, its last grab) saw being taken.
    fn holders(&self, pfn: u64, maps: &[(u64, u64)]) -> Vec<String> {
        let history = self.pages.history(pfn);
        let last = |kind: EventKind| history.and_then(|h| h.iter().rev().find(|s| s.kind == kind));
        let who = |s: &Step| {
            let t = self.tasks.get(s.task);
            format!("{}/{}", crate::event::comm_str(&t.comm), t.pid_tgid >> 32)
        };
        let mut out: Vec<String> = maps
            .iter()
            .map(|&(mm, address)| match last(EventKind::Insert) {
                Some(s) => format!(
                    "mapped at {address:#x} in mm {mm:#x} (inserted by {})",
                    who(s)
                ),
                None => format!("mapped at {address:#x} in mm {mm:#x}"),
            })
            .collect();
        // 6.15+ keeps no table of mappings: the kernel's mapcount says the page is mapped, and
        // its history who mapped it last.
        if maps.is_empty()
            && self.context().model == RefModel::ZeroBased
            && let Some(s) = last(EventKind::Insert)
        {
            let function = probe_function(s.probe);
            out.push(format!("mapped through {function} by {}", who(s)));
        }
        if let Some(s) = last(EventKind::Get).or_else(|| self.grabs.get(&pfn).map(|g| &g.step)) {
            let function = probe_function(s.probe);
            out.push(format!("reference taken by {function} in {}", who(s)));
        }
        out
    }

    /// Remembers (or forgets) the last grab of a page whose return to idle no probe sees.
    fn track_grab(&mut self, ev: &Event, kind: EventKind, ty: MemoryType) {
        let model = self.context().model;
        if model.idle_visible(ty) {
            return;
        }
        let idle = model.idle(ty).unwrap_or(0);
        let held =
            kind == EventKind::Get && !(CATALOG[ev.probe as usize].speculative && ev.refcount <= 0);
        if held && (self.grabs.len() < MAX_GRABS || self.grabs.contains_key(&ev.pfn)) {
            let task = self.tasks.hold_event(ev);
            let refs = self.context().moves(&CATALOG[ev.probe as usize], kind, ev);
            let step = Step {
                ts_ns: ev.ts_ns,
                refs,
                refcount: ev.refcount,
                mapcount: ev.mapcount,
                task,
                probe: ev.probe,
                kind,
            };
            self.grabs.insert(
                ev.pfn,
                Grab {
                    pgmap: ev.pgmap,
                    step,
                },
            );
        } else if !held && i64::from(ev.refcount) <= idle {
            self.grabs.remove(&ev.pfn);
        }
    }

    /// The device PTEs a zap of `[extra, extra2)` in mm `page` clears: those inserted there,
    /// in address order, a batch at a time (a whole device's would be gigabytes at once), in
    /// one buffer kept from zap to zap (a fresh one is 1.5 MiB of pages to fault in again).
    fn range_unmap(&mut self, ev: &Event) {
        let mut batch = std::mem::take(&mut self.zap_batch);
        loop {
            self.mappings
                .take_range((ev.page, ev.extra, ev.extra2), ZAP_BATCH, &mut batch);
            if batch.is_empty() {
                break;
            }
            for &(_, pfn) in &batch {
                self.zapped(ev, pfn);
            }
        }
        self.zap_batch = batch;
    }

    /// Page `pfn`'s PTE, zapped by `ev`.
    fn zapped(&mut self, ev: &Event, pfn: u64) {
        let Some((page, slot)) = self.pages.get_slot(pfn) else {
            return;
        };
        let after = Counts {
            refcount: page.refcount,
            mapped: (page.mapped - 1).max(0),
        };
        if let Some(pg) = self.pgmaps.get_mut(&page.pgmap) {
            pg.counters.count(EventKind::Unmap);
        }
        // A page the zap leaves idle is forgotten with its history: no step for it (it would
        // take a ring from the pool, evicting another page's history when the pool is full,
        // only to give it back at once).
        if self.idle(page.ty, after) {
            self.pages.remove_at(slot, pfn);
            return;
        }
        self.pages.set_counts_at(slot, after.refcount, after.mapped);
        let step = Step {
            ts_ns: ev.ts_ns,
            refs: 1,
            refcount: page.refcount as i32,
            mapcount: 0,
            task: self.tasks.hold_event(ev),
            probe: ev.probe,
            kind: EventKind::Unmap,
        };
        self.pages.push_step_at(slot, step);
    }

    /// mremap: the device PTEs of `[extra, extra2)` in mm `page` move to `pfn` onwards.
    fn range_move(&mut self, ev: &Event) {
        let (mm, start, to) = (ev.page, ev.extra, ev.pfn);
        // All at once: the moved PTEs may land inside the range.
        let mut moved = Vec::new();
        self.mappings
            .take_range((mm, start, ev.extra2), usize::MAX, &mut moved);
        for ((_, at), pfn) in moved {
            self.map_at((mm, to.wrapping_add(at - start)), pfn);
        }
    }

    /// Drops live page `pfn` (at `slot`) of type `ty` whose state says nothing any more:
    /// [`Aggregator::idle`] at the counts just set (`now`), or its pgmap is being torn down.
    fn forget_if_idle(
        &mut self,
        (pfn, slot): (u64, Slot),
        ty: MemoryType,
        now: Counts,
        teardown: bool,
    ) {
        if teardown || self.idle(ty, now) {
            self.pages.remove_at(slot, pfn);
        }
    }

    /// Whether a page of type `ty` at counts `now` is idle (where that is visible) and
    /// unmapped: refwatch need not keep it.
    fn idle(&self, ty: MemoryType, now: Counts) -> bool {
        let model = self.context().model;
        let idle_now = match model.idle(ty) {
            Some(i) if model.idle_visible(ty) => now.refcount <= i,
            _ => true,
        };
        idle_now && now.mapped <= 0
    }

    /// Records that (mm, address) `at` maps `pfn`; false when it mapped that page already (a
    /// refault, or an insert that lost a race and mapped nothing new).
    fn map_at(&mut self, at: (u64, u64), pfn: u64) -> bool {
        match self.mappings.insert(at, pfn) {
            Some(old) if old == pfn => false,
            Some(stale) => {
                // The PTE was zapped where no range probe saw it (insert_pfn maps only an
                // empty PTE): the page it named is no longer mapped there.
                if let Some(page) = self.pages.get(stale) {
                    self.pages
                        .set_counts(stale, page.refcount, (page.mapped - 1).max(0));
                }
                true
            }
            None => true,
        }
    }

    fn page_event(&mut self, ev: &Event, kind: EventKind, probe: &'static Probe) -> usize {
        let keyed = kind == EventKind::Insert && self.context().keyed(probe);
        let pmd = keyed && probe.site.level() == Level::Pmd;
        // A PMD maps its 512 pages from the aligned address down.
        let address = if pmd {
            ev.extra & !(PMD_PAGES * PAGE_SIZE - 1)
        } else {
            ev.extra
        };
        let new_mapping = !keyed || self.map_at((ev.extra2, address), ev.pfn);
        if pmd {
            self.pmd_tails(ev, address);
        }
        let ctx = self.ctx.as_ref().expect("built with new()");
        let ty = ctx.pg_type(ev.pgmap_type);
        let teardown = self.retired.iter().any(|p| p.address == ev.pgmap)
            && !self.pgmaps.contains_key(&ev.pgmap);
        let pg = match self.pgmaps.get_mut(&ev.pgmap) {
            Some(pg) => Some(pg),
            None if teardown => self
                .retired
                .iter_mut()
                .rev()
                .find(|p| p.address == ev.pgmap),
            None => Some(self.pgmaps.entry(ev.pgmap).or_insert_with(|| PgmapState {
                address: ev.pgmap,
                raw_type: ev.pgmap_type,
                ty,
                ranges: Vec::new(),
                discovered: true,
                teardown: false,
                counters: Counters::default(),
            })),
        };
        let step = Step {
            ts_ns: ev.ts_ns,
            refs: ctx.moves(probe, kind, ev),
            refcount: ev.refcount,
            mapcount: ev.mapcount,
            task: self.tasks.hold_event(ev),
            probe: ev.probe,
            kind,
        };
        let touched =
            self.pages
                .record(ev.pfn, ev.pgmap, ty, ev.page, i64::from(ev.refcount), step);
        // gup_put_folio hands the same references on to __put_devmap_managed_*_refs (≤6.12):
        // one drop seen at two nested probes, counted once. (A history is never evicted
        // between two such consecutive events: HISTORIES other pages would need one first.)
        let nested = kind == EventKind::Put
            && touched.last.is_some_and(|prev| {
                prev.kind == EventKind::Put
                    && self.tasks.get(prev.task).pid_tgid == ev.pid_tgid
                    && prev.refcount == ev.refcount
                    && CATALOG[prev.probe as usize].site != probe.site
            });
        if let Some(pg) = pg.filter(|_| !nested) {
            pg.counters.count(kind);
            pg.counters.pages_seen += u64::from(touched.fresh);
        }
        // record named the page's type as the event's.
        let before = Counts {
            refcount: touched.refcount,
            mapped: touched.mapped,
        };
        let view = PageView {
            ty,
            mapped: before.mapped,
            pgmap_in_teardown: teardown,
        };
        let verdict = rules::judge(ctx, probe, ev, &view);
        let after = advance(ctx, probe, kind, ev, ty, before, new_mapping);
        self.pages
            .set_counts_at(touched.slot, after.refcount, after.mapped);
        let key = verdict
            .as_ref()
            .map(|(rule, _)| (*rule, ev.pid_tgid, ev.refcount));
        let repeat = key.is_some() && key == self.pages.last_finding(ev.pfn);
        self.pages.set_last_finding(ev.pfn, key);
        let mut raised = 0;
        if let Some((rule, detail)) = verdict.filter(|_| !repeat) {
            let maps = if rule == Rule::TruncateBusy {
                self.mappings_of(|pfn| pfn == ev.pfn).remove(&ev.pfn)
            } else {
                None
            };
            let finding = self.finding(rule, detail, ev, ev.pfn, ev.pgmap, maps.as_ref());
            self.raise(finding);
            raised = 1;
        }
        self.track_grab(ev, kind, ty);
        self.forget_if_idle((ev.pfn, touched.slot), ty, after, teardown);
        raised
    }

    /// The pages after the first of a PMD inserted at `address`: each is mapped at its own
    /// address, so that zaps and moves of part of the range find it.
    fn pmd_tails(&mut self, ev: &Event, address: u64) {
        let ty = self.context().pg_type(ev.pgmap_type);
        for i in 1..PMD_PAGES {
            // Wrapping, as the kernel's addresses would: a corrupt trace may put them at the top.
            let pfn = ev.pfn.wrapping_add(i);
            let new = self.map_at((ev.extra2, address.wrapping_add(i * PAGE_SIZE)), pfn);
            let task = self.tasks.hold_event(ev);
            let page = ev.page.wrapping_add(i * STRUCT_PAGE);
            // A tail already live keeps its pgmap and type; only its page is named anew.
            let (pgmap, ty) = self
                .pages
                .get(pfn)
                .map_or((ev.pgmap, ty), |p| (p.pgmap, p.ty));
            let step = Step {
                ts_ns: ev.ts_ns,
                refs: 1,
                refcount: ev.refcount,
                mapcount: 0,
                task,
                probe: ev.probe,
                kind: EventKind::Insert,
            };
            let now = self
                .pages
                .record(pfn, pgmap, ty, page, i64::from(ev.refcount), step);
            self.pages
                .set_counts_at(now.slot, now.refcount, now.mapped + i64::from(new));
        }
    }

    /// A finding about page `pfn` of `pgmap`, raised at event `ev`; `maps` are the page's
    /// mappings where the rule is about who still holds it.
    fn finding(
        &self,
        rule: Rule,
        detail: String,
        ev: &Event,
        pfn: u64,
        pgmap: u64,
        maps: Option<&Vec<(u64, u64)>>,
    ) -> Finding {
        let pg = self.pgmaps().find(|p| p.address == pgmap);
        let range = pg.and_then(|p| p.range_of(pfn));
        let page = self.pages.get(pfn);
        let recent: Vec<Transition> = match self.pages.history(pfn) {
            Some(h) => h
                .iter()
                .map(|s| s.transition(self.tasks.get(s.task)))
                .collect(),
            None if page.is_some() => Vec::new(),
            None => self
                .grabs
                .get(&pfn)
                .map(|g| g.step.transition(self.tasks.get(g.step.task)))
                .into_iter()
                .collect(),
        };
        let holds = matches!(rule, Rule::TeardownBusy | Rule::TruncateBusy);
        Finding {
            rule,
            detail,
            pfn,
            page: if ev.pfn == pfn {
                ev.page
            } else {
                page.map_or(0, |p| p.page)
            },
            held_by: if holds {
                self.holders(pfn, maps.map_or(&[][..], Vec::as_slice))
            } else {
                Vec::new()
            },
            pgmap: PgmapRef {
                address: pgmap,
                type_name: self
                    .context()
                    .type_name(pg.map_or(PGMAP_TYPE_UNKNOWN, |p| p.raw_type))
                    .to_owned(),
                start: range.map(|r| r.0),
                end: range.map(|r| r.1),
            },
            pid: ev.pid(),
            tgid: ev.tgid(),
            comm: ev.comm_str().into_owned(),
            ts_ns: ev.ts_ns,
            stack_id: ev.stack_id,
            recent,
        }
    }

    fn raise(&mut self, finding: Finding) {
        *self.by_rule.entry(finding.rule).or_default() += 1;
        if self.findings.len() < KEPT_FINDINGS {
            self.findings.push(finding);
        }
    }
}

/// A page's refcount and mapping estimate past the probed function (the model's
/// [`RefModel::after`]); `new_mapping` is false for an insert at an address that already
/// mapped the page.
fn advance(
    ctx: &KernelView,
    probe: &Probe,
    kind: EventKind,
    ev: &Event,
    ty: MemoryType,
    before: Counts,
    new_mapping: bool,
) -> Counts {
    let tracked = ctx
        .tracked
        .get(ev.probe as usize)
        .copied()
        .unwrap_or_else(|| ctx.unmap_seen(probe.site.level()));
    let hit = Hit {
        probe,
        kind,
        ty,
        refcount: i64::from(ev.refcount),
        mapcount: i64::from(ev.mapcount),
        refs: moved(probe, ev, ctx.foll_pin),
        counts_mapping: tracked && new_mapping,
    };
    ctx.model.after(&hit, before)
}
