//! The probe plan: the catalog resolved against one kernel's facts. Pure: facts in, plan out.

use std::collections::{BTreeMap, BTreeSet};

use refwatch_common::{
    CATALOG, EventKind, KernelVersion, Probe, RefModel, Site,
    catalog::{FENTRY_STRUCT_ARGS_SINCE, INLINES, NEWEST_CHECKED},
    event::probe_function,
    model::{FOLL_PIN_MACRO, FOLL_PIN_MACRO_UNTIL, era},
};
use serde::{Deserialize, Serialize};

use crate::facts::KernelFacts;

/// How programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Kprobe,
    Fentry,
    /// fentry where the kernel allows it, else kprobe, per function.
    Auto,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Kprobe => "kprobe",
            AttachMode::Fentry => "fentry",
            AttachMode::Auto => "auto",
        })
    }
}

/// The outcome for one catalog entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Resolution {
    /// Will be attached (or was, see [`ProbeEntry::attached`]).
    Use,
    /// Not in kallsyms: inlined everywhere, or not in this kernel.
    Missing,
    /// In kallsyms but with no BTF prototype, so its argument registers cannot be trusted.
    NoPrototype,
    /// Present, but its prototype is not the one this entry was written for.
    OtherPrototype { found: Vec<String> },
    /// Another entry of the same site already covers the transition.
    Superseded { by: String },
    /// The entry does not apply to this kernel version.
    NotThisKernel {
        since: KernelVersion,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<KernelVersion>,
    },
    /// The caller it must be called from is not in kallsyms.
    CallerMissing { caller: String },
    /// Left out on request (`--skip`), e.g. a function normal pages pass through often; the
    /// rules that need it are then reported unchecked.
    Skipped,
    /// Left out unless asked for (`--with`): every normal page passes it, and no rule needs
    /// it on this kernel: a mapping holds a reference and a mapcount of its own (6.15+), or
    /// a cheaper entry of its site sees the same unmaps (range zaps before that).
    Hot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeEntry {
    pub id: u8,
    pub function: String,
    pub kind: EventKind,
    pub site: Site,
    #[serde(flatten)]
    pub resolution: Resolution,
    /// Attach modes this entry may use, best first.
    pub modes: Vec<AttachMode>,
    /// The mode it was attached with, once attached; the error if attaching failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Result<AttachMode, String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineCoverage {
    pub name: String,
    /// True when the name is, unexpectedly, an out-of-line symbol on this kernel.
    pub out_of_line: bool,
    pub covered_by: Vec<String>,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub kernel: String,
    pub version: (u8, u8),
    pub era: String,
    pub model: RefModel,
    pub requested: AttachMode,
    pub probes: Vec<ProbeEntry>,
    pub inlines: Vec<InlineCoverage>,
    pub pgmap_types: BTreeMap<u8, String>,
    /// The kernel's `FOLL_PIN`, which tells GUP's pins from its plain references; absent
    /// from traces of older refwatch versions.
    #[serde(default)]
    pub foll_pin: Option<u64>,
    /// Problems that stop refwatch from running at all on this kernel.
    pub blockers: Vec<String>,
    /// What the user should know but does not stop refwatch.
    #[serde(default)]
    pub notes: Vec<String>,
}

fn matches_prototype(probe: &Probe, found: &[String]) -> bool {
    probe.params.len() == found.len()
        && probe
            .params
            .iter()
            .zip(found)
            .all(|(want, got)| *want == "_" || want == got)
}

/// Whether an fentry program can carry this entry on this kernel: older trampolines refuse
/// struct arguments passed by value.
pub fn fentry_capable(probe: &Probe, version: (u8, u8)) -> bool {
    KernelVersion::from(version) >= FENTRY_STRUCT_ARGS_SINCE || !probe.struct_by_value()
}

fn modes_for(probe: &Probe, facts: &KernelFacts, requested: AttachMode) -> Vec<AttachMode> {
    let fentry_ok = fentry_capable(probe, facts.version);
    match requested {
        AttachMode::Kprobe => vec![AttachMode::Kprobe],
        AttachMode::Fentry if fentry_ok => vec![AttachMode::Fentry],
        AttachMode::Fentry => vec![AttachMode::Kprobe],
        AttachMode::Auto if !facts.kprobes => [AttachMode::Fentry]
            .into_iter()
            .filter(|_| fentry_ok)
            .collect(),
        // kprobe first: an event's stack unwound from an fentry program walks the program and
        // its trampoline too, and costs about twice as much (docs/performance.md, run O);
        // without stacks the two modes cost a device event about the same.
        AttachMode::Auto if fentry_ok => vec![AttachMode::Kprobe, AttachMode::Fentry],
        AttachMode::Auto => vec![AttachMode::Kprobe],
    }
}

pub fn resolve(facts: &KernelFacts, requested: AttachMode) -> Plan {
    let era = era(facts.version);
    // Whether each entry can be used at all on this kernel, site aside.
    let mut resolutions: Vec<Resolution> = CATALOG
        .iter()
        .map(|probe| {
            if !probe.applies_to(facts.version) {
                Resolution::NotThisKernel {
                    since: probe.since,
                    until: probe.last_version(),
                }
            } else if !facts.symbols.contains_key(probe.function) {
                Resolution::Missing
            } else if let Some(caller) = probe.caller.filter(|c| !facts.symbols.contains_key(*c)) {
                Resolution::CallerMissing {
                    caller: caller.to_owned(),
                }
            } else {
                match facts.prototypes.get(probe.function) {
                    None => Resolution::NoPrototype,
                    Some(found) if !matches_prototype(probe, found) => Resolution::OtherPrototype {
                        found: found.clone(),
                    },
                    Some(_) => Resolution::Use,
                }
            }
        })
        .collect();
    // One entry per site: the first that resolves, in catalog order, but a hot one (every
    // normal page passes it) only where no other entry of its site resolves; there it is
    // left out by default, and `--with` swaps it in.
    let mut taken: BTreeMap<Site, (&str, bool)> = BTreeMap::new();
    let mut order: Vec<usize> = (0..CATALOG.len()).collect();
    order.sort_by_key(|&id| CATALOG[id].hot);
    for id in order {
        let probe = &CATALOG[id];
        if resolutions[id] != Resolution::Use {
            continue;
        }
        resolutions[id] = match taken.get(&probe.site) {
            Some((_, false)) if probe.hot => Resolution::Hot,
            Some((by, _)) => Resolution::Superseded {
                by: (*by).to_owned(),
            },
            None => {
                // A hot entry still takes its site: the alternatives it stands for are not
                // the way to see these transitions here either.
                taken.insert(probe.site, (probe.function, probe.hot));
                if probe.hot && era.model.mapping_takes_ref() {
                    Resolution::Hot
                } else {
                    Resolution::Use
                }
            }
        };
    }
    let probes: Vec<ProbeEntry> = CATALOG
        .iter()
        .zip(resolutions)
        .enumerate()
        .map(|(id, (probe, resolution))| ProbeEntry {
            id: id as u8,
            function: probe.function.to_owned(),
            kind: probe.kind,
            site: probe.site,
            resolution,
            modes: modes_for(probe, facts, requested),
            attached: None,
        })
        .collect();
    let used: BTreeSet<&str> = probes
        .iter()
        .filter(|p| p.resolution == Resolution::Use)
        .map(|p| p.function.as_str())
        .collect();
    let inlines = INLINES
        .iter()
        .map(|i| InlineCoverage {
            name: i.name.to_owned(),
            out_of_line: facts.symbols.contains_key(i.name),
            covered_by: i
                .covered_by
                .iter()
                .filter(|f| used.contains(**f))
                .map(|f| (*f).to_owned())
                .collect(),
            note: i.note.to_owned(),
        })
        .collect();
    let mut blockers = Vec::new();
    if let Err(e) = &facts.layout {
        blockers.push(format!("struct layout unknown: {e}"));
    }
    let no_kprobes = format!(
        "kprobes are not available ({} is absent: CONFIG_KPROBES off?)",
        crate::facts::KPROBE_PMU
    );
    if !facts.kprobes && requested == AttachMode::Kprobe {
        blockers.push(no_kprobes.clone());
    }
    if facts.version == (0, 0) {
        blockers.push(format!(
            "kernel release {:?} has no version refwatch can read",
            facts.release
        ));
    }
    if used.is_empty() {
        let why = if facts.btf {
            ""
        } else {
            " (without BTF no prototype can be checked)"
        };
        blockers.push(format!("no catalog function resolved on this kernel{why}"));
    }
    let mut notes = Vec::new();
    if !facts.kprobes && requested != AttachMode::Kprobe {
        let stuck: Vec<&str> = probes
            .iter()
            .filter(|p| p.resolution == Resolution::Use && p.modes.is_empty())
            .map(|p| p.function.as_str())
            .collect();
        let stuck = if stuck.is_empty() {
            String::new()
        } else {
            format!(", so {} cannot be attached", stuck.join(", "))
        };
        notes.push(format!("{no_kprobes}: fentry only{stuck}"));
    }
    let version = KernelVersion::from(facts.version);
    let foll_pin = facts
        .foll_pin
        .or_else(|| (version <= FOLL_PIN_MACRO_UNTIL).then_some(FOLL_PIN_MACRO));
    if foll_pin.is_none() {
        notes.push(
            "FOLL_PIN is not in BTF: GUP's own gets and puts (try_grab_folio, gup_put_folio) \
             count one reference a pin, so a second unpin of a page its mapping holds may \
             be missed"
                .into(),
        );
    }
    if version > NEWEST_CHECKED {
        notes.push(format!(
            "{version} is newer than any kernel the catalog was checked on ({NEWEST_CHECKED}): \
             probes are resolved from kallsyms and BTF as usual, and the rules of the newest era \
             ({}) apply",
            era.name
        ));
    }
    Plan {
        kernel: facts.release.clone(),
        version: facts.version,
        era: era.name.to_owned(),
        model: era.model,
        requested,
        probes,
        inlines,
        pgmap_types: facts.pgmap_types.clone(),
        foll_pin,
        blockers,
        notes,
    }
}

impl Plan {
    /// Leaves out the entries of catalog function `function`; false if the catalog has none.
    pub fn skip(&mut self, function: &str) -> bool {
        self.retag(function, &Resolution::Use, Resolution::Skipped)
    }

    /// Attaches the entries of catalog function `function` that are off by default
    /// ([`Resolution::Hot`]), in place of the entry their site uses; false if the catalog
    /// has none.
    pub fn with(&mut self, function: &str) -> bool {
        let sites: Vec<Site> = self
            .probes
            .iter()
            .filter(|p| p.function == function && p.resolution == Resolution::Hot)
            .map(|p| p.site)
            .collect();
        for entry in self
            .probes
            .iter_mut()
            .filter(|p| sites.contains(&p.site) && p.resolution == Resolution::Use)
        {
            entry.resolution = Resolution::Superseded {
                by: function.to_owned(),
            };
        }
        self.retag(function, &Resolution::Hot, Resolution::Use)
    }

    fn retag(&mut self, function: &str, from: &Resolution, to: Resolution) -> bool {
        let mut known = false;
        for entry in self.probes.iter_mut().filter(|p| p.function == function) {
            known = true;
            if entry.resolution == *from {
                entry.resolution = to.clone();
            }
        }
        known
    }

    pub fn used(&self) -> impl Iterator<Item = &ProbeEntry> {
        self.probes
            .iter()
            .filter(|p| p.resolution == Resolution::Use)
    }

    /// Entries that are attached and delivering events.
    pub fn attached(&self) -> impl Iterator<Item = &ProbeEntry> {
        self.probes
            .iter()
            .filter(|p| matches!(p.attached, Some(Ok(_))))
    }

    /// Whether any attached probe carries events of `kind`.
    pub fn sees(&self, kind: EventKind) -> bool {
        self.attached()
            .any(|p| CATALOG[usize::from(p.id)].carries(kind))
    }

    /// The function name of a catalog id (or of a watchpoint's).
    pub fn function(&self, id: u8) -> &str {
        self.probes
            .get(id as usize)
            .map_or_else(|| probe_function(id), |p| p.function.as_str())
    }

    pub fn pgmap_type_name(&self, raw: u8) -> &str {
        self.pgmap_types.get(&raw).map_or("unknown", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use refwatch_common::{KernelVersion, catalog::Level};

    use super::*;

    #[test]
    fn versions_keep_their_text() {
        let entry = Resolution::NotThisKernel {
            since: KernelVersion::ANY,
            until: Some(KernelVersion::new(6, 14)),
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            text,
            r#"{"status":"not_this_kernel","since":"0.0","until":"6.14"}"#
        );
        assert_eq!(serde_json::from_str::<Resolution>(&text).unwrap(), entry);
        assert!(serde_json::from_str::<KernelVersion>(r#""6""#).is_err());
    }

    #[test]
    fn a_site_is_at_the_level_its_name_says() {
        for probe in &CATALOG {
            let name = serde_json::to_value(probe.site).unwrap();
            let name = name.as_str().unwrap();
            let level = if name.contains("pud") {
                Level::Pud
            } else if name.contains("pmd") {
                Level::Pmd
            } else {
                Level::Pte
            };
            assert_eq!(probe.site.level(), level, "{name}");
        }
    }
}
