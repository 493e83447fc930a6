//! The page histories, a pool of at most [`HISTORIES`] rings: a page's last steps are for
//! findings to show, and no rule reads them, so the pages touched longest ago give theirs up
//! (clock eviction: a ring touched since the hand last passed it gets a second chance). Their
//! counts stay in [`super::pages::Pages`]; a finding on such a page shows the steps since.

use super::state::{Ring, Step};

/// The cap: 65,536 rings of about 530 bytes, 35 MiB, whatever the size of the devices.
pub const HISTORIES: usize = 1 << 16;

/// How many rings ahead of the hand [`Histories::prefetch`] asks for.
const AHEAD: usize = 4;

#[derive(Clone, Debug)]
pub struct Histories {
    rings: Vec<Ring>,
    /// The page each ring belongs to, as [`super::pages::Pages`] names it.
    owners: Vec<u64>,
    /// Touched since the clock hand passed.
    touched: Vec<bool>,
    free: Vec<u32>,
    hand: usize,
    cap: usize,
}

impl Default for Histories {
    fn default() -> Self {
        Self::with_cap(HISTORIES)
    }
}

impl Histories {
    pub fn with_cap(cap: usize) -> Self {
        Self {
            rings: Vec::new(),
            owners: Vec::new(),
            touched: Vec::new(),
            free: Vec::new(),
            hand: 0,
            cap: cap.max(1),
        }
    }

    pub fn get(&self, i: u32) -> &Ring {
        &self.rings[i as usize]
    }

    /// Appends `step` to ring `i`.
    pub fn push(&mut self, i: u32, step: Step) {
        self.touched[i as usize] = true;
        self.rings[i as usize].push(step);
    }

    /// The tasks of every step remembered (for [`super::tasks::Tasks::sweep`]).
    pub fn tasks(&self) -> impl Iterator<Item = u32> + '_ {
        self.rings.iter().flat_map(|r| r.iter().map(|s| s.task))
    }

    /// A ring for page `owner` holding `first` alone, and the page whose ring it was when the
    /// pool is full. Inlined into [`super::pages::Pages`]' step push: every event takes one at
    /// pmem scale.
    #[inline]
    pub fn take(&mut self, owner: u64, first: Step) -> (u32, Option<u64>) {
        if let Some(i) = self.free.pop() {
            self.owners[i as usize] = owner;
            self.start(i as usize, first);
            return (i, None);
        }
        if self.rings.len() < self.cap {
            self.rings.push(Ring::new());
            self.owners.push(owner);
            self.touched.push(false);
            let i = self.rings.len() - 1;
            self.start(i, first);
            return (i as u32, None);
        }
        // The pool is full: every vector holds `cap` (bounds known to the compiler here).
        let touched = &mut self.touched[..];
        let cap = touched.len();
        let mut i = self.hand;
        while std::mem::take(&mut touched[i]) {
            i = if i + 1 == cap { 0 } else { i + 1 };
        }
        touched[i] = true;
        self.hand = if i + 1 == cap { 0 } else { i + 1 };
        self.prefetch(if i + AHEAD < cap { i + AHEAD } else { 0 });
        self.rings[i].start(first);
        let evicted = std::mem::replace(&mut self.owners[i], owner);
        (i as u32, Some(evicted))
    }

    /// Ring `i` now holds `first` alone: one write of the line its counters share with its
    /// first step, without the ring's wrap-around arithmetic.
    fn start(&mut self, i: usize, first: Step) {
        self.touched[i] = true;
        self.rings[i].start(first);
    }

    /// Asks for ring `i`'s first cache line: the hand takes the rings in order, each out of
    /// cache in a pool this size, and a workload touching many pages takes one every event.
    fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: SSE is part of x86-64, and a prefetch reads nothing into the program.
            unsafe { _mm_prefetch::<_MM_HINT_T0>((&raw const self.rings[i]).cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// Gives ring `i` back (its page went idle).
    pub fn give_back(&mut self, i: u32) {
        self.rings[i as usize].clear();
        self.touched[i as usize] = false;
        self.free.push(i);
    }
}
