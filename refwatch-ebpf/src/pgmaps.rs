//! What the programs remember of pgmaps: which were reported, and (per CPU) the last one seen
//! with its type, so that most page events pay neither a hash lookup nor a read for them.

use refwatch_common::event::PGMAP_TYPE_UNKNOWN;

use crate::{PGMAP_CACHE, PGMAP_REMOVALS, PGMAPS_SEEN, page};

/// A cache word: the pgmap's address bits (a kernel pointer, 8-byte aligned, top 16 bits all
/// ones), its type in the 3 alignment bits, and the removal count when it was cached in the
/// top 16 bits. One word, so that a program interrupting another on this CPU (fentry programs
/// may nest) never sees a torn entry.
const ADDR_BITS: u64 = 0x0000_ffff_ffff_fff8;
const TYPE_BITS: u64 = 0x7;
const GEN_SHIFT: u32 = 48;

/// Forgets `pgmap` (torn down): it is reported again if a page of it is seen after this, and
/// every CPU's cache entry made before this removal stops matching.
#[inline(always)]
pub fn removed(pgmap: u64) {
    let _ = PGMAPS_SEEN.remove(pgmap);
    // Not atomic (the target has no atomic add in core): two removals at once may count
    // one, and the count still moves past every entry cached before them.
    if let Some(n) = PGMAP_REMOVALS.get_ptr_mut(0) {
        unsafe { core::ptr::write_volatile(n, core::ptr::read_volatile(n).wrapping_add(1)) };
    }
}

/// Marks `pgmap` reported (its creation was seen).
#[inline(always)]
pub fn added(pgmap: u64) {
    let _ = PGMAPS_SEEN.insert(pgmap, 1, 0);
}

/// Whether `pgmap` was reported; marks it so. False means: report it now.
#[inline(always)]
pub fn seen_before(pgmap: u64) -> bool {
    if unsafe { PGMAPS_SEEN.get(pgmap) }.is_some() {
        return true;
    }
    added(pgmap);
    false
}

#[inline(always)]
fn removals() -> u64 {
    PGMAP_REMOVALS
        .get(0)
        .map_or(0, |n| unsafe { core::ptr::read_volatile(n) })
}

/// The address-and-count part of `pgmap`'s cache word, where its pointer fits one.
#[inline(always)]
fn key(pgmap: u64) -> Option<u64> {
    (pgmap & !ADDR_BITS == !ADDR_BITS & !TYPE_BITS)
        .then(|| (pgmap & ADDR_BITS) | (removals() << GEN_SHIFT))
}

/// The type of a reported `pgmap` this CPU saw last, if it is that one.
#[inline(always)]
pub fn cached_type(pgmap: u64) -> Option<u8> {
    let word = unsafe { core::ptr::read_volatile(PGMAP_CACHE.get(0)?) };
    (word & !TYPE_BITS == key(pgmap)?).then_some((word & TYPE_BITS) as u8)
}

/// Remembers a reported `pgmap` and its type on this CPU, where they fit a cache word.
#[inline(always)]
pub fn cache(pgmap: u64, ty: u8) {
    if u64::from(ty) > TYPE_BITS {
        return;
    }
    if let (Some(key), Some(slot)) = (key(pgmap), PGMAP_CACHE.get_ptr_mut(0)) {
        unsafe { core::ptr::write_volatile(slot, key | u64::from(ty)) };
    }
}

/// The pgmap's `type`, as events carry it.
#[inline(always)]
pub fn type_of(pgmap: u64) -> u8 {
    if pgmap == 0 {
        return PGMAP_TYPE_UNKNOWN;
    }
    page::pgmap_type(pgmap).map_or(PGMAP_TYPE_UNKNOWN, |t| t as u8)
}
