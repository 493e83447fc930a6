//! Per-page and per-pgmap state. Pages are kept only while live (above idle or mapped), so
//! memory follows the number of busy device pages, not the size of the devices.

use std::collections::VecDeque;

use refwatch_common::{Event, EventKind};
use serde::Serialize;

use super::rules::PgType;

/// How many transitions each page remembers for findings.
pub const RING: usize = 16;

/// One event as a page remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub ts_ns: u64,
    #[serde(serialize_with = "kind_name")]
    pub kind: EventKind,
    /// The probed function.
    pub function: &'static str,
    pub refcount: i32,
    pub mapcount: i32,
    pub refs: u64,
    pub pid: u32,
    pub comm: String,
}

fn kind_name<S: serde::Serializer>(k: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

impl Transition {
    pub fn new(ev: &Event, kind: EventKind) -> Self {
        use crate::event::EventExt;
        Self {
            ts_ns: ev.ts_ns,
            kind,
            function: refwatch_common::CATALOG.get(ev.probe as usize).map_or("?", |p| p.function),
            refcount: ev.refcount,
            mapcount: ev.mapcount,
            refs: ev.extra,
            pid: ev.pid(),
            comm: ev.comm_str().to_owned(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PageState {
    pub pgmap: u64,
    pub ty: PgType,
    /// Refcount after the last event: its entry value plus what the function does.
    pub refcount: i64,
    /// Mappings not yet unmapped at levels whose unmaps are probed (≤6.12 shadow count), or
    /// the kernel's mapcount after the last anchoring event (7.x).
    pub mapped: i64,
    /// The last [`RING`] events, kept raw: a [`Transition`] (with its comm string) is built
    /// only for a finding, not for every event.
    pub recent: VecDeque<(Event, EventKind)>,
    /// The finding raised by the previous event of this page, to report a breach seen by
    /// nested probes (gup_put_folio → __put_devmap_managed_*) once.
    pub last_finding: Option<(super::Rule, u64, i32)>,
}

impl PageState {
    pub fn new(pgmap: u64, ty: PgType) -> Self {
        Self { pgmap, ty, refcount: 0, mapped: 0, recent: VecDeque::with_capacity(RING), last_finding: None }
    }

    pub fn remember(&mut self, ev: &Event, kind: EventKind) {
        if self.recent.len() == RING {
            self.recent.pop_front();
        }
        self.recent.push_back((*ev, kind));
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Pages that became live (first event, or first event after going idle).
    pub pages_seen: u64,
    pub inserts: u64,
    pub gets: u64,
    pub puts: u64,
    pub frees: u64,
    pub unmaps: u64,
}

impl Counters {
    pub fn count(&mut self, kind: EventKind) {
        match kind {
            EventKind::Insert => self.inserts += 1,
            EventKind::Get => self.gets += 1,
            EventKind::Put => self.puts += 1,
            EventKind::Free => self.frees += 1,
            EventKind::Unmap => self.unmaps += 1,
            EventKind::PgmapAdd | EventKind::PgmapRemove => {}
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgmapState {
    pub address: u64,
    pub raw_type: u8,
    pub ty: PgType,
    /// `[start, end)` pfn ranges.
    pub ranges: Vec<(u64, u64)>,
    /// Learned from a page rather than from memremap_pages.
    pub discovered: bool,
    /// memunmap_pages has started.
    pub teardown: bool,
    pub counters: Counters,
}

impl PgmapState {
    /// The range holding `pfn`, or the hull of all ranges.
    pub fn range_of(&self, pfn: u64) -> Option<(u64, u64)> {
        self.ranges.iter().copied().find(|&(s, e)| (s..e).contains(&pfn)).or_else(|| {
            let start = self.ranges.iter().map(|r| r.0).min()?;
            let end = self.ranges.iter().map(|r| r.1).max()?;
            Some((start, end))
        })
    }
}
