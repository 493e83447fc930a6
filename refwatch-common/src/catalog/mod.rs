//! The probe catalog: the kernel functions refwatch hooks, and how to read their arguments.

// This is where kernel-version knowledge lives (with `crate::model`, how each era counts
// references). The loader resolves it against the running kernel (kallsyms for presence, BTF
// for the prototype), so an entry whose prototype does not match is never attached with the
// wrong argument registers. Sources: Debian's 5.10/6.1/6.12/7.2/7.3 trees and their -dbg vmlinux;
// why each entry exists: docs/catalog.md.

mod entries;
mod site;

pub use entries::{CATALOG, CATALOG_LEN, INLINES};
pub use site::{Level, Site};

// The eras were kept here before the model had a module of its own.
pub use crate::model::{ERAS, Era, RefModel, era};
pub use crate::version::KernelVersion;

use crate::event::EventKind;

/// Where the page is found among the function's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// `struct page *` in argument n.
    Page(u8),
    /// `struct folio *` in argument n.
    Folio(u8),
    /// `pfn_t` by value in argument n; only pfns with PFN_DEV|PFN_MAP have struct pages.
    PfnT(u8),
    /// `pte_t` by value in argument n.
    Pte(u8),
    /// `pmd_t *` in argument n (the entry is read at function entry).
    PmdPtr(u8),
    /// `struct dev_pagemap *` in argument n.
    Pgmap(u8),
    /// `struct migrate_vma *` in argument n, whose `fault_page` is the device-private page a
    /// CPU fault is bringing back (NULL for a migration the driver started itself).
    ///
    /// # Minimum kernel version
    /// 6.1: `fault_page` was added to `struct migrate_vma`.
    FaultPage(u8),
    /// `struct dev_pagemap *` in argument n, whose pages are read in the kernel before the
    /// pgmap event: one [`EventKind::Held`] event per page of its first range that is above
    /// idle or mapped (kernels whose teardown does not wait for page references).
    ///
    /// # Minimum kernel version
    /// 5.17: the scan is a `bpf_loop`.
    PgmapScan(u8),
    /// A DAX xarray entry (`void *`: the pfn above bit 5, `DAX_PMD` for 512 pages) in argument
    /// `entry`, given back to the filesystem when argument `trunc` is true: one event for its
    /// first page and, with `each_page`, one more for each other page of it above the idle
    /// refcount 1.
    ///
    /// # Minimum kernel version
    /// 5.17 with `each_page`: the pages are read in a `bpf_loop`.
    DaxEntry {
        entry: u8,
        trunc: u8,
        each_page: bool,
    },
    /// A zap of the user address range `[start, end)` of the `struct vm_area_struct *` in
    /// argument `vma`: one event per range, for mms that had a device page inserted, in place
    /// of one probe hit per PTE (every normal page unmapped passes the per-PTE functions).
    Range { vma: u8, start: u8, end: u8 },
    /// The mappings of `[from, from + len)` of the `vma` in argument `vma` move to `to`
    /// (mremap): one event per move, for the same mms as [`Arg::Range`].
    Move { vma: u8, from: u8, to: u8, len: u8 },
    /// A device migration being finished: the migrate-pfn arrays `src` and `dst`
    /// (`unsigned long *`, `MIGRATE_PFN_*` flags below the pfn) and their length `npages`, all
    /// arguments. One event per ZONE_DEVICE page of the slots that the finalize handles as
    /// `side` says.
    ///
    /// # Minimum kernel version
    /// 5.17: the slots are read in a `bpf_loop`.
    Migration {
        src: u8,
        dst: u8,
        npages: u8,
        side: MigrationSide,
    },
}

/// Which page of each migration slot an [`Arg::Migration`] entry reports. For each slot,
/// `migrate_device_finalize` (mm/migrate_device.c) maps one page where the migration entries
/// were (`remove_migration_ptes`: a reference and a mapcount each) and drops one reference of
/// the other (`folio_put`), so the slot's two pages are two transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationSide {
    /// The page that ends up mapped: the destination of a slot that migrated, else the source
    /// put back. Its count at entry already holds the reference the mapping keeps (the
    /// driver's allocation reference, or the one taken when the slot was collected): the
    /// finalize's own put and the mapping's get cancel out.
    Mapped,
    /// The page whose reference the finalize drops: the source of a slot that migrated
    /// (freed when that was the last), else a destination the driver allocated but that was
    /// not used.
    Released,
}

/// Where an insert's user address and mm are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The `struct vm_area_struct *` and the address are arguments.
    Args { vma: u8, address: u8 },
    /// `vmf->vma` and `vmf->address` of the `struct vm_fault *` in argument n.
    Vmf(u8),
}

/// How many references (or pages) the transition moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refs {
    One,
    /// The count is argument n.
    Arg(u8),
    /// One FOLL_PIN pin: `GUP_PIN_COUNTING_BIAS` references on a small folio, one (and one
    /// `_pincount`) on a large one. Events carry the 1; the aggregator scales it by the folio.
    Pin,
    /// Argument n pins, each counted as [`Refs::Pin`].
    PinArg(u8),
}

/// One catalog entry. Entries are struct literals over [`Probe::DEFAULT`], so that each
/// field can be checked against the kernel source by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Kernel symbol name (never a `.isra`/`.constprop` clone: their ABI may differ).
    pub function: &'static str,
    pub kind: EventKind,
    pub arg: Arg,
    pub refs: Refs,
    /// Argument holding the GUP `flags` (FOLL_GET / FOLL_PIN), if any.
    pub gup_flags: Option<u8>,
    /// Where the user address an insert maps the page at, and its mm, are found: the event
    /// then carries them, and a [`Arg::Range`] zap is matched against them.
    pub at: Option<At>,
    /// The BTF prototype this entry was written for: one pattern per parameter, `page*`,
    /// `folio*`, `pfn_t`, `pte_t`, `pmd_t*`, `dev_pagemap*`, or `_` for anything.
    pub params: &'static [&'static str],
    /// Alternatives share a site; the first entry that resolves is used, the rest are skipped
    /// so that a transition is not counted twice.
    pub site: Site,
    /// A grab that legitimately fails on refcount 0 (gup-fast).
    pub speculative: bool,
    /// The reference was taken inline just before the probed function, so the count read at
    /// its entry already includes it (for an insert: the reference its mapping keeps).
    pub taken_before: bool,
    /// The hit counts only when called from this function (its return address: at the stack
    /// pointer for a kprobe, the word above the arguments for fentry, so such an entry's
    /// arguments must be 8 bytes or less each).
    pub caller: Option<&'static str>,
    /// Every normal page passes this function too (each unmapped one), so its probe costs
    /// workloads that never touch device memory. Left out where no rule needs it.
    pub hot: bool,
    /// Kernel versions (major, minor), inclusive, where the entry applies. Used only where
    /// presence and prototype cannot tell (a function that exists but is inlined into a caller
    /// on some kernels, or one whose meaning for device pages changed with an era).
    pub since: KernelVersion,
    pub until: KernelVersion,
    /// Kernels the entry was checked on (Debian's, `-src` for the lab's own builds).
    pub checked: &'static [&'static str],
    pub note: &'static str,
}

/// The newest kernel the catalog was checked against (Debian's 7.3 in the VM lab).
pub const NEWEST_CHECKED: KernelVersion = KernelVersion::new(7, 3);

/// BPF trampolines (fentry) accept struct arguments passed by value (`pfn_t`, `pte_t`) only
/// from this kernel on; older kernels refuse such programs at load ("stack depth 0+0" on 5.10).
pub const FENTRY_STRUCT_ARGS_SINCE: KernelVersion = KernelVersion::new(6, 1);

impl Probe {
    /// The usual case for every field an entry does not name. `function`, `params`, `kind`,
    /// `arg`, `site`, `checked` and `note` are placeholders that every entry sets.
    pub const DEFAULT: Probe = Probe {
        function: "",
        kind: EventKind::Get,
        arg: Arg::Page(0),
        refs: Refs::One,
        gup_flags: None,
        at: None,
        params: &[],
        site: Site::Free,
        speculative: false,
        taken_before: false,
        caller: None,
        hot: false,
        since: KernelVersion::ANY,
        until: KernelVersion::NEVER,
        checked: &[],
        note: "",
    };

    /// Whether the page argument is a struct passed by value.
    pub const fn struct_by_value(&self) -> bool {
        matches!(self.arg, Arg::PfnT(_) | Arg::Pte(_))
    }

    /// Whether the entry's program sends events of `kind`: its own, and a teardown scan's.
    pub const fn carries(&self, kind: EventKind) -> bool {
        self.kind as u8 == kind as u8
            || (matches!(self.arg, Arg::PgmapScan(_)) && matches!(kind, EventKind::Held))
    }

    /// The last kernel the entry applies to, if it is bounded.
    pub fn last_version(&self) -> Option<KernelVersion> {
        (self.until != KernelVersion::NEVER).then_some(self.until)
    }

    /// Whether the entry applies to kernel `version` by the catalog's version bounds.
    pub fn applies_to(&self, version: impl Into<KernelVersion>) -> bool {
        let version = version.into();
        self.since <= version && version <= self.until
    }

    /// Whether the entry's events are about a user address range, not a page ([`Arg::Range`],
    /// [`Arg::Move`]).
    pub const fn is_range(&self) -> bool {
        matches!(self.arg, Arg::Range { .. } | Arg::Move { .. })
    }
}

/// A transition that happens in a static inline function, and the out-of-line functions that
/// carry it instead.
#[derive(Clone, Copy, Debug)]
pub struct Inline {
    pub name: &'static str,
    pub covered_by: &'static [&'static str],
    pub note: &'static str,
}

/// Catalog index of a probe, as carried in [`crate::Event::probe`].
pub const fn probe(id: u8) -> &'static Probe {
    &CATALOG[id as usize]
}
