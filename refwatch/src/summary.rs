//! What live, report and check show: one summary built from the aggregator, rendered as JSON
//! or as tables.

use std::collections::BTreeMap;

use clap::ValueEnum;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::{
    aggregate::{Aggregator, Coverage, Finding, Rule, Transition},
    capture::CommandRun,
    escape::printable,
    plan::AttachMode,
};

#[derive(Clone, Debug, Serialize)]
pub struct RuleSummary {
    #[serde(rename = "id")]
    pub rule: Rule,
    pub count: u64,
    #[serde(flatten)]
    pub coverage: Coverage,
}

#[derive(Clone, Debug, Serialize)]
pub struct PgmapSummary {
    pub address: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub ranges: Vec<(u64, u64)>,
    pub discovered: bool,
    pub teardown: bool,
    #[serde(flatten)]
    pub counters: crate::aggregate::Counters,
    pub live_refs: i64,
    pub mapped_pages: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FindingOut {
    #[serde(flatten)]
    pub finding: Finding,
    /// Symbolized kernel stack, innermost first.
    pub stack: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub kernel: String,
    pub attach: String,
    pub events: u64,
    /// None when unknown (a trace cut off before its footer).
    pub dropped: Option<u64>,
    pub rules: Vec<RuleSummary>,
    pub pgmaps: Vec<PgmapSummary>,
    pub findings_total: u64,
    pub findings: Vec<FindingOut>,
    /// The command run after `--`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRun>,
    /// Entries of each attached function, device pages or not: the probes' cost to the
    /// workload is their trap or trampoline times these. Empty for older traces.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The attach modes in a plan, e.g. "kprobe" or "fentry+kprobe".
pub fn attach_mode(plan: &crate::plan::Plan) -> String {
    let mut modes: Vec<String> = plan
        .attached()
        .filter_map(|p| p.attached.as_ref()?.as_ref().ok())
        .map(AttachMode::to_string)
        .collect();
    modes.sort();
    modes.dedup();
    modes.join("+")
}

impl Summary {
    pub fn build(
        agg: &Aggregator,
        plan: &crate::plan::Plan,
        dropped: Option<u64>,
        calls: BTreeMap<String, u64>,
        mut stack: impl FnMut(i32) -> Vec<String>,
    ) -> Self {
        let ctx = agg.context();
        Self {
            kernel: plan.kernel.clone(),
            attach: attach_mode(plan),
            events: agg.events(),
            dropped,
            rules: Rule::value_variants()
                .iter()
                .map(|&r| RuleSummary {
                    rule: r,
                    count: agg.count(r),
                    coverage: ctx.coverage(r),
                })
                .collect(),
            pgmaps: agg
                .pgmaps()
                .map(|p| {
                    let (live_refs, mapped_pages) = if p.teardown {
                        (0, 0)
                    } else {
                        agg.load(p.address)
                    };
                    PgmapSummary {
                        address: format!("{:#x}", p.address),
                        type_name: ctx.type_name(p.raw_type).to_owned(),
                        ranges: p.ranges.clone(),
                        discovered: p.discovered,
                        teardown: p.teardown,
                        counters: p.counters.clone(),
                        live_refs,
                        mapped_pages,
                    }
                })
                .collect(),
            findings_total: agg.total_findings(),
            findings: agg
                .findings()
                .iter()
                .map(|f| FindingOut {
                    finding: f.clone(),
                    stack: stack(f.stack_id),
                })
                .collect(),
            command: None,
            calls,
            warnings: Vec::new(),
        }
    }

    /// Tables for a terminal: pgmaps, rules, then the latest `findings` blocks of findings.
    pub fn render(&self, findings: usize) -> String {
        let mut out = String::new();
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED).set_header([
            "pgmap",
            "type",
            "range (pfn)",
            "pages",
            "inserts",
            "gets",
            "puts",
            "frees",
            "unmaps",
            "live refs",
            "mapped",
        ]);
        for p in &self.pgmaps {
            let range = match (
                p.ranges.iter().map(|r| r.0).min(),
                p.ranges.iter().map(|r| r.1).max(),
            ) {
                (Some(s), Some(e)) => format!("{s:#x}-{e:#x}"),
                _ => "?".into(),
            };
            let state = if p.teardown {
                " (torn down)"
            } else if p.discovered {
                " (found)"
            } else {
                ""
            };
            let c = &p.counters;
            t.add_row([
                format!("{}{state}", p.address),
                printable(&p.type_name).into_owned(),
                range,
                c.pages_seen.to_string(),
                c.inserts.to_string(),
                c.gets.to_string(),
                c.puts.to_string(),
                c.frees.to_string(),
                c.unmaps.to_string(),
                p.live_refs.to_string(),
                p.mapped_pages.to_string(),
            ]);
        }
        out.push_str(&format!("{t}\n"));
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_header(["rule", "findings", "state"]);
        for r in &self.rules {
            let state = match &r.coverage {
                Coverage::Checked => "checked".to_owned(),
                Coverage::Unchecked(why) => format!("unchecked: {why}"),
            };
            t.add_row([r.rule.to_string(), r.count.to_string(), state]);
        }
        out.push_str(&format!("{t}\n"));
        let dropped = self.dropped.map_or("unknown".into(), |d| d.to_string());
        out.push_str(&format!(
            "kernel {}, attach {}, {} events, {dropped} dropped, {} findings\n",
            printable(&self.kernel),
            self.attach,
            self.events,
            self.findings_total
        ));
        if let Some(c) = &self.command {
            out.push_str(&format!(
                "command {} {}\n",
                printable(&c.argv.join(" ")),
                c.outcome
            ));
        }
        if !self.calls.is_empty() {
            let calls: Vec<String> = self
                .calls
                .iter()
                .map(|(f, n)| format!("{} {n}", printable(f)))
                .collect();
            out.push_str(&format!(
                "probed functions entered (any page): {}\n",
                calls.join(", ")
            ));
        }
        out.push_str(&render_findings(&self.findings, findings));
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }
}

/// The text blocks of the last `blocks` groups of `findings` (see [`groups`]).
pub fn render_findings(findings: &[FindingOut], blocks: usize) -> String {
    let groups = groups(findings);
    groups[groups.len().saturating_sub(blocks)..]
        .iter()
        .map(|group| render_group(group))
        .collect()
}

/// Findings of one rule with one kernel stack and one task: a teardown under many pages is
/// one block, not one per page.
fn groups(findings: &[FindingOut]) -> Vec<Vec<&FindingOut>> {
    group_by(findings, |f| {
        (
            f.finding.rule,
            &f.stack,
            f.finding.tgid,
            f.finding.pgmap.address,
        )
    })
}

/// `items` in groups of equal `key`, each group and the groups in order of first appearance.
pub fn group_by<'a, T, K: PartialEq>(items: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<Vec<&'a T>> {
    let mut groups: Vec<(K, Vec<&'a T>)> = Vec::new();
    for item in items {
        let k = key(item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, group)) => group.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Pages listed in a block; the count says how many more there are.
const PAGES_SHOWN: usize = 16;

fn render_group(group: &[&FindingOut]) -> String {
    let f = &group[0].finding;
    let range = match (f.pgmap.start, f.pgmap.end) {
        (Some(s), Some(e)) => format!(" {s:#x}-{e:#x}"),
        _ => String::new(),
    };
    let mut pfns: Vec<u64> = group.iter().map(|g| g.finding.pfn).collect();
    pfns.sort_unstable();
    let pages = if group.len() == 1 {
        format!("pfn {:#x} page {:#x}", f.pfn, f.page)
    } else {
        format!("{} pages, pfn {}", group.len(), pfn_ranges(&pfns))
    };
    let mut s = format!(
        "\n[{}] {pages} ({} pgmap {:#x}{range}) {}/{} {} at {:.6}s\n",
        f.rule,
        printable(&f.pgmap.type_name),
        f.pgmap.address,
        printable(&f.comm),
        f.tgid,
        f.pid,
        f.ts_ns as f64 / 1e9
    );
    let same_detail = group
        .iter()
        .all(|g| g.finding.detail == f.detail && g.finding.held_by == f.held_by);
    if same_detail {
        s.push_str(&format!("  {}\n", printable(&f.detail)));
    }
    for frame in &group[0].stack {
        s.push_str(&format!("    {}\n", printable(frame)));
    }
    if group.len() > 1 || !f.held_by.is_empty() {
        s.push_str("  pages:\n");
        for g in group.iter().take(PAGES_SHOWN) {
            let g = &g.finding;
            let why = if same_detail {
                String::new()
            } else {
                format!(": {}", printable(&g.detail))
            };
            let held = if g.held_by.is_empty() {
                String::new()
            } else {
                format!("; held: {}", printable(&g.held_by.join("; ")))
            };
            s.push_str(&format!(
                "    pfn {:#x} page {:#x}{why}{held}\n",
                g.pfn, g.page
            ));
        }
        if group.len() > PAGES_SHOWN {
            s.push_str(&format!("    … and {} more\n", group.len() - PAGES_SHOWN));
        }
    }
    if !f.recent.is_empty() {
        s.push_str(&format!(
            "  recent transitions of pfn {:#x} (oldest first):\n",
            f.pfn
        ));
        for t in &f.recent {
            s.push_str(&transition_line(t));
        }
    }
    s
}

/// Sorted pfns as ranges: "0x40000-0x4000f, 0x40020".
fn pfn_ranges(pfns: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < pfns.len() {
        let mut j = i;
        while j + 1 < pfns.len() && pfns[j + 1] == pfns[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            format!("{:#x}", pfns[i])
        } else {
            format!("{:#x}-{:#x}", pfns[i], pfns[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

fn transition_line(t: &Transition) -> String {
    format!(
        "    {:>14.6} {:<8} {:<32} ref={} map={} n={} {}/{}\n",
        t.ts_ns as f64 / 1e9,
        t.kind.name(),
        t.function,
        t.refcount,
        t.mapcount,
        t.refs,
        printable(&t.comm),
        t.pid
    )
}

/// Replays a trace through the aggregator (what `report` and `check --trace` show).
pub fn from_trace<R: std::io::Read + Send>(
    mut reader: crate::trace::TraceReader<R>,
) -> Result<Summary, crate::trace::TraceError> {
    let plan = reader.header().plan.clone();
    let mut agg = Aggregator::new(crate::aggregate::KernelView::from_plan(&plan));
    reader.for_each_event(|ev| {
        agg.observe(ev);
    })?;
    let dropped = reader.footer().map(|f| f.dropped);
    let calls = reader.footer().map(|f| f.calls.clone()).unwrap_or_default();
    let mut summary = Summary::build(&agg, &plan, dropped, calls, |id| reader.stack(id).to_vec());
    summary.command = crate::trace::Footer::command(reader.footer(), reader.header());
    summary.warnings.extend(reader.warning().map(str::to_owned));
    if reader.header().synthetic {
        summary
            .warnings
            .push("synthetic trace (made by a test, not recorded)".into());
    }
    Ok(summary)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        aggregate::synth::{Probes, healthy},
        trace::TraceReader,
    };
    use refwatch_common::RefModel;

    /// A synthetic trace's summary: healthy events of `model`, one insert at refcount 0 with
    /// `breach`.
    pub(crate) fn summary(model: RefModel, breach: bool, dropped: u64) -> Summary {
        let p = Probes::for_model(model);
        let mut events = healthy(&p, false, 2, &[]);
        if breach {
            let i = events
                .iter()
                .position(|e| e.kind == refwatch_common::EventKind::Insert as u8)
                .unwrap();
            events[i].refcount = 0;
        }
        let bytes = p.trace(&events, dropped);
        from_trace(TraceReader::new(&bytes[..]).unwrap()).unwrap()
    }

    #[test]
    fn pfns_read_as_ranges() {
        assert_eq!(pfn_ranges(&[1, 2, 3, 5, 7, 8]), "0x1-0x3, 0x5, 0x7-0x8");
        assert_eq!(pfn_ranges(&[]), "");
    }

    #[test]
    fn json_and_tables_carry_the_finding() {
        let s = summary(RefModel::FsdaxOneBased, true, 0);
        let json = serde_json::to_value(&s).unwrap();
        let f = &json["findings"][0];
        assert_eq!(f["rule"], "insert-zero-ref");
        assert_eq!(f["pgmap"]["type"], "fsdax");
        assert!(f["stack"][0].as_str().unwrap().starts_with("frame_"));
        assert!(f["recent"].as_array().is_some_and(|r| !r.is_empty()));
        assert_eq!(json["rules"][0]["state"], "checked");
        let text = s.render(5);
        assert!(
            text.contains("[insert-zero-ref]") && text.contains("synthetic"),
            "{text}"
        );
    }
}
