//! One program per catalog entry, in two flavours (`k_N` kprobe, `f_N` fentry). Each reads
//! the page its entry names, drops everything that is not ZONE_DEVICE, and sends one event.
#![no_std]
#![no_main]

mod args;
mod emit;
mod page;
mod pgmaps;
mod scan;

use aya_ebpf::{
    macros::{fentry, kprobe, map, perf_event},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{FEntryContext, PerfEventContext, ProbeContext},
};
use refwatch_common::{
    CATALOG,
    globals::{Callers, DEFAULT_RING_BYTES, Layout, MAX_DEVICE_MMS, MAX_STACKS},
};

/// Filled in by the loader from BTF and kallsyms.
#[unsafe(no_mangle)]
static LAYOUT: Layout = Layout::PLACEHOLDER;

#[unsafe(no_mangle)]
static CALLERS: Callers = Callers {
    range: [[0; 2]; refwatch_common::catalog::CATALOG_LEN],
};

/// `refwatch -p`: see [`emit::wanted_task`].
#[unsafe(no_mangle)]
static PID_FILTER: u32 = 0;

/// `refwatch --no-stacks`: see [`emit::common`].
#[unsafe(no_mangle)]
static NO_STACKS: u32 = 0;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Failed ring-buffer reservations, per CPU.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Entries of each catalog function, device page or not, per CPU: what the probes cost a
/// workload is their trap or trampoline times these.
#[map]
static CALLS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(refwatch_common::catalog::CATALOG_LEN as u32, 0);

#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

/// pgmaps already reported, so that a pgmap created before refwatch started is reported once.
#[map]
static PGMAPS_SEEN: HashMap<u64, u8> = HashMap::with_max_entries(256, 0);

/// pgmaps torn down so far: a cache entry made before the last removal is stale.
#[map]
static PGMAP_REMOVALS: Array<u64> = Array::with_max_entries(1, 0);

/// The pgmap this CPU reported last, with its type ([`pgmaps::cached_type`]).
#[map]
static PGMAP_CACHE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// mms that had a device page inserted: range zaps ([`refwatch_common::Arg::Range`]) of other
/// mms emit nothing.
#[map]
static DEVICE_MMS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(MAX_DEVICE_MMS, 0);

/// The vmemmap base as the programs see it: read once by the first program that needs it (the
/// variable is set at boot), and by userspace to place watchpoints ([`vmemmap`]).
#[map]
static VMEMMAP: Array<u64> = Array::with_max_entries(1, 0);

/// A hardware breakpoint on a watched page's `_refcount` fired (`--watch`).
#[perf_event]
pub fn watch(ctx: PerfEventContext) -> u32 {
    emit::watch(&ctx);
    0
}

/// Attached for a moment to a page fault of refwatch's own: stores the vmemmap base
/// (randomized at boot, and only readable from the kernel) in [`VMEMMAP`].
#[perf_event]
pub fn vmemmap(_ctx: PerfEventContext) -> u32 {
    let _ = page::vmemmap();
    0
}

/// Reads a `LAYOUT` field; volatile so the loader's value is used, not the placeholder.
macro_rules! layout {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&raw const crate::LAYOUT.$field) }
    };
}
pub(crate) use layout;

macro_rules! programs {
    ($($id:literal => $k:ident, $f:ident;)*) => {
        $(
            #[kprobe]
            pub fn $k(ctx: ProbeContext) -> u32 {
                emit::handle(&ctx, $id, &CATALOG[$id]);
                0
            }

            #[fentry]
            pub fn $f(ctx: FEntryContext) -> u32 {
                emit::handle(&ctx, $id, &CATALOG[$id]);
                0
            }
        )*
        const _: () = assert!([$($id),*].len() == CATALOG.len(), "one program per catalog entry");
    };
}

programs! {
    0 => k_0, f_0; 1 => k_1, f_1; 2 => k_2, f_2; 3 => k_3, f_3; 4 => k_4, f_4;
    5 => k_5, f_5; 6 => k_6, f_6; 7 => k_7, f_7; 8 => k_8, f_8; 9 => k_9, f_9;
    10 => k_10, f_10; 11 => k_11, f_11; 12 => k_12, f_12; 13 => k_13, f_13; 14 => k_14, f_14;
    15 => k_15, f_15; 16 => k_16, f_16; 17 => k_17, f_17; 18 => k_18, f_18; 19 => k_19, f_19;
    20 => k_20, f_20; 21 => k_21, f_21; 22 => k_22, f_22; 23 => k_23, f_23; 24 => k_24, f_24;
    25 => k_25, f_25; 26 => k_26, f_26; 27 => k_27, f_27; 28 => k_28, f_28; 29 => k_29, f_29;
    30 => k_30, f_30; 31 => k_31, f_31; 32 => k_32, f_32; 33 => k_33, f_33; 34 => k_34, f_34;
    35 => k_35, f_35; 36 => k_36, f_36; 37 => k_37, f_37; 38 => k_38, f_38; 39 => k_39, f_39;
    40 => k_40, f_40; 41 => k_41, f_41; 42 => k_42, f_42;
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
