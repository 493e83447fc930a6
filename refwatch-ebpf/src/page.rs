//! Reading struct page / folio / dev_pagemap fields at the offsets the loader found in BTF.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use refwatch_common::globals::COMPOUND_MASK;

use crate::layout;

#[inline(always)]
pub fn read<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

// x86-64 page-table entry bits (arch facts, the same in every kernel refwatch supports).
const PAGE_PRESENT: u64 = 1 << 0;
const PAGE_PSE: u64 = 1 << 7;
const PAGE_SPECIAL: u64 = 1 << 9;
const PTE_PFN_MASK: u64 = 0x000f_ffff_ffff_f000;
const PMD_PFN_MASK: u64 = 0x000f_ffff_ffe0_0000;
// pfn_t flag bits (5.10–6.12): a pfn has a struct page only with PFN_DEV and PFN_MAP.
const PFN_DEV: u64 = 1 << 61;
const PFN_MAP: u64 = 1 << 60;
const PFN_T_MASK: u64 = 0x000f_ffff_ffff_ffff;

#[inline(always)]
pub fn vmemmap() -> Option<u64> {
    match layout!(vmemmap_base_addr) {
        0 => Some(layout!(vmemmap_start)),
        addr => read::<u64>(addr),
    }
}

#[inline(always)]
pub fn pfn_to_page(pfn: u64) -> Option<u64> {
    Some(vmemmap()? + pfn * layout!(page_size))
}

#[inline(always)]
pub fn page_to_pfn(page: u64) -> Option<u64> {
    let base = vmemmap()?;
    let size = layout!(page_size);
    if page < base || size == 0 {
        return None;
    }
    Some((page - base) / size)
}

#[inline(always)]
pub fn pfn_t_page(val: u64) -> Option<u64> {
    if val & (PFN_DEV | PFN_MAP) != (PFN_DEV | PFN_MAP) {
        return None;
    }
    pfn_to_page(val & PFN_T_MASK)
}

/// A devmap PTE is present and special (`pte_mkdevmap` sets `_PAGE_SPECIAL | _PAGE_DEVMAP`).
#[inline(always)]
pub fn pte_page(pte: u64) -> Option<u64> {
    if pte & (PAGE_PRESENT | PAGE_SPECIAL) != (PAGE_PRESENT | PAGE_SPECIAL) {
        return None;
    }
    pfn_to_page((pte & PTE_PFN_MASK) >> 12)
}

#[inline(always)]
pub fn pmd_page(pmd_ptr: u64) -> Option<u64> {
    let pmd = read::<u64>(pmd_ptr)?;
    if pmd & (PAGE_PRESENT | PAGE_PSE) != (PAGE_PRESENT | PAGE_PSE) {
        return None;
    }
    pfn_to_page((pmd & PMD_PFN_MASK) >> 12)
}

/// `page->flags` when the page is in ZONE_DEVICE.
#[inline(always)]
pub fn zone_device_flags(page: u64) -> Option<u64> {
    let flags = read::<u64>(page + layout!(off_flags))?;
    if (flags >> layout!(zones_shift)) & layout!(zones_mask) == layout!(zone_device) {
        Some(flags)
    } else {
        None
    }
}

/// The head page of a compound page, or the page itself.
#[inline(always)]
pub fn head(page: u64) -> u64 {
    let Some(info) = read::<u64>(page + layout!(off_compound_head)) else {
        return page;
    };
    if info & 1 == 0 {
        page
    } else if layout!(compound_mode) == COMPOUND_MASK {
        page & info
    } else {
        info - 1
    }
}

pub struct PageState {
    pub refcount: i32,
    pub mapcount: i32,
    pub pgmap: u64,
    pub is_head: bool,
}

#[inline(always)]
pub fn state(head: u64) -> PageState {
    let flags = read::<u64>(head + layout!(off_flags)).unwrap_or(0);
    let is_head = flags & layout!(pg_head_mask) != 0;
    let large = layout!(off_large_mapcount);
    let mapcount_off = if is_head && large != u64::MAX {
        large
    } else {
        layout!(off_mapcount)
    };
    PageState {
        refcount: read::<i32>(head + layout!(off_refcount)).unwrap_or(i32::MIN),
        mapcount: read::<i32>(head + mapcount_off).map_or(i32::MIN, |m| m + 1),
        pgmap: read::<u64>(head + layout!(off_pgmap)).unwrap_or(0),
        is_head,
    }
}

const PAGE_SHIFT: u64 = 12;

/// The pfns `[first, end)` of the pgmap's first range (`range.end` is inclusive, in bytes).
#[inline(always)]
pub fn pgmap_first_range(pgmap: u64) -> Option<(u64, u64)> {
    let at = pgmap + layout!(off_pgmap_ranges);
    let (start, end) = (read::<u64>(at)?, read::<u64>(at + 8)?);
    Some((start >> PAGE_SHIFT, (end + 1) >> PAGE_SHIFT))
}

#[inline(always)]
pub fn pgmap_type(pgmap: u64) -> Option<u32> {
    read::<u32>(pgmap + layout!(off_pgmap_type))
}
