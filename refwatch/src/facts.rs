//! What refwatch needs to know about the running kernel, gathered from uname, /proc/kallsyms
//! and /sys/kernel/btf/vmlinux. Serializable, so that the facts of real kernels can be saved
//! and the probe plan resolved from them in tests and bug reports.

use std::collections::BTreeMap;

use refwatch_common::{
    CATALOG,
    globals::{COMPOUND_MASK, COMPOUND_MINUS_ONE, Layout},
};
use serde::{Deserialize, Serialize};

use crate::{btf::Btf, kallsyms::Kallsyms};

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
pub const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// (major, minor) parsed from the release.
    pub version: (u8, u8),
    pub btf: bool,
    /// The kprobe PMU exists (CONFIG_KPROBES and perf kprobes).
    pub kprobes: bool,
    /// Catalog functions, their callers and the data symbols refwatch uses, as present in
    /// kallsyms: name → type letter.
    pub symbols: BTreeMap<String, char>,
    /// BTF prototypes (parameter patterns) of the catalog functions present in BTF.
    pub prototypes: BTreeMap<String, Vec<String>>,
    /// Struct layout from BTF (addresses are filled in at load time), or why it is missing.
    pub layout: Result<Layout, String>,
    /// `enum memory_type` value → short name.
    pub pgmap_types: BTreeMap<u8, String>,
    /// `FOLL_PIN`, where BTF has it: an enumerator of mm/internal.h on 6.12 and 7.x, a macro
    /// (which BTF lacks) on 5.10 and 6.1.
    #[serde(default)]
    pub foll_pin: Option<u64>,
}

/// Symbols besides the catalog functions that refwatch reads.
pub const VMEMMAP_BASE: &str = "vmemmap_base";

pub fn parse_version(release: &str) -> Option<(u8, u8)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl KernelFacts {
    /// Gathers the facts of the running kernel. Never fails: what cannot be read is recorded
    /// as absent, and the plan says what that costs.
    pub fn gather(kallsyms: &Kallsyms, btf: Option<&Btf>, btf_error: Option<String>) -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let config = std::fs::read_to_string(format!("/boot/config-{release}")).ok();
        Self::from_parts(
            release,
            kallsyms,
            btf,
            btf_error,
            std::path::Path::new(KPROBE_PMU).exists(),
            config.as_deref(),
        )
    }

    pub fn from_parts(
        release: String,
        kallsyms: &Kallsyms,
        btf: Option<&Btf>,
        btf_error: Option<String>,
        kprobes: bool,
        config: Option<&str>,
    ) -> Self {
        let names = CATALOG
            .iter()
            .flat_map(|p| [Some(p.function), p.caller])
            .flatten()
            .chain([VMEMMAP_BASE]);
        let symbols = names
            .filter_map(|n| kallsyms.get(n).map(|s| (n.to_owned(), s.ty)))
            .collect();
        let prototypes = btf
            .map(|btf| {
                CATALOG
                    .iter()
                    .filter_map(|p| Some((p.function.to_owned(), btf.function_params(p.function)?)))
                    .collect()
            })
            .unwrap_or_default();
        let layout = match btf {
            Some(btf) => layout_from_btf(btf, config),
            None => Err(btf_error.unwrap_or_else(|| format!("{BTF_PATH} not present"))),
        };
        let pgmap_types = btf.map(pgmap_types).unwrap_or_default();
        let foll_pin = btf
            .and_then(|btf| btf.enumerator("FOLL_PIN"))
            .and_then(|v| u64::try_from(v).ok());
        Self {
            version: parse_version(&release).unwrap_or((0, 0)),
            release,
            btf: btf.is_some(),
            kprobes,
            symbols,
            prototypes,
            layout,
            pgmap_types,
            foll_pin,
        }
    }
}

fn pgmap_types(btf: &Btf) -> BTreeMap<u8, String> {
    btf.enum_values("memory_type")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, v)| {
            let short = name.strip_prefix("MEMORY_DEVICE_")?;
            let short = short.strip_prefix("PCI_").unwrap_or(short).replace('_', "");
            Some((u8::try_from(v).ok()?, short.to_lowercase()))
        })
        .collect()
}

fn order_base_2(n: u64) -> u64 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros() as u64
    }
}

/// The kernel's own bounds (`MAX_NR_ZONES` fits a ZONES_SHIFT of 3 at most, Kconfig's
/// NODES_SHIFT is 10 at most): a corrupt BTF past them gets an error, not shifts past 64 bits.
const MAX_ZONES: u64 = 8;
const MAX_NODES_SHIFT: u32 = 10;

/// Where page->flags keeps the zone and PG_head.
#[derive(Debug, PartialEq)]
struct FlagsFields {
    nodes_shift: u64,
    zones_shift: u64,
    zones_mask: u64,
    pg_head_mask: u64,
}

impl FlagsFields {
    /// From `__MAX_NR_ZONES`, the length of `zonelist._zonerefs` and `PG_head`.
    fn new(max_nr_zones: u64, zonerefs: u64, pg_head: u64) -> Result<Self, String> {
        if !(1..=MAX_ZONES).contains(&max_nr_zones) {
            return Err(format!("__MAX_NR_ZONES is {max_nr_zones}"));
        }
        // _zonerefs has MAX_NUMNODES * MAX_NR_ZONES + 1 entries; MAX_NUMNODES = 1 << NODES_SHIFT.
        let numnodes = zonerefs.saturating_sub(1) / max_nr_zones;
        if !numnodes.is_power_of_two() || numnodes.trailing_zeros() > MAX_NODES_SHIFT {
            return Err(format!(
                "cannot derive NODES_SHIFT from {zonerefs} zonerefs"
            ));
        }
        if pg_head >= 64 {
            return Err(format!("PG_head is bit {pg_head}"));
        }
        let nodes_shift = numnodes.trailing_zeros() as u64;
        let zones_width = order_base_2(max_nr_zones);
        // SPARSEMEM_VMEMMAP keeps no section in page->flags, so the node field sits at the top
        // and the zone field right below it.
        Ok(Self {
            nodes_shift,
            zones_shift: 64 - nodes_shift - zones_width,
            zones_mask: (1 << zones_width) - 1,
            pg_head_mask: 1 << pg_head,
        })
    }
}

/// Struct offsets and the page->flags zone field, all from BTF.
pub fn layout_from_btf(btf: &Btf, config: Option<&str>) -> Result<Layout, String> {
    let need = |what: &str, v: Option<u64>| v.ok_or_else(|| format!("BTF has no {what}"));
    let (off_compound_head, compound_mode) = match btf.member_offset("page", "compound_head") {
        Some(off) => (off, COMPOUND_MINUS_ONE),
        None => (
            need(
                "page.compound_info",
                btf.member_offset("page", "compound_info"),
            )?,
            COMPOUND_MASK,
        ),
    };
    let off_pgmap = btf
        .member_offset("page", "pgmap")
        .or_else(|| btf.member_offset("folio", "pgmap"));
    let zone_device = need(
        "ZONE_DEVICE",
        btf.enumerator("ZONE_DEVICE").map(|v| v as u64),
    )?;
    let max_nr_zones = need(
        "__MAX_NR_ZONES",
        btf.enumerator("__MAX_NR_ZONES").map(|v| v as u64),
    )?;
    let zonerefs = need(
        "zonelist._zonerefs",
        btf.member_array_len("zonelist", "_zonerefs"),
    )?;
    let pg_head = need("PG_head", btf.enumerator("PG_head").map(|v| v as u64))?;
    let flags = FlagsFields::new(max_nr_zones, zonerefs, pg_head)?;
    if let Some(config) = config {
        check_config(config, flags.nodes_shift)?;
    }
    Ok(Layout {
        vmemmap_base_addr: 0,
        vmemmap_start: 0,
        page_size: need("struct page", btf.struct_size("page"))?,
        zones_shift: flags.zones_shift,
        zones_mask: flags.zones_mask,
        zone_device,
        pg_head_mask: flags.pg_head_mask,
        off_flags: need("page.flags", btf.member_offset("page", "flags"))?,
        off_compound_head,
        compound_mode,
        off_refcount: need("page._refcount", btf.member_offset("page", "_refcount"))?,
        off_mapcount: need("page._mapcount", btf.member_offset("page", "_mapcount"))?,
        off_large_mapcount: btf
            .member_offset("folio", "_large_mapcount")
            .unwrap_or(u64::MAX),
        off_pgmap: need("page.pgmap or folio.pgmap", off_pgmap)?,
        off_pgmap_type: need("dev_pagemap.type", btf.member_offset("dev_pagemap", "type"))?,
        off_pgmap_nr_range: need(
            "dev_pagemap.nr_range",
            btf.member_offset("dev_pagemap", "nr_range"),
        )?,
        off_pgmap_ranges: need(
            "dev_pagemap.range",
            btf.member_offset("dev_pagemap", "range"),
        )?,
        off_vma_mm: need(
            "vm_area_struct.vm_mm",
            btf.member_offset("vm_area_struct", "vm_mm"),
        )?,
        off_vmf_vma: btf.member_offset("vm_fault", "vma").unwrap_or(u64::MAX),
        off_vmf_address: btf.member_offset("vm_fault", "address").unwrap_or(u64::MAX),
        off_migrate_fault_page: btf
            .member_offset("migrate_vma", "fault_page")
            .unwrap_or(u64::MAX),
        idle_one_types: 0,
    })
}

/// Where the kernel config is readable, it must agree with what BTF implies.
fn check_config(config: &str, nodes_shift: u64) -> Result<(), String> {
    let value = |key: &str| {
        config
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
    };
    if value("CONFIG_SPARSEMEM_VMEMMAP").as_deref() != Some("y") {
        return Err("CONFIG_SPARSEMEM_VMEMMAP is not set: page->flags layout unsupported".into());
    }
    if let Some(shift) = value("CONFIG_NODES_SHIFT")
        && shift.parse::<u64>().ok() != Some(nodes_shift)
    {
        return Err(format!(
            "CONFIG_NODES_SHIFT={shift} but BTF implies {nodes_shift}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(parse_version("6.12.95+deb12-amd64"), Some((6, 12)));
        assert_eq!(parse_version("7.3.4+deb13-amd64"), Some((7, 3)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn zone_width() {
        assert_eq!(order_base_2(5), 3);
        assert_eq!(order_base_2(4), 2);
        assert_eq!(order_base_2(1), 0);
    }

    /// Values of a corrupt BTF that overflowed shifts and subtractions (found by the fuzz
    /// target) are errors.
    #[test]
    fn flags_fields_bounded() {
        let debian = FlagsFields::new(5, 5 * 64 + 1, 16).unwrap();
        assert_eq!(
            debian,
            FlagsFields {
                nodes_shift: 6,
                zones_shift: 55,
                zones_mask: 7,
                pg_head_mask: 1 << 16,
            }
        );
        for (zones, zonerefs, pg_head) in [
            (5, 321, 64),
            (5, 321, u64::MAX),
            (0, 321, 16),
            (u64::MAX, 321, 16),
            (5, 0, 16),
            (1, (1 << 11) + 1, 16),
        ] {
            assert!(FlagsFields::new(zones, zonerefs, pg_head).is_err());
        }
    }

    #[test]
    fn config_cross_check() {
        let cfg = "CONFIG_SPARSEMEM_VMEMMAP=y\nCONFIG_NODES_SHIFT=10\n";
        assert!(check_config(cfg, 10).is_ok());
        assert!(check_config(cfg, 6).is_err());
        assert!(check_config("CONFIG_NODES_SHIFT=10\n", 10).is_err());
    }
}
