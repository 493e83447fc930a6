//! How each kernel era counts ZONE_DEVICE page references (mm/memremap.c; docs/refcount-model.md).

// The eras, the idle refcount per pgmap type, and what each transition does to a page's counts:
// what the rules judge against, in one place to read against the kernel. The kernel code behind
// each: docs/refcount-model.md ("The three eras", one section per era, "Per pgmap type").

use crate::{
    catalog::{Probe, Refs, Site},
    event::{Event, EventKind, flags},
    version::KernelVersion,
};

/// How a kernel counts ZONE_DEVICE references. The rules the aggregator checks follow from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum RefModel {
    /// Every ZONE_DEVICE page is idle at refcount 1; `free_devmap_managed_page` runs at 1 and a
    /// page reaches 0 only in memunmap_pages. Mappings hold no reference.
    AllOneBased,
    /// DEVICE_PRIVATE/COHERENT are 0-based and freed at 0; FS_DAX and GENERIC stay idle at 1
    /// and never reach the free path when healthy. Mappings of FS_DAX/GENERIC pages hold no
    /// reference; a P2PDMA page mapped to user space (6.2+) is held by its mapping alone and
    /// freed at 0 when unmapped (docs/refcount-model.md).
    FsdaxOneBased,
    /// Every type but GENERIC is idle at 0 and freed at 0; a mapping holds a reference and a
    /// mapcount, as for normal pages.
    ZeroBased,
}

#[derive(Clone, Copy, Debug)]
pub struct Era {
    /// First kernel of the era.
    pub since: KernelVersion,
    pub name: &'static str,
    pub model: RefModel,
    pub note: &'static str,
}

/// Refcount eras, oldest first.
pub const ERAS: [Era; 3] = [
    Era {
        since: KernelVersion::ANY,
        name: "1-based (≤5.17)",
        model: RefModel::AllOneBased,
        note: "all ZONE_DEVICE pages idle at refcount 1",
    },
    Era {
        since: KernelVersion::new(5, 18),
        name: "fsdax 1-based (5.18–6.14)",
        model: RefModel::FsdaxOneBased,
        note: "27674ef6c73f made DEVICE_PRIVATE 0-based; FS_DAX/GENERIC stay idle at 1",
    },
    Era {
        since: KernelVersion::new(6, 15),
        name: "0-based (6.15+)",
        model: RefModel::ZeroBased,
        note: "fsdax pages refcounted like normal pages; mappings take a ref and a mapcount",
    },
];

/// The era of kernel `version`.
pub fn era(version: impl Into<KernelVersion>) -> &'static Era {
    let version = version.into();
    ERAS.iter()
        .rev()
        .find(|e| version >= e.since)
        .unwrap_or(&ERAS[0])
}

/// A pgmap's type, the kernel's `enum memory_type` (include/linux/memremap.h), read from BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    /// MEMORY_DEVICE_PRIVATE
    Private,
    /// MEMORY_DEVICE_COHERENT
    Coherent,
    /// MEMORY_DEVICE_FS_DAX
    FsDax,
    /// MEMORY_DEVICE_GENERIC (device-dax)
    Generic,
    /// MEMORY_DEVICE_PCI_P2PDMA
    P2pdma,
    Unknown,
}

impl MemoryType {
    /// `name` as the loader spells `enum memory_type` ("fsdax", "generic", ...).
    pub fn from_name(name: &str) -> MemoryType {
        match name {
            "private" => MemoryType::Private,
            "coherent" => MemoryType::Coherent,
            "fsdax" => MemoryType::FsDax,
            "generic" => MemoryType::Generic,
            "p2pdma" => MemoryType::P2pdma,
            _ => MemoryType::Unknown,
        }
    }
}

/// `GUP_PIN_COUNTING_BIAS`: the references one pin holds on a small folio.
pub const GUP_PIN_COUNTING_BIAS: i64 = 1024;

/// `FOLL_PIN` where include/linux/mm.h defines it as a macro, which BTF does not carry (read
/// on 5.10 and 6.1). Later kernels keep it in an enum of mm/internal.h, which BTF has
/// (`1 << 19` on 6.12 and 7.x).
pub const FOLL_PIN_MACRO: u64 = 0x40000;
/// The newest kernel read whose `FOLL_PIN` is [`FOLL_PIN_MACRO`].
pub const FOLL_PIN_MACRO_UNTIL: KernelVersion = KernelVersion::new(6, 1);

impl RefModel {
    /// Whether a user mapping holds a reference and a mapcount: the page's own counts then
    /// say whether it is mapped, and no unmap needs to be traced to know it.
    pub const fn mapping_takes_ref(self) -> bool {
        matches!(self, RefModel::ZeroBased)
    }

    /// The refcount of an idle page.
    pub const fn idle(self, ty: MemoryType) -> Option<i64> {
        use MemoryType::*;
        match (self, ty) {
            (_, Unknown) => None,
            (RefModel::AllOneBased, _) => Some(1),
            (RefModel::FsdaxOneBased, Private | Coherent) => Some(0),
            (RefModel::FsdaxOneBased, _) => Some(1),
            (RefModel::ZeroBased, Generic) => Some(1),
            (RefModel::ZeroBased, _) => Some(0),
        }
    }

    /// Whether every return of this type to idle passes a probe, so that "above idle" in the
    /// aggregator's estimate means the page is really busy. Elsewhere non-final puts are inline
    /// atomics and the estimate can go stale high.
    pub const fn idle_visible(self, ty: MemoryType) -> bool {
        use MemoryType::*;
        match self {
            // put_devmap_managed_page sees every put of FS_DAX/PRIVATE pages.
            RefModel::AllOneBased => matches!(ty, FsDax | Private),
            // __put_devmap_managed_*_refs sees FS_DAX puts; 0-based types end in the free path.
            RefModel::FsdaxOneBased => matches!(ty, FsDax | Private | Coherent),
            // Every type but GENERIC (idle at 1) reaches idle through free_zone_device_folio.
            RefModel::ZeroBased => matches!(ty, FsDax | Private | Coherent | P2pdma),
        }
    }

    /// Whether a page of this type still busy at memunmap_pages is no finding: from 5.18 a
    /// P2PDMA page holds a pgmap reference from the pool (p2pmem_alloc_mmap, pci_alloc_p2pmem)
    /// and its mappings hold page references, so the teardown waits, and is merely late.
    /// Device-private and coherent pages are waited for too (a pgmap reference from
    /// zone_device_page_init to their free), but for as long as a process keeps its entry, and
    /// a CPU fault meanwhile calls the dying driver's migrate_to_ram: a finding. (Until 5.17
    /// every type's references are waited for, but fsdax mappings hold none: the aggregator
    /// counts those there.)
    pub const fn teardown_busy_harmless(self, ty: MemoryType) -> bool {
        !matches!(self, RefModel::AllOneBased) && matches!(ty, MemoryType::P2pdma)
    }

    /// 5.18–6.14's `__put_devmap_managed_{page,folio}_refs` is entered for every ZONE_DEVICE
    /// page while any FS_DAX pgmap exists (the static key), and returns false without touching
    /// the count unless the page is FS_DAX: the put then goes on through folio_put (inline, or
    /// the probed free at 0). Such a hit moves nothing and must not be judged as a put.
    #[inline]
    pub fn passthrough(self, probe: &Probe, ty: MemoryType) -> bool {
        self == RefModel::FsdaxOneBased
            && probe.site == Site::DevmapPut
            && !matches!(ty, MemoryType::FsDax | MemoryType::Unknown)
    }

    /// A page's counts after a probe hit: what the probed function does to the refcount read
    /// at its entry, and to the mappings refwatch counts. Inlined: the aggregator calls it for
    /// every event, from another crate.
    #[inline]
    pub fn after(self, hit: &Hit<'_>, before: Counts) -> Counts {
        let (r, m, refs) = (hit.refcount, hit.mapcount, hit.refs);
        let zero_based = self == RefModel::ZeroBased;
        if self.passthrough(hit.probe, hit.ty) {
            return before;
        }
        let mut after = before;
        match hit.kind {
            EventKind::Insert => {
                // 6.15+: the mapping takes a reference and a mapcount, unless the insert fails
                // on 0; a migration's mapping keeps a reference the page already held.
                let ok = !zero_based || r >= 1;
                let takes_ref = zero_based && ok && !hit.probe.taken_before;
                after.refcount = if takes_ref { r + 1 } else { r };
                if hit.counts_mapping && ok {
                    after.mapped = if zero_based { m + 1 } else { before.mapped + 1 };
                }
            }
            EventKind::Get => {
                let fails = hit.probe.speculative && r <= 0;
                after.refcount = if fails || hit.probe.taken_before {
                    r
                } else {
                    r + refs
                };
            }
            EventKind::Put => after.refcount = r - refs,
            EventKind::Free => {
                // 6.15+ GENERIC is reset to its idle 1; every other free leaves the count as it
                // was.
                after.refcount = match (zero_based, hit.ty) {
                    (true, MemoryType::Generic) => 1,
                    _ => r,
                };
                if zero_based {
                    // A freed folio starts over; a nonzero mapcount here is reported, not
                    // carried.
                    after.mapped = 0;
                }
            }
            EventKind::Unmap => {
                after.refcount = r;
                after.mapped = if zero_based {
                    m - refs
                } else {
                    (before.mapped - refs).max(0)
                };
            }
            EventKind::Truncate => after.refcount = r,
            // A watchpoint hit is history, not a transition (the aggregator keeps it apart).
            EventKind::PgmapAdd
            | EventKind::PgmapRemove
            | EventKind::Remap
            | EventKind::Held
            | EventKind::Watch => {}
        }
        after
    }
}

/// A page's counts as refwatch carries them from one probe hit to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// The refcount after the last hit: its entry value plus what the function did.
    pub refcount: i64,
    /// Mappings not yet unmapped (≤6.14, counted from inserts and unmaps), or the kernel's
    /// mapcount after the last hit (6.15+).
    pub mapped: i64,
}

/// One probe hit on a page: the counts read at the function's entry and what it moves.
#[derive(Clone, Copy, Debug)]
pub struct Hit<'a> {
    pub probe: &'a Probe,
    pub kind: EventKind,
    pub ty: MemoryType,
    pub refcount: i64,
    pub mapcount: i64,
    /// References (or PTEs) the function moves: [`moved`].
    pub refs: i64,
    /// An insert that maps the page anew where refwatch counts mappings (its unmaps are
    /// probed at that level, and no mapping at that address was counted yet).
    pub counts_mapping: bool,
}

/// The references a get or put moves (an unmap: the PTEs it clears). A pin of a small folio is
/// `GUP_PIN_COUNTING_BIAS` references (try_grab_folio, gup_put_folio): on 6.15+, where a
/// mapping holds one, a second unpin of a mapped page is at refcount 1 and must still be found.
/// GUP's own gets and puts pin where the flags they carry have `foll_pin` (the kernel's
/// `FOLL_PIN`; 0 where it is unknown, and they count as references).
#[inline]
pub fn moved(probe: &Probe, ev: &Event, foll_pin: u64) -> i64 {
    // A kernel moves a folio's worth at most; a corrupt trace's count is cut to 32 bits, so
    // that the refcount arithmetic on it stays within i64.
    let refs = ev.extra.clamp(1, u32::MAX.into()) as i64;
    let pins = match probe.refs {
        Refs::Pin | Refs::PinArg(_) => true,
        Refs::One | Refs::Arg(_) => probe.gup_flags.is_some() && ev.extra2 & foll_pin != 0,
    };
    if pins && ev.flags & flags::HEAD == 0 {
        refs * GUP_PIN_COUNTING_BIAS
    } else {
        refs
    }
}
