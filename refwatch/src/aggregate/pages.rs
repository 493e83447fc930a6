//! Live pages by pfn: what the rules need (refcount and mapping estimates) in 12 bytes a page,
//! in chunks of [`LANES`] consecutive pfns that share their pgmap, type and vmemmap position
//! (about 14 bytes a page where a workload keeps neighbours live, at most about 230 for a lone
//! page), and runs of whole chunks whose pages all have the same counts and no history, one
//! entry (about 80 bytes with its tree slot) whatever the run's length: a workload mapping a
//! whole device costs memory by the stretches of pages in different states, not by its size.
//! The page histories are in a capped pool ([`super::histories`]); a chunk folds into a run
//! when the last of its pages loses its history, and a run gives a chunk back when an event
//! touches one of its pages.

use std::{
    cell::Cell,
    collections::{BTreeMap, HashMap},
    hash::BuildHasherDefault,
};

use refwatch_common::model::MemoryType;

use super::{
    Rule, STRUCT_PAGE,
    histories::Histories,
    state::{Ring, Step},
};

/// pfns are well-spread integers: a multiplicative (Fx-style) hash is enough, where SipHash
/// took about a tenth of `refwatch report`'s time.
#[derive(Clone, Copy, Debug, Default)]
struct PfnHasher(u64);

impl std::hash::Hasher for PfnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type PfnMap<V> = HashMap<u64, V, BuildHasherDefault<PfnHasher>>;

/// Pages per chunk.
pub const LANES: u64 = 16;
const _: () = assert!(LANES == 16, "a history's owner keeps the lane in 4 bits");
/// A lane without a history.
const NONE: u32 = u32::MAX;

/// A live page as the rules see it.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub pgmap: u64,
    /// The `struct page *` events named it by.
    pub page: u64,
    pub ty: MemoryType,
    /// Refcount after the last event: its entry value plus what the function does.
    pub refcount: i64,
    /// Mappings not yet unmapped at levels whose unmaps are probed (≤6.12 shadow count), or
    /// the kernel's mapcount after the last anchoring event (7.x).
    pub mapped: i64,
}

#[derive(Clone, Copy, Debug)]
struct Lane {
    refcount: i32,
    mapped: i32,
    history: u32,
}

#[derive(Clone, Debug)]
struct Chunk {
    /// pfn of lane 0.
    base: u64,
    pgmap: u64,
    /// `struct page *` of lane 0: vmemmap is linear on x86-64.
    page0: u64,
    ty: MemoryType,
    /// Bit per live lane.
    live: u16,
    /// Bit per lane holding a history: an eviction asks whether the chunk may fold, and the
    /// answer is mostly no (its neighbours' rings are taken in order after it).
    rings: u16,
    lanes: [Lane; LANES as usize],
}

impl Chunk {
    /// Chunk number `no`, no page live.
    fn empty(no: u64) -> Self {
        Self {
            base: no * LANES,
            pgmap: 0,
            page0: 0,
            ty: MemoryType::Unknown,
            live: 0,
            rings: 0,
            lanes: [Lane {
                refcount: 0,
                mapped: 0,
                history: NONE,
            }; LANES as usize],
        }
    }
}

/// The pgmap, type and `struct page *` of a page that does not share its chunk's.
#[derive(Clone, Copy, Debug)]
struct Odd {
    pgmap: u64,
    page: u64,
    ty: MemoryType,
}

/// [`LANES`] × `chunks` consecutive live pages, all with these counts, none with a history, an
/// odd identity or a last finding: what a chunk in that state holds, once for the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    chunks: u64,
    pgmap: u64,
    /// `struct page *` of the run's first page.
    page0: u64,
    ty: MemoryType,
    refcount: i32,
    mapped: i32,
}

impl Run {
    /// Whether `next`, starting `gap` chunks after this run's start, continues it.
    fn joins(&self, next: &Run, gap: u64) -> bool {
        (self.pgmap, self.ty, self.refcount, self.mapped)
            == (next.pgmap, next.ty, next.refcount, next.mapped)
            && self.page0.wrapping_add(gap * LANES * STRUCT_PAGE) == next.page0
    }
}

/// Every lane live.
const FULL: u16 = u16::MAX;

/// A page as [`Pages::record`] found it: whether it was not live, its counts and the last
/// step of its history.
#[derive(Clone, Copy, Debug)]
pub struct Touched {
    pub fresh: bool,
    pub refcount: i64,
    pub mapped: i64,
    pub last: Option<Step>,
    /// Where the page is, for [`Pages::set_counts_at`] and [`Pages::remove_at`].
    pub slot: Slot,
}

/// Where a live page is (its chunk and lane): valid until the pages change, but for the
/// page's own steps and counts (a step on another page may fold its chunk).
#[derive(Clone, Copy, Debug)]
pub struct Slot((usize, usize));

/// The finding a page's previous event raised (rule, pid_tgid, refcount at entry).
pub type LastFinding = (Rule, u64, i32);

#[derive(Clone, Debug)]
pub struct Pages {
    index: PfnMap<u32>,
    /// Runs by their first chunk number (pfn / [`LANES`]).
    runs: BTreeMap<u64, Run>,
    /// Whether chunks fold into runs (off only to test that folding changes nothing).
    compact: bool,
    chunks: Vec<Chunk>,
    /// Chunks with no live page, for reuse.
    free: Vec<u32>,
    odd: PfnMap<Odd>,
    last_findings: PfnMap<LastFinding>,
    histories: Histories,
    live: usize,
    /// The chunk looked up last (chunk number, index): an event's several lookups hit it.
    last: Cell<Option<(u64, u32)>>,
}

/// Counts are kept in the kernel's own width (atomic_t); wider estimates saturate.
fn narrow(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

impl Default for Pages {
    fn default() -> Self {
        Self {
            index: PfnMap::default(),
            runs: BTreeMap::new(),
            compact: true,
            chunks: Vec::new(),
            free: Vec::new(),
            odd: PfnMap::default(),
            last_findings: PfnMap::default(),
            histories: Histories::default(),
            live: 0,
            last: Cell::new(None),
        }
    }
}

impl Pages {
    /// With a smaller history pool than [`super::histories::HISTORIES`], to test eviction, and
    /// with or without runs.
    #[cfg(test)]
    pub fn with_histories(cap: usize, compact: bool) -> Self {
        Self {
            histories: Histories::with_cap(cap),
            compact,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// Chunks in use and runs (for tests that the workloads they build fold).
    #[cfg(test)]
    pub fn shape(&self) -> (usize, usize) {
        (self.index.len(), self.runs.len())
    }

    #[inline]
    fn chunk_of(&self, pfn: u64) -> Option<u32> {
        let no = pfn / LANES;
        if let Some((last_no, i)) = self.last.get()
            && last_no == no
        {
            return Some(i);
        }
        let i = *self.index.get(&no)?;
        self.last.set(Some((no, i)));
        Some(i)
    }

    /// The chunk and lane of a live page.
    #[inline]
    fn at(&self, pfn: u64) -> Option<(usize, usize)> {
        let c = self.chunk_of(pfn)? as usize;
        let lane = (pfn % LANES) as usize;
        (self.chunks[c].live & (1 << lane) != 0).then_some((c, lane))
    }

    /// The chunk and lane of a live page, giving its run a chunk back if it is in one.
    fn at_mut(&mut self, pfn: u64) -> Option<(usize, usize)> {
        if let Some(at) = self.at(pfn) {
            return Some(at);
        }
        let c = self.unfold(pfn / LANES)? as usize;
        Some((c, (pfn % LANES) as usize))
    }

    /// The run holding chunk number `no`, by its first chunk.
    fn run_of(&self, no: u64) -> Option<(u64, Run)> {
        if self.runs.is_empty() {
            return None;
        }
        let (&start, &run) = self.runs.range(..=no).next_back()?;
        (no - start < run.chunks).then_some((start, run))
    }

    /// Takes chunk number `no` out of its run (if it is in one) as a chunk of its own.
    fn unfold(&mut self, no: u64) -> Option<u32> {
        let (start, run) = self.run_of(no)?;
        let page0 = |at: u64| run.page0.wrapping_add((at - start) * LANES * STRUCT_PAGE);
        if no > start {
            self.runs.get_mut(&start).expect("found above").chunks = no - start;
        } else {
            self.runs.remove(&start);
        }
        if no - start + 1 < run.chunks {
            let rest = Run {
                chunks: run.chunks - (no - start + 1),
                page0: page0(no + 1),
                ..run
            };
            self.runs.insert(no + 1, rest);
        }
        let c = self.new_chunk(Chunk {
            base: no * LANES,
            pgmap: run.pgmap,
            page0: page0(no),
            ty: run.ty,
            live: FULL,
            rings: 0,
            lanes: [Lane {
                refcount: run.refcount,
                mapped: run.mapped,
                history: NONE,
            }; LANES as usize],
        });
        Some(c)
    }

    /// Folds chunk `c` into a run if all its pages are live, with the same counts, and hold
    /// nothing else (a history, an odd identity, a last finding).
    fn fold(&mut self, c: usize) {
        let chunk = &self.chunks[c];
        let l0 = chunk.lanes[0];
        if !self.compact
            || chunk.live != FULL
            || chunk.rings != 0
            || chunk
                .lanes
                .iter()
                .any(|l| (l.refcount, l.mapped) != (l0.refcount, l0.mapped))
        {
            return;
        }
        let base = chunk.base;
        let holds = |map_empty: bool, has: &dyn Fn(u64) -> bool| {
            !map_empty && (0..LANES).any(|l| has(base + l))
        };
        if holds(self.odd.is_empty(), &|p| self.odd.contains_key(&p))
            || holds(self.last_findings.is_empty(), &|p| {
                self.last_findings.contains_key(&p)
            })
        {
            return;
        }
        let no = chunk.base / LANES;
        let mut run = Run {
            chunks: 1,
            pgmap: chunk.pgmap,
            page0: chunk.page0,
            ty: chunk.ty,
            refcount: l0.refcount,
            mapped: l0.mapped,
        };
        if let Some(next) = self.runs.get(&(no + 1)).copied()
            && run.joins(&next, 1)
        {
            self.runs.remove(&(no + 1));
            run.chunks += next.chunks;
        }
        // The run before grows in place (a sweep folds chunks in order): no second search.
        match self.runs.range_mut(..no).next_back() {
            Some((&s, prev)) if s + prev.chunks == no && prev.joins(&run, no - s) => {
                prev.chunks += run.chunks;
            }
            _ => {
                self.runs.insert(no, run);
            }
        }
        // Free chunks hold no live page (iter() walks them all).
        self.chunks[c].live = 0;
        self.index.remove(&no);
        self.free.push(c as u32);
        self.last.set(None);
    }

    fn view(&self, c: usize, lane: usize) -> Page {
        let chunk = &self.chunks[c];
        let pfn = chunk.base + lane as u64;
        let l = &chunk.lanes[lane];
        let odd = if self.odd.is_empty() {
            None
        } else {
            self.odd.get(&pfn)
        };
        let (pgmap, page, ty) = match odd {
            Some(o) => (o.pgmap, o.page, o.ty),
            None => (
                chunk.pgmap,
                chunk.page0.wrapping_add(lane as u64 * STRUCT_PAGE),
                chunk.ty,
            ),
        };
        Page {
            pgmap,
            page,
            ty,
            refcount: i64::from(l.refcount),
            mapped: i64::from(l.mapped),
        }
    }

    pub fn get(&self, pfn: u64) -> Option<Page> {
        if let Some(c) = self.chunk_of(pfn) {
            let lane = (pfn % LANES) as usize;
            return (self.chunks[c as usize].live & (1 << lane) != 0)
                .then(|| self.view(c as usize, lane));
        }
        let (start, run) = self.run_of(pfn / LANES)?;
        Some(run_page(start, &run, pfn))
    }

    /// Every live page: those of chunks, then those of runs.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Page)> + '_ {
        let chunked = self.chunks.iter().enumerate().flat_map(move |(c, chunk)| {
            (0..LANES as usize)
                .filter(move |lane| chunk.live & (1 << lane) != 0)
                .map(move |lane| (chunk.base + lane as u64, self.view(c, lane)))
        });
        let runs = self.runs.iter().flat_map(|(&start, run)| {
            let first = start * LANES;
            (0..run.chunks * LANES).map(move |i| (first + i, run_page(start, run, first + i)))
        });
        chunked.chain(runs)
    }

    /// An event on page `pfn`: starts it with `refcount` unless it is live, names its pgmap,
    /// type and `struct page *` as the event did and appends `step` to its history; returns
    /// what the rules read of the page before the event, found by one lookup instead of one
    /// for each.
    pub fn record(
        &mut self,
        pfn: u64,
        pgmap: u64,
        ty: MemoryType,
        page: u64,
        refcount: i64,
        step: Step,
    ) -> Touched {
        let lane = (pfn % LANES) as usize;
        let c = match self.chunk_of(pfn) {
            Some(c) => c,
            None => match self.unfold(pfn / LANES) {
                Some(c) => c,
                None => self.new_chunk(Chunk::empty(pfn / LANES)),
            },
        } as usize;
        let chunk = &mut self.chunks[c];
        let fresh = chunk.live & (1 << lane) == 0;
        if fresh {
            chunk.live |= 1 << lane;
            chunk.lanes[lane] = Lane {
                refcount: narrow(refcount),
                mapped: 0,
                history: NONE,
            };
            self.live += 1;
        }
        let l = chunk.lanes[lane];
        self.set_identity((c, lane), pfn, Odd { pgmap, page, ty });
        let last = match l.history {
            NONE => None,
            h => self.histories.get(h).last().copied(),
        };
        self.push_at((c, lane), step);
        Touched {
            fresh,
            refcount: i64::from(l.refcount),
            mapped: i64::from(l.mapped),
            last,
            slot: Slot((c, lane)),
        }
    }

    /// Puts `chunk` in a free slot and indexes it, written once (a chunk is some 220 bytes).
    fn new_chunk(&mut self, chunk: Chunk) -> u32 {
        let no = chunk.base / LANES;
        let i = match self.free.pop() {
            Some(i) => {
                self.chunks[i as usize] = chunk;
                i
            }
            None => {
                self.chunks.push(chunk);
                (self.chunks.len() - 1) as u32
            }
        };
        self.index.insert(no, i);
        self.last.set(Some((no, i)));
        i
    }

    /// Names the pgmap, type and `struct page *` of live page `pfn` (chunk `c`, `lane`).
    fn set_identity(&mut self, (c, lane): (usize, usize), pfn: u64, id: Odd) {
        let chunk = &mut self.chunks[c];
        let page0 = id.page.wrapping_sub(lane as u64 * STRUCT_PAGE);
        // The first page of a chunk sets what its neighbours share.
        if chunk.live == 1 << lane {
            (chunk.pgmap, chunk.page0, chunk.ty) = (id.pgmap, page0, id.ty);
        }
        if (chunk.pgmap, chunk.page0, chunk.ty) == (id.pgmap, page0, id.ty) {
            if !self.odd.is_empty() {
                self.odd.remove(&pfn);
            }
        } else {
            self.odd.insert(pfn, id);
        }
    }

    /// A live page as [`Pages::get`] gives it, taken out of its run if it is in one, and where
    /// its counts are.
    pub fn get_slot(&mut self, pfn: u64) -> Option<(Page, Slot)> {
        let (c, lane) = self.at_mut(pfn)?;
        Some((self.view(c, lane), Slot((c, lane))))
    }

    /// Sets a live page's counts.
    pub fn set_counts(&mut self, pfn: u64, refcount: i64, mapped: i64) {
        if let Some(at) = self.at_mut(pfn) {
            self.set_counts_at(Slot(at), refcount, mapped);
        }
    }

    /// Sets the counts of the page [`Pages::record`] found at `slot`, before anything else
    /// changed the pages.
    pub fn set_counts_at(&mut self, Slot((c, lane)): Slot, refcount: i64, mapped: i64) {
        let l = &mut self.chunks[c].lanes[lane];
        (l.refcount, l.mapped) = (narrow(refcount), narrow(mapped));
    }

    /// The steps remembered of a live page.
    pub fn history(&self, pfn: u64) -> Option<&Ring> {
        let (c, lane) = self.at(pfn)?;
        let h = self.chunks[c].lanes[lane].history;
        (h != NONE).then(|| self.histories.get(h))
    }

    /// Appends a step to a live page's history, taking one from the pool if it has none.
    pub fn push_step(&mut self, pfn: u64, step: Step) {
        if let Some(at) = self.at_mut(pfn) {
            self.push_at(at, step);
        }
    }

    /// Appends a step to the history of the page at `slot`: it stays there (a page holding a
    /// history stays in its chunk).
    pub fn push_step_at(&mut self, Slot(at): Slot, step: Step) {
        self.push_at(at, step);
    }

    /// Appends a step to the history of the live page in chunk `c`, `lane`. Inlined, with
    /// [`Histories::take`]: their calls and returns were 4 % of the aggregating thread's
    /// instructions at pmem scale.
    #[inline]
    fn push_at(&mut self, (c, lane): (usize, usize), step: Step) {
        let h = self.chunks[c].lanes[lane].history;
        if h != NONE {
            self.histories.push(h, step);
        } else {
            let (h, evicted) = self.histories.take(owner(c, lane), step);
            let chunk = &mut self.chunks[c];
            chunk.lanes[lane].history = h;
            chunk.rings |= 1 << lane;
            // A page holding a history stays in its chunk (no fold, no removal without giving
            // the history back): the owner names its lane without a lookup. Its chunk may
            // fold now.
            if let Some(e) = evicted {
                let (ec, elane) = lane_of(e);
                let chunk = &mut self.chunks[ec];
                chunk.lanes[elane].history = NONE;
                chunk.rings &= !(1 << elane);
                self.fold(ec);
            }
        }
    }

    pub fn last_finding(&self, pfn: u64) -> Option<LastFinding> {
        if self.last_findings.is_empty() {
            return None;
        }
        self.last_findings.get(&pfn).copied()
    }

    #[inline]
    pub fn set_last_finding(&mut self, pfn: u64, key: Option<LastFinding>) {
        match key {
            Some(key) => {
                // Runs hold no last finding.
                self.at_mut(pfn);
                self.last_findings.insert(pfn, key);
            }
            None if !self.last_findings.is_empty() => {
                self.last_findings.remove(&pfn);
            }
            None => {}
        }
    }

    /// The tasks the histories' steps hold.
    pub fn held_tasks(&self) -> impl Iterator<Item = u32> + '_ {
        self.histories.tasks()
    }

    /// Forgets a page that went idle.
    pub fn remove(&mut self, pfn: u64) {
        if let Some(at) = self.at_mut(pfn) {
            self.remove_at(Slot(at), pfn);
        }
    }

    /// Forgets page `pfn`, found at `slot` before anything else changed the pages.
    pub fn remove_at(&mut self, Slot((c, lane)): Slot, pfn: u64) {
        let chunk = &mut self.chunks[c];
        chunk.live &= !(1 << lane);
        chunk.rings &= !(1 << lane);
        let h = std::mem::replace(&mut chunk.lanes[lane].history, NONE);
        if chunk.live == 0 {
            self.index.remove(&(chunk.base / LANES));
            self.free.push(c as u32);
            self.last.set(None);
        }
        if h != NONE {
            self.histories.give_back(h);
        }
        self.live -= 1;
        if !self.odd.is_empty() {
            self.odd.remove(&pfn);
        }
        self.set_last_finding(pfn, None);
    }

    /// Forgets the pages of `pgmap`: its runs at once, then the pages of chunks in pfn order
    /// (histories go back to the pool in an order that does not depend on the runs).
    pub fn remove_pgmap(&mut self, pgmap: u64) {
        let runs: Vec<u64> = self
            .runs
            .iter()
            .filter(|(_, r)| r.pgmap == pgmap)
            .map(|(&start, _)| start)
            .collect();
        for start in runs {
            let run = self.runs.remove(&start).expect("listed above");
            self.live -= (run.chunks * LANES) as usize;
        }
        let mut gone: Vec<u64> = self
            .iter()
            .filter(|(_, p)| p.pgmap == pgmap)
            .map(|(pfn, _)| pfn)
            .collect();
        gone.sort_unstable();
        for pfn in gone {
            self.remove(pfn);
        }
    }
}

/// A history's owner: chunk `c`, `lane`.
fn owner(c: usize, lane: usize) -> u64 {
    ((c as u64) << 4) | lane as u64
}

fn lane_of(owner: u64) -> (usize, usize) {
    ((owner >> 4) as usize, (owner & 0xf) as usize)
}

/// Page `pfn` of the run starting at chunk number `start`.
fn run_page(start: u64, run: &Run, pfn: u64) -> Page {
    Page {
        pgmap: run.pgmap,
        page: run.page0.wrapping_add((pfn - start * LANES) * STRUCT_PAGE),
        ty: run.ty,
        refcount: i64::from(run.refcount),
        mapped: i64::from(run.mapped),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PFNS: u64 = 4 * LANES;
    const VMEMMAP: u64 = 0xffff_ea00_0000_0000;

    #[derive(Clone, Debug)]
    enum Op {
        /// Touch, count and step pages `[pfn, pfn + len)` of pgmap 1 or 2 alike, as a sweep of
        /// one kind of event over a range does.
        Sweep(u64, u64, u64, i64, i64),
        /// A page named at another `struct page *` than vmemmap's.
        Odd(u64),
        Counts(u64, i64, i64),
        Finding(u64, bool),
        Remove(u64),
        RemovePgmap(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..PFNS, 1..PFNS, 1u64..3, 0i64..3, 0i64..2)
                .prop_map(|(p, n, g, r, m)| Op::Sweep(p, n, g, r, m)),
            1 => (0..PFNS).prop_map(Op::Odd),
            2 => (0..PFNS, 0i64..3, 0i64..2).prop_map(|(p, r, m)| Op::Counts(p, r, m)),
            1 => (0..PFNS, any::<bool>()).prop_map(|(p, f)| Op::Finding(p, f)),
            2 => (0..PFNS).prop_map(Op::Remove),
            1 => (1u64..3).prop_map(Op::RemovePgmap),
        ]
    }

    fn apply(pages: &mut Pages, op: &Op, ts: u64) {
        let step = |ts| Step {
            ts_ns: ts,
            refs: 1,
            refcount: 1,
            mapcount: 0,
            task: 0,
            probe: 0,
            kind: refwatch_common::EventKind::Get,
        };
        match *op {
            Op::Sweep(pfn, len, pgmap, refcount, mapped) => {
                for p in pfn..(pfn + len).min(PFNS) {
                    let page = VMEMMAP + p * STRUCT_PAGE;
                    pages.record(p, pgmap, MemoryType::FsDax, page, refcount, step(ts));
                    pages.set_counts(p, refcount, mapped);
                }
            }
            Op::Odd(pfn) => {
                pages.record(pfn, 1, MemoryType::FsDax, 0x1000 + pfn, 1, step(ts));
            }
            Op::Counts(pfn, refcount, mapped) => pages.set_counts(pfn, refcount, mapped),
            Op::Finding(pfn, set) => {
                pages.set_last_finding(pfn, set.then_some((Rule::PutUnderflow, 1, 0)));
            }
            Op::Remove(pfn) => pages.remove(pfn),
            Op::RemovePgmap(pgmap) => pages.remove_pgmap(pgmap),
        }
    }

    /// What the aggregator can read of a page.
    fn seen(pages: &Pages, pfn: u64) -> String {
        let history: Option<Vec<u64>> = pages
            .history(pfn)
            .map(|h| h.iter().map(|s| s.ts_ns).collect());
        format!(
            "{:?} {history:?} {:?}",
            pages.get(pfn),
            pages.last_finding(pfn)
        )
    }

    proptest! {
        /// Folding chunks into runs and back changes nothing the aggregator reads.
        #[test]
        fn runs_are_invisible(ops in proptest::collection::vec(op(), 1..60), cap in 1usize..40) {
            let mut runs = Pages::with_histories(cap, true);
            let mut plain = Pages::with_histories(cap, false);
            for (ts, op) in ops.iter().enumerate() {
                apply(&mut runs, op, ts as u64);
                apply(&mut plain, op, ts as u64);
                prop_assert_eq!(runs.len(), plain.len());
                prop_assert!(rings_agree(&runs) && rings_agree(&plain));
                for pfn in 0..PFNS {
                    prop_assert_eq!(seen(&runs, pfn), seen(&plain, pfn), "pfn {}", pfn);
                }
                let mut a: Vec<u64> = runs.iter().map(|(pfn, _)| pfn).collect();
                a.sort_unstable();
                let mut b: Vec<u64> = plain.iter().map(|(pfn, _)| pfn).collect();
                b.sort_unstable();
                prop_assert_eq!(a, b);
            }
        }
    }

    /// Each chunk's bit per lane holding a history agrees with its lanes.
    fn rings_agree(pages: &Pages) -> bool {
        pages.chunks.iter().filter(|c| c.live != 0).all(|c| {
            (0..LANES as usize).all(|l| {
                let live = c.live & (1 << l) != 0;
                let held = live && c.lanes[l].history != NONE;
                (c.rings & (1 << l) != 0) == held
            })
        })
    }

    /// A sweep over whole chunks with one history leaves them as one run.
    #[test]
    fn a_sweep_folds_into_one_run() {
        let mut pages = Pages::with_histories(1, true);
        apply(&mut pages, &Op::Sweep(0, PFNS, 1, 2, 1), 0);
        // The last page still holds the one history: its chunk stays.
        assert_eq!(pages.runs.len(), 1);
        assert_eq!(pages.runs[&0].chunks, PFNS / LANES - 1);
        assert_eq!(pages.len(), PFNS as usize);
    }
}
