//! Turning one probe hit into ring-buffer events.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    programs::tracing::StackIdContext,
};
use refwatch_common::{
    Arg, Event, EventKind, Probe, Refs,
    event::{PGMAP_TYPE_UNKNOWN, flags},
};

use crate::{CALLS, DEVICE_MMS, DROPS, EVENTS, PGMAPS_SEEN, STACKS, args::Args, layout, page};

const PAGE_SHIFT: u64 = 12;

#[inline(always)]
pub fn handle<C: Args + StackIdContext>(ctx: &C, id: u8, probe: &Probe) {
    if let Some(n) = CALLS.get_ptr_mut(u32::from(id)) {
        unsafe { *n += 1 };
    }
    if let Arg::Pgmap(n) = probe.arg {
        let pgmap = ctx.arg_u64(n);
        if probe.kind == EventKind::PgmapRemove {
            let _ = PGMAPS_SEEN.remove(pgmap);
        } else {
            let _ = PGMAPS_SEEN.insert(pgmap, 1, 0);
        }
        pgmap_event(ctx, id, probe.kind, pgmap, 0);
        return;
    }
    match probe.arg {
        Arg::Range { vma, start, end } => {
            range_event(ctx, id, probe.kind, vma, |ctx| (0, ctx.arg_scalar(start), ctx.arg_scalar(end)));
            return;
        }
        Arg::Move { vma, from, to, len } => {
            range_event(ctx, id, probe.kind, vma, |ctx| {
                let from = ctx.arg_scalar(from);
                (ctx.arg_scalar(to), from, from + ctx.arg_scalar(len))
            });
            return;
        }
        _ => {}
    }
    let Some(page) = page_arg(ctx, probe.arg) else {
        return;
    };
    // The filter every hit pays for: one read and a compare.
    if page::zone_device_flags(page).is_none() {
        return;
    }
    // After the page filter: reading the return address is a helper call, and the functions
    // with a caller filter (vm_normal_page) run for every normal page unmapped.
    if !called_from_wanted_caller(ctx, id, probe.params.len() as u8) {
        return;
    }
    let head = page::head(page);
    let state = page::state(head);
    if state.pgmap != 0 && unsafe { PGMAPS_SEEN.get(state.pgmap) }.is_none() {
        let _ = PGMAPS_SEEN.insert(state.pgmap, 1, 0);
        pgmap_event(ctx, id, EventKind::PgmapAdd, state.pgmap, flags::DISCOVERED);
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        fill_common(ctx, ev, id, probe.kind);
        (*ev).pfn = page::page_to_pfn(head).unwrap_or(u64::MAX);
        (*ev).page = head;
        (*ev).pgmap = state.pgmap;
        (*ev).extra = match probe.refs {
            Refs::One => 1,
            Refs::Arg(n) => ctx.arg_u64(n),
        };
        (*ev).extra2 = match probe.gup_flags {
            Some(n) => ctx.arg_u64(n),
            None => 0,
        };
        if let Some((vma, address)) = probe.at {
            let mm = vma_mm(ctx, vma).unwrap_or(0);
            (*ev).extra = ctx.arg_scalar(address);
            (*ev).extra2 = mm;
            // Before the zap of this address can run: its range event needs the mm known.
            if mm != 0 {
                let _ = DEVICE_MMS.insert(mm, 1, 0);
            }
        }
        (*ev).refcount = state.refcount;
        (*ev).mapcount = state.mapcount;
        (*ev).pgmap_type = pgmap_type_u8(state.pgmap);
        let mut f = 0;
        if state.is_head {
            f |= flags::HEAD;
        }
        if probe.speculative {
            f |= flags::SPECULATIVE;
        }
        (*ev).flags = f;
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
        Arg::Pgmap(_) | Arg::Range { .. } | Arg::Move { .. } => None,
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
fn range_event<C: Args + StackIdContext>(ctx: &C, id: u8, kind: EventKind, vma: u8, range: impl Fn(&C) -> (u64, u64, u64)) {
    let Some(mm) = vma_mm(ctx, vma) else {
        return;
    };
    if unsafe { DEVICE_MMS.get(mm) }.is_none() {
        return;
    }
    let (to, start, end) = range(ctx);
    submit_other(ctx, id, kind, Other { pfn: to, page: mm, pgmap: 0, extra: start, extra2: end, mapcount: 0, pgmap_type: PGMAP_TYPE_UNKNOWN, flags: 0 });
}

#[inline(always)]
fn called_from_wanted_caller<C: Args>(ctx: &C, id: u8, nr_args: u8) -> bool {
    let range = unsafe { core::ptr::read_volatile(&raw const crate::CALLERS.range[id as usize]) };
    if range[1] == 0 {
        return true;
    }
    ctx.return_address(nr_args).is_some_and(|ret| ret >= range[0] && ret < range[1])
}

#[inline(always)]
fn pgmap_type_u8(pgmap: u64) -> u8 {
    if pgmap == 0 {
        return PGMAP_TYPE_UNKNOWN;
    }
    page::pgmap_type(pgmap).map_or(PGMAP_TYPE_UNKNOWN, |t| t as u8)
}

/// One event for the pgmap, carrying its first range: `extra..extra2` are its pfns and
/// `mapcount` its `nr_range`. One range, not a loop over all: the loop multiplied the states
/// older verifiers (6.1 and before) walk in every program past what a TCG guest can wait for.
#[inline(always)]
fn pgmap_event<C: Args + StackIdContext>(ctx: &C, id: u8, kind: EventKind, pgmap: u64, f: u8) {
    let nr = page::read::<i32>(pgmap + layout!(off_pgmap_nr_range)).unwrap_or(0);
    let at = pgmap + layout!(off_pgmap_ranges);
    let start = page::read::<u64>(at).unwrap_or(0);
    let end = page::read::<u64>(at + 8).unwrap_or(0);
    // range.end is inclusive, in bytes.
    let (first, end) = (start >> PAGE_SHIFT, (end + 1) >> PAGE_SHIFT);
    let o = Other { pfn: first, page: 0, pgmap, extra: first, extra2: end, mapcount: nr, pgmap_type: pgmap_type_u8(pgmap), flags: f };
    submit_other(ctx, id, kind, o);
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
fn submit_other<C: StackIdContext>(ctx: &C, id: u8, kind: EventKind, o: Other) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_drop();
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        fill_common(ctx, ev, id, kind);
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
unsafe fn fill_common<C: StackIdContext>(ctx: &C, ev: *mut Event, id: u8, kind: EventKind) {
    unsafe {
        (*ev).ts_ns = bpf_ktime_get_ns();
        (*ev).pid_tgid = bpf_get_current_pid_tgid();
        (*ev).stack_id = ctx.get_stackid(&STACKS, 0).map_or(-1, |s| s as i32);
        (*ev).cpu = bpf_get_smp_processor_id() as u16;
        (*ev).probe = id;
        (*ev).kind = kind as u8;
        (*ev)._pad = [0; 6];
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
}

#[inline(always)]
fn count_drop() {
    if let Some(n) = DROPS.get_ptr_mut(0) {
        unsafe { *n += 1 };
    }
}
