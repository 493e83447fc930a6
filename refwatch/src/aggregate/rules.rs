//! The finding rules, judged on the era's refcount model (docs/refcount-model.md).

// Every refcount a rule looks at is the one read at function entry, before the function
// changes it. Why each rule is what it is, and stays silent on a healthy kernel of each era:
// docs/refcount-model.md, "The rules, and why each is what it is".

use refwatch_common::{
    EventKind, Probe, RefModel, Site,
    catalog::Level,
    model::{MemoryType, moved},
};
use serde::Serialize;

use super::KernelView;

/// The rules; their ids (`insert-zero-ref`, ...) are the command line's and the JSON's, and
/// `value_variants` lists them in the order reports do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    InsertZeroRef,
    FreeWhileMapped,
    GetFromZero,
    PutUnderflow,
    TeardownBusy,
    TruncateBusy,
}

/// The rule's id.
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let id = self.to_possible_value().expect("no rule is hidden");
        f.write_str(id.get_name())
    }
}

/// Whether a rule can be judged with the probes attached on this kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Coverage {
    Checked,
    Unchecked(String),
}

/// A non-speculative grab whose entry refcount must be above zero (not one whose count
/// already includes the reference, nor the allocation of a page that is 0 until then).
pub fn strict_get(probe: &Probe) -> bool {
    probe.kind == EventKind::Get
        && !probe.speculative
        && !probe.taken_before
        && probe.site != Site::ZoneDevicePageInit
}

pub fn coverage(rule: Rule, ctx: &KernelView) -> Coverage {
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
            RefModel::ZeroBased => Err(
                "from 6.15 the filesystem waits for a DAX page to be idle before \
                it takes the block back (dax_break_layout), and no function hands over the page \
                at that point"
                    .into(),
            ),
            _ => need(EventKind::Truncate),
        },
        Rule::FreeWhileMapped => match ctx.model {
            RefModel::AllOneBased => {
                Err("this kernel frees at the idle refcount 1, which is normal \
                while mapped, and its final put to 0 (__put_page) is not probed"
                    .into())
            }
            RefModel::ZeroBased => need(EventKind::Free),
            RefModel::FsdaxOneBased => need(EventKind::Free)
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
    pub ty: MemoryType,
    /// Inserts minus unmaps at tracked levels (≤6.12), or the kernel's mapcount (7.x).
    pub mapped: i64,
    pub pgmap_in_teardown: bool,
}

/// The rule an event breaks, with a one-line explanation. At most one rule per event.
#[inline]
pub fn judge(
    ctx: &KernelView,
    probe: &Probe,
    ev: &refwatch_common::Event,
    page: &PageView,
) -> Option<(Rule, String)> {
    let r = i64::from(ev.refcount);
    let refs = moved(probe, ev, ctx.foll_pin);
    let idle = ctx.model.idle(page.ty);
    let underflow = |why: String| Some((Rule::PutUnderflow, why));
    if ctx.model.passthrough(probe, page.ty) {
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
            let base = if ctx.model == RefModel::AllOneBased && page.pgmap_in_teardown {
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
        // A get at a negative count (zone_device_page_init handing out a page again) comes
        // after a put the page did not hold; the put itself may have been inline.
        EventKind::Get if r < 0 => underflow(format!(
            "{} took a reference at refcount {r}: put below zero before",
            probe.function
        )),
        EventKind::Insert | EventKind::Get => None,
        _ if r < 0 => underflow(format!("refcount {r} at {}", probe.function)),
        _ => None,
    }
}

fn judge_free(
    ctx: &KernelView,
    probe: &Probe,
    r: i64,
    mapcount: i32,
    page: &PageView,
) -> Option<(Rule, String)> {
    let f = probe.function;
    match ctx.model {
        RefModel::AllOneBased => (r < 1).then(|| {
            (
                Rule::PutUnderflow,
                format!("{f} runs at refcount 1 on this kernel, saw {r}"),
            )
        }),
        RefModel::FsdaxOneBased if matches!(page.ty, MemoryType::FsDax | MemoryType::Generic) => {
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
        RefModel::ZeroBased if mapcount != 0 => Some((
            Rule::FreeWhileMapped,
            format!("{f} with mapcount {mapcount}"),
        )),
        _ => (r < 0).then(|| (Rule::PutUnderflow, format!("{f} at refcount {r}"))),
    }
}
