//! Reading many pages in one probe hit: every page of a pgmap at memunmap_pages, every page
//! of a PMD entry a filesystem takes back.
//!
//! # Minimum kernel version
//! 5.17: the loop is a `bpf_loop` (a bounded loop took the 6.1 verifier minutes under TCG).

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop, programs::tracing::StackIdContext};
use refwatch_common::{EventKind, event::flags};

use crate::{
    args::Args,
    emit::{Common, common, submit_page},
    layout, page,
};

/// `bpf_loop`'s limit (BPF_MAX_LOOPS): 32 GiB of 4 KiB pages; past it the scan is cut.
const MAX_PAGES: u64 = 1 << 23;

/// What the loop body reads; on the program's stack.
#[repr(C)]
struct Scan {
    common: Common,
    /// Only pages of this pgmap count (0: any).
    pgmap: u64,
    first: u64,
    /// Pages above this refcount, or mapped, are reported.
    idle: i32,
    id: u8,
    kind: EventKind,
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
    busy_pages(common(ctx), id, EventKind::Held, first, pages, pgmap, idle);
    if pages > MAX_PAGES {
        flags::SCAN_CUT
    } else {
        0
    }
}

/// Sends a `kind` event for each of `pages` pages from pfn `first` (of `pgmap`, unless 0)
/// whose refcount is above `idle` or that is mapped. At most [`MAX_PAGES`].
#[inline(always)]
pub fn busy_pages(
    common: Common,
    id: u8,
    kind: EventKind,
    first: u64,
    pages: u64,
    pgmap: u64,
    idle: i32,
) {
    let mut scan = Scan {
        common,
        pgmap,
        first,
        idle,
        id,
        kind,
    };
    let nr = if pages > MAX_PAGES { MAX_PAGES } else { pages };
    unsafe {
        bpf_loop(
            nr as u32,
            busy_page as *mut c_void,
            (&raw mut scan).cast(),
            0,
        )
    };
}

/// The loop body: one pfn. Tail pages are skipped (a compound page's counts are its head's).
#[inline(never)]
extern "C" fn busy_page(i: u64, ctx: *mut c_void) -> i64 {
    let scan = unsafe { &*ctx.cast::<Scan>() };
    let Some(page) = page::pfn_to_page(scan.first + (i & 0xffff_ffff)) else {
        return 0;
    };
    if page::zone_device_flags(page).is_none() || page::head(page) != page {
        return 0;
    }
    let state = page::state(page);
    let ours = scan.pgmap == 0 || state.pgmap == scan.pgmap;
    if ours && (state.refcount > scan.idle || state.mapcount > 0) {
        submit_page(&scan.common, scan.id, scan.kind, page, &state, 0, 0, 0);
    }
    0
}
