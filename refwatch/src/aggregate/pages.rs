//! Live pages by pfn, at a cost bounded per page: what the rules need (refcount and mapping
//! estimates) in 12 bytes a page, in chunks of [`LANES`] consecutive pfns that share their
//! pgmap, type and vmemmap position (about 14 bytes a page where a workload keeps neighbours
//! live, at most about 230 for a lone page); the page histories in a capped pool
//! ([`super::histories`]).

use std::{cell::Cell, collections::HashMap, hash::BuildHasherDefault};

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
    lanes: [Lane; LANES as usize],
}

/// The pgmap, type and `struct page *` of a page that does not share its chunk's.
#[derive(Clone, Copy, Debug)]
struct Odd {
    pgmap: u64,
    page: u64,
    ty: MemoryType,
}

/// The finding a page's previous event raised (rule, pid_tgid, refcount at entry).
pub type LastFinding = (Rule, u64, i32);

#[derive(Clone, Debug, Default)]
pub struct Pages {
    index: PfnMap<u32>,
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

impl Pages {
    /// With a smaller history pool than [`super::histories::HISTORIES`], to test eviction.
    #[cfg(test)]
    pub fn with_histories(cap: usize) -> Self {
        Self {
            histories: Histories::with_cap(cap),
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

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
    fn at(&self, pfn: u64) -> Option<(usize, usize)> {
        let c = self.chunk_of(pfn)? as usize;
        let lane = (pfn % LANES) as usize;
        (self.chunks[c].live & (1 << lane) != 0).then_some((c, lane))
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
        self.at(pfn).map(|(c, lane)| self.view(c, lane))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, Page)> + '_ {
        self.chunks.iter().enumerate().flat_map(move |(c, chunk)| {
            (0..LANES as usize)
                .filter(move |lane| chunk.live & (1 << lane) != 0)
                .map(move |lane| (chunk.base + lane as u64, self.view(c, lane)))
        })
    }

    /// Starts `pfn` with `refcount` unless it is live (true if it was not), and names its
    /// pgmap, type and `struct page *` as the event did.
    pub fn touch(
        &mut self,
        pfn: u64,
        pgmap: u64,
        ty: MemoryType,
        page: u64,
        refcount: i64,
    ) -> bool {
        let lane = (pfn % LANES) as usize;
        let c = match self.chunk_of(pfn) {
            Some(c) => c,
            None => self.new_chunk(pfn / LANES),
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
        self.set_identity((c, lane), pfn, Odd { pgmap, page, ty });
        fresh
    }

    fn new_chunk(&mut self, no: u64) -> u32 {
        let chunk = Chunk {
            base: no * LANES,
            pgmap: 0,
            page0: 0,
            ty: MemoryType::Unknown,
            live: 0,
            lanes: [Lane {
                refcount: 0,
                mapped: 0,
                history: NONE,
            }; LANES as usize],
        };
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

    /// Sets a live page's counts.
    pub fn set_counts(&mut self, pfn: u64, refcount: i64, mapped: i64) {
        if let Some((c, lane)) = self.at(pfn) {
            let l = &mut self.chunks[c].lanes[lane];
            (l.refcount, l.mapped) = (narrow(refcount), narrow(mapped));
        }
    }

    /// The steps remembered of a live page.
    pub fn history(&self, pfn: u64) -> Option<&Ring> {
        let (c, lane) = self.at(pfn)?;
        let h = self.chunks[c].lanes[lane].history;
        (h != NONE).then(|| self.histories.get(h))
    }

    /// Appends a step to a live page's history, taking one from the pool if it has none.
    pub fn push_step(&mut self, pfn: u64, step: Step) {
        let Some((c, lane)) = self.at(pfn) else {
            return;
        };
        let mut h = self.chunks[c].lanes[lane].history;
        if h == NONE {
            let evicted;
            (h, evicted) = self.histories.take(pfn);
            if let Some((ec, elane)) = evicted.and_then(|e| self.at(e)) {
                self.chunks[ec].lanes[elane].history = NONE;
            }
            self.chunks[c].lanes[lane].history = h;
        }
        self.histories.push(h, step);
    }

    pub fn last_finding(&self, pfn: u64) -> Option<LastFinding> {
        if self.last_findings.is_empty() {
            return None;
        }
        self.last_findings.get(&pfn).copied()
    }

    pub fn set_last_finding(&mut self, pfn: u64, key: Option<LastFinding>) {
        match key {
            Some(key) => {
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
        let Some((c, lane)) = self.at(pfn) else {
            return;
        };
        let chunk = &mut self.chunks[c];
        chunk.live &= !(1 << lane);
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

    /// Forgets the pages for which `keep` is false.
    pub fn retain(&mut self, keep: impl Fn(&Page) -> bool) {
        let gone: Vec<u64> = self
            .iter()
            .filter(|(_, p)| !keep(p))
            .map(|(pfn, _)| pfn)
            .collect();
        for pfn in gone {
            self.remove(pfn);
        }
    }
}
