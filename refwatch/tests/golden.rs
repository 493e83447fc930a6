//! Golden tests: `refwatch report` on traces recorded in the VM lab (`cargo xtask test` leaves
//! them in ~/.cache/refwatch/lab/runs/*/result/out/trace.rwt). The report must not drift
//! unnoticed; after an intended change, regenerate with
//! `REFWATCH_BLESS=1 cargo test --test golden`.

use std::path::PathBuf;

use refwatch::{page_story, summary, trace::TraceReader};

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

fn golden(name: &str) {
    compare(name, name, |reader| {
        let s = summary::from_trace(reader).unwrap();
        format!(
            "{}\n{}\n",
            s.render(usize::MAX),
            serde_json::to_string_pretty(&s).unwrap()
        )
    });
}

/// `report --page PFN`: the page's whole story, as text and JSON.
fn golden_page(name: &str, pfn: u64) {
    compare(name, &format!("{name}-page-{pfn:#x}"), |mut reader| {
        let stories = page_story::from_trace(&mut reader, &[pfn]).unwrap();
        assert!(
            !stories[0].entries.is_empty(),
            "{name}: pfn {pfn:#x} has no event"
        );
        format!(
            "{}\n{}\n",
            page_story::render(&stories),
            serde_json::to_string_pretty(&stories).unwrap()
        )
    });
}

/// Renders the recorded trace `name` and compares it with the golden file `golden`.
fn compare(name: &str, golden: &str, render: impl FnOnce(TraceReader<std::fs::File>) -> String) {
    let trace = dir("traces").join(format!("{name}.rwt"));
    let reader = TraceReader::open(&trace).unwrap();
    assert!(
        !reader.header().synthetic,
        "{name}: goldens come from recorded traces"
    );
    let got = render(reader);
    let path = dir("golden").join(format!("{golden}.txt"));
    if std::env::var_os("REFWATCH_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{golden}: report differs from {}:\n{got}",
        path.display()
    );
}

/// 5.10: 4096 devmap PTE inserts at refcount 1 and 4096 zaps; every rule but free-while-mapped
/// checked (5.10 frees at refcount 1, which says nothing about mappings).
#[test]
fn debian_5_10_fsdax_mmap() {
    golden("5.10-fsdax-mmap");
}

/// 6.1: the pgmap is learned from the first page (it predates refwatch), inserts by pfn with
/// no reference taken, zaps through vm_normal_page; no finding.
#[test]
fn debian_6_1_fsdax_mmap() {
    golden("6.1-fsdax-mmap");
}

/// 6.1: memunmap_pages of the idle fsdax pgmap when the namespace is disabled.
#[test]
fn debian_6_1_teardown() {
    golden("6.1-teardown");
}

/// 7.2: PMD faults take a folio reference and the entire mapcount (vmf_insert_folio_pmd), the
/// zap removes the rmap (folio_remove_rmap_pmd) and the folio is freed at 0.
#[test]
fn debian_7_2_fsdax_pmd() {
    golden("7.2-fsdax-pmd");
}

/// One PMD-mapped fsdax page of the 7.2 trace, every event of it: its insert with the folio
/// reference, the rmap removal at the zap, the free at 0.
#[test]
fn debian_7_2_fsdax_pmd_page_story() {
    golden_page("7.2-fsdax-pmd", 0x4a000);
}
