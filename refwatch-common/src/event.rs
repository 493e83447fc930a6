//! The record one probe hit sends to userspace.

/// A ZONE_DEVICE page changed hands. Field order keeps the struct free of padding holes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the upper half, pid (thread id) in the lower.
    pub pid_tgid: u64,
    pub pfn: u64,
    /// Address of the struct page the probe was handed (the head page for a folio); for a
    /// range zap or move ([`crate::Arg::Range`], [`crate::Arg::Move`]) the `struct mm_struct *`
    /// of the range; `pfn` is then 0 (a zap) or the address the range moves to (a move).
    pub page: u64,
    /// `struct dev_pagemap *` of the page, 0 when it could not be read.
    pub pgmap: u64,
    /// Kind-specific: references moved (get/put), pages (unmap), first pfn (pgmap events),
    /// the user address (inserts whose probe knows it), the range's start (range zaps, moves),
    /// the pages of the DAX entry (truncate).
    pub extra: u64,
    /// Kind-specific: end pfn, exclusive (pgmap events); GUP flags (get/put) where known; the
    /// `struct mm_struct *` (inserts with a user address); the range's end (range zaps, moves).
    pub extra2: u64,
    /// `page->_refcount` of the head page, read at the probe.
    pub refcount: i32,
    /// `page_mapcount()`-style value (`_mapcount + 1`, or the folio's large mapcount); for
    /// pgmap events the pgmap's `nr_range` (only the first range is carried).
    pub mapcount: i32,
    /// Kernel stack id in the `STACKS` map, negative when none was captured.
    pub stack_id: i32,
    pub cpu: u16,
    /// Index into [`crate::CATALOG`], or [`WATCH_PROBE`].
    pub probe: u8,
    /// [`EventKind`] as u8.
    pub kind: u8,
    /// Raw `enum memory_type` value of the pgmap (its meaning differs between kernels).
    pub pgmap_type: u8,
    /// [`flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 6],
    pub comm: [u8; 16],
}

/// Bits of [`Event::flags`].
pub mod flags {
    /// The pgmap was learned from a page, not from memremap_pages (it existed before refwatch).
    pub const DISCOVERED: u8 = 1 << 0;
    /// The page is a compound head (a large folio).
    pub const HEAD: u8 = 1 << 1;
    /// The probe is a speculative grab that may fail on refcount 0 without harm.
    pub const SPECULATIVE: u8 = 1 << 2;
    /// The pgmap fields could not be read.
    pub const PGMAP_UNREADABLE: u8 = 1 << 3;
    /// The teardown scan stopped at its limit before the end of the pgmap's range.
    pub const SCAN_CUT: u8 = 1 << 4;
}

/// [`Event::probe`] of a watchpoint hit: no catalog function, a hardware breakpoint. Trace
/// event tags stop below 0x80, and the catalog stays far below this.
pub const WATCH_PROBE: u8 = 0x7f;
/// What a watchpoint hit names in place of a kernel function.
pub const WATCH_FUNCTION: &str = "watchpoint";

const _: () = assert!(crate::catalog::CATALOG_LEN < WATCH_PROBE as usize);

/// The kernel function an event's probe id names, [`WATCH_FUNCTION`], or "?".
pub fn probe_function(id: u8) -> &'static str {
    match crate::CATALOG.get(usize::from(id)) {
        Some(p) => p.function,
        None if id == WATCH_PROBE => WATCH_FUNCTION,
        None => "?",
    }
}

/// Unknown `enum memory_type`.
pub const PGMAP_TYPE_UNKNOWN: u8 = 0xff;

#[cfg(feature = "user")]
unsafe impl aya::Pod for Event {}

/// The logical transition an event stands for.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum EventKind {
    /// A ZONE_DEVICE page enters a user page table.
    Insert = 0,
    /// A reference is taken.
    Get = 1,
    /// A reference is dropped.
    Put = 2,
    /// The page reached its free path.
    Free = 3,
    /// A mapping of the page goes away.
    Unmap = 4,
    /// A dev_pagemap range appears (memremap_pages, or first sight of an existing one).
    PgmapAdd = 5,
    /// memunmap_pages starts tearing a dev_pagemap down.
    PgmapRemove = 6,
    /// The mappings of a user address range move to another address (mremap).
    Remap = 7,
    /// The filesystem takes a DAX page's block back (truncate, hole punch, eviction).
    Truncate = 8,
    /// memunmap_pages found the page still held: the kernel's own refcount above idle, or a
    /// mapcount (read by a scan of the pgmap in the kernel, before the pgmap event).
    Held = 9,
    /// A hardware breakpoint on the page's `_refcount` saw it written (`--watch`), inline or
    /// not; the counts are read right after the write.
    Watch = 10,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::Insert,
        EventKind::Get,
        EventKind::Put,
        EventKind::Free,
        EventKind::Unmap,
        EventKind::PgmapAdd,
        EventKind::PgmapRemove,
        EventKind::Remap,
        EventKind::Truncate,
        EventKind::Held,
        EventKind::Watch,
    ];

    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Insert),
            1 => Some(Self::Get),
            2 => Some(Self::Put),
            3 => Some(Self::Free),
            4 => Some(Self::Unmap),
            5 => Some(Self::PgmapAdd),
            6 => Some(Self::PgmapRemove),
            7 => Some(Self::Remap),
            8 => Some(Self::Truncate),
            9 => Some(Self::Held),
            10 => Some(Self::Watch),
            _ => None,
        }
    }

    /// The name used in JSON output and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Get => "get",
            Self::Put => "put",
            Self::Free => "free",
            Self::Unmap => "unmap",
            Self::PgmapAdd => "pgmap_add",
            Self::PgmapRemove => "pgmap_remove",
            Self::Remap => "remap",
            Self::Truncate => "truncate",
            Self::Held => "held",
            Self::Watch => "watch",
        }
    }
}

impl core::fmt::Display for EventKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
