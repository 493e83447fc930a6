//! Probe-plan resolution against the facts of real Debian kernels, captured in the VM lab with
//! `refwatch probes --facts` (kallsyms presence, BTF prototypes, struct layout).

use clap::ValueEnum;
use refwatch::{
    facts::KernelFacts,
    plan::{self, AttachMode, Plan, Resolution},
};
use refwatch_common::RefModel;

fn plan(kernel: &str, mode: AttachMode) -> Plan {
    let path = format!("{}/tests/facts/{kernel}.json", env!("CARGO_MANIFEST_DIR"));
    let facts: KernelFacts =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    plan::resolve(&facts, mode)
}

/// (function, kind) of every entry the plan uses, as "kind:function".
fn used(plan: &Plan) -> Vec<String> {
    plan.used()
        .map(|p| format!("{}:{}", p.kind, p.function))
        .collect()
}

fn expect(kernel: &str, model: RefModel, want: &[&str]) {
    let plan = plan(kernel, AttachMode::Kprobe);
    assert_eq!(plan.model, model, "{kernel}");
    assert!(plan.blockers.is_empty(), "{kernel}: {:?}", plan.blockers);
    assert_eq!(used(&plan), want, "{kernel}");
}

#[test]
fn debian_5_10() {
    expect(
        "5.10",
        RefModel::AllOneBased,
        &[
            "pgmap_add:memremap_pages",
            "pgmap_remove:memunmap_pages",
            "insert:__vm_insert_mixed",
            "insert:vmf_insert_pfn_pmd_prot",
            "insert:vmf_insert_pfn_pud_prot",
            "insert:vm_insert_page",
            "get:try_grab_page",
            "get:try_grab_compound_head",
            "put:put_devmap_managed_page",
            "free:free_devmap_managed_page",
            "unmap:unmap_page_range",
            "remap:move_page_tables",
            "truncate:dax_disassociate_entry",
        ],
    );
}

#[test]
fn debian_6_1() {
    expect(
        "6.1",
        RefModel::FsdaxOneBased,
        &[
            "pgmap_add:memremap_pages",
            "insert:__vm_insert_mixed",
            "insert:vmf_insert_pfn_pmd_prot",
            "insert:vmf_insert_pfn_pud_prot",
            "insert:vm_insert_page",
            "get:try_grab_page",
            "get:try_grab_folio",
            "get:zone_device_page_init",
            "put:__put_devmap_managed_page_refs",
            "put:gup_put_folio",
            "free:free_zone_device_page",
            "unmap:unmap_page_range",
            "remap:move_page_tables",
            "pgmap_remove:memunmap_pages",
            "truncate:dax_disassociate_entry",
            "get:migrate_vma_setup",
        ],
    );
}

#[test]
fn debian_6_12() {
    expect(
        "6.12",
        RefModel::FsdaxOneBased,
        &[
            "pgmap_add:memremap_pages",
            "insert:__vm_insert_mixed",
            "insert:vmf_insert_pfn_pmd",
            "insert:vmf_insert_pfn_pud",
            "insert:vm_insert_page",
            "get:try_grab_folio",
            "get:try_grab_folio_fast",
            "get:zone_device_page_init",
            "put:__put_devmap_managed_folio_refs",
            "put:gup_put_folio",
            "free:free_zone_device_folio",
            "unmap:unmap_page_range",
            "remap:move_page_tables",
            "pgmap_remove:memunmap_pages",
            "truncate:dax_disassociate_entry",
            "get:migrate_vma_setup",
        ],
    );
}

#[test]
fn debian_7_2() {
    expect(
        "7.2",
        RefModel::ZeroBased,
        &[
            "pgmap_add:memremap_pages",
            "insert:vmf_insert_page_mkwrite",
            "insert:vmf_insert_folio_pmd",
            "insert:vmf_insert_folio_pud",
            "insert:vm_insert_page",
            "get:try_grab_folio",
            "get:try_grab_folio_fast",
            "get:zone_device_page_init",
            "put:gup_put_folio",
            "put:unpin_user_page",
            "free:free_zone_device_folio",
            "pgmap_remove:memunmap_pages",
            "put:unpin_user_folio",
            "get:migrate_vma_setup",
        ],
    );
}

/// The same name with another prototype is another entry: 6.1's try_grab_folio takes a page
/// and is gup-fast's speculative grab; from 6.12 on it takes a folio and is the slow path's.
#[test]
fn prototypes_pick_the_entry() {
    let pick = |kernel: &str| {
        let plan = plan(kernel, AttachMode::Kprobe);
        let p = plan
            .used()
            .find(|p| p.function == "try_grab_folio")
            .unwrap()
            .id;
        refwatch_common::CATALOG[p as usize]
    };
    assert!(pick("6.1").speculative);
    assert!(!pick("6.12").speculative);
    let plan = plan("6.12", AttachMode::Kprobe);
    let other = plan
        .probes
        .iter()
        .find(|p| p.function == "try_grab_folio" && p.resolution != Resolution::Use);
    assert!(matches!(
        other.unwrap().resolution,
        Resolution::OtherPrototype { .. }
    ));
}

/// From 6.1 every entry of the plan can be an fentry program, and so can vm_normal_page's
/// caller filter (`--with`); 5.10's trampolines refuse its pte_t argument.
#[test]
fn fentry_carries_every_entry_from_6_1() {
    let plan = plan("6.1", AttachMode::Fentry);
    for p in plan.used() {
        assert_eq!(p.modes, vec![AttachMode::Fentry], "{}", p.function);
    }
    let auto = plan_modes("6.1", "__vm_insert_mixed");
    assert_eq!(auto, vec![AttachMode::Kprobe, AttachMode::Fentry]);
    assert_eq!(
        plan_modes("6.1", "vm_normal_page"),
        vec![AttachMode::Kprobe, AttachMode::Fentry]
    );
    assert_eq!(
        plan_modes("5.10", "vm_normal_page"),
        vec![AttachMode::Kprobe]
    );
}

/// 5.10's trampolines refuse struct-by-value arguments: its pfn_t inserts stay on kprobes.
#[test]
fn fentry_on_5_10_keeps_pfn_t_entries_on_kprobe() {
    assert_eq!(
        plan_modes("5.10", "__vm_insert_mixed"),
        vec![AttachMode::Kprobe]
    );
    assert_eq!(
        plan_modes("5.10", "try_grab_page"),
        vec![AttachMode::Kprobe, AttachMode::Fentry]
    );
    assert_eq!(
        plan_modes("6.1", "vmf_insert_pfn_pmd_prot"),
        vec![AttachMode::Kprobe, AttachMode::Fentry]
    );
}

fn plan_modes(kernel: &str, function: &str) -> Vec<AttachMode> {
    plan(kernel, AttachMode::Auto)
        .probes
        .iter()
        .find(|p| p.function == function)
        .unwrap()
        .modes
        .clone()
}

#[test]
fn inline_get_put_are_covered() {
    for k in ["5.10", "6.1", "6.12", "7.2"] {
        let plan = plan(k, AttachMode::Kprobe);
        for name in ["get_page", "put_page"] {
            let i = plan.inlines.iter().find(|i| i.name == name).unwrap();
            assert!(!i.out_of_line, "{k}: {name} is a symbol?");
            assert!(!i.covered_by.is_empty(), "{k}: {name} uncovered");
        }
    }
}

#[test]
fn newer_kernels_get_a_note_not_a_refusal() {
    let path = format!("{}/tests/facts/7.2.json", env!("CARGO_MANIFEST_DIR"));
    let mut facts: KernelFacts =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(plan::resolve(&facts, AttachMode::Kprobe).notes.is_empty());
    facts.version = (8, 1);
    let plan = plan::resolve(&facts, AttachMode::Kprobe);
    assert!(plan.blockers.is_empty());
    assert!(plan.notes[0].contains("8.1 is newer"), "{:?}", plan.notes);
    assert_eq!(plan.model, RefModel::ZeroBased);
}

/// FOLL_PIN, which tells GUP's pins from its references: a macro on 5.10 and 6.1, an
/// enumerator in BTF from then on; unknown (and said so) where BTF lacks it on a later kernel.
#[test]
fn foll_pin_comes_from_btf_or_the_macro() {
    for (kernel, want) in [
        ("5.10", 0x40000),
        ("6.1", 0x40000),
        ("6.12", 1 << 19),
        ("7.2", 1 << 19),
    ] {
        let plan = plan(kernel, AttachMode::Kprobe);
        assert_eq!(plan.foll_pin, Some(want), "{kernel}");
        assert!(plan.notes.is_empty(), "{kernel}: {:?}", plan.notes);
    }
    let path = format!("{}/tests/facts/7.2.json", env!("CARGO_MANIFEST_DIR"));
    let mut facts: KernelFacts =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    facts.foll_pin = None;
    let plan = plan::resolve(&facts, AttachMode::Kprobe);
    assert_eq!(plan.foll_pin, None);
    assert!(plan.notes[0].contains("FOLL_PIN"), "{:?}", plan.notes);
}

#[test]
fn no_kprobes_blocks_kprobe_mode_only() {
    let path = format!("{}/tests/facts/6.1.json", env!("CARGO_MANIFEST_DIR"));
    let mut facts: KernelFacts =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    facts.kprobes = false;
    assert!(
        plan::resolve(&facts, AttachMode::Kprobe)
            .blockers
            .iter()
            .any(|b| b.contains("kprobes"))
    );
    assert!(
        plan::resolve(&facts, AttachMode::Fentry)
            .blockers
            .is_empty()
    );
    facts.layout = Err("no BTF".into());
    assert!(
        !plan::resolve(&facts, AttachMode::Fentry)
            .blockers
            .is_empty()
    );
}

/// The layout derived from each kernel's BTF agrees with what the Debian binaries show
/// (`(flags >> 51) & 7 == 4` in `__folio_put`'s disassembly; `+52(page)` is `_refcount`).
#[test]
fn layouts_from_btf_match_the_binaries() {
    use refwatch_common::globals::{COMPOUND_MASK, COMPOUND_MINUS_ONE};
    for k in ["5.10", "6.1", "6.12", "7.2"] {
        let path = format!("{}/tests/facts/{k}.json", env!("CARGO_MANIFEST_DIR"));
        let facts: KernelFacts =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let l = facts.layout.unwrap();
        assert_eq!(
            (l.zones_shift, l.zones_mask, l.zone_device),
            (51, 7, 4),
            "{k}"
        );
        assert_eq!(
            (l.page_size, l.off_refcount, l.off_mapcount),
            (64, 52, 48),
            "{k}"
        );
        let (mode, large) = match k {
            "7.2" => (COMPOUND_MASK, 80),
            "6.12" => (COMPOUND_MINUS_ONE, 80),
            _ => (COMPOUND_MINUS_ONE, u64::MAX),
        };
        assert_eq!(
            (l.compound_mode, l.off_large_mapcount),
            (mode, large),
            "{k}"
        );
    }
}

#[test]
fn skipped_probes_leave_their_rules_unchecked() {
    use refwatch::aggregate::{Coverage, KernelView, Rule};
    let mut p = plan("6.1", AttachMode::Kprobe);
    assert!(p.skip("unmap_page_range"));
    assert!(!p.skip("get_page"), "inline: not in the catalog");
    assert!(!used(&p).iter().any(|u| u.starts_with("unmap:")));
    assert!(
        p.probes
            .iter()
            .any(|e| e.function == "unmap_page_range" && e.resolution == Resolution::Skipped)
    );
    // What the aggregator judges with, had every used entry attached.
    let ctx = KernelView::new(p.model, p.used().map(|e| e.id), p.pgmap_types.clone());
    assert!(matches!(
        ctx.coverage(Rule::FreeWhileMapped),
        Coverage::Unchecked(_)
    ));
    assert_eq!(ctx.coverage(Rule::InsertZeroRef), Coverage::Checked);
}

/// The unmap probes every normal page passes are off by default and no rule goes unchecked for
/// it: where a mapping holds a reference and a mapcount (6.15+), and before that where the zap
/// of the range (unmap_page_range) tells the mapped state; `--with` attaches them.
#[test]
fn hot_unmap_probes_are_off_where_no_rule_needs_them() {
    use refwatch::aggregate::{Coverage, KernelView, Rule};
    let mut p = plan("7.2", AttachMode::Kprobe);
    let status = |p: &Plan, f: &str| {
        p.probes
            .iter()
            .find(|e| e.function == f)
            .unwrap()
            .resolution
            .clone()
    };
    assert_eq!(status(&p, "folio_remove_rmap_ptes"), Resolution::Hot);
    assert_eq!(status(&p, "folio_remove_rmap_pmd"), Resolution::Hot);
    // Nothing stands in for them (vm_normal_page's caller is inlined here, and would be
    // superseded by them).
    assert_ne!(status(&p, "vm_normal_page"), Resolution::Use);
    let ctx = KernelView::new(p.model, p.used().map(|e| e.id), p.pgmap_types.clone());
    // truncate-busy has nothing to check from 6.15 on: the filesystem waits for the page.
    for rule in Rule::value_variants()
        .iter()
        .copied()
        .filter(|&r| r != Rule::TruncateBusy)
    {
        assert_eq!(ctx.coverage(rule), Coverage::Checked, "{rule:?}");
    }
    assert!(p.with("folio_remove_rmap_ptes"));
    assert!(!p.with("get_page"), "inline: not in the catalog");
    assert_eq!(status(&p, "folio_remove_rmap_ptes"), Resolution::Use);
    assert_eq!(status(&p, "folio_remove_rmap_pmd"), Resolution::Hot);
    // Before 6.15 the range zap stands in for the per-PTE probe; --with swaps it back.
    for k in ["5.10", "6.1", "6.12"] {
        let mut p = plan(k, AttachMode::Kprobe);
        assert_eq!(status(&p, "vm_normal_page"), Resolution::Hot, "{k}");
        assert_eq!(status(&p, "unmap_page_range"), Resolution::Use, "{k}");
        assert!(p.with("vm_normal_page"));
        assert_eq!(status(&p, "vm_normal_page"), Resolution::Use, "{k}");
        let by = Resolution::Superseded {
            by: "vm_normal_page".into(),
        };
        assert_eq!(status(&p, "unmap_page_range"), by, "{k}");
        let ctx = KernelView::new(p.model, p.used().map(|e| e.id), p.pgmap_types.clone());
        // 5.10 frees at the idle refcount 1: the rule is unchecked there whatever is probed.
        if k != "5.10" {
            assert_eq!(
                ctx.coverage(Rule::FreeWhileMapped),
                Coverage::Checked,
                "{k}"
            );
        }
        assert_eq!(ctx.coverage(Rule::TeardownBusy), Coverage::Checked, "{k}");
    }
    assert!(matches!(
        status(&p, "unmap_page_range"),
        Resolution::NotThisKernel { .. }
    ));
}
