//! The finding rules and the per-era facts they rest on (kernel-notes sections A, D, E and
//! "Finding definitions that stay silent on healthy kernels"). Every refcount a rule looks at
//! is the one read at function entry, before the function changes it.

use refwatch_common::{EventKind, Probe, Refs, event::flags};
use serde::Serialize;

use super::Context;
use crate::plan::Model;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    InsertZeroRef,
    FreeWhileMapped,
    GetFromZero,
    PutUnderflow,
    TeardownBusy,
    TruncateBusy,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::InsertZeroRef,
        Rule::FreeWhileMapped,
        Rule::GetFromZero,
        Rule::PutUnderflow,
        Rule::TeardownBusy,
        Rule::TruncateBusy,
    ];

    /// The stable id used on the command line and in JSON.
    pub const fn id(self) -> &'static str {
        match self {
            Rule::InsertZeroRef => "insert-zero-ref",
            Rule::FreeWhileMapped => "free-while-mapped",
            Rule::GetFromZero => "get-from-zero",
            Rule::PutUnderflow => "put-underflow",
            Rule::TeardownBusy => "teardown-busy",
            Rule::TruncateBusy => "truncate-busy",
        }
    }

    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.id() == id)
    }
}

/// Whether a rule can be judged with the probes attached on this kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Coverage {
    Checked,
    Unchecked(String),
}

/// The pgmap types the rules distinguish, from BTF's `enum memory_type` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgType {
    Private,
    Coherent,
    FsDax,
    Generic,
    P2pdma,
    Unknown,
}

impl PgType {
    /// `name` as `facts::pgmap_types` spells it ("fsdax", "generic", ...).
    pub fn from_name(name: &str) -> PgType {
        match name {
            "private" => PgType::Private,
            "coherent" => PgType::Coherent,
            "fsdax" => PgType::FsDax,
            "generic" => PgType::Generic,
            "p2pdma" => PgType::P2pdma,
            _ => PgType::Unknown,
        }
    }
}

/// The refcount of an idle page (kernel-notes table A).
pub fn idle(model: Model, ty: PgType) -> Option<i64> {
    use PgType::*;
    match (model, ty) {
        (_, Unknown) => None,
        (Model::AllOneBased, _) => Some(1),
        (Model::FsdaxOneBased, Private | Coherent) => Some(0),
        (Model::FsdaxOneBased, _) => Some(1),
        (Model::ZeroBased, Generic) => Some(1),
        (Model::ZeroBased, _) => Some(0),
    }
}

/// Whether every return of this type to idle passes a probe, so that "above idle" in the
/// aggregator's estimate means the page is really busy. Elsewhere non-final puts are inline
/// atomics and the estimate can go stale high.
pub fn idle_visible(model: Model, ty: PgType) -> bool {
    use PgType::*;
    match model {
        // put_devmap_managed_page sees every put of FS_DAX/PRIVATE pages.
        Model::AllOneBased => matches!(ty, FsDax | Private),
        // __put_devmap_managed_*_refs sees FS_DAX puts; 0-based types end in the free path.
        Model::FsdaxOneBased => matches!(ty, FsDax | Private | Coherent),
        // Every type but GENERIC (idle at 1) reaches idle through free_zone_device_folio.
        Model::ZeroBased => matches!(ty, FsDax | Private | Coherent | P2pdma),
    }
}

/// Whether memunmap_pages waits until no page of this type is referenced, mapped or not, so
/// that a busy page delays the teardown and is never used after free. From 5.18 device-private
/// and coherent pages hold a pgmap reference from their allocation (zone_device_page_init) to
/// their free, P2PDMA pages one from the pool (p2pmem_alloc_mmap, pci_alloc_p2pmem), and their
/// mappings hold page references. (Until 5.17 every type's references are waited for, but
/// fsdax mappings hold none: the aggregator counts those there.)
pub fn teardown_waits(model: Model, ty: PgType) -> bool {
    model != Model::AllOneBased && matches!(ty, PgType::Private | PgType::Coherent | PgType::P2pdma)
}

/// Mapping levels, to pair inserts with unmap probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Pte,
    Pmd,
    Pud,
}

/// The level a probe's site works at ("pte-insert-pfn", "unmap-pmd", "vm-insert-page").
pub fn level(probe: &Probe) -> Level {
    if probe.site.contains("pud") {
        Level::Pud
    } else if probe.site.contains("pmd") {
        Level::Pmd
    } else {
        Level::Pte
    }
}

/// 5.18–6.14's `__put_devmap_managed_{page,folio}_refs` is entered for every ZONE_DEVICE page
/// while any FS_DAX pgmap exists (the static key), and returns false without touching the
/// count unless the page is FS_DAX: the put then goes on through folio_put (inline, or the
/// probed free at 0). Such a hit moves nothing and must not be judged as a put.
pub fn passthrough(model: Model, probe: &Probe, ty: PgType) -> bool {
    model == Model::FsdaxOneBased
        && probe.site == "devmap-put"
        && !matches!(ty, PgType::FsDax | PgType::Unknown)
}

/// `GUP_PIN_COUNTING_BIAS`: the references one pin holds on a small folio.
const PIN_BIAS: i64 = 1024;

/// The references a get or put moves (an unmap: the PTEs it clears). A pin of a small folio is
/// `GUP_PIN_COUNTING_BIAS` references (try_grab_folio, gup_put_folio): on 7.x, where a mapping
/// holds one, a second unpin of a mapped page is at refcount 1 and must still be found.
pub fn moved(probe: &Probe, ev: &refwatch_common::Event) -> i64 {
    // A kernel moves a folio's worth at most; a corrupt trace's count is cut to 32 bits, so
    // that the refcount arithmetic on it stays within i64.
    let refs = ev.extra.clamp(1, u32::MAX.into()) as i64;
    match probe.refs {
        Refs::Pin | Refs::PinArg(_) if ev.flags & flags::HEAD == 0 => refs * PIN_BIAS,
        _ => refs,
    }
}

/// A non-speculative grab whose entry refcount must be above zero (not one whose count
/// already includes the reference, nor the allocation of a page that is 0 until then).
pub fn strict_get(probe: &Probe) -> bool {
    probe.kind == EventKind::Get
        && !probe.speculative
        && !probe.taken_before
        && probe.function != "zone_device_page_init"
}

pub fn coverage(rule: Rule, ctx: &Context) -> Coverage {
    let need = |kind: EventKind| {
        if ctx.sees(kind) {
            Ok(())
        } else {
            Err(format!("no {} probe is attached", kind.name()))
        }
    };
    let result = match rule {
        Rule::InsertZeroRef => need(EventKind::Insert),
        Rule::GetFromZero => {
            if ctx.attached_probes().any(strict_get) {
                Ok(())
            } else {
                Err("no non-speculative get probe is attached".into())
            }
        }
        Rule::PutUnderflow => need(EventKind::Put).or_else(|_| need(EventKind::Free)),
        Rule::TeardownBusy => need(EventKind::PgmapRemove),
        Rule::TruncateBusy => match ctx.model {
            Model::ZeroBased => Err(
                "from 6.15 the filesystem waits for a DAX page to be idle before \
                it takes the block back (dax_break_layout), and no function hands over the page \
                at that point"
                    .into(),
            ),
            _ => need(EventKind::Truncate),
        },
        Rule::FreeWhileMapped => match ctx.model {
            Model::AllOneBased => Err("this kernel frees at the idle refcount 1, which is normal \
                while mapped, and its final put to 0 (__put_page) is not probed"
                .into()),
            Model::ZeroBased => need(EventKind::Free),
            Model::FsdaxOneBased => need(EventKind::Free)
                .and_then(|()| need(EventKind::Insert))
                .and_then(|()| {
                    if ctx.unmap_seen(Level::Pte) {
                        Ok(())
                    } else {
                        Err(
                            "the mapped state comes from inserts minus unmaps, and no pte unmap \
                             probe is attached"
                                .into(),
                        )
                    }
                }),
        },
    };
    match result {
        Ok(()) => Coverage::Checked,
        Err(reason) => Coverage::Unchecked(reason),
    }
}

/// What the aggregator knows about a page when one of its events arrives.
pub struct PageView {
    pub ty: PgType,
    /// Inserts minus unmaps at tracked levels (≤6.12), or the kernel's mapcount (7.x).
    pub mapped: i64,
    pub pgmap_in_teardown: bool,
}

/// The rule an event breaks, with a one-line explanation. At most one rule per event.
pub fn judge(
    ctx: &Context,
    probe: &Probe,
    ev: &refwatch_common::Event,
    page: &PageView,
) -> Option<(Rule, String)> {
    let r = i64::from(ev.refcount);
    let refs = moved(probe, ev);
    let idle = idle(ctx.model, page.ty);
    let underflow = |why: String| Some((Rule::PutUnderflow, why));
    if passthrough(ctx.model, probe, page.ty) {
        return None;
    }
    match probe.kind {
        EventKind::Insert if r <= 0 => Some((
            Rule::InsertZeroRef,
            format!(
                "{} inserted the page into a page table at refcount {r}",
                probe.function
            ),
        )),
        EventKind::Get if strict_get(probe) && r <= 0 => Some((
            Rule::GetFromZero,
            format!("{} took a reference at refcount {r}", probe.function),
        )),
        EventKind::Put => {
            // 5.10's memunmap_pages drops each idle page 1 -> 0 itself.
            let base = if ctx.model == Model::AllOneBased && page.pgmap_in_teardown {
                0
            } else {
                idle.unwrap_or(0)
            };
            (r < refs + base).then(|| {
                (
                    Rule::PutUnderflow,
                    format!(
                        "{} drops {refs} at refcount {r}; at least {} expected",
                        probe.function,
                        refs + base
                    ),
                )
            })
        }
        EventKind::Free => judge_free(ctx, probe, r, ev.mapcount, page),
        // The block goes back to the filesystem, which may hand it to another file while
        // whoever holds these references still reads or writes the page.
        EventKind::Truncate => {
            let idle = idle.unwrap_or(1);
            (r > idle).then(|| {
                (
                    Rule::TruncateBusy,
                    format!(
                        "{} gave the page's block back to the filesystem (truncate, hole punch or \
                 eviction) at refcount {r}: {} reference(s) above idle still held",
                        probe.function,
                        r - idle
                    ),
                )
            })
        }
        EventKind::Insert | EventKind::Get => None,
        _ if r < 0 => underflow(format!("refcount {r} at {}", probe.function)),
        _ => None,
    }
}

fn judge_free(
    ctx: &Context,
    probe: &Probe,
    r: i64,
    mapcount: i32,
    page: &PageView,
) -> Option<(Rule, String)> {
    let f = probe.function;
    match ctx.model {
        Model::AllOneBased => (r < 1).then(|| {
            (
                Rule::PutUnderflow,
                format!("{f} runs at refcount 1 on this kernel, saw {r}"),
            )
        }),
        Model::FsdaxOneBased if matches!(page.ty, PgType::FsDax | PgType::Generic) => {
            if page.mapped > 0 && ctx.unmap_seen(Level::Pte) {
                Some((
                    Rule::FreeWhileMapped,
                    format!(
                        "{f} on a 1-based page with {} mapping(s) not yet unmapped",
                        page.mapped
                    ),
                ))
            } else {
                Some((
                    Rule::PutUnderflow,
                    format!("{f}: a 1-based page reached refcount {r}"),
                ))
            }
        }
        Model::ZeroBased if mapcount != 0 => Some((
            Rule::FreeWhileMapped,
            format!("{f} with mapcount {mapcount}"),
        )),
        _ => (r < 0).then(|| (Rule::PutUnderflow, format!("{f} at refcount {r}"))),
    }
}
