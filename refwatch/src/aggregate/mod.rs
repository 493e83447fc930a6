//! The aggregator: a pure state machine from events to per-page/per-pgmap state and findings.
//! No I/O and no clock, so a live capture and a recorded trace give the same answer.

mod pages;
mod rules;
mod state;
#[cfg(test)]
pub(crate) mod synth;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use refwatch_common::{Arg, CATALOG, Event, EventKind, Probe, catalog::CATALOG_LEN, event::PGMAP_TYPE_UNKNOWN};
use serde::Serialize;

pub use rules::{Coverage, PgType, Rule, idle, idle_visible};
pub use state::{Counters, PgmapState, Transition};
use pages::Pages;
use rules::{Level, PageView};
use state::{PageState, Step};
use tasks::{Task, Tasks};

use crate::{event::EventExt, plan::{Model, Plan}};

/// Findings kept with their details; beyond this only the per-rule counts grow.
pub const KEPT_FINDINGS: usize = 1000;

/// What the aggregator needs to know about the kernel, taken from the [`Plan`].
#[derive(Clone, Debug)]
pub struct Context {
    pub model: Model,
    attached: [bool; CATALOG_LEN],
    pgmap_types: BTreeMap<u8, String>,
    /// Per-event lookups, precomputed: the rules' type of each raw pgmap type, and whether
    /// unmaps are probed at each [`Level`].
    types: [PgType; 256],
    unmap_levels: [bool; 3],
    /// Per catalog entry: are unmaps probed at the level of its site.
    tracked: [bool; CATALOG_LEN],
    /// Unmaps come as zapped address ranges, matched against the inserts' (mm, address).
    range_unmaps: bool,
}

impl Context {
    pub fn new(model: Model, attached: impl IntoIterator<Item = u8>, pgmap_types: BTreeMap<u8, String>) -> Self {
        let mut mask = [false; CATALOG_LEN];
        for id in attached {
            if let Some(slot) = mask.get_mut(id as usize) {
                *slot = true;
            }
        }
        let mut types = [PgType::Unknown; 256];
        for (&raw, name) in pgmap_types.iter().filter(|(raw, _)| **raw != PGMAP_TYPE_UNKNOWN) {
            types[raw as usize] = PgType::from_name(name);
        }
        let mut unmap_levels = [false; 3];
        for (p, _) in CATALOG.iter().zip(mask).filter(|(p, on)| *on && p.kind == EventKind::Unmap) {
            unmap_levels[rules::level(p) as usize] = true;
        }
        let tracked = CATALOG.map(|p| unmap_levels[rules::level(&p) as usize]);
        // A zap of ranges, not a move: with the per-PTE unmap probe in its place (`--with`),
        // inserts are counted, not keyed, though mremap is still probed.
        let range_unmaps = CATALOG.iter().zip(mask).any(|(p, on)| on && matches!(p.arg, Arg::Range { .. }));
        Self { model, attached: mask, pgmap_types, types, unmap_levels, tracked, range_unmaps }
    }

    pub fn from_plan(plan: &Plan) -> Self {
        Self::new(plan.model, plan.attached().map(|p| p.id), plan.pgmap_types.clone())
    }

    fn attached_probes(&self) -> impl Iterator<Item = &'static Probe> {
        CATALOG.iter().zip(self.attached).filter(|(_, on)| *on).map(|(p, _)| p)
    }

    pub fn sees(&self, kind: EventKind) -> bool {
        self.attached_probes().any(|p| p.kind == kind)
    }

    fn unmap_seen(&self, level: Level) -> bool {
        self.unmap_levels[level as usize]
    }

    pub fn type_name(&self, raw: u8) -> &str {
        if raw == PGMAP_TYPE_UNKNOWN {
            return "unknown";
        }
        self.pgmap_types.get(&raw).map_or("unknown", String::as_str)
    }

    fn pg_type(&self, raw: u8) -> PgType {
        self.types[raw as usize]
    }

    /// Whether an insert through `probe` is a mapping that a range zap will take away.
    fn keyed(&self, probe: &Probe) -> bool {
        self.range_unmaps && probe.at.is_some() && self.model != Model::ZeroBased
    }

    pub fn coverage(&self, rule: Rule) -> Coverage {
        rules::coverage(rule, self)
    }
}

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
    #[serde(serialize_with = "hex")]
    pub page: u64,
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
    ctx: Option<Context>,
    pages: Pages,
    /// The tasks of the steps the pages remember.
    tasks: Tasks,
    /// Live pgmaps by address.
    pgmaps: BTreeMap<u64, PgmapState>,
    /// Pgmaps whose teardown started, oldest first, bounded.
    retired: Vec<PgmapState>,
    /// Device PTEs by (mm, user address) → pfn, where unmaps come as zapped ranges
    /// ([`Context::keyed`]): bounded by the device pages mapped.
    mappings: BTreeMap<(u64, u64), u64>,
    events: u64,
    by_rule: BTreeMap<Rule, u64>,
    findings: Vec<Finding>,
}

/// Retired pgmaps kept for the summary.
const RETIRED: usize = 64;

impl Aggregator {
    pub fn new(ctx: Context) -> Self {
        Self { ctx: Some(ctx), ..Self::default() }
    }

    pub fn context(&self) -> &Context {
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
        self.pages.iter().map(|(_, p)| p).filter(|p| p.pgmap == pgmap).fold((0, 0), |(refs, mapped), p| {
            let above = match idle(model, p.ty) {
                Some(i) if idle_visible(model, p.ty) => (p.refcount - i).max(0),
                _ => 0,
            };
            (refs + above, mapped + u64::from(p.mapped > 0))
        })
    }

    /// Feeds one event; returns how many findings it raised.
    pub fn observe(&mut self, ev: &Event) -> usize {
        self.events += 1;
        let Some(kind) = ev.event_kind() else { return 0 };
        let Some(probe) = CATALOG.get(ev.probe as usize) else { return 0 };
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
            _ => self.page_event(ev, kind, probe),
        }
    }

    fn pgmap_add(&mut self, ev: &Event) {
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
            self.pgmaps.get_mut(&ev.pgmap).expect("just added").discovered = true;
        }
        let model = self.context().model;
        let busy: Vec<(u64, String)> = self
            .pages
            .iter()
            .filter(|(_, p)| p.pgmap == ev.pgmap)
            .filter_map(|(pfn, p)| {
                let above = match idle(model, p.ty) {
                    Some(i) if idle_visible(model, p.ty) && p.refcount > i => {
                        Some(format!("refcount {} above idle {i}", p.refcount))
                    }
                    _ => None,
                };
                let mapped = (p.mapped > 0).then(|| format!("{} mapping(s) left", p.mapped));
                let why = [above, mapped].into_iter().flatten().collect::<Vec<_>>().join(", ");
                (!why.is_empty()).then_some((pfn, why))
            })
            .collect();
        let raised = busy.len();
        for (pfn, why) in busy {
            let page = self.pages.get(pfn).expect("collected above");
            let finding = self.finding(Rule::TeardownBusy, format!("memunmap_pages with the page busy: {why}"), ev, pfn, page);
            self.raise(finding);
        }
        let gone: std::collections::HashSet<u64> =
            self.pages.iter().filter(|(_, p)| p.pgmap == ev.pgmap).map(|(pfn, _)| pfn).collect();
        self.mappings.retain(|_, pfn| !gone.contains(pfn));
        self.pages.retain(|p| p.pgmap != ev.pgmap, &mut self.tasks);
        if let Some(mut pg) = self.pgmaps.remove(&ev.pgmap) {
            pg.teardown = true;
            if self.retired.len() == RETIRED {
                self.retired.remove(0);
            }
            self.retired.push(pg);
        }
        raised
    }

    /// The device PTEs a zap of `[extra, extra2)` in mm `page` clears: those inserted there.
    fn range_unmap(&mut self, ev: &Event) {
        for (_, pfn) in self.take_range(ev.page, ev.extra, ev.extra2) {
            let Some(page) = self.pages.get_mut(pfn) else { continue };
            page.mapped = (page.mapped - 1).max(0);
            let step = Step {
                ts_ns: ev.ts_ns,
                refs: 1,
                refcount: page.refcount as i32,
                mapcount: 0,
                task: self.tasks.hold(Task { pid_tgid: ev.pid_tgid, comm: ev.comm }),
                probe: ev.probe,
                kind: EventKind::Unmap,
            };
            if let Some(old) = page.recent.push(step) {
                self.tasks.release(old.task);
            }
            let pgmap = page.pgmap;
            if let Some(pg) = self.pgmaps.get_mut(&pgmap) {
                pg.counters.count(EventKind::Unmap);
            }
            self.forget_if_idle(pfn, false);
        }
    }

    /// mremap: the device PTEs of `[extra, extra2)` in mm `page` move to `pfn` onwards.
    fn range_move(&mut self, ev: &Event) {
        let (mm, start, to) = (ev.page, ev.extra, ev.pfn);
        for ((_, at), pfn) in self.take_range(mm, start, ev.extra2) {
            self.map_at((mm, to.wrapping_add(at - start)), pfn);
        }
    }

    /// Removes and returns the mappings of `[start, end)` in `mm` (in O(k log n): a split and
    /// a merge would move the whole table at every zap).
    fn take_range(&mut self, mm: u64, start: u64, end: u64) -> Vec<((u64, u64), u64)> {
        if start >= end {
            return Vec::new();
        }
        let keys: Vec<(u64, u64)> = self.mappings.range((mm, start)..(mm, end)).map(|(k, _)| *k).collect();
        keys.into_iter().filter_map(|k| Some((k, self.mappings.remove(&k)?))).collect()
    }

    /// Drops a page whose state says nothing any more: idle (where that is visible) and
    /// unmapped, or its pgmap is being torn down.
    fn forget_if_idle(&mut self, pfn: u64, teardown: bool) {
        let model = self.context().model;
        let Some(page) = self.pages.get(pfn) else { return };
        let idle_now = match idle(model, page.ty) {
            Some(i) if idle_visible(model, page.ty) => page.refcount <= i,
            _ => true,
        };
        if teardown || (idle_now && page.mapped <= 0) {
            self.pages.remove(pfn, &mut self.tasks);
        }
    }

    /// Records that (mm, address) `at` maps `pfn`; false when it mapped that page already (a
    /// refault, or an insert that lost a race and mapped nothing new).
    fn map_at(&mut self, at: (u64, u64), pfn: u64) -> bool {
        match self.mappings.insert(at, pfn) {
            Some(old) if old == pfn => false,
            Some(stale) => {
                // The PTE was zapped where no range probe saw it (insert_pfn maps only an
                // empty PTE): the page it named is no longer mapped there.
                if let Some(page) = self.pages.get_mut(stale) {
                    page.mapped = (page.mapped - 1).max(0);
                }
                true
            }
            None => true,
        }
    }

    fn page_event(&mut self, ev: &Event, kind: EventKind, probe: &'static Probe) -> usize {
        let keyed = kind == EventKind::Insert && self.context().keyed(probe);
        let new_mapping = !keyed || self.map_at((ev.extra2, ev.extra), ev.pfn);
        let ctx = self.ctx.as_ref().expect("built with new()");
        let ty = ctx.pg_type(ev.pgmap_type);
        let teardown = self.retired.iter().any(|p| p.address == ev.pgmap) && !self.pgmaps.contains_key(&ev.pgmap);
        let pg = match self.pgmaps.get_mut(&ev.pgmap) {
            Some(pg) => Some(pg),
            None if teardown => self.retired.iter_mut().rev().find(|p| p.address == ev.pgmap),
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
        let (page, fresh) = self.pages.get_or_start(ev.pfn, ev.pgmap, ty, i64::from(ev.refcount));
        // gup_put_folio hands the same references on to __put_devmap_managed_*_refs (≤6.12):
        // one drop seen at two nested probes, counted once.
        let nested = kind == EventKind::Put
            && page.recent.last().is_some_and(|prev| {
                prev.kind == EventKind::Put
                    && self.tasks.get(prev.task).pid_tgid == ev.pid_tgid
                    && prev.refcount == ev.refcount
                    && CATALOG[prev.probe as usize].site != probe.site
            });
        if let Some(pg) = pg.filter(|_| !nested) {
            pg.counters.count(kind);
            pg.counters.pages_seen += u64::from(fresh);
        }
        page.pgmap = ev.pgmap;
        page.ty = ty;
        let step = Step {
            ts_ns: ev.ts_ns,
            // An insert's extra is its address where its probe knows it; it maps the page once.
            refs: if kind == EventKind::Insert && probe.at.is_some() { 1 } else { ev.extra },
            refcount: ev.refcount,
            mapcount: ev.mapcount,
            task: self.tasks.hold(Task { pid_tgid: ev.pid_tgid, comm: ev.comm }),
            probe: ev.probe,
            kind,
        };
        if let Some(old) = page.recent.push(step) {
            self.tasks.release(old.task);
        }
        let view = PageView { ty, mapped: page.mapped, pgmap_in_teardown: teardown };
        let verdict = rules::judge(ctx, probe, ev, &view);
        advance(ctx, probe, kind, ev, page, new_mapping);
        let key = verdict.as_ref().map(|(rule, _)| (*rule, ev.pid_tgid, ev.refcount));
        let repeat = key.is_some() && key == page.last_finding;
        page.last_finding = key;
        let mut raised = 0;
        if let Some((rule, detail)) = verdict.filter(|_| !repeat) {
            let page = self.pages.get(ev.pfn).expect("just updated");
            let finding = self.finding(rule, detail, ev, ev.pfn, page);
            self.raise(finding);
            raised = 1;
        }
        self.forget_if_idle(ev.pfn, teardown);
        raised
    }

    fn finding(&self, rule: Rule, detail: String, ev: &Event, pfn: u64, page: &PageState) -> Finding {
        let pg = self.pgmaps().find(|p| p.address == page.pgmap);
        let range = pg.and_then(|p| p.range_of(pfn));
        Finding {
            rule,
            detail,
            pfn,
            page: if ev.pfn == pfn { ev.page } else { 0 },
            pgmap: PgmapRef {
                address: page.pgmap,
                type_name: self.context().type_name(pg.map_or(PGMAP_TYPE_UNKNOWN, |p| p.raw_type)).to_owned(),
                start: range.map(|r| r.0),
                end: range.map(|r| r.1),
            },
            pid: ev.pid(),
            tgid: ev.tgid(),
            comm: ev.comm_str().to_owned(),
            ts_ns: ev.ts_ns,
            stack_id: ev.stack_id,
            recent: page.recent.iter().map(|s| s.transition(self.tasks.get(s.task))).collect(),
        }
    }

    fn raise(&mut self, finding: Finding) {
        *self.by_rule.entry(finding.rule).or_default() += 1;
        if self.findings.len() < KEPT_FINDINGS {
            self.findings.push(finding);
        }
    }
}

/// Moves a page's refcount and mapping estimate past the probed function; `new_mapping` is
/// false for an insert at an address that already mapped the page.
fn advance(ctx: &Context, probe: &Probe, kind: EventKind, ev: &Event, page: &mut PageState, new_mapping: bool) {
    let r = i64::from(ev.refcount);
    let m = i64::from(ev.mapcount);
    let refs = ev.extra.max(1) as i64;
    let zero_based = ctx.model == Model::ZeroBased;
    let tracked = ctx.tracked.get(ev.probe as usize).copied().unwrap_or_else(|| ctx.unmap_seen(rules::level(probe)));
    if rules::passthrough(ctx.model, probe, page.ty) {
        return;
    }
    match kind {
        EventKind::Insert => {
            // 7.x: the mapping takes a reference and a mapcount, unless the insert fails on 0.
            let ok = !zero_based || r >= 1;
            page.refcount = if zero_based && ok { r + 1 } else { r };
            if tracked && ok && new_mapping {
                page.mapped = if zero_based { m + 1 } else { page.mapped + 1 };
            }
        }
        EventKind::Get => {
            let fails = probe.speculative && r <= 0;
            page.refcount = if fails { r } else { r + refs };
        }
        EventKind::Put => page.refcount = r - refs,
        EventKind::Free => {
            // 7.x GENERIC is reset to its idle 1; every other free leaves the count as it was.
            page.refcount = match (zero_based, page.ty) {
                (true, PgType::Generic) => 1,
                _ => r,
            };
            if zero_based {
                // A freed folio starts over; a nonzero mapcount here is reported, not carried.
                page.mapped = 0;
            }
        }
        EventKind::Unmap => {
            page.refcount = r;
            page.mapped = if zero_based { m - refs } else { (page.mapped - refs).max(0) };
        }
        EventKind::PgmapAdd | EventKind::PgmapRemove | EventKind::Remap => {}
    }
}
