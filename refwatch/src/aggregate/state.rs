//! What pages remember of their events, and per-pgmap state. Pages are kept only while live
//! (above idle or mapped, [`super::pages`]), so memory follows the number of busy device
//! pages, not the size of the devices.

use refwatch_common::{EventKind, event::probe_function};
use serde::Serialize;

use refwatch_common::model::MemoryType;

use super::tasks::Task;
use crate::event::comm_str;

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

impl Transition {
    /// An event with the task that ran it and what it `refs` moves
    /// ([`super::KernelView::moves`]).
    pub fn of(ev: &refwatch_common::Event, kind: EventKind, refs: u64) -> Self {
        Transition {
            ts_ns: ev.ts_ns,
            kind,
            function: probe_function(ev.probe),
            refcount: ev.refcount,
            mapcount: ev.mapcount,
            refs,
            pid: ev.pid_tgid as u32,
            comm: comm_str(&ev.comm).into_owned(),
        }
    }
}

fn kind_name<S: serde::Serializer>(k: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

/// What a page keeps of an event: 32 bytes where the raw event is 96 (its task is an index
/// into the aggregator's [`super::tasks::Tasks`]), so that a page's history is 512 bytes. A
/// [`Transition`] (with its comm string) is built from it only for a finding.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub ts_ns: u64,
    /// `Event::extra`: references moved, pages unmapped.
    pub refs: u64,
    pub refcount: i32,
    pub mapcount: i32,
    pub task: u32,
    pub probe: u8,
    pub kind: EventKind,
}

const _: () = assert!(size_of::<Step>() <= 32);

impl Step {
    pub fn transition(&self, task: &Task) -> Transition {
        Transition {
            ts_ns: self.ts_ns,
            kind: self.kind,
            function: probe_function(self.probe),
            refcount: self.refcount,
            mapcount: self.mapcount,
            refs: self.refs,
            pid: task.pid_tgid as u32,
            comm: comm_str(&task.comm).into_owned(),
        }
    }
}

/// The last [`RING`] steps of a page, in place (no allocation per page). The counters come
/// first: a ring cleared and given its first step touches one cache line.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct Ring {
    /// Where the next step goes.
    next: u8,
    len: u8,
    steps: [Step; RING],
}

impl Ring {
    const EMPTY: Step = Step {
        ts_ns: 0,
        refs: 0,
        refcount: 0,
        mapcount: 0,
        task: 0,
        probe: 0,
        kind: EventKind::Insert,
    };

    pub fn new() -> Self {
        Self {
            next: 0,
            len: 0,
            steps: [Self::EMPTY; RING],
        }
    }

    /// Adds a step; returns the oldest one when it falls out.
    pub fn push(&mut self, step: Step) -> Option<Step> {
        let slot = &mut self.steps[usize::from(self.next)];
        let evicted = (usize::from(self.len) == RING).then_some(*slot);
        *slot = step;
        self.next = (self.next + 1) % RING as u8;
        self.len = (self.len + 1).min(RING as u8);
        evicted
    }

    pub fn clear(&mut self) {
        (self.next, self.len) = (0, 0);
    }

    /// Clears the ring and adds `step`.
    pub fn start(&mut self, step: Step) {
        self.steps[0] = step;
        (self.next, self.len) = (1, 1);
    }

    pub fn last(&self) -> Option<&Step> {
        (self.len > 0).then(|| &self.steps[(usize::from(self.next) + RING - 1) % RING])
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Step> {
        let first = usize::from(self.next) + RING - usize::from(self.len);
        (first..first + usize::from(self.len)).map(|i| &self.steps[i % RING])
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
            EventKind::PgmapAdd
            | EventKind::PgmapRemove
            | EventKind::Remap
            | EventKind::Truncate
            | EventKind::Held
            | EventKind::Watch => {}
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgmapState {
    pub address: u64,
    pub raw_type: u8,
    pub ty: MemoryType,
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
        self.ranges
            .iter()
            .copied()
            .find(|&(s, e)| (s..e).contains(&pfn))
            .or_else(|| {
                let start = self.ranges.iter().map(|r| r.0).min()?;
                let end = self.ranges.iter().map(|r| r.1).max()?;
                Some((start, end))
            })
    }
}
