//! The catalog's entries, one per kernel function and prototype (why each: docs/catalog.md).

use super::{Arg::*, At, Inline, KernelVersion, MigrationSide, Probe, Refs, Site};
use crate::event::EventKind::*;

/// `__vm_insert_mixed` as its first entry has it; the entries after it say where they differ.
const VM_INSERT_MIXED: Probe = Probe {
    function: "__vm_insert_mixed",
    params: &["vm_area_struct*", "_", "pfn_t", "_", "_"],
    kind: Insert,
    arg: PfnT(2),
    at: Some(At::Args { vma: 0, address: 1 }),
    site: Site::PteInsertPfn,
    checked: &["5.10", "6.1"],
    note: "vmf_insert_mixed(_mkwrite) tail-call it; no reference is taken",
    ..Probe::DEFAULT
};

/// `zone_device_page_init` as its first entry has it; the entries after it say where they differ.
const ZONE_DEVICE_PAGE_INIT: Probe = Probe {
    function: "zone_device_page_init",
    params: &["page*"],
    kind: Get,
    arg: Page(0),
    site: Site::ZoneDevicePageInit,
    checked: &["6.1", "6.12"],
    note: "driver allocation of a device-private/coherent page: 0 -> 1 by design",
    ..Probe::DEFAULT
};

/// `__migrate_device_finalize(src, dst, npages, fault_page)` (7.x), the pages it maps: both
/// exported finalizers (`migrate_vma_finalize`, `migrate_device_finalize`) are wrappers
/// around it. The entries after it say where they differ.
const MIGRATION_MAPPED: Probe = Probe {
    function: "__migrate_device_finalize",
    params: &["_", "_", "_", "page*"],
    kind: Insert,
    arg: Migration {
        src: 0,
        dst: 1,
        npages: 2,
        side: MigrationSide::Mapped,
    },
    site: Site::MigrationMapped,
    taken_before: true,
    since: KernelVersion::new(6, 1),
    checked: &["7.3-src"],
    note: "a finished device migration maps each slot's new page (or restores the old one) \
           with the reference the page already holds",
    ..Probe::DEFAULT
};

/// The same finalize, the pages it drops a reference of.
const MIGRATION_RELEASED: Probe = Probe {
    kind: Put,
    arg: Migration {
        src: 0,
        dst: 1,
        npages: 2,
        side: MigrationSide::Released,
    },
    site: Site::MigrationReleased,
    taken_before: false,
    note: "a finished device migration drops a reference of each slot's old page (or of an \
           unused new one)",
    ..MIGRATION_MAPPED
};

/// `move_page_tables` as its first entry has it; the entries after it say where they differ.
const MOVE_PAGE_TABLES: Probe = Probe {
    function: "move_page_tables",
    params: &["vm_area_struct*", "_", "vm_area_struct*", "_", "_", "_"],
    kind: Remap,
    arg: Move {
        vma: 0,
        from: 1,
        to: 3,
        len: 4,
    },
    site: Site::MovePte,
    until: KernelVersion::new(6, 14),
    checked: &["5.10", "6.1"],
    note: "mremap of a range: the PTEs move, nothing is unmapped",
    ..Probe::DEFAULT
};

/// `dax_disassociate_entry(entry, mapping, trunc)` from 5.17 (each page of the entry read in
/// a `bpf_loop`); the 5.10 entry differs only in what it names.
const DAX_DISASSOCIATE_ENTRY: Probe = Probe {
    function: "dax_disassociate_entry",
    params: &["_", "address_space*", "bool"],
    kind: Truncate,
    arg: DaxEntry {
        entry: 0,
        trunc: 2,
        each_page: true,
    },
    site: Site::DaxTruncate,
    since: KernelVersion::new(5, 17),
    until: KernelVersion::new(6, 14),
    checked: &["6.1", "6.12"],
    note: "the filesystem takes the page's block back; with trunc, busy pages are not waited for",
    ..Probe::DEFAULT
};

pub const CATALOG_LEN: usize = 43;

pub const CATALOG: [Probe; CATALOG_LEN] = [
    // --- pgmap creation / teardown -----------------------------------------------------------
    Probe {
        function: "memremap_pages",
        params: &["dev_pagemap*", "_"],
        kind: PgmapAdd,
        arg: Pgmap(0),
        site: Site::MemremapPages,
        checked: &["5.10", "6.1", "6.12", "7.2"],
        note: "ranges and type are set by the caller before entry",
        ..Probe::DEFAULT
    },
    // Until 5.17 memunmap_pages waits for every page reference before the memmap goes; from
    // 5.18 it does not, so the entry after the catalog's last reads what pages still hold.
    Probe {
        function: "memunmap_pages",
        params: &["dev_pagemap*"],
        kind: PgmapRemove,
        arg: Pgmap(0),
        site: Site::MemunmapPages,
        until: KernelVersion::new(5, 17),
        checked: &["5.10"],
        note: "also runs inside a failing memremap_pages",
        ..Probe::DEFAULT
    },
    // --- insertion into user page tables -----------------------------------------------------
    VM_INSERT_MIXED,
    Probe {
        params: &["vm_area_struct*", "_", "pfn_t", "_"],
        checked: &["6.12"],
        ..VM_INSERT_MIXED
    },
    Probe {
        function: "insert_pfn",
        params: &["vm_area_struct*", "_", "pfn_t", "_", "_"],
        kind: Insert,
        arg: PfnT(2),
        at: Some(At::Args { vma: 0, address: 1 }),
        site: Site::PteInsertPfn,
        checked: &["5.10", "6.1", "6.12"],
        note: "fallback where __vm_insert_mixed is inlined",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vmf_insert_pfn_pmd_prot",
        params: &["vm_fault*", "pfn_t", "_", "_"],
        kind: Insert,
        arg: PfnT(1),
        at: Some(At::Vmf(0)),
        site: Site::PmdInsertPfn,
        checked: &["5.10", "6.1"],
        note: "fsdax and device-dax PMD faults; no reference is taken",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vmf_insert_pfn_pmd",
        params: &["vm_fault*", "pfn_t", "_"],
        kind: Insert,
        arg: PfnT(1),
        at: Some(At::Vmf(0)),
        site: Site::PmdInsertPfn,
        checked: &["6.12"],
        note: "fsdax and device-dax PMD faults; no reference is taken",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vmf_insert_pfn_pud_prot",
        params: &["_", "pfn_t", "_", "_"],
        kind: Insert,
        arg: PfnT(1),
        site: Site::PudInsertPfn,
        checked: &["5.10", "6.1"],
        note: "device-dax PUD faults",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vmf_insert_pfn_pud",
        params: &["_", "pfn_t", "_"],
        kind: Insert,
        arg: PfnT(1),
        site: Site::PudInsertPfn,
        checked: &["6.12"],
        note: "device-dax PUD faults",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vmf_insert_page_mkwrite",
        params: &["_", "page*", "_"],
        kind: Insert,
        arg: Page(1),
        site: Site::PteInsertPage,
        checked: &["7.2"],
        note: "fsdax/device-dax PTE faults; the mapping takes a reference and a mapcount",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vmf_insert_folio_pmd",
        params: &["_", "folio*", "_"],
        kind: Insert,
        arg: Folio(1),
        site: Site::PmdInsertFolio,
        checked: &["7.2"],
        note: "the mapping takes a reference and the entire mapcount",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vmf_insert_folio_pud",
        params: &["_", "folio*", "_"],
        kind: Insert,
        arg: Folio(1),
        site: Site::PudInsertFolio,
        checked: &["7.2"],
        note: "device-dax PUD faults",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vm_insert_page",
        params: &["vm_area_struct*", "_", "page*"],
        kind: Insert,
        arg: Page(2),
        at: Some(At::Args { vma: 0, address: 1 }),
        site: Site::VmInsertPage,
        checked: &["5.10", "6.1", "6.12", "7.2"],
        note: "P2PDMA and driver mmaps of device pages",
        ..Probe::DEFAULT
    },
    // --- references taken -------------------------------------------------------------------
    Probe {
        function: "try_grab_page",
        params: &["page*", "_"],
        kind: Get,
        arg: Page(0),
        gup_flags: Some(1),
        site: Site::GupGrab,
        checked: &["5.10", "6.1"],
        note: "slow GUP and follow_devmap_*; FOLL_PIN adds GUP_PIN_COUNTING_BIAS",
        ..Probe::DEFAULT
    },
    Probe {
        function: "try_grab_folio",
        params: &["folio*", "_", "_"],
        kind: Get,
        arg: Folio(0),
        refs: Refs::Arg(1),
        gup_flags: Some(2),
        site: Site::GupGrabFolio,
        checked: &["6.12", "7.2"],
        note: "slow GUP; WARNs and fails on refcount <= 0",
        ..Probe::DEFAULT
    },
    Probe {
        function: "try_grab_folio",
        params: &["page*", "_", "_"],
        kind: Get,
        arg: Page(0),
        refs: Refs::Arg(1),
        gup_flags: Some(2),
        site: Site::GupFastGrab,
        speculative: true,
        checked: &["6.1"],
        note: "gup-fast: speculative, fails on refcount 0",
        ..Probe::DEFAULT
    },
    Probe {
        function: "try_grab_compound_head",
        params: &["page*", "_", "_"],
        kind: Get,
        arg: Page(0),
        refs: Refs::Arg(1),
        gup_flags: Some(2),
        site: Site::GupFastGrab,
        speculative: true,
        checked: &["5.10"],
        note: "gup-fast: speculative",
        ..Probe::DEFAULT
    },
    Probe {
        function: "try_grab_folio_fast",
        params: &["page*", "_", "_"],
        kind: Get,
        arg: Page(0),
        refs: Refs::Arg(1),
        gup_flags: Some(2),
        site: Site::GupFastGrab,
        speculative: true,
        checked: &["6.12", "7.2"],
        note: "gup-fast: speculative",
        ..Probe::DEFAULT
    },
    ZONE_DEVICE_PAGE_INIT,
    Probe {
        params: &["page*", "_", "_"],
        checked: &["7.2"],
        note: "driver allocation: 0 -> 1 by design",
        ..ZONE_DEVICE_PAGE_INIT
    },
    // --- references dropped -----------------------------------------------------------------
    Probe {
        function: "put_devmap_managed_page",
        params: &["page*"],
        kind: Put,
        arg: Page(0),
        site: Site::DevmapPut,
        checked: &["5.10"],
        note: "put_page() of FS_DAX/DEVICE_PRIVATE pages; 2 -> 1 is the idle wakeup",
        ..Probe::DEFAULT
    },
    Probe {
        function: "__put_devmap_managed_page_refs",
        params: &["page*", "_"],
        kind: Put,
        arg: Page(0),
        refs: Refs::Arg(1),
        site: Site::DevmapPut,
        checked: &["6.1"],
        note: "put_page() of ZONE_DEVICE pages while an FS_DAX pgmap exists",
        ..Probe::DEFAULT
    },
    Probe {
        function: "__put_devmap_managed_folio_refs",
        params: &["folio*", "_"],
        kind: Put,
        arg: Folio(0),
        refs: Refs::Arg(1),
        site: Site::DevmapPut,
        checked: &["6.12"],
        note: "folio_put() of ZONE_DEVICE folios while an FS_DAX pgmap exists",
        ..Probe::DEFAULT
    },
    Probe {
        function: "gup_put_folio",
        params: &["folio*", "_", "_"],
        kind: Put,
        arg: Folio(0),
        refs: Refs::Arg(1),
        gup_flags: Some(2),
        site: Site::GupPut,
        checked: &["6.1", "6.12", "7.2"],
        note: "unpin/undo of GUP references",
        ..Probe::DEFAULT
    },
    Probe {
        function: "unpin_user_page",
        params: &["page*"],
        kind: Put,
        arg: Page(0),
        refs: Refs::Pin,
        site: Site::UnpinUserPage,
        since: KernelVersion::new(7, 0),
        checked: &["7.2"],
        note: "gup_put_folio is inlined into it from 7.x on",
        ..Probe::DEFAULT
    },
    // --- free -------------------------------------------------------------------------------
    Probe {
        function: "free_devmap_managed_page",
        params: &["page*"],
        kind: Free,
        arg: Page(0),
        site: Site::Free,
        checked: &["5.10"],
        note: "called at refcount 1: the 1-based idle/free point",
        ..Probe::DEFAULT
    },
    Probe {
        function: "free_zone_device_page",
        params: &["page*"],
        kind: Free,
        arg: Page(0),
        site: Site::Free,
        checked: &["6.1"],
        note: "called at refcount 0; FS_DAX and GENERIC pages never get here when healthy",
        ..Probe::DEFAULT
    },
    Probe {
        function: "free_zone_device_folio",
        params: &["folio*"],
        kind: Free,
        arg: Folio(0),
        site: Site::Free,
        checked: &["6.12", "7.2"],
        note: "called at refcount 0; on 7.x the normal end of every fsdax mapping",
        ..Probe::DEFAULT
    },
    // --- mappings going away ----------------------------------------------------------------
    // The rmap functions exist from 6.9 on, but device pages take part in rmap only from the
    // 6.15 rework: before it they would hide vm_normal_page, the only unmap probe that sees them.
    Probe {
        function: "folio_remove_rmap_ptes",
        params: &["folio*", "page*", "_", "_"],
        kind: Unmap,
        arg: Folio(0),
        refs: Refs::Arg(2),
        site: Site::UnmapPte,
        hot: true,
        since: KernelVersion::new(6, 15),
        checked: &["7.2"],
        note: "zap of PTEs mapping the folio; refs are the PTE count",
        ..Probe::DEFAULT
    },
    Probe {
        function: "folio_remove_rmap_pmd",
        params: &["folio*", "page*", "_"],
        kind: Unmap,
        arg: Folio(0),
        site: Site::UnmapPmd,
        hot: true,
        since: KernelVersion::new(6, 15),
        checked: &["7.2"],
        note: "zap of a PMD mapping the folio",
        ..Probe::DEFAULT
    },
    Probe {
        function: "vm_normal_page",
        params: &["_", "_", "pte_t"],
        kind: Unmap,
        arg: Pte(2),
        site: Site::UnmapPte,
        caller: Some("unmap_page_range"),
        hot: true,
        checked: &["5.10", "6.1", "6.12"],
        note: "zap of a devmap PTE: no rmap, no refcount change",
        ..Probe::DEFAULT
    },
    // Before 6.15 a devmap PTE has no rmap and its zap calls nothing but vm_normal_page, which
    // every normal page passes too: the zap of the range is probed instead (one entry per VMA
    // zapped), and the PTEs it clears are the inserts seen at those addresses of that mm.
    Probe {
        function: "unmap_page_range",
        params: &["mmu_gather*", "vm_area_struct*", "_", "_", "_"],
        kind: Unmap,
        arg: Range {
            vma: 1,
            start: 2,
            end: 3,
        },
        site: Site::UnmapPte,
        until: KernelVersion::new(6, 14),
        checked: &["5.10", "6.1", "6.12"],
        note: "munmap, exit, truncate and MADV_DONTNEED zap user ranges through it",
        ..Probe::DEFAULT
    },
    // mremap moves the PTEs the inserts were seen at (exec moves its stack through it too).
    MOVE_PAGE_TABLES,
    Probe {
        params: &[
            "vm_area_struct*",
            "_",
            "vm_area_struct*",
            "_",
            "_",
            "_",
            "_",
        ],
        checked: &["6.12"],
        ..MOVE_PAGE_TABLES
    },
    // --- appended: trace files name probes by catalog index -----------------------------
    Probe {
        function: "memunmap_pages",
        params: &["dev_pagemap*"],
        kind: PgmapRemove,
        arg: PgmapScan(0),
        site: Site::MemunmapPages,
        since: KernelVersion::new(5, 18),
        checked: &["6.1", "6.12", "7.2"],
        note: "does not wait for FS_DAX/GENERIC page references: the memmap goes under them",
        ..Probe::DEFAULT
    },
    // Truncate, hole punch and eviction give a DAX block back through here; 6.15 waits for
    // the page to be idle first (and the function became an .isra clone).
    DAX_DISASSOCIATE_ENTRY,
    Probe {
        arg: DaxEntry {
            entry: 0,
            trunc: 2,
            each_page: false,
        },
        since: KernelVersion::ANY,
        until: KernelVersion::new(5, 16),
        checked: &["5.10"],
        note: "as above; only the first page of a PMD entry is read (no bpf_loop before 5.17)",
        ..DAX_DISASSOCIATE_ENTRY
    },
    // The block layer's O_DIRECT completion unpins through here (__bio_release_pages), with
    // gup_put_folio inlined: 7.x's only out-of-line function on that path.
    Probe {
        function: "unpin_user_folio",
        params: &["folio*", "_"],
        kind: Put,
        arg: Folio(0),
        refs: Refs::PinArg(1),
        site: Site::UnpinUserFolio,
        since: KernelVersion::new(7, 0),
        checked: &["7.3"],
        note: "unpin of npages pins of the folio (O_DIRECT to and from device pages)",
        ..Probe::DEFAULT
    },
    // A CPU touching a device-private page faults (do_swap_page), takes a reference with an
    // inline get_page and calls the pgmap's migrate_to_ram, whose driver migrates the page back
    // with migrate_vma_setup(args->fault_page = that page). The count read here includes that
    // reference; the matching put after migrate_to_ram is inline again.
    Probe {
        function: "migrate_vma_setup",
        params: &["_"],
        kind: Get,
        arg: FaultPage(0),
        site: Site::DevicePrivateFault,
        taken_before: true,
        since: KernelVersion::new(6, 1),
        checked: &["6.12-src", "7.3-src"],
        note: "a CPU fault bringing a device-private page back to RAM (the fault's reference)",
        ..Probe::DEFAULT
    },
    // A driver finishing a migration to or from device memory: per slot, the migration
    // entries become a mapping of the new page (or of the old one, if the slot did not
    // migrate), then the other page's reference is dropped. Both sides are read at the
    // finalize's entry, before any of it. 6.12 has no inner function: migrate_vma_finalize
    // calls the exported migrate_device_finalize.
    MIGRATION_MAPPED,
    Probe {
        function: "migrate_device_finalize",
        params: &["_", "_", "_"],
        checked: &["6.12-src"],
        ..MIGRATION_MAPPED
    },
    MIGRATION_RELEASED,
    Probe {
        function: "migrate_device_finalize",
        params: &["_", "_", "_"],
        checked: &["6.12-src"],
        ..MIGRATION_RELEASED
    },
];

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

#[cfg(test)]
mod tests {
    use super::CATALOG;

    /// `..Probe::DEFAULT` fills in what an entry leaves out; these it must say itself.
    #[test]
    fn every_entry_names_its_function_prototype_and_kernels() {
        for p in &CATALOG {
            assert!(!p.function.is_empty() && !p.note.is_empty());
            assert!(!p.params.is_empty(), "{}", p.function);
            assert!(!p.checked.is_empty(), "{}", p.function);
        }
    }
}
