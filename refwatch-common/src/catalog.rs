//! The probe catalog: every kernel function refwatch knows how to hook, what transition it
//! carries, where its page argument sits, and for which prototype that was checked.
//!
//! This is the one place kernel-version knowledge lives. The loader resolves it against the
//! running kernel (kallsyms for presence, BTF for the prototype), so an entry whose prototype
//! does not match is never attached with the wrong argument registers. Sources: Debian's
//! 5.10/6.1/6.12/7.2 trees and their -dbg vmlinux; why each entry exists: docs/catalog.md.

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
    pub site: &'static str,
    /// A grab that legitimately fails on refcount 0 (gup-fast).
    pub speculative: bool,
    /// The reference was taken inline just before the probed function, so the count read at
    /// its entry already includes it.
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
    pub since: (u8, u8),
    pub until: (u8, u8),
    /// Kernels the entry was checked on.
    pub checked: &'static str,
    pub note: &'static str,
}

const ANY: (u8, u8) = (0, 0);
const NEVER: (u8, u8) = (u8::MAX, u8::MAX);

const fn p(
    function: &'static str,
    kind: EventKind,
    arg: Arg,
    params: &'static [&'static str],
    site: &'static str,
    checked: &'static str,
    note: &'static str,
) -> Probe {
    Probe {
        function,
        kind,
        arg,
        refs: Refs::One,
        gup_flags: None,
        at: None,
        params,
        site,
        speculative: false,
        taken_before: false,
        caller: None,
        hot: false,
        since: ANY,
        until: NEVER,
        checked,
        note,
    }
}

const fn refs(mut probe: Probe, refs: Refs, gup_flags: Option<u8>) -> Probe {
    probe.refs = refs;
    probe.gup_flags = gup_flags;
    probe
}

const fn speculative(mut probe: Probe) -> Probe {
    probe.speculative = true;
    probe
}

const fn taken_before(mut probe: Probe) -> Probe {
    probe.taken_before = true;
    probe
}

const fn caller(mut probe: Probe, caller: &'static str) -> Probe {
    probe.caller = Some(caller);
    probe
}

const fn hot(mut probe: Probe) -> Probe {
    probe.hot = true;
    probe
}

const fn since(mut probe: Probe, version: (u8, u8)) -> Probe {
    probe.since = version;
    probe
}

const fn until(mut probe: Probe, version: (u8, u8)) -> Probe {
    probe.until = version;
    probe
}

const fn at(mut probe: Probe, vma: u8, address: u8) -> Probe {
    probe.at = Some(At::Args { vma, address });
    probe
}

const fn at_vmf(mut probe: Probe, vmf: u8) -> Probe {
    probe.at = Some(At::Vmf(vmf));
    probe
}

use Arg::*;
use EventKind::*;

pub const CATALOG_LEN: usize = 39;

pub const CATALOG: [Probe; CATALOG_LEN] = [
    // --- pgmap creation / teardown -----------------------------------------------------------
    p(
        "memremap_pages",
        PgmapAdd,
        Pgmap(0),
        &["dev_pagemap*", "_"],
        "memremap_pages",
        "5.10 6.1 6.12 7.2",
        "ranges and type are set by the caller before entry",
    ),
    // Until 5.17 memunmap_pages waits for every page reference before the memmap goes; from
    // 5.18 it does not, so the entry after the catalog's last reads what pages still hold.
    until(
        p(
            "memunmap_pages",
            PgmapRemove,
            Pgmap(0),
            &["dev_pagemap*"],
            "memunmap_pages",
            "5.10",
            "also runs inside a failing memremap_pages",
        ),
        (5, 17),
    ),
    // --- insertion into user page tables -----------------------------------------------------
    at(
        p(
            "__vm_insert_mixed",
            Insert,
            PfnT(2),
            &["vm_area_struct*", "_", "pfn_t", "_", "_"],
            "pte-insert-pfn",
            "5.10 6.1",
            "vmf_insert_mixed(_mkwrite) tail-call it; no reference is taken",
        ),
        0,
        1,
    ),
    at(
        p(
            "__vm_insert_mixed",
            Insert,
            PfnT(2),
            &["vm_area_struct*", "_", "pfn_t", "_"],
            "pte-insert-pfn",
            "6.12",
            "vmf_insert_mixed(_mkwrite) tail-call it; no reference is taken",
        ),
        0,
        1,
    ),
    at(
        p(
            "insert_pfn",
            Insert,
            PfnT(2),
            &["vm_area_struct*", "_", "pfn_t", "_", "_"],
            "pte-insert-pfn",
            "5.10 6.1 6.12",
            "fallback where __vm_insert_mixed is inlined",
        ),
        0,
        1,
    ),
    at_vmf(
        p(
            "vmf_insert_pfn_pmd_prot",
            Insert,
            PfnT(1),
            &["vm_fault*", "pfn_t", "_", "_"],
            "pmd-insert-pfn",
            "5.10 6.1",
            "fsdax and device-dax PMD faults; no reference is taken",
        ),
        0,
    ),
    at_vmf(
        p(
            "vmf_insert_pfn_pmd",
            Insert,
            PfnT(1),
            &["vm_fault*", "pfn_t", "_"],
            "pmd-insert-pfn",
            "6.12",
            "fsdax and device-dax PMD faults; no reference is taken",
        ),
        0,
    ),
    p(
        "vmf_insert_pfn_pud_prot",
        Insert,
        PfnT(1),
        &["_", "pfn_t", "_", "_"],
        "pud-insert-pfn",
        "5.10 6.1",
        "device-dax PUD faults",
    ),
    p(
        "vmf_insert_pfn_pud",
        Insert,
        PfnT(1),
        &["_", "pfn_t", "_"],
        "pud-insert-pfn",
        "6.12",
        "device-dax PUD faults",
    ),
    p(
        "vmf_insert_page_mkwrite",
        Insert,
        Page(1),
        &["_", "page*", "_"],
        "pte-insert-page",
        "7.2",
        "fsdax/device-dax PTE faults; the mapping takes a reference and a mapcount",
    ),
    p(
        "vmf_insert_folio_pmd",
        Insert,
        Folio(1),
        &["_", "folio*", "_"],
        "pmd-insert-folio",
        "7.2",
        "the mapping takes a reference and the entire mapcount",
    ),
    p(
        "vmf_insert_folio_pud",
        Insert,
        Folio(1),
        &["_", "folio*", "_"],
        "pud-insert-folio",
        "7.2",
        "device-dax PUD faults",
    ),
    at(
        p(
            "vm_insert_page",
            Insert,
            Page(2),
            &["vm_area_struct*", "_", "page*"],
            "vm-insert-page",
            "5.10 6.1 6.12 7.2",
            "P2PDMA and driver mmaps of device pages",
        ),
        0,
        1,
    ),
    // --- references taken -------------------------------------------------------------------
    refs(
        p(
            "try_grab_page",
            Get,
            Page(0),
            &["page*", "_"],
            "gup-grab",
            "5.10 6.1",
            "slow GUP and follow_devmap_*; FOLL_PIN adds GUP_PIN_COUNTING_BIAS",
        ),
        Refs::One,
        Some(1),
    ),
    refs(
        p(
            "try_grab_folio",
            Get,
            Folio(0),
            &["folio*", "_", "_"],
            "gup-grab-folio",
            "6.12 7.2",
            "slow GUP; WARNs and fails on refcount <= 0",
        ),
        Refs::Arg(1),
        Some(2),
    ),
    speculative(refs(
        p(
            "try_grab_folio",
            Get,
            Page(0),
            &["page*", "_", "_"],
            "gup-fast-grab",
            "6.1",
            "gup-fast: speculative, fails on refcount 0",
        ),
        Refs::Arg(1),
        Some(2),
    )),
    speculative(refs(
        p(
            "try_grab_compound_head",
            Get,
            Page(0),
            &["page*", "_", "_"],
            "gup-fast-grab",
            "5.10",
            "gup-fast: speculative",
        ),
        Refs::Arg(1),
        Some(2),
    )),
    speculative(refs(
        p(
            "try_grab_folio_fast",
            Get,
            Page(0),
            &["page*", "_", "_"],
            "gup-fast-grab",
            "6.12 7.2",
            "gup-fast: speculative",
        ),
        Refs::Arg(1),
        Some(2),
    )),
    p(
        "zone_device_page_init",
        Get,
        Page(0),
        &["page*"],
        "zone-device-page-init",
        "6.1 6.12",
        "driver allocation of a device-private/coherent page: 0 -> 1 by design",
    ),
    p(
        "zone_device_page_init",
        Get,
        Page(0),
        &["page*", "_", "_"],
        "zone-device-page-init",
        "7.2",
        "driver allocation: 0 -> 1 by design",
    ),
    // --- references dropped -----------------------------------------------------------------
    p(
        "put_devmap_managed_page",
        Put,
        Page(0),
        &["page*"],
        "devmap-put",
        "5.10",
        "put_page() of FS_DAX/DEVICE_PRIVATE pages; 2 -> 1 is the idle wakeup",
    ),
    refs(
        p(
            "__put_devmap_managed_page_refs",
            Put,
            Page(0),
            &["page*", "_"],
            "devmap-put",
            "6.1",
            "put_page() of ZONE_DEVICE pages while an FS_DAX pgmap exists",
        ),
        Refs::Arg(1),
        None,
    ),
    refs(
        p(
            "__put_devmap_managed_folio_refs",
            Put,
            Folio(0),
            &["folio*", "_"],
            "devmap-put",
            "6.12",
            "folio_put() of ZONE_DEVICE folios while an FS_DAX pgmap exists",
        ),
        Refs::Arg(1),
        None,
    ),
    refs(
        p(
            "gup_put_folio",
            Put,
            Folio(0),
            &["folio*", "_", "_"],
            "gup-put",
            "6.1 6.12 7.2",
            "unpin/undo of GUP references",
        ),
        Refs::Arg(1),
        Some(2),
    ),
    since(
        refs(
            p(
                "unpin_user_page",
                Put,
                Page(0),
                &["page*"],
                "unpin-user-page",
                "7.2",
                "gup_put_folio is inlined into it from 7.x on",
            ),
            Refs::Pin,
            None,
        ),
        (7, 0),
    ),
    // --- free -------------------------------------------------------------------------------
    p(
        "free_devmap_managed_page",
        Free,
        Page(0),
        &["page*"],
        "free",
        "5.10",
        "called at refcount 1: the 1-based idle/free point",
    ),
    p(
        "free_zone_device_page",
        Free,
        Page(0),
        &["page*"],
        "free",
        "6.1",
        "called at refcount 0; FS_DAX and GENERIC pages never get here when healthy",
    ),
    p(
        "free_zone_device_folio",
        Free,
        Folio(0),
        &["folio*"],
        "free",
        "6.12 7.2",
        "called at refcount 0; on 7.x the normal end of every fsdax mapping",
    ),
    // --- mappings going away ----------------------------------------------------------------
    // The rmap functions exist from 6.9 on, but device pages take part in rmap only from the
    // 6.15 rework: before it they would hide vm_normal_page, the only unmap probe that sees them.
    hot(since(
        refs(
            p(
                "folio_remove_rmap_ptes",
                Unmap,
                Folio(0),
                &["folio*", "page*", "_", "_"],
                "unmap-pte",
                "7.2",
                "zap of PTEs mapping the folio; refs are the PTE count",
            ),
            Refs::Arg(2),
            None,
        ),
        (6, 15),
    )),
    hot(since(
        p(
            "folio_remove_rmap_pmd",
            Unmap,
            Folio(0),
            &["folio*", "page*", "_"],
            "unmap-pmd",
            "7.2",
            "zap of a PMD mapping the folio",
        ),
        (6, 15),
    )),
    hot(caller(
        p(
            "vm_normal_page",
            Unmap,
            Pte(2),
            &["_", "_", "pte_t"],
            "unmap-pte",
            "5.10 6.1 6.12",
            "zap of a devmap PTE: no rmap, no refcount change",
        ),
        "unmap_page_range",
    )),
    // Before 6.15 a devmap PTE has no rmap and its zap calls nothing but vm_normal_page, which
    // every normal page passes too: the zap of the range is probed instead (one entry per VMA
    // zapped), and the PTEs it clears are the inserts seen at those addresses of that mm.
    until(
        p(
            "unmap_page_range",
            Unmap,
            Range {
                vma: 1,
                start: 2,
                end: 3,
            },
            &["mmu_gather*", "vm_area_struct*", "_", "_", "_"],
            "unmap-pte",
            "5.10 6.1 6.12",
            "munmap, exit, truncate and MADV_DONTNEED zap user ranges through it",
        ),
        (6, 14),
    ),
    // mremap moves the PTEs the inserts were seen at (exec moves its stack through it too).
    until(
        p(
            "move_page_tables",
            Remap,
            Move {
                vma: 0,
                from: 1,
                to: 3,
                len: 4,
            },
            &["vm_area_struct*", "_", "vm_area_struct*", "_", "_", "_"],
            "move-pte",
            "5.10 6.1",
            "mremap of a range: the PTEs move, nothing is unmapped",
        ),
        (6, 14),
    ),
    until(
        p(
            "move_page_tables",
            Remap,
            Move {
                vma: 0,
                from: 1,
                to: 3,
                len: 4,
            },
            &[
                "vm_area_struct*",
                "_",
                "vm_area_struct*",
                "_",
                "_",
                "_",
                "_",
            ],
            "move-pte",
            "6.12",
            "mremap of a range: the PTEs move, nothing is unmapped",
        ),
        (6, 14),
    ),
    // --- appended: trace files name probes by catalog index -----------------------------
    since(
        p(
            "memunmap_pages",
            PgmapRemove,
            PgmapScan(0),
            &["dev_pagemap*"],
            "memunmap_pages",
            "6.1 6.12 7.2",
            "does not wait for FS_DAX/GENERIC page references: the memmap goes \
      under them",
        ),
        (5, 18),
    ),
    // Truncate, hole punch and eviction give a DAX block back through here; 6.15 waits for
    // the page to be idle first (and the function became an .isra clone).
    since(
        until(
            p(
                "dax_disassociate_entry",
                Truncate,
                DaxEntry {
                    entry: 0,
                    trunc: 2,
                    each_page: true,
                },
                &["_", "address_space*", "bool"],
                "dax-truncate",
                "6.1 6.12",
                "the filesystem takes the page's block back; with trunc, busy pages are not waited for",
            ),
            (6, 14),
        ),
        (5, 17),
    ),
    until(
        p(
            "dax_disassociate_entry",
            Truncate,
            DaxEntry {
                entry: 0,
                trunc: 2,
                each_page: false,
            },
            &["_", "address_space*", "bool"],
            "dax-truncate",
            "5.10",
            "as above; only the first page of a PMD entry is read (no bpf_loop before 5.17)",
        ),
        (5, 16),
    ),
    // The block layer's O_DIRECT completion unpins through here (__bio_release_pages), with
    // gup_put_folio inlined: 7.x's only out-of-line function on that path.
    since(
        refs(
            p(
                "unpin_user_folio",
                Put,
                Folio(0),
                &["folio*", "_"],
                "unpin-user-folio",
                "7.3",
                "unpin of npages pins of the folio (O_DIRECT to and from device pages)",
            ),
            Refs::PinArg(1),
            None,
        ),
        (7, 0),
    ),
    // A CPU touching a device-private page faults (do_swap_page), takes a reference with an
    // inline get_page and calls the pgmap's migrate_to_ram, whose driver migrates the page back
    // with migrate_vma_setup(args->fault_page = that page). The count read here includes that
    // reference; the matching put after migrate_to_ram is inline again.
    since(
        taken_before(p(
            "migrate_vma_setup",
            Get,
            FaultPage(0),
            &["_"],
            "device-private-fault",
            "6.12-src 7.3-src",
            "a CPU fault bringing a device-private page back to RAM (the fault's reference)",
        )),
        (6, 1),
    ),
];

/// The newest kernel the catalog was checked against (Debian's 7.3 in the VM lab).
pub const NEWEST_CHECKED: (u8, u8) = (7, 3);

/// BPF trampolines (fentry) accept struct arguments passed by value (`pfn_t`, `pte_t`) only
/// from this kernel on; older kernels refuse such programs at load ("stack depth 0+0" on 5.10).
pub const FENTRY_STRUCT_ARGS_SINCE: (u8, u8) = (6, 1);

impl Probe {
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
    pub fn last_version(&self) -> Option<(u8, u8)> {
        (self.until != NEVER).then_some(self.until)
    }

    /// Whether the entry applies to kernel `version` by the catalog's version bounds.
    pub fn applies_to(&self, version: (u8, u8)) -> bool {
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

pub const INLINES: [Inline; 4] = [
    Inline {
        name: "get_page",
        covered_by: &[
            "try_grab_page",
            "try_grab_folio",
            "try_grab_compound_head",
            "try_grab_folio_fast",
            "vmf_insert_page_mkwrite",
            "vmf_insert_folio_pmd",
            "vmf_insert_folio_pud",
            "vm_insert_page",
        ],
        note: "other get_page() calls on device pages are invisible; their effect shows in the \
               refcount read at the next probe",
    },
    Inline {
        name: "put_page",
        covered_by: &[
            "put_devmap_managed_page",
            "__put_devmap_managed_page_refs",
            "__put_devmap_managed_folio_refs",
            "gup_put_folio",
            "unpin_user_page",
            "unpin_user_folio",
            "free_devmap_managed_page",
            "free_zone_device_page",
            "free_zone_device_folio",
        ],
        note: "non-final puts of GENERIC/P2PDMA pages are inline atomics and invisible",
    },
    Inline {
        name: "folio_get",
        covered_by: &[
            "try_grab_folio",
            "vmf_insert_page_mkwrite",
            "vmf_insert_folio_pmd",
            "vmf_insert_folio_pud",
        ],
        note: "the fsdax fault path's temporary folio_ref_inc is invisible",
    },
    Inline {
        name: "folio_put",
        covered_by: &[
            "__put_devmap_managed_folio_refs",
            "gup_put_folio",
            "unpin_user_folio",
            "free_zone_device_folio",
        ],
        note: "only the final put (through the free path) is seen on 7.x",
    },
];

/// Catalog index of a probe, as carried in [`crate::Event::probe`].
pub const fn probe(id: u8) -> &'static Probe {
    &CATALOG[id as usize]
}

/// How a kernel counts ZONE_DEVICE references. The rules the aggregator checks follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefModel {
    /// Every ZONE_DEVICE page is idle at refcount 1; `free_devmap_managed_page` runs at 1 and a
    /// page reaches 0 only in memunmap_pages. Mappings hold no reference.
    AllOneBased,
    /// DEVICE_PRIVATE/COHERENT are 0-based and freed at 0; FS_DAX, GENERIC and P2PDMA stay idle
    /// at 1 and never reach the free path when healthy. Mappings hold no reference.
    FsdaxOneBased,
    /// Every type but GENERIC is idle at 0 and freed at 0; a mapping holds a reference and a
    /// mapcount, as for normal pages.
    ZeroBased,
}

impl RefModel {
    /// Whether a user mapping holds a reference and a mapcount: the page's own counts then
    /// say whether it is mapped, and no unmap needs to be traced to know it.
    pub const fn mapping_takes_ref(self) -> bool {
        matches!(self, RefModel::ZeroBased)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Era {
    /// First kernel (major, minor) of the era.
    pub since: (u8, u8),
    pub name: &'static str,
    pub model: RefModel,
    pub note: &'static str,
}

/// Refcount eras, oldest first.
pub const ERAS: [Era; 3] = [
    Era {
        since: (0, 0),
        name: "1-based (≤5.17)",
        model: RefModel::AllOneBased,
        note: "all ZONE_DEVICE pages idle at refcount 1",
    },
    Era {
        since: (5, 18),
        name: "fsdax 1-based (5.18–6.14)",
        model: RefModel::FsdaxOneBased,
        note: "27674ef6c73f made DEVICE_PRIVATE 0-based; FS_DAX/GENERIC stay idle at 1",
    },
    Era {
        since: (6, 15),
        name: "0-based (6.15+)",
        model: RefModel::ZeroBased,
        note: "fsdax pages refcounted like normal pages; mappings take a ref and a mapcount",
    },
];

pub fn era(version: (u8, u8)) -> &'static Era {
    let mut found = &ERAS[0];
    let mut i = 0;
    while i < ERAS.len() {
        if version >= ERAS[i].since {
            found = &ERAS[i];
        }
        i += 1;
    }
    found
}
