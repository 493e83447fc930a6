//! Turning one probe hit into ring-buffer events.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    programs::{PerfEventContext, tracing::StackIdContext},
};
use refwatch_common::{
    Arg, At, Event, EventKind, Probe, Refs,
    event::{PGMAP_TYPE_UNKNOWN, WATCH_PROBE, flags},
};

use crate::{CALLS, DEVICE_MMS, DROPS, EVENTS, STACKS, args::Args, layout, page, pgmaps, scan};

/// Bits of a DAX xarray entry (`xa_mk_value(flags | pfn << DAX_SHIFT)`, fs/dax.c): the value
/// marker is bit 0, so `DAX_PMD` is bit 2, the zero-page and empty markers bits 3 and 4.
const DAX_ENTRY_PMD: u64 = 1 << 2;
const DAX_ENTRY_NO_PAGES: u64 = (1 << 3) | (1 << 4);
const DAX_ENTRY_PFN_SHIFT: u64 = 5;
/// Pages of a PMD entry (x86-64).
const PMD_PAGES: u64 = 512;

#[inline(always)]
pub fn handle<C: Args + StackIdContext>(ctx: &C, id: u8, probe: &Probe) {
    if let Some(n) = CALLS.get_ptr_mut(u32::from(id)) {
        unsafe { *n += 1 };
    }
    if let Arg::Pgmap(n) | Arg::PgmapScan(n) = probe.arg {
        let pgmap = ctx.arg_u64(n);
        if probe.kind == EventKind::PgmapRemove {
            pgmaps::removed(pgmap);
        } else {
            pgmaps::added(pgmap);
        }
        let f = match probe.arg {
            // Before the pgmap event, so the aggregator has every held page when it judges.
            Arg::PgmapScan(_) => scan::held_pages(ctx, id, pgmap),
            _ => 0,
        };
        pgmap_event(ctx, id, probe.kind, pgmap, f);
        return;
    }
    match probe.arg {
        Arg::DaxEntry {
            entry,
            trunc,
            each_page,
        } => {
            // `bool` in a 64-bit slot: only the low byte is defined.
            if ctx.arg_scalar(trunc) & 0xff != 0 {
                dax_entry(ctx, id, probe.kind, ctx.arg_u64(entry), each_page);
            }
            return;
        }
        Arg::Range { vma, start, end } => {
            range_event(ctx, id, probe.kind, vma, |ctx| {
                (0, ctx.arg_scalar(start), ctx.arg_scalar(end))
            });
            return;
        }
        Arg::Move { vma, from, to, len } => {
            range_event(ctx, id, probe.kind, vma, |ctx| {
                let from = ctx.arg_scalar(from);
                (ctx.arg_scalar(to), from, from + ctx.arg_scalar(len))
            });
            return;
        }
        Arg::Migration {
            src,
            dst,
            npages,
            side,
        } => {
            if wanted_task() {
                let slots = scan::Slots {
                    src: ctx.arg_u64(src),
                    dst: ctx.arg_u64(dst),
                    npages: ctx.arg_scalar(npages),
                };
                scan::migration(common(ctx), id, probe.kind, slots, side);
            }
            return;
        }
        _ => {}
    }
    let Some(page) = page_arg(ctx, probe.arg) else {
        return;
    };
    // The filter every hit pays for: one read and a compare.
    let mut snapshot = page::Snapshot::new();
    if !snapshot.read_zone_device(page) || !wanted_task() {
        return;
    }
    // After the page filter: reading the return address is a helper call, and the functions
    // with a caller filter (vm_normal_page) run for every normal page unmapped.
    if !called_from_wanted_caller(ctx, id, probe.params.len() as u8) {
        return;
    }
    if !snapshot.move_to_head() {
        return;
    }
    let state = snapshot.state();
    let pgmap_type = reported_pgmap_type(ctx, id, state.pgmap);
    let mut extra = match probe.refs {
        Refs::One | Refs::Pin => 1,
        Refs::Arg(n) | Refs::PinArg(n) => ctx.arg_u64(n),
    };
    let mut extra2 = match probe.gup_flags {
        Some(n) => ctx.arg_u64(n),
        None => 0,
    };
    if let Some((mm, address)) = mapped_at(ctx, probe.at) {
        (extra, extra2) = (address, mm);
        // Before the zap of this address can run: its range event needs the mm known. Looked
        // up first: an update allocates and takes the map's lock, and most inserts are of
        // an mm already known.
        if mm != 0 && unsafe { DEVICE_MMS.get(mm) }.is_none() {
            let _ = DEVICE_MMS.insert(mm, 1, 0);
        }
    }
    let f = if probe.speculative {
        flags::SPECULATIVE
    } else {
        0
    };
    let event = PageEvent {
        page: snapshot.addr(),
        state,
        pgmap_type,
        extra,
        extra2,
        flags: f,
    };
    submit_page(&common(ctx), id, probe.kind, &event);
}

/// A write to a watched page's `_refcount`: the counts right after it (a data breakpoint traps
/// after the writing instruction), with the stack of the code that wrote. No task filter: the
/// page was asked for by pfn.
#[inline(always)]
pub fn watch(ctx: &PerfEventContext) {
    // perf hands a breakpoint's own address to the program as the sample address.
    let addr = unsafe { (*ctx.ctx).addr };
    let mut snapshot = page::Snapshot::new();
    if !snapshot.fill(addr - layout!(off_refcount)) {
        return;
    }
    let event = PageEvent::of(&snapshot, 0, 0);
    submit_page(&common(ctx), WATCH_PROBE, EventKind::Watch, &event);
}

/// `-p PID`: whether a page event of the current task is wanted (the task is a thread of
/// process PID, or no PID was given). Only events that happen in a task's context on the
/// process's behalf are filtered: pgmap creation and teardown, and the teardown scan's `held`
/// pages, come from whoever binds or unbinds the device and always pass (the rules need the
/// pgmap, and the teardown judges what the process still holds), and a range zap or move
/// passes for the mms the process's own inserts put in [`DEVICE_MMS`] (an exit's zap may run
/// in another task).
#[inline(always)]
fn wanted_task() -> bool {
    let tgid = unsafe { core::ptr::read_volatile(&raw const crate::PID_FILTER) };
    tgid == 0 || (bpf_get_current_pid_tgid() >> 32) as u32 == tgid
}

/// The type of the pgmap of a page about to be reported; reports the pgmap first if it was
/// created before refwatch started (the first time one of its pages is seen).
#[inline(always)]
fn reported_pgmap_type<C: Args + StackIdContext>(ctx: &C, id: u8, pgmap: u64) -> u8 {
    if pgmap == 0 {
        return PGMAP_TYPE_UNKNOWN;
    }
    if let Some(ty) = pgmaps::cached_type(pgmap) {
        return ty;
    }
    if !pgmaps::seen_before(pgmap) {
        pgmap_event(ctx, id, EventKind::PgmapAdd, pgmap, flags::DISCOVERED);
    }
    let ty = pgmaps::type_of(pgmap);
    pgmaps::cache(pgmap, ty);
    ty
}

/// The (mm, user address) an insert maps its page at, where its probe knows them.
#[inline(always)]
fn mapped_at<C: Args>(ctx: &C, at: Option<At>) -> Option<(u64, u64)> {
    match at? {
        At::Args { vma, address } => Some((vma_mm(ctx, vma).unwrap_or(0), ctx.arg_scalar(address))),
        At::Vmf(n) => {
            let vmf = ctx.arg_u64(n);
            let vma = page::read::<u64>(vmf + layout!(off_vmf_vma))?;
            let address = page::read::<u64>(vmf + layout!(off_vmf_address))?;
            Some((
                page::read::<u64>(vma + layout!(off_vma_mm)).unwrap_or(0),
                address,
            ))
        }
    }
}

/// A DAX entry given back to the filesystem: an event for its first page and, with
/// `each_page`, one for each other page of a PMD entry that is still referenced (above the
/// idle refcount 1 of the kernels that have this probe).
#[inline(always)]
fn dax_entry<C: Args + StackIdContext>(
    ctx: &C,
    id: u8,
    kind: EventKind,
    entry: u64,
    each_page: bool,
) {
    if entry & DAX_ENTRY_NO_PAGES != 0 {
        return;
    }
    let first = entry >> DAX_ENTRY_PFN_SHIFT;
    let pages = if entry & DAX_ENTRY_PMD != 0 {
        PMD_PAGES
    } else {
        1
    };
    // The first page in a block of its own, so that its snapshot's stack is free for the scan.
    let (common, known) = {
        let Some(page) = page::pfn_to_page(first) else {
            return;
        };
        let mut snapshot = page::Snapshot::new();
        if !snapshot.read_zone_device(page) || !wanted_task() {
            return;
        }
        let common = common(ctx);
        let state = snapshot.state();
        let known = scan::KnownPgmap {
            pgmap: state.pgmap,
            ty: reported_pgmap_type(ctx, id, state.pgmap),
        };
        let event = PageEvent {
            page,
            state,
            pgmap_type: known.ty,
            extra: pages,
            extra2: 0,
            flags: 0,
        };
        submit_page(&common, id, kind, &event);
        (common, known)
    };
    if each_page && pages > 1 {
        scan::busy_pages(common, id, kind, first + 1, pages - 1, 0, known, 1);
    }
}

/// What every event of one probe hit shares.
pub struct Common {
    pub ts_ns: u64,
    pub pid_tgid: u64,
    pub stack_id: i32,
    pub cpu: u16,
    pub comm: [u8; 16],
}

#[inline(always)]
pub fn common<C: StackIdContext>(ctx: &C) -> Common {
    // The unwind is most of what a probe hit costs the workload (docs/performance.md).
    let no_stacks = unsafe { core::ptr::read_volatile(&raw const crate::NO_STACKS) } != 0;
    Common {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid: bpf_get_current_pid_tgid(),
        stack_id: if no_stacks {
            -1
        } else {
            ctx.get_stackid(&STACKS, 0).map_or(-1, |s| s as i32)
        },
        cpu: unsafe { bpf_get_smp_processor_id() } as u16,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// An event about one (head) page.
pub struct PageEvent {
    pub page: u64,
    pub state: page::PageState,
    pub pgmap_type: u8,
    pub extra: u64,
    pub extra2: u64,
    pub flags: u8,
}

impl PageEvent {
    /// The page of `snapshot` as it is, its pgmap's type read.
    #[inline(always)]
    pub fn of(snapshot: &page::Snapshot, extra: u64, extra2: u64) -> PageEvent {
        let state = snapshot.state();
        PageEvent {
            page: snapshot.addr(),
            pgmap_type: pgmaps::type_of(state.pgmap),
            state,
            extra,
            extra2,
            flags: 0,
        }
    }
}

#[inline(always)]
pub fn submit_page(c: &Common, id: u8, kind: EventKind, e: &PageEvent) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        fill_common(c, ev, id, kind);
        (*ev).pfn = page::page_to_pfn(e.page).unwrap_or(u64::MAX);
        (*ev).page = e.page;
        (*ev).pgmap = e.state.pgmap;
        (*ev).extra = e.extra;
        (*ev).extra2 = e.extra2;
        (*ev).refcount = e.state.refcount;
        (*ev).mapcount = e.state.mapcount;
        (*ev).pgmap_type = e.pgmap_type;
        (*ev).flags = e.flags | if e.state.is_head { flags::HEAD } else { 0 };
    }
    entry.submit(0);
}

#[inline(always)]
fn page_arg<C: Args>(ctx: &C, arg: Arg) -> Option<u64> {
    match arg {
        Arg::Page(n) | Arg::Folio(n) => Some(ctx.arg_u64(n)).filter(|p| *p != 0),
        Arg::PfnT(n) => page::pfn_t_page(ctx.arg_scalar(n)),
        Arg::Pte(n) => page::pte_page(ctx.arg_scalar(n)),
        Arg::PmdPtr(n) => page::pmd_page(ctx.arg_u64(n)),
        Arg::FaultPage(n) => {
            page::read::<u64>(ctx.arg_u64(n) + layout!(off_migrate_fault_page)).filter(|p| *p != 0)
        }
        Arg::Pgmap(_)
        | Arg::PgmapScan(_)
        | Arg::DaxEntry { .. }
        | Arg::Range { .. }
        | Arg::Move { .. }
        | Arg::Migration { .. } => None,
    }
}

#[inline(always)]
fn vma_mm<C: Args>(ctx: &C, vma: u8) -> Option<u64> {
    page::read::<u64>(ctx.arg_u64(vma) + layout!(off_vma_mm))
}

/// One event for a user range `[start, end)` zapped or moved (`to`, else 0), only in mms that
/// had a device page inserted: `page` carries the mm, `pfn` the destination. The ranges of
/// every other mm cost one read and a lookup.
#[inline(always)]
fn range_event<C: Args + StackIdContext>(
    ctx: &C,
    id: u8,
    kind: EventKind,
    vma: u8,
    range: impl Fn(&C) -> (u64, u64, u64),
) {
    let Some(mm) = vma_mm(ctx, vma) else {
        return;
    };
    if unsafe { DEVICE_MMS.get(mm) }.is_none() {
        return;
    }
    let (to, start, end) = range(ctx);
    submit_other(
        &common(ctx),
        id,
        kind,
        Other {
            pfn: to,
            page: mm,
            pgmap: 0,
            extra: start,
            extra2: end,
            mapcount: 0,
            pgmap_type: PGMAP_TYPE_UNKNOWN,
            flags: 0,
        },
    );
}

#[inline(always)]
fn called_from_wanted_caller<C: Args>(ctx: &C, id: u8, nr_args: u8) -> bool {
    let range = unsafe { core::ptr::read_volatile(&raw const crate::CALLERS.range[id as usize]) };
    if range[1] == 0 {
        return true;
    }
    ctx.return_address(nr_args)
        .is_some_and(|ret| ret >= range[0] && ret < range[1])
}

/// One event for the pgmap, carrying its first range: `extra..extra2` are its pfns and
/// `mapcount` its `nr_range`. One range, not a loop over all: the loop multiplied the states
/// older verifiers (6.1 and before) walk in every program past what a TCG guest can wait for.
#[inline(always)]
fn pgmap_event<C: Args + StackIdContext>(ctx: &C, id: u8, kind: EventKind, pgmap: u64, f: u8) {
    let nr = page::read::<i32>(pgmap + layout!(off_pgmap_nr_range)).unwrap_or(0);
    let (first, end) = page::pgmap_first_range(pgmap).unwrap_or((0, 0));
    let o = Other {
        pfn: first,
        page: 0,
        pgmap,
        extra: first,
        extra2: end,
        mapcount: nr,
        pgmap_type: pgmaps::type_of(pgmap),
        flags: f,
    };
    submit_other(&common(ctx), id, kind, o);
}

/// The fields of an event about something other than one page: a pgmap, a user range.
struct Other {
    pfn: u64,
    page: u64,
    pgmap: u64,
    extra: u64,
    extra2: u64,
    mapcount: i32,
    pgmap_type: u8,
    flags: u8,
}

#[inline(always)]
fn submit_other(c: &Common, id: u8, kind: EventKind, o: Other) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        fill_common(c, ev, id, kind);
        (*ev).pfn = o.pfn;
        (*ev).page = o.page;
        (*ev).pgmap = o.pgmap;
        (*ev).extra = o.extra;
        (*ev).extra2 = o.extra2;
        (*ev).refcount = 0;
        (*ev).mapcount = o.mapcount;
        (*ev).pgmap_type = o.pgmap_type;
        (*ev).flags = o.flags;
    }
    entry.submit(0);
}

#[inline(always)]
unsafe fn fill_common(c: &Common, ev: *mut Event, id: u8, kind: EventKind) {
    unsafe {
        (*ev).ts_ns = c.ts_ns;
        (*ev).pid_tgid = c.pid_tgid;
        (*ev).stack_id = c.stack_id;
        (*ev).cpu = c.cpu;
        (*ev).probe = id;
        (*ev).kind = kind as u8;
        (*ev)._pad = [0; 6];
        (*ev).comm = c.comm;
    }
}

#[inline(always)]
fn count_drop() {
    if let Some(n) = DROPS.get_ptr_mut(0) {
        unsafe { *n += 1 };
    }
}
