//! Sites: the places in the kernel where a transition happens, each carried by one catalog entry.

/// A place in the kernel where one transition happens. Entries of one site are alternatives
/// (one per kernel's function or prototype): the first that resolves is used, so that a
/// transition is never counted twice. Plans name sites in kebab case (`pte-insert-pfn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "kebab-case"))]
pub enum Site {
    #[cfg_attr(feature = "user", serde(rename = "memremap_pages"))]
    MemremapPages,
    #[cfg_attr(feature = "user", serde(rename = "memunmap_pages"))]
    MemunmapPages,
    PteInsertPfn,
    PmdInsertPfn,
    PudInsertPfn,
    PteInsertPage,
    PmdInsertFolio,
    PudInsertFolio,
    VmInsertPage,
    GupGrab,
    GupGrabFolio,
    GupFastGrab,
    /// A driver allocating a device-private/coherent page: 0 -> 1 by design.
    ZoneDevicePageInit,
    /// `__put_devmap_managed_*`: entered for every ZONE_DEVICE put while an FS_DAX pgmap exists.
    DevmapPut,
    GupPut,
    UnpinUserPage,
    UnpinUserFolio,
    Free,
    UnmapPte,
    UnmapPmd,
    MovePte,
    DaxTruncate,
    DevicePrivateFault,
    /// A finished device migration mapping each slot's new (or restored) page.
    MigrationMapped,
    /// A finished device migration dropping each slot's old (or unused) page.
    MigrationReleased,
}

/// Page-table levels, to pair inserts with unmap probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Pte,
    Pmd,
    Pud,
}

impl Site {
    /// The page-table level the site maps or unmaps at (PTE for sites that are neither).
    pub const fn level(self) -> Level {
        match self {
            Site::PmdInsertPfn | Site::PmdInsertFolio | Site::UnmapPmd => Level::Pmd,
            Site::PudInsertPfn | Site::PudInsertFolio => Level::Pud,
            _ => Level::Pte,
        }
    }
}
