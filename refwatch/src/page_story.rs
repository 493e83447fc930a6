//! One page's whole story in a trace (`refwatch report --page PFN`): every event that names
//! it, with refwatch's reckoning of its counts after each and the findings each one raised.

use refwatch_common::{CATALOG, Event, EventKind};
use serde::Serialize;

use crate::aggregate::{Aggregator, KernelView, Rule, Transition};
use crate::escape::printable;
use crate::event::EventExt;
use crate::trace::{TraceError, TraceReader};

/// One event of the page.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// The event; its counts are what the probe read at function entry.
    #[serde(flatten)]
    pub transition: Transition,
    /// refwatch's estimate of the refcount once the function is done; None once the page is
    /// idle again (refwatch keeps no state for idle pages).
    pub refcount_after: Option<i64>,
    /// Mappings refwatch counts once the function is done (the kernel's mapcount on 7.x).
    pub mapped_after: Option<i64>,
    /// For the pgmap's creation or teardown: its pfns, [first, end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pgmap_pfns: Option<[u64; 2]>,
    /// The rules this event broke.
    pub findings: Vec<Rule>,
    /// Kernel stack, innermost first.
    pub stack: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Story {
    pub pfn: u64,
    pub entries: Vec<Entry>,
}

/// Whether `ev` is about page `pfn`: a page event naming it, or its pgmap's creation or
/// teardown. Range zaps and moves name an address range, not a page.
fn names(ev: &Event, kind: EventKind, pfn: u64) -> bool {
    match kind {
        EventKind::PgmapAdd | EventKind::PgmapRemove => (ev.extra..ev.extra2).contains(&pfn),
        EventKind::Remap => false,
        EventKind::Unmap
            if CATALOG
                .get(usize::from(ev.probe))
                .is_some_and(|p| p.is_range()) =>
        {
            false
        }
        _ => ev.pfn == pfn,
    }
}

/// Replays the trace through the aggregator and keeps every event of the `pfns`.
pub fn from_trace<R: std::io::Read + Send>(
    reader: &mut TraceReader<R>,
    pfns: &[u64],
) -> Result<Vec<Story>, TraceError> {
    let plan = reader.header().plan.clone();
    let mut agg = Aggregator::new(KernelView::from_plan(&plan));
    let mut stories: Vec<(Story, Vec<i32>)> = pfns
        .iter()
        .map(|&pfn| {
            (
                Story {
                    pfn,
                    entries: Vec::new(),
                },
                Vec::new(),
            )
        })
        .collect();
    reader.for_each_event(|ev| {
        let raised = agg.observe(ev);
        let Some(kind) = ev.event_kind() else {
            return;
        };
        let new_findings = &agg.findings()[agg.findings().len().saturating_sub(raised)..];
        for (story, stacks) in &mut stories {
            if !names(ev, kind, story.pfn) {
                continue;
            }
            let counts = agg.page_counts(story.pfn);
            let refs = CATALOG
                .get(usize::from(ev.probe))
                .map_or(ev.extra, |p| agg.context().moves(p, kind, ev));
            story.entries.push(Entry {
                transition: Transition::of(ev, kind, refs),
                pgmap_pfns: matches!(kind, EventKind::PgmapAdd | EventKind::PgmapRemove)
                    .then_some([ev.extra, ev.extra2]),
                refcount_after: counts.map(|(refcount, _)| refcount),
                mapped_after: counts.map(|(_, mapped)| mapped),
                findings: new_findings
                    .iter()
                    .filter(|f| f.pfn == story.pfn)
                    .map(|f| f.rule)
                    .collect(),
                stack: Vec::new(),
            });
            stacks.push(ev.stack_id);
        }
    })?;
    // Stacks are resolved once the whole trace is read.
    Ok(stories
        .into_iter()
        .map(|(mut story, stacks)| {
            for (entry, id) in story.entries.iter_mut().zip(stacks) {
                entry.stack = reader.stack(id).to_vec();
            }
            story
        })
        .collect())
}

/// The pages a watchpoint saw written in the trace, by pfn.
pub fn watched_pages<R: std::io::Read + Send>(
    reader: &mut TraceReader<R>,
) -> Result<std::collections::BTreeSet<u64>, TraceError> {
    let mut pfns = std::collections::BTreeSet::new();
    reader.for_each_event(|ev| {
        if ev.event_kind() == Some(EventKind::Watch) {
            pfns.insert(ev.pfn);
        }
    })?;
    Ok(pfns)
}

/// The text a developer pastes into a bug report.
pub fn render<'a>(stories: impl IntoIterator<Item = &'a Story>) -> String {
    let mut s = String::new();
    for story in stories {
        s.push_str(&format!(
            "pfn {:#x}: {} event(s); ref/map are read at entry, after= is refwatch's reckoning\n",
            story.pfn,
            story.entries.len()
        ));
        for e in &story.entries {
            let t = &e.transition;
            let counts = match (e.pgmap_pfns, e.refcount_after, e.mapped_after) {
                (Some([first, end]), ..) => format!("pfns {first:#x}-{end:#x}"),
                (None, Some(r), Some(m)) => format!(
                    "ref={} map={} n={} after=ref {r} map {m}",
                    t.refcount, t.mapcount, t.refs
                ),
                (None, ..) => format!(
                    "ref={} map={} n={} after=idle",
                    t.refcount, t.mapcount, t.refs
                ),
            };
            s.push_str(&format!(
                "  {:>14.6} {:<9} {:<32} {counts} {}/{}\n",
                t.ts_ns as f64 / 1e9,
                t.kind.name(),
                t.function,
                printable(&t.comm),
                t.pid
            ));
            for rule in &e.findings {
                s.push_str(&format!("      finding: {rule}\n"));
            }
            for frame in &e.stack {
                s.push_str(&format!("      {}\n", printable(frame)));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::synth::{Probes, healthy};
    use refwatch_common::RefModel;

    /// Every event naming the page is in its story, in order, and the insert at refcount 0
    /// carries its finding.
    #[test]
    fn a_story_holds_every_event_of_the_page_and_its_findings() {
        let p = Probes::for_model(RefModel::ZeroBased);
        let mut events = healthy(&p, false, 2, &[]);
        let insert = events
            .iter()
            .position(|e| e.kind == EventKind::Insert as u8)
            .unwrap();
        events[insert].refcount = 0;
        let pfn = events[insert].pfn;
        let bytes = p.trace(&events, 0);
        let mut reader = TraceReader::new(&bytes[..]).unwrap();
        let stories = from_trace(&mut reader, &[pfn]).unwrap();
        let page_events = events
            .iter()
            .filter(|e| {
                e.kind != EventKind::PgmapAdd as u8 && e.kind != EventKind::PgmapRemove as u8
            })
            .filter(|e| e.pfn == pfn)
            .count();
        let entries = &stories[0].entries;
        let pgmap_events = entries.iter().filter(|e| e.pgmap_pfns.is_some()).count();
        assert_eq!(entries.len() - pgmap_events, page_events);
        assert!(
            entries
                .windows(2)
                .all(|w| w[0].transition.ts_ns <= w[1].transition.ts_ns)
        );
        let flagged: Vec<_> = entries.iter().filter(|e| !e.findings.is_empty()).collect();
        assert_eq!(flagged.len(), 1);
        assert_eq!(flagged[0].transition.kind, EventKind::Insert);
        assert_eq!(flagged[0].findings, [Rule::InsertZeroRef]);
        assert!(render(&stories).contains("finding: insert-zero-ref"));
    }

    #[test]
    fn watched_pages_are_those_of_watch_events() {
        let p = Probes::for_model(RefModel::ZeroBased);
        let mut events = healthy(&p, false, 2, &[]);
        let mut hit = *events.last().unwrap();
        (hit.pfn, hit.probe, hit.kind) = (
            crate::aggregate::synth::BASE_PFN + 1,
            refwatch_common::event::WATCH_PROBE,
            EventKind::Watch as u8,
        );
        events.push(hit);
        let bytes = p.trace(&events, 0);
        let mut reader = TraceReader::new(&bytes[..]).unwrap();
        let watched: Vec<u64> = watched_pages(&mut reader).unwrap().into_iter().collect();
        assert_eq!(watched, [crate::aggregate::synth::BASE_PFN + 1]);
    }
}
