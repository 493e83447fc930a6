//! Live pages by pfn. Their states sit in a slab whose slots are reused as pages go idle and
//! come back, so that a page going live allocates nothing and the map holds 16-byte entries.

use std::collections::HashMap;

use refwatch_common::model::MemoryType;

use super::{state::PageState, tasks::Tasks};

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

#[derive(Clone, Debug, Default)]
pub struct Pages {
    slots: HashMap<u64, u32, std::hash::BuildHasherDefault<PfnHasher>>,
    states: Vec<PageState>,
    /// Slots of pages no longer live.
    free: Vec<u32>,
}

impl Pages {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &PageState)> {
        self.slots
            .iter()
            .map(|(&pfn, &slot)| (pfn, &self.states[slot as usize]))
    }

    pub fn get(&self, pfn: u64) -> Option<&PageState> {
        self.slots
            .get(&pfn)
            .map(|&slot| &self.states[slot as usize])
    }

    pub fn get_mut(&mut self, pfn: u64) -> Option<&mut PageState> {
        self.slots
            .get(&pfn)
            .map(|&slot| &mut self.states[slot as usize])
    }

    /// The state of `pfn`; a page not live starts with `pgmap`, `ty` and `refcount` (then
    /// also true).
    pub fn get_or_start(
        &mut self,
        pfn: u64,
        pgmap: u64,
        ty: MemoryType,
        refcount: i64,
    ) -> (&mut PageState, bool) {
        let mut fresh = false;
        let slot = *self.slots.entry(pfn).or_insert_with(|| {
            fresh = true;
            self.free.pop().unwrap_or_else(|| {
                self.states.push(PageState::new());
                (self.states.len() - 1) as u32
            })
        });
        let page = &mut self.states[slot as usize];
        if fresh {
            page.start(pgmap, ty, refcount);
        }
        (page, fresh)
    }

    /// Forgets a page that went idle, and the tasks its history held.
    pub fn remove(&mut self, pfn: u64, tasks: &mut Tasks) {
        if let Some(slot) = self.slots.remove(&pfn) {
            self.free_slot(slot, tasks);
        }
    }

    /// Forgets the pages for which `keep` is false.
    pub fn retain(&mut self, keep: impl Fn(&PageState) -> bool, tasks: &mut Tasks) {
        let mut gone = Vec::new();
        self.slots.retain(|_, &mut slot| {
            let k = keep(&self.states[slot as usize]);
            if !k {
                gone.push(slot);
            }
            k
        });
        for slot in gone {
            self.free_slot(slot, tasks);
        }
    }

    fn free_slot(&mut self, slot: u32, tasks: &mut Tasks) {
        for step in self.states[slot as usize].recent.iter() {
            tasks.release(step.task);
        }
        self.free.push(slot);
    }
}
