//! Reading struct page / folio / dev_pagemap fields at the offsets the loader found in BTF.

use core::mem::MaybeUninit;

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_probe_read_kernel, generated},
};
use refwatch_common::globals::COMPOUND_MASK;

use crate::layout;

#[inline(always)]
pub fn read<T>(addr: u64) -> Option<T> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The value at `addr`, or `fallback` where it cannot be read: a value on every path. (From
/// an Option the optimizer may compute on the register of a value that was never read, and
/// the verifier refuses a register never written.)
#[inline(always)]
pub fn read_or<T: Copy>(addr: u64, fallback: T) -> T {
    let mut value = fallback;
    let dst = (&raw mut value).cast::<c_void>();
    let size = core::mem::size_of::<T>() as u32;
    match unsafe { generated::bpf_probe_read_kernel(dst, size, addr as *const c_void) } {
        0 => value,
        _ => fallback,
    }
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

/// The vmemmap base: fixed, or (randomized at boot) read from its variable once and kept in
/// [`crate::VMEMMAP`].
#[inline(always)]
pub fn vmemmap() -> Option<u64> {
    let addr = match layout!(vmemmap_base_addr) {
        0 => return Some(layout!(vmemmap_start)),
        addr => addr,
    };
    let slot = crate::VMEMMAP.get_ptr_mut(0)?;
    match unsafe { *slot } {
        0 => {
            let base = read::<u64>(addr)?;
            unsafe { *slot = base };
            Some(base)
        }
        base => Some(base),
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

/// The first 64 bytes of a device page's `struct page`, read in one helper call: flags,
/// compound head, pgmap, mapcount and refcount all lie there in every kernel refwatch knows,
/// and each helper call saved is some 50 instructions on the workload's path. A field the
/// loader placed further out is read on its own.
pub struct Snapshot {
    addr: u64,
    /// Written by the read helper before anything reads it (zeroed where the read failed).
    words: MaybeUninit<[u64; 8]>,
}

impl Snapshot {
    /// A snapshot to read into: one per program, filled in place, as the stack is small.
    #[inline(always)]
    pub const fn new() -> Snapshot {
        Snapshot {
            addr: 0,
            words: MaybeUninit::uninit(),
        }
    }

    /// Reads the page at `addr` if it is a ZONE_DEVICE page; whether it is. Its flags come
    /// first, alone: most pages a probe sees are not device pages (every page GUP pins), and
    /// they pay for an 8-byte read as before, not for 64 bytes.
    #[inline(always)]
    pub fn read_zone_device(&mut self, addr: u64) -> bool {
        is_zone_device(read_or(addr + layout!(off_flags), 0)) && self.fill(addr)
    }

    /// Reads the page at `addr`.
    #[inline(always)]
    pub fn fill(&mut self, addr: u64) -> bool {
        let dst = self.words.as_mut_ptr().cast::<c_void>();
        let size = core::mem::size_of::<[u64; 8]>() as u32;
        self.addr = addr;
        unsafe { generated::bpf_probe_read_kernel(dst, size, addr as *const c_void) == 0 }
    }

    /// The 64-bit field at byte `off`, or `fallback` where it cannot be read.
    #[inline(always)]
    fn u64_at(&self, off: u64, fallback: u64) -> u64 {
        if off & 7 != 0 {
            return read_or(self.addr + off, fallback);
        }
        // One arm per slot, each load volatile: the optimizer then keeps a constant stack
        // offset on every path instead of computing one from `off` (a variable stack offset,
        // which 5.10's verifier refuses).
        let w = unsafe { self.words.assume_init_ref() };
        unsafe {
            match off >> 3 {
                0 => core::ptr::read_volatile(&w[0]),
                1 => core::ptr::read_volatile(&w[1]),
                2 => core::ptr::read_volatile(&w[2]),
                3 => core::ptr::read_volatile(&w[3]),
                4 => core::ptr::read_volatile(&w[4]),
                5 => core::ptr::read_volatile(&w[5]),
                6 => core::ptr::read_volatile(&w[6]),
                7 => core::ptr::read_volatile(&w[7]),
                _ => read_or(self.addr + off, fallback),
            }
        }
    }

    /// The 32-bit field at byte `off` (x86-64 is little-endian), or `fallback`.
    #[inline(always)]
    fn i32_at(&self, off: u64, fallback: i32) -> i32 {
        if off & 3 != 0 || off >= 64 {
            return read_or(self.addr + off, fallback);
        }
        (self.u64_at(off & !7, 0) >> ((off & 4) * 8)) as u32 as i32
    }

    #[inline(always)]
    fn flags(&self) -> u64 {
        self.u64_at(layout!(off_flags), 0)
    }

    /// The head page's address, or this page's where it is no tail.
    #[inline(always)]
    pub fn head_addr(&self) -> u64 {
        let info = self.u64_at(layout!(off_compound_head), 0);
        if info & 1 == 0 {
            self.addr
        } else if layout!(compound_mode) == COMPOUND_MASK {
            self.addr & info
        } else {
            info - 1
        }
    }

    /// Makes this the snapshot of its head page (read, where this one is a tail).
    #[inline(always)]
    pub fn move_to_head(&mut self) -> bool {
        let head = self.head_addr();
        head == self.addr || self.fill(head)
    }

    #[inline(always)]
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The counts refwatch reports for this (head) page.
    #[inline(always)]
    pub fn state(&self) -> PageState {
        let is_head = self.flags() & layout!(pg_head_mask) != 0;
        let large = layout!(off_large_mapcount);
        // The kernel's mapcount is one less than the count; i32::MIN stays "unreadable".
        let mapcount = if is_head && large != u64::MAX {
            read_or(self.addr + large, i32::MIN)
        } else {
            self.i32_at(layout!(off_mapcount), i32::MIN)
        };
        PageState {
            refcount: self.i32_at(layout!(off_refcount), i32::MIN),
            mapcount: if mapcount == i32::MIN {
                mapcount
            } else {
                mapcount.wrapping_add(1)
            },
            pgmap: self.u64_at(layout!(off_pgmap), 0),
            is_head,
        }
    }
}

/// Whether `page->flags` puts the page in ZONE_DEVICE.
#[inline(always)]
fn is_zone_device(flags: u64) -> bool {
    (flags >> layout!(zones_shift)) & layout!(zones_mask) == layout!(zone_device)
}

pub struct PageState {
    pub refcount: i32,
    pub mapcount: i32,
    pub pgmap: u64,
    pub is_head: bool,
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
