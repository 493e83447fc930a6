//! Reading many pages in one probe hit: every page of a pgmap at memunmap_pages, every page
//! of a PMD entry a filesystem takes back, every slot of a device migration.
//!
//! # Minimum kernel version
//! 5.17: the loop is a `bpf_loop` (a bounded loop took the 6.1 verifier minutes under TCG).

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop, programs::tracing::StackIdContext};
use refwatch_common::{EventKind, catalog::MigrationSide, event::flags};

use crate::{
    args::Args,
    emit::{Common, PageEvent, common, submit_page},
    layout, page, pgmaps,
};

// Migrate-pfn bits (include/linux/migrate.h, unchanged since 5.x): a slot names a page only
// with VALID, and the source was locked and unmapped for migration only with MIGRATE.
const MIGRATE_PFN_VALID: u64 = 1 << 0;
const MIGRATE_PFN_MIGRATE: u64 = 1 << 1;
const MIGRATE_PFN_SHIFT: u64 = 6;

/// `bpf_loop`'s limit (BPF_MAX_LOOPS): 32 GiB of 4 KiB pages; past it the scan is cut.
const MAX_PAGES: u64 = 1 << 23;

/// What the loop body reads; on the program's stack.
#[repr(C)]
struct Scan {
    common: Common,
    /// Only pages of this pgmap count (0: any).
    pgmap: u64,
    /// A pgmap whose type is known, and the type: most pages are of it.
    known: KnownPgmap,
    first: u64,
    /// Pages above this refcount, or mapped, are reported.
    idle: i32,
    id: u8,
    kind: EventKind,
}

/// A pgmap and its type, as events carry it.
#[derive(Clone, Copy)]
pub struct KnownPgmap {
    pub pgmap: u64,
    pub ty: u8,
}

impl KnownPgmap {
    #[inline(always)]
    fn type_of(&self, pgmap: u64) -> u8 {
        if pgmap == self.pgmap {
            self.ty
        } else {
            pgmaps::type_of(pgmap)
        }
    }
}

/// Sends a [`EventKind::Held`] event for each page of `pgmap`'s first range whose refcount is
/// above its type's idle value or that is mapped; returns flags for the pgmap event.
#[inline(always)]
pub fn held_pages<C: Args + StackIdContext>(ctx: &C, id: u8, pgmap: u64) -> u8 {
    let Some((first, end)) = page::pgmap_first_range(pgmap) else {
        return flags::PGMAP_UNREADABLE;
    };
    let ty = page::pgmap_type(pgmap).unwrap_or(u32::MAX);
    let idle = if ty < 64 && (layout!(idle_one_types) >> ty) & 1 != 0 {
        1
    } else {
        0
    };
    let pages = end.saturating_sub(first);
    // As events carry it: u32::MAX, unreadable, becomes PGMAP_TYPE_UNKNOWN.
    let known = KnownPgmap {
        pgmap,
        ty: ty as u8,
    };
    busy_pages(
        common(ctx),
        id,
        EventKind::Held,
        first,
        pages,
        pgmap,
        known,
        idle,
    );
    if pages > MAX_PAGES {
        flags::SCAN_CUT
    } else {
        0
    }
}

/// Sends a `kind` event for each of `pages` pages from pfn `first` (of `pgmap`, unless 0)
/// whose refcount is above `idle` or that is mapped. At most [`MAX_PAGES`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn busy_pages(
    common: Common,
    id: u8,
    kind: EventKind,
    first: u64,
    pages: u64,
    pgmap: u64,
    known: KnownPgmap,
    idle: i32,
) {
    let mut scan = Scan {
        common,
        pgmap,
        known,
        first,
        idle,
        id,
        kind,
    };
    each(pages, busy_page, &mut scan);
}

/// Calls `body(i, state)` for i in 0..n, at most [`MAX_PAGES`] times.
#[inline(always)]
fn each<T>(n: u64, body: extern "C" fn(u64, *mut c_void) -> i64, state: &mut T) {
    let nr = if n > MAX_PAGES { MAX_PAGES } else { n };
    unsafe { bpf_loop(nr as u32, body as *mut c_void, (state as *mut T).cast(), 0) };
}

/// The loop body: one pfn. Tail pages are skipped (a compound page's counts are its head's).
#[inline(never)]
extern "C" fn busy_page(i: u64, ctx: *mut c_void) -> i64 {
    let scan = unsafe { &*ctx.cast::<Scan>() };
    let Some(addr) = page::pfn_to_page(scan.first + (i & 0xffff_ffff)) else {
        return 0;
    };
    let mut page = page::Snapshot::new();
    if !page.read_zone_device(addr) || page.head_addr() != addr {
        return 0;
    }
    let state = page.state();
    let ours = scan.pgmap == 0 || state.pgmap == scan.pgmap;
    if ours && (state.refcount > scan.idle || state.mapcount > 0) {
        let event = PageEvent {
            page: page.addr(),
            pgmap_type: scan.known.type_of(state.pgmap),
            state,
            extra: 0,
            extra2: 0,
            flags: 0,
        };
        submit_page(&scan.common, scan.id, scan.kind, &event);
    }
    0
}

/// The two migrate-pfn arrays of a migration and their length.
pub struct Slots {
    pub src: u64,
    pub dst: u64,
    pub npages: u64,
}

/// What the migration loop body reads; on the program's stack.
#[repr(C)]
struct Migration {
    common: Common,
    src: u64,
    dst: u64,
    id: u8,
    kind: EventKind,
    side: MigrationSide,
}

/// Sends a `kind` event for the ZONE_DEVICE page on `side` of each slot. At most
/// [`MAX_PAGES`] slots.
#[inline(always)]
pub fn migration(common: Common, id: u8, kind: EventKind, slots: Slots, side: MigrationSide) {
    let mut m = Migration {
        common,
        src: slots.src,
        dst: slots.dst,
        id,
        kind,
        side,
    };
    each(slots.npages, migration_slot, &mut m);
}

/// The loop body: slot `i`. A slot migrated when its source was collected for migration and
/// the driver gave it a destination (`migrate_device_finalize`'s own test).
#[inline(never)]
extern "C" fn migration_slot(i: u64, ctx: *mut c_void) -> i64 {
    let m = unsafe { &*ctx.cast::<Migration>() };
    let i = i & 0xffff_ffff;
    let src = page::read::<u64>(m.src + i * 8).unwrap_or(0);
    let dst = page::read::<u64>(m.dst + i * 8).unwrap_or(0);
    let valid = |mpfn: u64| mpfn & MIGRATE_PFN_VALID != 0;
    let migrated = valid(src) && src & MIGRATE_PFN_MIGRATE != 0 && valid(dst);
    let mpfn = match (m.side, migrated) {
        (MigrationSide::Mapped, true) | (MigrationSide::Released, false) => dst,
        (MigrationSide::Mapped, false) | (MigrationSide::Released, true) => src,
    };
    if !valid(mpfn) {
        return 0;
    }
    let Some(addr) = page::pfn_to_page(mpfn >> MIGRATE_PFN_SHIFT) else {
        return 0;
    };
    let mut page = page::Snapshot::new();
    if !page.read_zone_device(addr) {
        return 0;
    }
    // No pgmap discovery here (its event needs the program's context): a page event of an
    // unknown pgmap makes the aggregator learn it, as the teardown scan's do.
    if page.move_to_head() {
        submit_page(&m.common, m.id, m.kind, &PageEvent::of(&page, 1, 0));
    }
    0
}
