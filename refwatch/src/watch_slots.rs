//! Which pages get the CPU's few hardware breakpoint slots, and when they give them back.
//!
//! Pure bookkeeping: the session arms and disarms what [`Slots::next_change`] says. The pages of
//! findings come first, pages whose count refwatch cannot tell ([`Aggregator::untrusted`]) only
//! take slots no finding wants, and `--watch` pages keep theirs until their pgmap goes.

use std::{collections::VecDeque, fmt};

use refwatch_common::{Event, EventKind};

use crate::{
    aggregate::{Aggregator, Rule},
    event::EventExt,
};

/// Pages kept waiting for a slot; past it the oldest of the least wanted is forgotten.
const WAITING: usize = 64;

/// Why a page is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// `--watch PFN`.
    Asked,
    /// A finding on the page: who touches it next is the bug's next step.
    Finding(Rule),
    /// References taken that refwatch cannot see given back (GENERIC pages' inline puts).
    Untrusted,
}

impl Why {
    /// Which of two wants keeps a slot.
    fn rank(self) -> u8 {
        match self {
            Why::Untrusted => 0,
            Why::Finding(_) => 1,
            Why::Asked => 2,
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Asked => f.write_str("--watch"),
            Why::Finding(rule) => write!(f, "finding {rule}"),
            Why::Untrusted => f.write_str("references refwatch cannot count"),
        }
    }
}

/// Why a slot was given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The page reached its free path.
    Freed,
    /// Its pgmap's teardown began: the struct page is going away.
    TornDown,
    /// An untrusted page was seen back at idle.
    Settled,
    /// An untrusted page's slot went to a finding.
    Preempted,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Release::Freed => "freed",
            Release::TornDown => "its pgmap is torn down",
            Release::Settled => "back at idle",
            Release::Preempted => "its slot goes to a finding",
        })
    }
}

/// What the session is to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Arm { pfn: u64, why: Why },
    Release { pfn: u64, why: Release },
}

#[derive(Debug, Default)]
pub struct Slots {
    /// How many pages the kernel lets refwatch watch at once: unknown until it refuses one.
    capacity: Option<usize>,
    /// Pages watched (or about to be), oldest first.
    armed: Vec<(u64, Why)>,
    /// Pages wanting a slot, oldest first.
    waiting: Vec<(u64, Why)>,
    /// Slots given up, for the session to close.
    released: VecDeque<(u64, Release)>,
    /// Pages are chosen by findings and untrusted counts, not only asked for.
    auto: bool,
}

impl Slots {
    /// The `--watch` pages the session armed; `auto`: choose more as findings are made.
    pub fn new(asked: impl IntoIterator<Item = u64>, auto: bool) -> Self {
        Self {
            armed: asked.into_iter().map(|pfn| (pfn, Why::Asked)).collect(),
            auto,
            ..Self::default()
        }
    }

    /// Notes what event `ev` means for the slots, once `agg` has observed it; the findings it
    /// raised are those kept from index `kept_before` on.
    pub fn observe(&mut self, ev: &Event, agg: &Aggregator, kept_before: usize) {
        let Some(kind) = ev.event_kind() else {
            return;
        };
        match kind {
            EventKind::Free => self.give_back(Release::Freed, |pfn, why| {
                pfn == ev.pfn && why != Why::Asked
            }),
            // The event's range is the pgmap's first one, the one its pages are known by.
            EventKind::PgmapRemove => self.give_back(Release::TornDown, |pfn, _| {
                (ev.extra..ev.extra2).contains(&pfn)
            }),
            _ => {}
        }
        if !self.auto {
            return;
        }
        // After the teardown's release: the pages a teardown leaves busy are watched past it.
        for f in agg.findings().get(kept_before..).unwrap_or_default() {
            self.want(f.pfn, Why::Finding(f.rule));
        }
        let names_page = !matches!(
            kind,
            EventKind::PgmapAdd | EventKind::PgmapRemove | EventKind::Held | EventKind::Remap
        ) && ev.user_range().is_none();
        if names_page {
            if agg.untrusted(ev.pfn) {
                self.want(ev.pfn, Why::Untrusted);
            } else {
                self.give_back(Release::Settled, |pfn, why| {
                    pfn == ev.pfn && why == Why::Untrusted
                });
            }
        }
    }

    /// Page `pfn` wants a slot for `why`; a page already watched or waiting keeps the better
    /// of its reasons.
    pub fn want(&mut self, pfn: u64, why: Why) {
        if let Some((_, old)) = self
            .armed
            .iter_mut()
            .chain(self.waiting.iter_mut())
            .find(|(p, _)| *p == pfn)
        {
            if why.rank() > old.rank() {
                *old = why;
            }
            return;
        }
        self.waiting.push((pfn, why));
        if self.waiting.len() > WAITING {
            let least = self.waiting.iter().map(|(_, w)| w.rank()).min();
            if let Some(i) = self
                .waiting
                .iter()
                .position(|(_, w)| Some(w.rank()) == least)
            {
                self.waiting.remove(i);
            }
        }
    }

    /// Gives back the slots of the pages `gone` picks (by pfn and reason); they stop waiting
    /// too.
    fn give_back(&mut self, why: Release, gone: impl Fn(u64, Why) -> bool) {
        let released = &mut self.released;
        self.armed.retain(|&(pfn, w)| {
            let keep = !gone(pfn, w);
            if !keep {
                released.push_back((pfn, why));
            }
            keep
        });
        self.waiting.retain(|&(pfn, w)| !gone(pfn, w));
    }

    /// The next change, until there is none: the releases first, then the waiting page that
    /// is wanted most (findings in the order raised, then the untrusted page grabbed last,
    /// the likeliest to be held still) into a free slot, or into an untrusted page's slot
    /// when it is a finding's and none is free.
    pub fn next_change(&mut self) -> Option<Change> {
        if let Some((pfn, why)) = self.released.pop_front() {
            return Some(Change::Release { pfn, why });
        }
        let pick = self
            .waiting
            .iter()
            .position(|(_, w)| matches!(w, Why::Finding(_)))
            .or_else(|| self.waiting.len().checked_sub(1))?;
        let (pfn, why) = self.waiting[pick];
        if self.capacity.is_none_or(|c| self.armed.len() < c) {
            self.waiting.remove(pick);
            self.armed.push((pfn, why));
            return Some(Change::Arm { pfn, why });
        }
        let untrusted = self.armed.iter().position(|(_, w)| *w == Why::Untrusted);
        let (Why::Finding(_), Some(i)) = (why, untrusted) else {
            return None;
        };
        let (old, _) = self.armed.remove(i);
        // Still untrusted: it may have a slot again later.
        self.waiting.insert(0, (old, Why::Untrusted));
        Some(Change::Release {
            pfn: old,
            why: Release::Preempted,
        })
    }

    /// The kernel refused the breakpoint [`Self::next_change`] asked for on `pfn`: it has no more
    /// slots than are armed now. The page waits, first in line.
    pub fn refused(&mut self, pfn: u64) {
        let Some(i) = self.armed.iter().position(|(p, _)| *p == pfn) else {
            return;
        };
        let entry = self.armed.remove(i);
        self.capacity = Some(self.armed.len());
        self.waiting.insert(0, entry);
    }
}

#[cfg(test)]
mod tests {
    use refwatch_common::{RefModel, event::WATCH_PROBE};

    use super::*;
    use crate::aggregate::synth::{BASE_PFN, Op, Probes, Sim, healthy};

    fn drain(slots: &mut Slots) -> Vec<Change> {
        std::iter::from_fn(|| slots.next_change()).collect()
    }

    fn arm(pfn: u64, why: Why) -> Change {
        Change::Arm { pfn, why }
    }

    fn release(pfn: u64, why: Release) -> Change {
        Change::Release { pfn, why }
    }

    const GET: Why = Why::Finding(Rule::GetFromZero);

    #[test]
    fn findings_come_first_and_untrusted_pages_give_way() {
        let mut s = Slots::new([1], true);
        s.want(2, Why::Untrusted);
        s.want(3, Why::Untrusted);
        s.want(4, GET);
        // Unknown capacity: every page is tried, the finding's first, then the newest grab.
        assert_eq!(
            drain(&mut s),
            [arm(4, GET), arm(3, Why::Untrusted), arm(2, Why::Untrusted)]
        );
        // The kernel had three slots: the last page waits.
        s.refused(2);
        assert_eq!(drain(&mut s), []);
        // A finding takes the slot of the oldest untrusted page; that one waits again.
        let put = Why::Finding(Rule::PutUnderflow);
        s.want(5, put);
        assert_eq!(drain(&mut s), [release(3, Release::Preempted), arm(5, put)]);
        // No untrusted page left to give way: a third finding waits.
        s.want(6, GET);
        assert_eq!(drain(&mut s), []);
        assert_eq!(
            s.waiting,
            [(3, Why::Untrusted), (2, Why::Untrusted), (6, GET)]
        );
    }

    #[test]
    fn a_page_keeps_its_best_reason() {
        let mut s = Slots::new([1], true);
        s.want(1, GET);
        s.want(2, Why::Untrusted);
        s.want(2, GET);
        s.want(2, Why::Untrusted);
        assert_eq!(drain(&mut s), [arm(2, GET)]);
        assert_eq!(s.armed, [(1, Why::Asked), (2, GET)]);
    }

    #[test]
    fn waiting_is_bounded_and_forgets_untrusted_pages_first() {
        let mut s = Slots {
            capacity: Some(0),
            ..Slots::default()
        };
        s.want(0, Why::Untrusted);
        for pfn in 1..=WAITING as u64 {
            s.want(pfn, GET);
        }
        assert_eq!(s.waiting.len(), WAITING);
        assert!(s.waiting.iter().all(|&(_, w)| w == GET));
        assert_eq!(drain(&mut s), []);
    }

    fn watch_hit(mut ev: Event, refcount: i32) -> Event {
        (ev.probe, ev.kind, ev.refcount) = (WATCH_PROBE, EventKind::Watch as u8, refcount);
        ev
    }

    /// Feeds `events` to a fresh aggregator and the slots; the changes after each event.
    fn run(p: &Probes, slots: &mut Slots, events: &[Event]) -> Vec<Vec<Change>> {
        let mut agg = Aggregator::new(p.context());
        events
            .iter()
            .map(|ev| {
                let before = agg.findings().len();
                agg.observe(ev);
                slots.observe(ev, &agg, before);
                drain(slots)
            })
            .collect()
    }

    #[test]
    fn a_generic_grab_is_watched_until_a_hit_shows_it_idle() {
        let p = Probes::for_model(RefModel::FsdaxOneBased);
        let mut sim = Sim::new(&p, true, 2);
        sim.apply(Op::Map(1));
        sim.apply(Op::Grab(1, false));
        let grab = *sim.out.last().unwrap();
        let mut events = sim.out.clone();
        // The inline put back to idle 1, seen by the breakpoint only.
        events.push(watch_hit(grab, 1));
        let mut s = Slots::new([], true);
        let changes = run(&p, &mut s, &events);
        let pfn = BASE_PFN + 1;
        assert_eq!(changes[changes.len() - 2], [arm(pfn, Why::Untrusted)]);
        assert_eq!(changes[changes.len() - 1], [release(pfn, Release::Settled)]);
    }

    #[test]
    fn a_finding_is_watched_until_freed_and_asked_pages_until_the_teardown() {
        let p = Probes::for_model(RefModel::ZeroBased);
        let mut events = healthy(&p, false, 2, &[Op::Map(0), Op::Grab(0, false)]);
        let grab = events
            .iter()
            .position(|e| e.kind == EventKind::Get as u8)
            .unwrap();
        events[grab].refcount = 0;
        // memunmap_pages names the pgmap's range, as the add does.
        let remove = events
            .iter_mut()
            .rev()
            .find(|e| e.kind == EventKind::PgmapRemove as u8);
        let remove = remove.unwrap();
        (remove.extra, remove.extra2) = (BASE_PFN, BASE_PFN + 2);
        let mut s = Slots::new([BASE_PFN + 1], true);
        let changes: Vec<Change> = run(&p, &mut s, &events).concat();
        let (pfn, why) = (BASE_PFN, Why::Finding(Rule::GetFromZero));
        let torn_down = release(BASE_PFN + 1, Release::TornDown);
        assert_eq!(
            changes,
            [arm(pfn, why), release(pfn, Release::Freed), torn_down]
        );
        // Without auto-watching, the asked page alone.
        let mut s = Slots::new([BASE_PFN + 1], false);
        assert_eq!(run(&p, &mut s, &events).concat(), [torn_down]);
    }
}
