//! The device memory a test driver's pgmap is made of: device-private, or device-coherent out
//! of guest RAM that the kernel is told to leave alone.

/// Which memory type a test driver's pgmap has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// `MEMORY_DEVICE_PRIVATE`: free physical address space, no memory behind it; the CPU
    /// cannot map the pages and faults them back to RAM.
    Private,
    /// `MEMORY_DEVICE_COHERENT`: real memory that the CPU maps with ordinary PTEs and reads in
    /// place. The driver is given a physical address in [`COHERENT_MEMMAP`].
    Coherent,
}

/// [1.25 GiB, 1.75 GiB) of the guest's 2 GiB, reserved: above the lab's pmem at
/// [1 GiB, 1.25 GiB) and below the initrd, which QEMU loads at the top of RAM. The XFS cases'
/// second pmem (bugs.rs) lies in it too: no guest has both.
const COHERENT_MEMMAP: &str = "memmap=512M$0x50000000";
/// The start of that range.
pub const COHERENT_BASE: u64 = 0x5000_0000;

impl Memory {
    /// The pgmap type refwatch names these pages by.
    pub fn pgmap_type(self) -> &'static str {
        match self {
            Memory::Private => "private",
            Memory::Coherent => "coherent",
        }
    }

    /// The kernel command-line words a guest with this memory needs.
    pub fn cmdline(self) -> Vec<String> {
        match self {
            Memory::Private => Vec::new(),
            Memory::Coherent => vec![COHERENT_MEMMAP.to_owned()],
        }
    }
}
