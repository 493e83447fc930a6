//! Which attach mechanisms (kprobes, fentry) the running kernel offers, and what to say when
//! it offers none that the plan could use.

use crate::{
    facts::KPROBE_PMU,
    plan::{AttachMode, ProbeEntry},
};

/// Whether fentry programs load here: only a real load can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fentry {
    Allowed,
    /// The kernel refused the load; the error.
    Refused(String),
    /// Not tried: why.
    Unknown(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mechanisms {
    /// The kprobe PMU exists.
    pub kprobes: bool,
    pub fentry: Fentry,
}

impl Mechanisms {
    /// False only where the mechanism is known to be missing (an unknown fentry may work).
    pub fn usable(&self, mode: AttachMode) -> bool {
        match mode {
            AttachMode::Kprobe => self.kprobes,
            AttachMode::Fentry => !matches!(self.fentry, Fentry::Refused(_)),
            AttachMode::Auto => self.usable(AttachMode::Kprobe) || self.usable(AttachMode::Fentry),
        }
    }

    /// The modes of `entry` that can attach here, best first.
    pub fn modes(&self, entry: &ProbeEntry) -> Vec<AttachMode> {
        entry
            .modes
            .iter()
            .copied()
            .filter(|&m| self.usable(m))
            .collect()
    }

    /// Why nothing the plan uses can attach, and what would fix it; None when some entry can.
    pub fn nothing_attaches<'a>(
        &self,
        mut used: impl Iterator<Item = &'a ProbeEntry>,
    ) -> Option<Vec<String>> {
        if used.any(|e| !self.modes(e).is_empty()) {
            return None;
        }
        let mut why = Vec::new();
        if !self.kprobes {
            why.push(format!(
                "kprobes: {KPROBE_PMU} is absent: the kernel is built without CONFIG_KPROBES \
                 (kprobe programs need CONFIG_KPROBES=y and CONFIG_KPROBE_EVENTS=y)"
            ));
        }
        if let Fentry::Refused(e) = &self.fentry {
            why.push(format!(
                "fentry: the kernel refused to load an fentry program ({e}): fentry needs BPF \
                 trampolines (CONFIG_BPF_JIT=y, CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y) and a \
                 kernel that lets them load (no lockdown, no LSM or container policy refusing \
                 BPF tracing programs)"
            ));
        }
        why.push(
            "to fix: run refwatch on a kernel built with CONFIG_KPROBES=y and \
             CONFIG_KPROBE_EVENTS=y, or one that allows fentry programs"
                .into(),
        );
        Some(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Resolution;

    fn entry(modes: &[AttachMode]) -> ProbeEntry {
        ProbeEntry {
            id: 0,
            function: "gup_put_folio".into(),
            kind: refwatch_common::EventKind::Put,
            site: refwatch_common::Site::GupPut,
            resolution: Resolution::Use,
            modes: modes.to_vec(),
            attached: None,
        }
    }

    #[test]
    fn no_kprobes_and_fentry_refused_is_said_plainly() {
        let m = Mechanisms {
            kprobes: false,
            fentry: Fentry::Refused("Operation not permitted (os error 1)".into()),
        };
        let e = entry(&[AttachMode::Fentry]);
        assert!(m.modes(&e).is_empty());
        let why = m.nothing_attaches([&e].into_iter()).unwrap();
        assert!(why[0].contains("CONFIG_KPROBES"), "{why:?}");
        assert!(why[1].contains("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS"));
        assert!(why[1].contains("Operation not permitted"));
        assert!(why.last().unwrap().starts_with("to fix:"));
    }

    #[test]
    fn one_usable_mode_is_enough() {
        let e = entry(&[AttachMode::Kprobe, AttachMode::Fentry]);
        let kprobes_only = Mechanisms {
            kprobes: true,
            fentry: Fentry::Refused("EPERM".into()),
        };
        assert_eq!(kprobes_only.modes(&e), [AttachMode::Kprobe]);
        assert_eq!(kprobes_only.nothing_attaches([&e].into_iter()), None);
        // Not knowing is not refusing: without root fentry may still load.
        let unknown = Mechanisms {
            kprobes: false,
            fentry: Fentry::Unknown("needs root to try"),
        };
        assert_eq!(unknown.modes(&e), [AttachMode::Fentry]);
        assert_eq!(unknown.nothing_attaches([&e].into_iter()), None);
    }
}
