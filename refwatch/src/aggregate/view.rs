//! What the aggregator and its rules know of the kernel: era, attached probes, pgmap types.

use std::collections::BTreeMap;

use refwatch_common::{
    Arg, CATALOG, Event, EventKind, Probe, RefModel,
    catalog::{CATALOG_LEN, Level},
    event::PGMAP_TYPE_UNKNOWN,
    model::{MemoryType, moved},
};

use super::{Coverage, Rule, rules};
use crate::plan::Plan;

/// What the aggregator needs to know about the kernel, taken from the [`Plan`].
#[derive(Clone, Debug)]
pub struct KernelView {
    pub model: RefModel,
    pub(super) attached: [bool; CATALOG_LEN],
    pub(super) pgmap_types: BTreeMap<u8, String>,
    /// Per-event lookups, precomputed: the rules' type of each raw pgmap type, and whether
    /// unmaps are probed at each [`Level`].
    types: [MemoryType; 256],
    unmap_levels: [bool; 3],
    /// Per catalog entry: are unmaps probed at the level of its site.
    pub(super) tracked: [bool; CATALOG_LEN],
    /// Unmaps come as zapped address ranges, matched against the inserts' (mm, address).
    range_unmaps: bool,
    /// The kernel's `FOLL_PIN`, to read the GUP flags events carry; 0 where unknown.
    pub(super) foll_pin: u64,
}

impl KernelView {
    pub fn new(
        model: RefModel,
        attached: impl IntoIterator<Item = u8>,
        pgmap_types: BTreeMap<u8, String>,
    ) -> Self {
        let mut mask = [false; CATALOG_LEN];
        for id in attached {
            if let Some(slot) = mask.get_mut(id as usize) {
                *slot = true;
            }
        }
        let mut types = [MemoryType::Unknown; 256];
        for (&raw, name) in pgmap_types
            .iter()
            .filter(|(raw, _)| **raw != PGMAP_TYPE_UNKNOWN)
        {
            types[raw as usize] = MemoryType::from_name(name);
        }
        let mut unmap_levels = [false; 3];
        for (p, _) in CATALOG
            .iter()
            .zip(mask)
            .filter(|(p, on)| *on && p.kind == EventKind::Unmap)
        {
            match p.arg {
                // A zap of a range takes its PMDs and PUDs with its PTEs.
                Arg::Range { .. } => unmap_levels = [true; 3],
                _ => unmap_levels[p.site.level() as usize] = true,
            }
        }
        // A zap of ranges, not a move: with the per-PTE unmap probe in its place (`--with`),
        // inserts are counted, not keyed, though mremap is still probed.
        let range_unmaps = CATALOG
            .iter()
            .zip(mask)
            .any(|(p, on)| on && matches!(p.arg, Arg::Range { .. }));
        // A range zap finds only the inserts that said where they map (not PUD ones). A
        // migration maps device-private entries, whose zaps no unmap probe sees.
        let tracked = CATALOG.map(|p| {
            unmap_levels[p.site.level() as usize]
                && (!range_unmaps || p.at.is_some())
                && !matches!(p.arg, Arg::Migration { .. })
        });
        Self {
            model,
            attached: mask,
            pgmap_types,
            types,
            unmap_levels,
            tracked,
            range_unmaps,
            foll_pin: 0,
        }
    }

    /// The kernel's `FOLL_PIN` (`None`: unknown, GUP's gets and puts count as references).
    pub fn with_foll_pin(self, foll_pin: Option<u64>) -> Self {
        Self {
            foll_pin: foll_pin.unwrap_or(0),
            ..self
        }
    }

    pub fn from_plan(plan: &Plan) -> Self {
        Self::new(
            plan.model,
            plan.attached().map(|p| p.id),
            plan.pgmap_types.clone(),
        )
        .with_foll_pin(plan.foll_pin)
    }

    pub(super) fn attached_probes(&self) -> impl Iterator<Item = &'static Probe> {
        CATALOG
            .iter()
            .zip(self.attached)
            .filter(|(_, on)| *on)
            .map(|(p, _)| p)
    }

    pub fn sees(&self, kind: EventKind) -> bool {
        self.attached_probes().any(|p| p.carries(kind))
    }

    pub(super) fn unmap_seen(&self, level: Level) -> bool {
        self.unmap_levels[level as usize]
    }

    pub fn type_name(&self, raw: u8) -> &str {
        if raw == PGMAP_TYPE_UNKNOWN {
            return "unknown";
        }
        self.pgmap_types.get(&raw).map_or("unknown", String::as_str)
    }

    pub(super) fn pg_type(&self, raw: u8) -> MemoryType {
        self.types[raw as usize]
    }

    /// Whether an insert through `probe` is a mapping that a range zap will take away.
    pub(super) fn keyed(&self, probe: &Probe) -> bool {
        self.range_unmaps && probe.at.is_some() && self.model != RefModel::ZeroBased
    }

    /// What an event of `kind` moves, as a history's `n=` shows it: a get's or put's references
    /// as the rules count them (a pin is `GUP_PIN_COUNTING_BIAS`), one mapping for an insert
    /// that says where it maps (its `extra` is the address), else the event's own count.
    pub fn moves(&self, probe: &Probe, kind: EventKind, ev: &Event) -> u64 {
        match kind {
            EventKind::Get | EventKind::Put => moved(probe, ev, self.foll_pin).unsigned_abs(),
            EventKind::Insert if probe.at.is_some() => 1,
            _ => ev.extra,
        }
    }

    pub fn coverage(&self, rule: Rule) -> Coverage {
        rules::coverage(rule, self)
    }
}
