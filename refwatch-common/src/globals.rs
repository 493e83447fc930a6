//! Globals the loader writes into the eBPF object before load (`EbpfLoader::set_global`).
//! Every struct offset comes from the running kernel's BTF; none is compiled in.

use crate::catalog::CATALOG_LEN;

/// Layout facts about the running kernel. Userspace saves it (kernel facts, trace headers)
/// with the run-time addresses left 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Layout {
    /// Address of the `vmemmap_base` variable (its value is read at run time).
    #[cfg_attr(feature = "user", serde(default))]
    pub vmemmap_base_addr: u64,
    /// The vmemmap start to use when `vmemmap_base_addr` is 0 (no RANDOMIZE_MEMORY).
    #[cfg_attr(feature = "user", serde(default))]
    pub vmemmap_start: u64,
    /// `sizeof(struct page)`.
    pub page_size: u64,
    /// Zone bits of `page->flags`: `(flags >> zones_shift) & zones_mask == zone_device`.
    pub zones_shift: u64,
    pub zones_mask: u64,
    pub zone_device: u64,
    /// `1 << PG_head`.
    pub pg_head_mask: u64,
    pub off_flags: u64,
    /// `page->compound_head` (or `compound_info` on kernels that store a mask there).
    pub off_compound_head: u64,
    /// 1: head = compound_head - 1; 2: head = page & compound_info.
    pub compound_mode: u64,
    pub off_refcount: u64,
    pub off_mapcount: u64,
    /// `folio->_large_mapcount`, or u64::MAX where the kernel has none (`null` when saved).
    #[cfg_attr(feature = "user", serde(with = "optional_offset"))]
    pub off_large_mapcount: u64,
    /// `page->pgmap` (≤6.12) or `folio->pgmap` (on the head).
    pub off_pgmap: u64,
    pub off_pgmap_type: u64,
    pub off_pgmap_nr_range: u64,
    /// First `struct range` of the pgmap (`range` / `ranges[]` union).
    pub off_pgmap_ranges: u64,
    /// `vm_area_struct->vm_mm` (0 in facts and traces from before it was read).
    #[cfg_attr(feature = "user", serde(default))]
    pub off_vma_mm: u64,
    /// `vm_fault->vma` and `vm_fault->address` (u64::MAX where unknown, `null` when saved).
    #[cfg_attr(
        feature = "user",
        serde(default = "optional_offset::none", with = "optional_offset")
    )]
    pub off_vmf_vma: u64,
    #[cfg_attr(
        feature = "user",
        serde(default = "optional_offset::none", with = "optional_offset")
    )]
    pub off_vmf_address: u64,
    /// `migrate_vma->fault_page` (u64::MAX where unknown, `null` when saved).
    #[cfg_attr(
        feature = "user",
        serde(default = "optional_offset::none", with = "optional_offset")
    )]
    pub off_migrate_fault_page: u64,
    /// Bit t set: pages of raw `enum memory_type` t are idle at refcount 1 in this kernel's
    /// era (0 elsewhere). The teardown scan reports pages above it. Set by the loader.
    #[cfg_attr(feature = "user", serde(default))]
    pub idle_one_types: u64,
}

/// x86-64 `VMEMMAP_START` with 4-level paging when the kernel does not randomize it.
pub const X86_64_VMEMMAP_START: u64 = 0xffff_ea00_0000_0000;

/// u64::MAX, the programs' "no such field", is saved as `null`.
#[cfg(feature = "user")]
mod optional_offset {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(off: &u64, s: S) -> Result<S::Ok, S::Error> {
        (*off != u64::MAX).then_some(*off).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.unwrap_or(u64::MAX))
    }

    /// A field missing from older facts and traces.
    pub fn none() -> u64 {
        u64::MAX
    }
}

impl Layout {
    /// A layout for loading the programs where the kernel's own is unknown: the verifier does
    /// not look at the values, and no page would pass this zone check.
    pub const PLACEHOLDER: Layout = Layout {
        vmemmap_base_addr: 0,
        vmemmap_start: 0,
        page_size: 64,
        zones_shift: 0,
        zones_mask: 0,
        zone_device: u64::MAX,
        pg_head_mask: 0,
        off_flags: 0,
        off_compound_head: 0,
        compound_mode: 0,
        off_refcount: 0,
        off_mapcount: 0,
        off_large_mapcount: u64::MAX,
        off_pgmap: 0,
        off_pgmap_type: 0,
        off_pgmap_nr_range: 0,
        off_pgmap_ranges: 0,
        off_vma_mm: 0,
        off_vmf_vma: u64::MAX,
        off_vmf_address: u64::MAX,
        off_migrate_fault_page: u64::MAX,
        idle_one_types: 0,
    };

    /// The layout with the run-time addresses: `vmemmap_base_addr` is 0 where the kernel has
    /// no `vmemmap_base` variable (vmemmap not randomized), and the fixed start is used then.
    pub const fn with_vmemmap_base(mut self, vmemmap_base_addr: u64) -> Layout {
        self.vmemmap_base_addr = vmemmap_base_addr;
        self.vmemmap_start = X86_64_VMEMMAP_START;
        self
    }
}

pub const COMPOUND_MINUS_ONE: u64 = 1;
pub const COMPOUND_MASK: u64 = 2;

#[cfg(feature = "user")]
unsafe impl aya::Pod for Layout {}

/// `[lo, hi)` address ranges of the caller a probe must be called from; `[0, 0)` means any.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Callers {
    pub range: [[u64; 2]; CATALOG_LEN],
}

impl Default for Callers {
    fn default() -> Self {
        Self {
            range: [[0; 2]; CATALOG_LEN],
        }
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Callers {}

pub const LAYOUT: &str = "LAYOUT";
pub const CALLERS: &str = "CALLERS";
/// `u32`: the process (tgid) whose task context page events must come from; 0: any.
pub const PID_FILTER: &str = "PID_FILTER";
/// `u32`: 1 when events carry no kernel stack (`--no-stacks`); 0: every event takes one.
pub const NO_STACKS: &str = "NO_STACKS";

/// Map names.
pub const EVENTS: &str = "EVENTS";
pub const DROPS: &str = "DROPS";
pub const CALLS: &str = "CALLS";
pub const STACKS: &str = "STACKS";
pub const PGMAPS_SEEN: &str = "PGMAPS_SEEN";
pub const DEVICE_MMS: &str = "DEVICE_MMS";
pub const VMEMMAP: &str = "VMEMMAP";

/// Program names (the catalog's are `k_N`, `f_N`).
pub const WATCH_PROGRAM: &str = "watch";
pub const VMEMMAP_PROGRAM: &str = "vmemmap";

/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
pub const STACK_DEPTH: usize = 127;
pub const MAX_STACKS: u32 = 16384;
/// mms that had a device page inserted, least recently used evicted first: enough that a live
/// mm with device mappings is never the one evicted.
pub const MAX_DEVICE_MMS: u32 = 16384;
