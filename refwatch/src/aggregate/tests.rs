//! Property tests over synthetic healthy streams per era: silence without a breach, and every
//! injected breach found exactly once.

use std::collections::BTreeMap;

use proptest::{prelude::*, sample::Index};
use refwatch_common::{CATALOG, Event, EventKind, Site, event::WATCH_PROBE};

use super::{
    Aggregator, Coverage, Rule,
    synth::{Op, Probes, healthy},
};
use clap::ValueEnum;
use refwatch_common::RefModel;

fn model() -> impl Strategy<Value = RefModel> {
    prop_oneof![
        Just(RefModel::AllOneBased),
        Just(RefModel::FsdaxOneBased),
        Just(RefModel::ZeroBased)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize).prop_map(Op::Map),
        (0..4usize).prop_map(Op::Unmap),
        (0..4usize, any::<bool>()).prop_map(|(i, s)| Op::Grab(i, s)),
        (0..4usize).prop_map(Op::Release),
    ]
}

/// A healthy stream of an era with one breach of `rule` planted, and the pfn it concerns
/// (None where the stream had no place for it).
#[derive(Debug)]
struct Breached {
    model: RefModel,
    events: Vec<Event>,
    rule: Rule,
    pfn: Option<u64>,
}

prop_compose! {
    fn breached(min_pages: usize)(
        model in model(),
        generic in any::<bool>(),
        pages in min_pages..5usize,
        ops in prop::collection::vec(op(), 0..80),
        rule in prop::sample::select(Rule::value_variants().to_vec()),
        at in any::<Index>(),
    ) -> Breached {
        let p = Probes::for_model(model);
        let mut events = healthy(&p, generic, pages, &ops);
        let pfn = inject(&p, &mut events, rule, &|n| at.index(n), generic);
        Breached { model, events, rule, pfn }
    }
}

fn run(p: &Probes, events: &[Event]) -> Aggregator {
    let mut agg = Aggregator::new(p.context());
    for ev in events {
        agg.observe(ev);
    }
    agg
}

fn kind(ev: &Event) -> EventKind {
    EventKind::from_u8(ev.kind).unwrap()
}

/// Plants one breach of `rule` in a healthy stream; returns the pfn it concerns, or None when
/// the stream has no place for it (or the rule is unchecked on this era).
fn inject(
    p: &Probes,
    events: &mut Vec<Event>,
    rule: Rule,
    at: &dyn Fn(usize) -> usize,
    generic: bool,
) -> Option<u64> {
    let idle = p
        .model
        .idle(if generic {
            super::MemoryType::Generic
        } else {
            super::MemoryType::FsDax
        })
        .unwrap() as i32;
    let pick = |events: &[Event], f: &dyn Fn(&Event) -> bool| {
        let c: Vec<usize> = (0..events.len()).filter(|&i| f(&events[i])).collect();
        (!c.is_empty()).then(|| c[at(c.len())])
    };
    match rule {
        Rule::InsertZeroRef => {
            let i = pick(events, &|e| kind(e) == EventKind::Insert)?;
            events[i].refcount = 0;
            Some(events[i].pfn)
        }
        Rule::GetFromZero => {
            let i = pick(events, &|e| {
                kind(e) == EventKind::Get && !CATALOG[e.probe as usize].speculative
            })?;
            events[i].refcount = 0;
            Some(events[i].pfn)
        }
        Rule::PutUnderflow => {
            let removed = events
                .iter()
                .position(|e| kind(e) == EventKind::PgmapRemove)
                .unwrap();
            let ty = if generic {
                super::MemoryType::Generic
            } else {
                super::MemoryType::FsDax
            };
            // Not a devmap put that a non-FS_DAX page only passes through: it moves nothing.
            let moves = |e: &Event| !p.model.passthrough(&CATALOG[e.probe as usize], ty);
            let i = pick(&events[..removed], &|e| {
                kind(e) == EventKind::Put && moves(e)
            })?;
            events[i].refcount = idle;
            Some(events[i].pfn)
        }
        Rule::FreeWhileMapped => match p.model {
            RefModel::AllOneBased => None,
            RefModel::ZeroBased => {
                let i = pick(events, &|e| kind(e) == EventKind::Free)?;
                events[i].mapcount = 1;
                Some(events[i].pfn)
            }
            RefModel::FsdaxOneBased => {
                let i = pick(events, &|e| kind(e) == EventKind::Insert)?;
                let mut free = events[i];
                free.probe = p.free;
                free.kind = EventKind::Free as u8;
                free.refcount = 0;
                free.ts_ns += 1;
                events.insert(i + 1, free);
                Some(free.pfn)
            }
        },
        Rule::TeardownBusy => {
            let removed = events
                .iter()
                .position(|e| kind(e) == EventKind::PgmapRemove)
                .unwrap();
            let mut leak = *events.iter().find(|e| kind(e) == EventKind::Insert)?;
            leak.ts_ns = events[removed].ts_ns - 1;
            if matches!(
                CATALOG[p.remove as usize].arg,
                refwatch_common::Arg::PgmapScan(_)
            ) {
                // What the kernel's scan reports of a page a pipe still holds.
                (leak.kind, leak.refcount, leak.mapcount) = (EventKind::Held as u8, idle + 1, 0);
                leak.probe = p.remove;
            } else {
                // A mapping left behind (≤5.17 waits for references, not for mappings).
                (leak.refcount, leak.mapcount) = (idle.max(1), 0);
            }
            events.insert(removed, leak);
            Some(leak.pfn)
        }
        Rule::TruncateBusy => {
            let i = pick(events, &|e| kind(e) == EventKind::Truncate)?;
            events[i].refcount = idle + 1;
            Some(events[i].pfn)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn healthy_streams_are_silent(model in model(), generic in any::<bool>(), pages in 1..5usize,
                                  ops in prop::collection::vec(op(), 0..80)) {
        let p = Probes::for_model(model);
        let events = healthy(&p, generic, pages, &ops);
        let agg = run(&p, &events);
        prop_assert!(agg.findings().is_empty(), "{:#?}", agg.findings());
        // Everything was released and torn down: no page state is left.
        prop_assert_eq!(agg.live_pages(), 0);
    }

    #[test]
    fn injected_breaches_are_found_once(b in breached(1)) {
        let Breached { model, events, rule, pfn } = b;
        let p = Probes::for_model(model);
        let agg = run(&p, &events);
        match pfn {
            None => prop_assert!(agg.findings().is_empty()),
            Some(pfn) => {
                prop_assert_eq!(agg.findings().len(), 1, "{:#?}", agg.findings());
                let f = &agg.findings()[0];
                prop_assert_eq!((f.rule, f.pfn), (rule, pfn));
                prop_assert!(!f.recent.is_empty() || rule == Rule::TeardownBusy);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With room for one history, every page's is evicted by the next page touched: the same
    /// findings, on the same events, with the page's steps since it got one back.
    #[test]
    fn findings_survive_evicted_histories(b in breached(2)) {
        let p = Probes::for_model(b.model);
        let events = b.events;
        let full = run(&p, &events);
        let mut small = Aggregator::with_history_cap(p.context(), 1, true);
        for ev in &events {
            small.observe(ev);
        }
        let key = |a: &Aggregator| -> Vec<(Rule, u64, u64, String)> {
            a.findings().iter().map(|f| (f.rule, f.pfn, f.ts_ns, f.detail.clone())).collect()
        };
        prop_assert_eq!(key(&full), key(&small));
        for (f, s) in full.findings().iter().zip(small.findings()) {
            prop_assert!(f.recent.ends_with(&s.recent));
        }
        let counters = |a: &Aggregator| a.pgmaps().map(|p| p.counters.clone()).collect::<Vec<_>>();
        prop_assert_eq!(counters(&full), counters(&small));
    }
}

/// Sweeps of one op over a range of pages, as a workload walking its mapping does: what puts
/// whole chunks of pages in one state.
fn sweeps() -> impl Strategy<Value = Vec<Op>> {
    let sweep = (0..4u8, 0..48usize, 1..48usize, any::<bool>());
    prop::collection::vec(sweep, 0..12).prop_map(|sweeps| {
        sweeps
            .into_iter()
            .flat_map(|(kind, first, len, spec)| {
                (first..first + len).map(move |i| match kind {
                    0 => Op::Map(i),
                    1 => Op::Grab(i, spec),
                    2 => Op::Release(i),
                    _ => Op::Unmap(i),
                })
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Pages in runs instead of chunks: the same findings (steps and holders included), on
    /// the same events, the same counters and the same pages left, with any history pool.
    #[test]
    fn runs_change_no_finding(
        model in model(),
        generic in any::<bool>(),
        pages in 16..48usize,
        ops in sweeps(),
        rule in prop::sample::select(Rule::value_variants().to_vec()),
        at in any::<Index>(),
        cap in 1..40usize,
    ) {
        let p = Probes::for_model(model);
        let mut events = healthy(&p, generic, pages, &ops);
        inject(&p, &mut events, rule, &|n| at.index(n), generic);
        let mut runs = Aggregator::with_history_cap(p.context(), cap, true);
        let mut plain = Aggregator::with_history_cap(p.context(), cap, false);
        for ev in &events {
            prop_assert_eq!(runs.observe(ev), plain.observe(ev));
            prop_assert_eq!(runs.live_pages(), plain.live_pages());
        }
        prop_assert_eq!(runs.findings(), plain.findings());
        let counters = |a: &Aggregator| a.pgmaps().map(|p| p.counters.clone()).collect::<Vec<_>>();
        prop_assert_eq!(counters(&runs), counters(&plain));
        for pfn in super::synth::BASE_PFN..super::synth::BASE_PFN + pages as u64 {
            prop_assert_eq!(runs.page_counts(pfn), plain.page_counts(pfn));
        }
    }
}

/// The sweeps the property test above builds do put pages in runs: 64 pages mapped in order
/// with room for one history leave three chunks folded into one run and the last one whole.
#[test]
fn a_mapping_sweep_folds_into_a_run() {
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let mut sim = super::synth::Sim::new(&p, false, 64);
    for i in 0..64 {
        sim.apply(Op::Map(i));
    }
    let mut agg = Aggregator::with_history_cap(p.context(), 1, true);
    for ev in &sim.out {
        agg.observe(ev);
    }
    assert_eq!(agg.live_pages(), 64);
    assert_eq!(agg.pages.shape(), (1, 1));
}

#[test]
fn rules_without_their_probes_are_unchecked() {
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let all = p.context();
    assert!(
        Rule::value_variants()
            .iter()
            .all(|&r| all.coverage(r) == Coverage::Checked)
    );
    let no_unmap = super::KernelView::new(
        RefModel::FsdaxOneBased,
        [p.insert, p.get, p.free, p.remove],
        Default::default(),
    );
    assert!(matches!(
        no_unmap.coverage(Rule::FreeWhileMapped),
        Coverage::Unchecked(r) if r.contains("unmap")
    ));
    assert!(matches!(
        no_unmap.coverage(Rule::PutUnderflow),
        Coverage::Checked
    ));
    let old = Probes::for_model(RefModel::AllOneBased).context();
    assert!(matches!(
        old.coverage(Rule::FreeWhileMapped),
        Coverage::Unchecked(_)
    ));
}

#[test]
fn findings_carry_the_page_history() {
    let p = Probes::for_model(RefModel::ZeroBased);
    let mut events = healthy(&p, false, 1, &[]);
    let free = events
        .iter()
        .position(|e| kind(e) == EventKind::Free)
        .unwrap();
    events[free].mapcount = 2;
    let agg = run(&p, &events);
    let f = &agg.findings()[0];
    assert_eq!(f.rule, Rule::FreeWhileMapped);
    assert_eq!(f.pgmap.type_name, "fsdax");
    assert_eq!(
        (f.pgmap.start, f.pgmap.end),
        (
            Some(super::synth::BASE_PFN),
            Some(super::synth::BASE_PFN + 1)
        )
    );
    assert_eq!(f.recent.last().unwrap().function, "free_zone_device_folio");
    assert_eq!(f.comm, "fio");
}

#[test]
fn watchpoint_hits_are_history_not_transitions() {
    let p = Probes::for_model(RefModel::ZeroBased);
    let mut events = healthy(&p, false, 1, &[]);
    let free = events
        .iter()
        .position(|e| kind(e) == EventKind::Free)
        .unwrap();
    events[free].mapcount = 2;
    // A hit with a count no rule would let pass, just before the free.
    let mut hit = events[free - 1];
    (hit.probe, hit.kind, hit.refcount) = (WATCH_PROBE, EventKind::Watch as u8, -5);
    events.insert(free, hit);
    let agg = run(&p, &events);
    assert_eq!(agg.total_findings(), 1);
    let recent = &agg.findings()[0].recent;
    let watch = &recent[recent.len() - 2];
    assert_eq!(
        (watch.kind, watch.function, watch.refcount),
        (EventKind::Watch, "watchpoint", -5)
    );
}

#[test]
fn every_checked_rule_has_a_breach_to_find() {
    for model in [
        RefModel::AllOneBased,
        RefModel::FsdaxOneBased,
        RefModel::ZeroBased,
    ] {
        let p = Probes::for_model(model);
        for &rule in Rule::value_variants() {
            let mut events = healthy(
                &p,
                false,
                2,
                &[Op::Map(1), Op::Grab(1, false), Op::Release(1), Op::Unmap(1)],
            );
            let pfn = inject(&p, &mut events, rule, &|_| 0, false);
            let checked = p.context().coverage(rule) == Coverage::Checked;
            assert_eq!(pfn.is_some(), checked, "{model:?} {rule:?}");
            let agg = run(&p, &events);
            assert_eq!(
                agg.count(rule),
                u64::from(checked),
                "{model:?} {rule:?}: {:#?}",
                agg.findings()
            );
        }
    }
}

/// ≤6.14: an insert maps (mm, address) once however often it is faulted, a range zap unmaps
/// what was inserted inside it in its own mm only, and mremap carries mappings along.
#[test]
fn range_zaps_unmap_the_inserts_inside_them() {
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let mut sim = super::synth::Sim::new(&p, false, 4);
    let mut agg = Aggregator::new(p.context());
    let mm = 0xffff_8881_0000_4000;
    let insert = |sim: &mut super::synth::Sim, page: usize, at: u64| {
        let mut ev = sim.event(p.insert, page, EventKind::Insert);
        (ev.extra, ev.extra2) = (at, mm);
        ev
    };
    let zap = |sim: &mut super::synth::Sim, mm: u64, start: u64, end: u64| {
        let mut ev = sim.event(p.unmap, 0, EventKind::Unmap);
        (ev.pfn, ev.page, ev.extra, ev.extra2) = (0, mm, start, end);
        ev
    };
    let add = sim.out[0];
    agg.observe(&add);
    for ev in [
        insert(&mut sim, 0, 0x1000),
        insert(&mut sim, 0, 0x1000),
        insert(&mut sim, 1, 0x2000),
    ] {
        agg.observe(&ev);
    }
    assert_eq!(agg.load(super::synth::PGMAP), (0, 2));
    // Another mm, and a range beside the mappings: nothing goes.
    agg.observe(&zap(&mut sim, mm + 0x40, 0, 0x10000));
    agg.observe(&zap(&mut sim, mm, 0x3000, 0x10000));
    assert_eq!(agg.load(super::synth::PGMAP), (0, 2));
    // mremap moves page 0's mapping to 0x9000: zapping its old place leaves it mapped.
    let mut remap = sim.event(
        super::synth::probe_id("move_page_tables", "6.12"),
        0,
        EventKind::Remap,
    );
    (remap.pfn, remap.page, remap.extra, remap.extra2) = (0x9000, mm, 0x1000, 0x2000);
    agg.observe(&remap);
    agg.observe(&zap(&mut sim, mm, 0x1000, 0x2000));
    assert_eq!(agg.load(super::synth::PGMAP), (0, 2));
    // [0x9000, 0xa000) holds page 0's one mapping, however often it was inserted.
    agg.observe(&zap(&mut sim, mm, 0x9000, 0xa000));
    assert_eq!(agg.load(super::synth::PGMAP), (0, 1));
    let unmaps = agg.pgmaps().map(|pg| pg.counters.unmaps).sum::<u64>();
    assert_eq!(unmaps, 1);
    agg.observe(&zap(&mut sim, mm, 0, u64::MAX));
    assert_eq!(agg.load(super::synth::PGMAP), (0, 0));
    assert_eq!(agg.live_pages(), 0);
}

/// A zap that leaves a page idle forgets it without a step: it takes no ring from the pool, so
/// it evicts no other page's history.
#[test]
fn a_zap_that_forgets_a_page_evicts_no_history() {
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let mut sim = super::synth::Sim::new(&p, false, 2);
    let mut agg = Aggregator::with_history_cap(p.context(), 1, true);
    let mm = 0xffff_8881_0000_4000;
    agg.observe(&sim.out[0]);
    let mut pfns = Vec::new();
    for (page, at) in [(0, 0x1000), (1, 0x2000)] {
        let mut ev = sim.event(p.insert, page, EventKind::Insert);
        (ev.extra, ev.extra2) = (at, mm);
        pfns.push(ev.pfn);
        agg.observe(&ev);
    }
    // The one ring is page 1's: page 0's was evicted.
    let steps = |agg: &Aggregator, pfn| agg.pages.history(pfn).map(|h| h.iter().count());
    assert_eq!(
        (steps(&agg, pfns[0]), steps(&agg, pfns[1])),
        (None, Some(1))
    );
    let mut zap = sim.event(p.unmap, 0, EventKind::Unmap);
    (zap.pfn, zap.page, zap.extra, zap.extra2) = (0, mm, 0x1000, 0x2000);
    agg.observe(&zap);
    assert_eq!(agg.live_pages(), 1);
    assert_eq!(steps(&agg, pfns[1]), Some(1));
}

/// `--with vm_normal_page` on ≤6.14: unmaps come per PTE while mremap is still probed, and a
/// page faulted in again after its unmap is mapped again.
#[test]
fn per_pte_unmaps_with_mremap_probed_count_refaults() {
    use super::synth::probe_id;
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let (unmap, remap) = (
        probe_id("vm_normal_page", "6.12"),
        probe_id("move_page_tables", "6.12"),
    );
    let types = BTreeMap::from([(3, "fsdax".to_owned())]);
    let mut agg = Aggregator::new(super::KernelView::new(
        p.model,
        [p.insert, unmap, remap, p.free, p.add],
        types,
    ));
    let mut sim = super::synth::Sim::new(&p, false, 1);
    let mut insert = sim.event(p.insert, 0, EventKind::Insert);
    (insert.extra, insert.extra2) = (0x1000, 0xffff_8881_0000_4000);
    for ev in [insert, sim.event(unmap, 0, EventKind::Unmap), insert] {
        agg.observe(&ev);
    }
    assert_eq!(agg.load(super::synth::PGMAP), (0, 1));
}

/// ≤6.14: a PMD insert maps its 512 pages from the aligned address down; a zap of half of it
/// unmaps half; a teardown under the rest names each page, where it is mapped and who mapped it.
#[test]
fn pmd_inserts_map_512_pages_and_a_teardown_names_them() {
    use super::synth::probe_id;
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let pmd = probe_id("vmf_insert_pfn_pmd", "6.12");
    let types = BTreeMap::from([(3, "fsdax".to_owned())]);
    let mut agg = Aggregator::new(super::KernelView::new(
        p.model,
        [pmd, p.unmap, p.add, p.remove],
        types,
    ));
    let mut sim = super::synth::Sim::new(&p, false, 512);
    let mm = 0xffff_8881_0000_4000;
    agg.observe(&sim.out[0]);
    let mut insert = sim.event(pmd, 0, EventKind::Insert);
    (insert.extra, insert.extra2) = (0x7f00_0020_1234, mm);
    agg.observe(&insert);
    assert_eq!(agg.load(super::synth::PGMAP), (0, 512));
    let mut zap = sim.event(p.unmap, 0, EventKind::Unmap);
    (zap.pfn, zap.page, zap.extra, zap.extra2) = (0, mm, 0x7f00_0020_0000, 0x7f00_0030_0000);
    agg.observe(&zap);
    assert_eq!(agg.load(super::synth::PGMAP), (0, 256));
    let mut remove = sim.event(p.remove, 0, EventKind::PgmapRemove);
    (remove.pfn, remove.page) = (0, 0);
    agg.observe(&remove);
    assert_eq!(agg.count(Rule::TeardownBusy), 256);
    let f = &agg.findings()[0];
    assert_eq!(f.pfn, super::synth::BASE_PFN + 256);
    assert_eq!(f.page, insert.page + 256 * 64);
    assert_eq!(
        f.held_by,
        ["mapped at 0x7f0000300000 in mm 0xffff888100004000 (inserted by fio/4242)"]
    );
}

/// What a teardown counts: on 5.10 a reference is not a finding (memunmap_pages waits for
/// it) but a mapping is; from 5.18 the scan's counts decide, and a GENERIC page's last grab
/// says who holds it.
#[test]
fn teardowns_count_what_the_kernel_does_not_wait_for() {
    let old = Probes::for_model(RefModel::AllOneBased);
    let mut events = healthy(&old, true, 1, &[]);
    let removed = events
        .iter()
        .position(|e| kind(e) == EventKind::PgmapRemove)
        .unwrap();
    let mut grab = events
        .iter()
        .copied()
        .find(|e| kind(e) == EventKind::Get)
        .unwrap();
    grab.refcount = 1;
    events.insert(removed, grab);
    assert_eq!(
        run(&old, &events).total_findings(),
        0,
        "5.10 waits for the reference"
    );

    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let mut sim = super::synth::Sim::new(&p, true, 2);
    sim.apply(Op::Map(1));
    sim.apply(Op::Grab(1, false));
    sim.apply(Op::Unmap(1));
    let mut held = sim.event(p.remove, 1, EventKind::Held);
    held.refcount = 2;
    sim.out.push(held);
    sim.remove();
    let agg = run(&p, &sim.out);
    assert_eq!(agg.count(Rule::TeardownBusy), 1, "{:#?}", agg.findings());
    let f = &agg.findings()[0];
    assert_eq!((f.pfn, f.page), (held.pfn, held.page));
    assert_eq!(
        f.detail,
        "memunmap_pages with the page busy: refcount 2 above idle 1"
    );
    assert_eq!(f.pgmap.type_name, "generic");
    assert_eq!(f.held_by, ["reference taken by try_grab_folio in fio/4242"]);
}

/// A P2PDMA page pinned at teardown holds a pgmap reference that memunmap_pages waits for:
/// the teardown is late, not a use after free.
#[test]
fn teardowns_wait_for_pages_holding_a_pgmap_reference() {
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let mut sim = super::synth::Sim::new(&p, true, 2);
    sim.apply(Op::Map(1));
    sim.apply(Op::Grab(1, false));
    let mut held = sim.event(p.remove, 1, EventKind::Held);
    held.refcount = 2;
    held.mapcount = 1;
    sim.out.push(held);
    sim.remove();
    let p2pdma = 5;
    let events: Vec<Event> = sim
        .out
        .iter()
        .map(|e| Event {
            pgmap_type: p2pdma,
            ..*e
        })
        .collect();
    let agg = run(&p, &events);
    assert_eq!(agg.count(Rule::TeardownBusy), 0, "{:#?}", agg.findings());
}

/// A device-private (or coherent) page a process still maps at teardown: memunmap_pages waits
/// for it as long as the process keeps its entry, and a CPU fault meanwhile calls the dying
/// driver's migrate_to_ram. A finding, where the same page of a P2PDMA pool is not.
#[test]
fn teardowns_under_a_device_private_entry_are_found() {
    let p = Probes::for_model(RefModel::ZeroBased);
    let mut sim = super::synth::Sim::new(&p, false, 2);
    sim.apply(Op::Map(1));
    let mut held = sim.event(p.remove, 1, EventKind::Held);
    (held.refcount, held.mapcount) = (1, 1);
    sim.out.push(held);
    sim.remove();
    let (private, coherent, p2pdma) = (1, 2, 5);
    for (ty, found) in [(private, 1), (coherent, 1), (p2pdma, 0)] {
        let events: Vec<Event> = sim
            .out
            .iter()
            .map(|e| Event {
                pgmap_type: ty,
                ..*e
            })
            .collect();
        let agg = run(&p, &events);
        assert_eq!(agg.count(Rule::TeardownBusy), found, "type {ty}");
        if found == 1 {
            assert_eq!(
                agg.findings()[0].detail,
                "memunmap_pages with the page busy: refcount 1 above idle 0, mapcount 1"
            );
        }
    }
}

/// A device page put once more than it was taken goes below zero unseen (the put is inline
/// after its free); the driver handing it out again reads the negative count. Reading 0 there
/// is the normal allocation.
#[test]
fn an_allocation_at_a_negative_count_is_a_put_underflow() {
    let p = Probes::for_model(RefModel::ZeroBased);
    let init = super::synth::probe_id("zone_device_page_init", "7.2");
    let mut sim = super::synth::Sim::new(&p, false, 1);
    for refcount in [0, -1] {
        let mut ev = sim.event(init, 0, EventKind::Get);
        (ev.refcount, ev.pgmap_type) = (refcount, 1);
        sim.out.push(ev);
    }
    let agg = run(&p, &sim.out);
    assert_eq!(agg.total_findings(), 1, "{:#?}", agg.findings());
    let f = &agg.findings()[0];
    assert_eq!(f.rule, Rule::PutUnderflow);
    assert_eq!(
        f.detail,
        "zone_device_page_init took a reference at refcount -1: put below zero before"
    );
}

/// A finished device migration maps the new page with the reference it already holds (the
/// driver's allocation) and drops one of the old page's: healthy at 1 each, a finding at 0.
#[test]
fn a_migration_maps_and_drops_the_references_its_pages_hold() {
    let p = Probes::for_model(RefModel::ZeroBased);
    let finalize = |site| {
        CATALOG
            .iter()
            .position(|e| e.site == site && e.checked.contains(&"7.3-src"))
            .unwrap() as u8
    };
    let (mapped, released) = (
        finalize(Site::MigrationMapped),
        finalize(Site::MigrationReleased),
    );
    let private = 1;
    for (refcount, findings) in [
        (1, vec![]),
        (0, vec![Rule::InsertZeroRef, Rule::PutUnderflow]),
    ] {
        let mut sim = super::synth::Sim::new(&p, false, 2);
        for (probe, page, kind) in [
            (mapped, 0, EventKind::Insert),
            (released, 1, EventKind::Put),
        ] {
            let mut ev = sim.event(probe, page, kind);
            (ev.refcount, ev.pgmap_type, ev.extra) = (refcount, private, 1);
            sim.out.push(ev);
        }
        let agg = run(&p, &sim.out);
        let rules: Vec<Rule> = agg.findings().iter().map(|f| f.rule).collect();
        assert_eq!(
            rules,
            findings,
            "refcount {refcount}: {:#?}",
            agg.findings()
        );
    }
}

/// ≤6.14: the filesystem taking back the block of a page a pipe still holds.
#[test]
fn truncate_of_a_held_page_is_found() {
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let mut sim = super::synth::Sim::new(&p, false, 1);
    sim.apply(Op::Map(0));
    sim.apply(Op::Grab(0, false));
    sim.apply(Op::Unmap(0));
    let mut truncate = sim.event(p.truncate.unwrap(), 0, EventKind::Truncate);
    truncate.refcount = 2;
    sim.out.push(truncate);
    let agg = run(&p, &sim.out);
    assert_eq!(agg.count(Rule::TruncateBusy), 1);
    let f = &agg.findings()[0];
    assert!(
        f.detail
            .contains("at refcount 2: 1 reference(s) above idle still held"),
        "{}",
        f.detail
    );
    assert_eq!(f.held_by, ["reference taken by try_grab_folio in fio/4242"]);
    assert_eq!(f.recent.last().unwrap().function, "dax_disassociate_entry");
}

/// 5.10's memunmap_pages drops every idle page 1 -> 0 after its event, and the programs
/// rediscover the pgmap from the first of those puts: it stays torn down, the puts are fine.
#[test]
fn a_pgmap_rediscovered_in_its_teardown_stays_torn_down() {
    let p = Probes::for_model(RefModel::AllOneBased);
    let mut events = healthy(&p, false, 2, &[]);
    let removed = events
        .iter()
        .position(|e| kind(e) == EventKind::PgmapRemove)
        .unwrap();
    let mut again = events[0];
    again.flags = refwatch_common::event::flags::DISCOVERED;
    again.probe = p.devmap_put.unwrap();
    events.insert(removed + 1, again);
    let agg = run(&p, &events);
    assert_eq!(agg.total_findings(), 0, "{:#?}", agg.findings());
    assert!(agg.pgmaps().all(|pg| pg.teardown));
}

/// A second teardown of a pgmap, flagged as rediscovered (a corrupt trace: found by the fuzz
/// target), is no new pgmap and no panic.
#[test]
fn a_pgmap_removed_twice_stays_retired() {
    let p = Probes::for_model(RefModel::AllOneBased);
    let mut events = healthy(&p, false, 2, &[]);
    let removed = events
        .iter()
        .position(|e| kind(e) == EventKind::PgmapRemove)
        .unwrap();
    let mut again = events[removed];
    again.flags = refwatch_common::event::flags::DISCOVERED;
    events.insert(removed + 1, again);
    let agg = run(&p, &events);
    assert_eq!(agg.pgmaps().count(), 1);
    assert!(agg.pgmaps().all(|pg| pg.teardown));
}

/// 7.x: an unpin of a small folio drops GUP_PIN_COUNTING_BIAS references, so unpinning a page
/// that only its mapping holds (refcount 1) twice over is an underflow; a large folio's pin is
/// one reference. unpin_user_page always unpins; gup_put_folio (unpin_user_pages' put) does
/// where its flags have the kernel's FOLL_PIN.
#[test]
fn an_unpin_of_a_small_folio_needs_the_pin_bias() {
    const FOLL_PIN: u64 = 1 << 19;
    const FOLL_GET: u64 = 1 << 1;
    let p = Probes::for_model(RefModel::ZeroBased);
    let unpinned =
        |function: &str, foll_pin: Option<u64>, gup_flags: u64, refcounts: &[i32], head| {
            let unpin = super::synth::probe_id(function, "7.2");
            let mut events = healthy(&p, false, 1, &[Op::Map(0)]);
            let at = events
                .iter()
                .rposition(|e| kind(e) == EventKind::Insert)
                .unwrap();
            let unpins: Vec<Event> = refcounts
                .iter()
                .map(|&refcount| Event {
                    probe: unpin,
                    kind: EventKind::Put as u8,
                    refcount,
                    mapcount: 1,
                    extra: 1,
                    extra2: gup_flags,
                    flags: if head {
                        refwatch_common::event::flags::HEAD
                    } else {
                        0
                    },
                    ..events[at]
                })
                .collect();
            events.splice(at + 1..at + 1, unpins);
            let mut agg = Aggregator::new(p.context().with_foll_pin(foll_pin));
            for ev in &events {
                agg.observe(ev);
            }
            agg
        };
    let found = |function: &str, foll_pin, gup_flags, refcounts: &[i32], head| {
        unpinned(function, foll_pin, gup_flags, refcounts, head).count(Rule::PutUnderflow)
    };
    let unpin_user_page =
        |refcounts: &[i32], head| found("unpin_user_page", None, 0, refcounts, head);
    assert_eq!(unpin_user_page(&[1025], false), 0);
    assert_eq!(unpin_user_page(&[1025, 1], false), 1);
    assert_eq!(unpin_user_page(&[2, 1], true), 0);
    let gup_put_folio = |foll_pin, flags, refcounts: &[i32], head| {
        found("gup_put_folio", foll_pin, flags, refcounts, head)
    };
    assert_eq!(gup_put_folio(Some(FOLL_PIN), FOLL_PIN, &[1025], false), 0);
    assert_eq!(
        gup_put_folio(Some(FOLL_PIN), FOLL_PIN, &[1025, 1], false),
        1
    );
    assert_eq!(gup_put_folio(Some(FOLL_PIN), FOLL_PIN, &[2, 1], true), 0);
    assert_eq!(gup_put_folio(Some(FOLL_PIN), FOLL_GET, &[3, 2], false), 0);
    // FOLL_PIN unknown (the plan says so): each unpin is one reference, the second is missed.
    assert_eq!(gup_put_folio(None, FOLL_PIN, &[1025, 1], false), 0);
    // The finding's history shows what the rule counted: the mapping 1, each unpin 1024.
    let agg = unpinned("gup_put_folio", Some(FOLL_PIN), FOLL_PIN, &[1025, 1], false);
    let moved: Vec<(EventKind, u64)> = agg.findings()[0]
        .recent
        .iter()
        .map(|t| (t.kind, t.refs))
        .collect();
    assert_eq!(
        moved[moved.len() - 3..],
        [
            (EventKind::Insert, 1),
            (EventKind::Put, 1024),
            (EventKind::Put, 1024)
        ]
    );
}

/// Counts and addresses of a corrupt trace at the top of their range: an unpin of 2^62 pages
/// is an underflow (its pin bias once overflowed to 0), a PMD at the top of the address space
/// wraps (it overflowed in the fuzz target, built with overflow checks).
#[test]
fn corrupt_counts_and_addresses_do_not_overflow() {
    use super::synth::probe_id;
    let p = Probes::for_model(RefModel::ZeroBased);
    let unpin = probe_id("unpin_user_page", "7.2");
    let mut events = healthy(&p, false, 1, &[Op::Map(0)]);
    let at = events
        .iter()
        .rposition(|e| kind(e) == EventKind::Insert)
        .unwrap();
    let huge = Event {
        probe: unpin,
        kind: EventKind::Put as u8,
        refcount: 1025,
        extra: 1 << 62,
        ..events[at]
    };
    events.insert(at + 1, huge);
    assert_eq!(run(&p, &events).count(Rule::PutUnderflow), 1);

    let p = Probes::for_model(RefModel::FsdaxOneBased);
    let pmd = probe_id("vmf_insert_pfn_pmd", "6.12");
    let mut agg = Aggregator::new(super::KernelView::new(
        p.model,
        [pmd, p.unmap, p.add, p.remove],
        BTreeMap::new(),
    ));
    let mut sim = super::synth::Sim::new(&p, false, 512);
    agg.observe(&sim.out[0]);
    let mut insert = sim.event(pmd, 0, EventKind::Insert);
    (insert.pfn, insert.page, insert.extra) = (u64::MAX - 8, u64::MAX - 64, u64::MAX - 4096);
    agg.observe(&insert);
    assert_eq!(agg.live_pages(), 512);
}
