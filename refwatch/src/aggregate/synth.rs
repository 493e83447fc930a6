//! Synthetic event streams for tests: a tiny model of how a healthy kernel of each era moves
//! ZONE_DEVICE refcounts, emitting what refwatch's probes would see (refcount at entry).
//! Synthetic: nothing here was recorded on a real kernel.

use std::collections::BTreeMap;

use refwatch_common::{CATALOG, Event, EventKind};

use super::KernelView;
use refwatch_common::RefModel;

pub const PGMAP: u64 = 0xffff_8881_0000_2000;
pub const BASE_PFN: u64 = 0x24_0000;
const VMEMMAP: u64 = 0xffff_ea00_0000_0000;
/// The mm of the process mapping the pages, and where its mapping starts.
const MM: u64 = 0xffff_8881_0a3c_4400;
const MAP_BASE: u64 = 0x7f12_3400_0000;

/// Catalog id of `function` for the kernel named in its `checked` list.
pub fn probe_id(function: &str, kernel: &str) -> u8 {
    CATALOG
        .iter()
        .position(|p| p.function == function && p.checked.contains(&kernel))
        .unwrap_or_else(|| panic!("{function} for {kernel} is not in the catalog")) as u8
}

/// The probes a kernel of each era attaches, as in docs/catalog.md.
pub struct Probes {
    pub model: RefModel,
    pub insert: u8,
    pub unmap: u8,
    pub get: u8,
    pub spec_get: u8,
    /// The devmap put every FS_DAX put goes through (≤6.12).
    pub devmap_put: Option<u8>,
    pub gup_put: Option<u8>,
    pub free: u8,
    /// The filesystem taking a DAX block back (≤6.14).
    pub truncate: Option<u8>,
    pub add: u8,
    pub remove: u8,
    pub fsdax: u8,
    pub generic: u8,
}

impl Probes {
    pub fn for_model(model: RefModel) -> Self {
        let k = match model {
            RefModel::AllOneBased => "5.10",
            RefModel::FsdaxOneBased => "6.12",
            RefModel::ZeroBased => "7.2",
        };
        let (insert, unmap, get, spec, devmap_put, gup_put, free) = match model {
            RefModel::AllOneBased => (
                "__vm_insert_mixed",
                "unmap_page_range",
                "try_grab_page",
                "try_grab_compound_head",
                Some("put_devmap_managed_page"),
                None,
                "free_devmap_managed_page",
            ),
            RefModel::FsdaxOneBased => (
                "__vm_insert_mixed",
                "unmap_page_range",
                "try_grab_folio",
                "try_grab_folio_fast",
                Some("__put_devmap_managed_folio_refs"),
                Some("gup_put_folio"),
                "free_zone_device_folio",
            ),
            RefModel::ZeroBased => (
                "vmf_insert_page_mkwrite",
                "folio_remove_rmap_ptes",
                "try_grab_folio",
                "try_grab_folio_fast",
                None,
                Some("gup_put_folio"),
                "free_zone_device_folio",
            ),
        };
        // enum memory_type: FS_DAX=2 GENERIC=3 on 5.10, FS_DAX=3 GENERIC=4 from 6.1.
        let (fsdax, generic) = if model == RefModel::AllOneBased {
            (2, 3)
        } else {
            (3, 4)
        };
        Self {
            model,
            insert: probe_id(insert, k),
            unmap: probe_id(unmap, k),
            get: probe_id(get, k),
            spec_get: probe_id(spec, k),
            devmap_put: devmap_put.map(|f| probe_id(f, k)),
            gup_put: gup_put.map(|f| probe_id(f, k)),
            free: probe_id(free, k),
            truncate: (model != RefModel::ZeroBased).then(|| probe_id("dax_disassociate_entry", k)),
            add: probe_id("memremap_pages", k),
            remove: probe_id("memunmap_pages", k),
            fsdax,
            generic,
        }
    }

    pub fn context(&self) -> KernelView {
        let ids = [
            self.insert,
            self.unmap,
            self.get,
            self.spec_get,
            self.free,
            self.add,
            self.remove,
        ]
        .into_iter()
        .chain(self.devmap_put)
        .chain(self.gup_put)
        .chain(self.truncate);
        let types = if self.model == RefModel::AllOneBased {
            BTreeMap::from([
                (1, "private".into()),
                (2, "fsdax".into()),
                (3, "generic".into()),
                (4, "p2pdma".into()),
            ])
        } else {
            BTreeMap::from([
                (1, "private".into()),
                (2, "coherent".into()),
                (3, "fsdax".into()),
                (4, "generic".into()),
                (5, "p2pdma".into()),
            ])
        };
        KernelView::new(self.model, ids, types)
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Op {
    Map(usize),
    Unmap(usize),
    Grab(usize, bool),
    Release(usize),
}

#[derive(Clone, Copy, Default)]
struct Page {
    refs: i32,
    maps: i32,
    pins: i32,
}

/// A healthy kernel's events for `ops` on `pages` pages of one pgmap, from memremap_pages to
/// memunmap_pages (with every mapping and pin released before the teardown).
pub struct Sim<'a> {
    pub p: &'a Probes,
    generic: bool,
    pages: Vec<Page>,
    pub out: Vec<Event>,
    ts: u64,
    /// User addresses mapping each page, where unmaps are range zaps (≤6.14).
    addrs: Vec<Vec<u64>>,
    next_addr: u64,
}

impl<'a> Sim<'a> {
    pub fn new(p: &'a Probes, generic: bool, pages: usize) -> Self {
        let idle = if generic || p.model != RefModel::ZeroBased {
            1
        } else {
            0
        };
        let mut sim = Self {
            p,
            generic,
            pages: vec![
                Page {
                    refs: idle,
                    ..Page::default()
                };
                pages
            ],
            out: Vec::new(),
            ts: 1_000_000,
            addrs: vec![Vec::new(); pages],
            next_addr: MAP_BASE,
        };
        let mut add = sim.event(p.add, 0, EventKind::PgmapAdd);
        add.pfn = 0;
        add.page = 0;
        add.extra = BASE_PFN;
        add.extra2 = BASE_PFN + pages as u64;
        sim.out.push(add);
        sim
    }

    fn ty(&self) -> u8 {
        if self.generic {
            self.p.generic
        } else {
            self.p.fsdax
        }
    }

    pub fn event(&mut self, probe: u8, page: usize, kind: EventKind) -> Event {
        self.ts += 1_500 + (self.out.len() as u64 * 7919) % 40_000;
        let pfn = BASE_PFN + page as u64;
        let st = self.pages.get(page).copied().unwrap_or_default();
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"fio");
        Event {
            ts_ns: self.ts,
            pid_tgid: (4242u64 << 32) | (4242 + (page as u64 % 2)),
            pfn,
            page: VMEMMAP + pfn * 64,
            pgmap: PGMAP,
            extra: 1,
            extra2: 0,
            refcount: st.refs,
            mapcount: if self.p.model == RefModel::ZeroBased {
                st.maps
            } else {
                0
            },
            stack_id: (probe as i32 % 5) + page as i32 % 3,
            cpu: (page % 2) as u16,
            probe,
            kind: kind as u8,
            pgmap_type: self.ty(),
            flags: 0,
            _pad: [0; 6],
            comm,
        }
    }

    fn emit(&mut self, probe: u8, page: usize, kind: EventKind) {
        let ev = self.event(probe, page, kind);
        self.out.push(ev);
    }

    /// Drops one reference the way the era's put_page does; the final one frees (7.x).
    fn put_ref(&mut self, i: usize) {
        self.pages[i].refs -= 1;
        if self.p.model == RefModel::ZeroBased && self.pages[i].refs == 0 {
            self.emit(self.p.free, i, EventKind::Free);
        }
    }

    pub fn apply(&mut self, op: Op) {
        let zero_based = self.p.model == RefModel::ZeroBased;
        match op {
            Op::Map(i) => {
                let i = i % self.pages.len();
                // 7.x fsdax: dax_fault_iter's temporary folio_ref_inc (invisible).
                let temp = zero_based && !self.generic;
                self.pages[i].refs += i32::from(temp);
                let mut insert = self.event(self.p.insert, i, EventKind::Insert);
                if CATALOG[self.p.insert as usize].at.is_some() {
                    (insert.extra, insert.extra2) = (self.next_addr, MM);
                    self.addrs[i].push(self.next_addr);
                    self.next_addr += 4096;
                }
                self.out.push(insert);
                if zero_based {
                    self.pages[i].refs += 1;
                }
                self.pages[i].maps += 1;
                self.pages[i].refs -= i32::from(temp);
            }
            Op::Unmap(i) => {
                let i = i % self.pages.len();
                if self.pages[i].maps == 0 {
                    return;
                }
                let mut unmap = self.event(self.p.unmap, i, EventKind::Unmap);
                if CATALOG[self.p.unmap as usize].is_range() {
                    let at = self.addrs[i].pop().expect("a mapped page has an address");
                    (
                        unmap.pfn,
                        unmap.page,
                        unmap.pgmap,
                        unmap.extra,
                        unmap.extra2,
                    ) = (0, MM, 0, at, at + 4096);
                    (unmap.refcount, unmap.pgmap_type) =
                        (0, refwatch_common::event::PGMAP_TYPE_UNKNOWN);
                }
                self.out.push(unmap);
                self.pages[i].maps -= 1;
                if zero_based {
                    self.put_ref(i);
                }
            }
            Op::Grab(i, spec) => {
                let i = i % self.pages.len();
                if self.pages[i].maps == 0 {
                    return;
                }
                self.emit(
                    if spec { self.p.spec_get } else { self.p.get },
                    i,
                    EventKind::Get,
                );
                self.pages[i].refs += 1;
                self.pages[i].pins += 1;
            }
            Op::Release(i) => {
                let i = i % self.pages.len();
                if self.pages[i].pins == 0 {
                    return;
                }
                self.pages[i].pins -= 1;
                if let Some(gup) = self.p.gup_put {
                    self.emit(gup, i, EventKind::Put);
                }
                match (self.p.model, self.generic) {
                    (RefModel::ZeroBased, _) => self.put_ref(i),
                    // 6.1/6.12 enter __put_devmap_managed_*_refs for GENERIC pages too (an
                    // FS_DAX pgmap exists) and return false there; folio_put is inline.
                    (RefModel::FsdaxOneBased, true) => {
                        self.emit(self.p.devmap_put.expect("6.12"), i, EventKind::Put);
                        self.pages[i].refs -= 1;
                    }
                    // GENERIC puts outside unpin are inline.
                    (_, true) => self.pages[i].refs -= 1,
                    (RefModel::AllOneBased, false) => {
                        self.emit(self.p.devmap_put.expect("5.10"), i, EventKind::Put);
                        self.pages[i].refs -= 1;
                        if self.pages[i].refs == 1 {
                            self.emit(self.p.free, i, EventKind::Free);
                        }
                    }
                    (RefModel::FsdaxOneBased, false) => {
                        // Nested in gup_put_folio, same refcount at entry.
                        self.emit(self.p.devmap_put.expect("6.12"), i, EventKind::Put);
                        self.pages[i].refs -= 1;
                    }
                }
            }
        }
    }

    /// Releases everything, truncates the file (fsdax, ≤6.14), then memunmap_pages (and
    /// 5.10's own 1 -> 0 puts).
    pub fn teardown(&mut self) {
        for i in 0..self.pages.len() {
            while self.pages[i].maps > 0 {
                self.apply(Op::Unmap(i));
            }
            while self.pages[i].pins > 0 {
                self.apply(Op::Release(i));
            }
            if let Some(truncate) = self.p.truncate.filter(|_| !self.generic) {
                let mut ev = self.event(truncate, i, EventKind::Truncate);
                ev.extra = 1;
                self.out.push(ev);
            }
        }
        self.remove();
    }

    pub fn remove(&mut self) {
        let mut rm = self.event(self.p.remove, 0, EventKind::PgmapRemove);
        rm.pfn = 0;
        rm.page = 0;
        self.out.push(rm);
        if self.p.model == RefModel::AllOneBased && !self.generic {
            for i in 0..self.pages.len() {
                self.emit(self.p.devmap_put.expect("5.10"), i, EventKind::Put);
                self.pages[i].refs = 0;
            }
        }
    }
}

/// A healthy stream: every kind of transition at least once, then `ops`, then the teardown.
pub fn healthy(p: &Probes, generic: bool, pages: usize, ops: &[Op]) -> Vec<Event> {
    let mut sim = Sim::new(p, generic, pages);
    for op in [
        Op::Map(0),
        Op::Grab(0, false),
        Op::Grab(0, true),
        Op::Release(0),
        Op::Release(0),
        Op::Unmap(0),
    ]
    .iter()
    .chain(ops)
    {
        sim.apply(*op);
    }
    sim.teardown();
    sim.out
}

impl Probes {
    /// A plan as a recording on this era would carry it, with the probes above attached.
    pub fn plan(&self) -> crate::plan::Plan {
        use crate::plan::{AttachMode, Plan, ProbeEntry, Resolution};
        let ctx = self.context();
        let probes = CATALOG
            .iter()
            .enumerate()
            .map(|(id, probe)| {
                let on = ctx.attached[id];
                ProbeEntry {
                    id: id as u8,
                    function: probe.function.into(),
                    kind: probe.kind,
                    site: probe.site,
                    resolution: if on {
                        Resolution::Use
                    } else {
                        Resolution::Missing
                    },
                    modes: vec![AttachMode::Kprobe],
                    attached: on.then_some(Ok(AttachMode::Kprobe)),
                }
            })
            .collect();
        let version = match self.model {
            RefModel::AllOneBased => (5, 10),
            RefModel::FsdaxOneBased => (6, 12),
            RefModel::ZeroBased => (7, 2),
        };
        Plan {
            kernel: format!("{}.{}.0-synthetic", version.0, version.1),
            version,
            era: refwatch_common::catalog::era(version).name.into(),
            model: self.model,
            requested: AttachMode::Kprobe,
            probes,
            inlines: Vec::new(),
            pgmap_types: ctx.pgmap_types.clone(),
            // Synthetic events carry no GUP flags.
            foll_pin: None,
            blockers: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A synthetic trace of `events`, as `refwatch record` would write it.
    pub fn trace(&self, events: &[Event], dropped: u64) -> Vec<u8> {
        use crate::trace::{Footer, Header, TraceWriter};
        let header = Header {
            kernel: self.plan().kernel,
            plan: self.plan(),
            layout: None,
            command: vec!["synthetic".into()],
            synthetic: true,
        };
        let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
        for ev in events {
            w.event(ev, |id| {
                vec![format!("frame_{id}+0x10"), "caller+0x20".into()]
            })
            .unwrap();
        }
        w.finish(Footer {
            dropped,
            end: "synthetic".into(),
            ..Footer::default()
        })
        .unwrap()
    }
}
