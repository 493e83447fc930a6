//! `refwatch check`'s verdict and exit code, decided from a summary and the check's options.
//! Exit codes follow kselftest: 0 pass, 1 fail, 4 skip (inconclusive); 2 is left to usage and
//! environment errors.

use serde::Serialize;

use crate::{
    aggregate::{Coverage, Rule},
    summary::Summary,
};

/// What a check tolerates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Findings tolerated before failing.
    pub max_violations: u64,
    /// Only these rules count (and each must be checkable); empty: all.
    pub rules: Vec<Rule>,
    /// No ZONE_DEVICE event in the whole check passes instead of being inconclusive.
    pub allow_idle: bool,
    /// A command that failed does not fail the check.
    pub allow_command_failure: bool,
}

impl Policy {
    fn selects(&self, rule: Rule) -> bool {
        self.rules.is_empty() || self.rules.contains(&rule)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    Pass { count: u64 },
    Fail { count: u64, reasons: Vec<String> },
    Inconclusive { count: u64, reasons: Vec<String> },
}

pub const EXIT_PASS: u8 = 0;
pub const EXIT_FAIL: u8 = 1;
/// kselftest's KSFT_SKIP.
pub const EXIT_INCONCLUSIVE: u8 = 4;

impl Verdict {
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Pass { .. } => EXIT_PASS,
            Verdict::Fail { .. } => EXIT_FAIL,
            Verdict::Inconclusive { .. } => EXIT_INCONCLUSIVE,
        }
    }
}

/// One rule's outcome: a JUnit test case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOutcome {
    /// No finding, or findings within `--max-violations`.
    Passed {
        count: u64,
    },
    Failed {
        count: u64,
    },
    /// Not judged: why.
    Skipped(String),
}

/// Findings of the selected rules.
fn counted(s: &Summary, p: &Policy) -> u64 {
    s.rules
        .iter()
        .filter(|r| p.selects(r.rule))
        .map(|r| r.count)
        .sum()
}

/// Why the whole capture says too little to pass, rules aside.
fn capture_gaps(s: &Summary, p: &Policy) -> Vec<String> {
    let mut gaps = Vec::new();
    match s.dropped {
        Some(0) => {}
        Some(n) => gaps.push(format!("{n} events were dropped")),
        None => gaps.push("the drop count is unknown".into()),
    }
    if s.events == 0 && !p.allow_idle {
        gaps.push(
            "no device memory seen: not one ZONE_DEVICE event in the whole check \
             (--allow-idle passes that)"
                .into(),
        );
    }
    gaps
}

pub fn decide(s: &Summary, p: &Policy) -> Verdict {
    let count = counted(s, p);
    let mut failures = Vec::new();
    if count > p.max_violations {
        failures.push(format!(
            "{count} findings, more than the {} allowed",
            p.max_violations
        ));
    }
    if let Some(c) = &s.command
        && c.outcome.failed()
        && !p.allow_command_failure
    {
        failures.push(format!("the command {}", c.outcome));
    }
    if !failures.is_empty() {
        return Verdict::Fail {
            count,
            reasons: failures,
        };
    }
    // A rule asked for by name must be checkable; the default set is whatever this kernel can.
    let mut reasons: Vec<String> = s
        .rules
        .iter()
        .filter(|r| p.rules.contains(&r.rule))
        .filter_map(|r| match &r.coverage {
            Coverage::Unchecked(why) => Some(format!("{} is unchecked: {why}", r.rule)),
            Coverage::Checked => None,
        })
        .collect();
    reasons.extend(capture_gaps(s, p));
    if reasons.is_empty() {
        Verdict::Pass { count }
    } else {
        Verdict::Inconclusive { count, reasons }
    }
}

/// Every rule's outcome, consistent with [`decide`]: a rule with findings fails when the
/// findings counted exceed the limit; one without is skipped when it was not checked, or when
/// the capture as a whole says too little (drops, no device memory).
pub fn rule_outcomes(s: &Summary, p: &Policy) -> Vec<(Rule, RuleOutcome)> {
    let over = counted(s, p) > p.max_violations;
    let gaps = capture_gaps(s, p);
    s.rules
        .iter()
        .map(|r| {
            let outcome = if !p.selects(r.rule) {
                RuleOutcome::Skipped("not selected (--rule)".into())
            } else if r.count > 0 && over {
                RuleOutcome::Failed { count: r.count }
            } else if let Coverage::Unchecked(why) = &r.coverage {
                RuleOutcome::Skipped(format!("unchecked on this kernel: {why}"))
            } else if r.count == 0 && !gaps.is_empty() {
                RuleOutcome::Skipped(gaps.join("; "))
            } else {
                RuleOutcome::Passed { count: r.count }
            };
            (r.rule, outcome)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capture::{CommandOutcome, CommandRun},
        summary::tests::summary,
    };
    use clap::ValueEnum;
    use refwatch_common::RefModel;

    fn policy(max_violations: u64, rules: &[Rule]) -> Policy {
        Policy {
            max_violations,
            rules: rules.to_vec(),
            ..Policy::default()
        }
    }

    fn exit(s: &Summary, p: &Policy) -> u8 {
        decide(s, p).exit_code()
    }

    #[test]
    fn findings_over_the_limit_fail() {
        let all = policy(0, &[]);
        assert_eq!(
            exit(&summary(RefModel::ZeroBased, false, 0), &all),
            EXIT_PASS
        );
        let bad = summary(RefModel::ZeroBased, true, 0);
        assert_eq!(exit(&bad, &all), EXIT_FAIL);
        assert_eq!(exit(&bad, &policy(1, &[])), EXIT_PASS);
        assert_eq!(exit(&bad, &policy(0, &[Rule::TeardownBusy])), EXIT_PASS);
        // Findings decide before drops: a failure is a failure even if events were lost.
        assert_eq!(
            exit(&summary(RefModel::ZeroBased, true, 3), &all),
            EXIT_FAIL
        );
    }

    #[test]
    fn drops_and_unchecked_rules_asked_for_are_inconclusive() {
        let all = policy(0, &[]);
        assert_eq!(
            exit(&summary(RefModel::ZeroBased, false, 3), &all),
            EXIT_INCONCLUSIVE
        );
        let old = summary(RefModel::AllOneBased, false, 0);
        assert_eq!(exit(&old, &all), EXIT_PASS);
        assert_eq!(
            exit(&old, &policy(0, &[Rule::FreeWhileMapped])),
            EXIT_INCONCLUSIVE
        );
    }

    #[test]
    fn no_device_memory_seen_is_inconclusive_unless_allowed() {
        let mut idle = summary(RefModel::ZeroBased, false, 0);
        idle.events = 0;
        let mut p = policy(0, &[]);
        let v = decide(&idle, &p);
        assert_eq!(v.exit_code(), EXIT_INCONCLUSIVE);
        assert!(
            matches!(
                &v,
                Verdict::Inconclusive { reasons, .. }
                    if reasons[0].starts_with("no device memory seen")
            ),
            "{v:?}"
        );
        p.allow_idle = true;
        assert_eq!(exit(&idle, &p), EXIT_PASS);
    }

    #[test]
    fn a_failed_command_fails_unless_allowed() {
        let mut s = summary(RefModel::ZeroBased, false, 0);
        let mut p = policy(0, &[]);
        for (outcome, code) in [
            (CommandOutcome::Exited { status: 0 }, EXIT_PASS),
            (CommandOutcome::Exited { status: 3 }, EXIT_FAIL),
            (CommandOutcome::Killed { signal: Some(9) }, EXIT_FAIL),
            (CommandOutcome::Killed { signal: None }, EXIT_FAIL),
            (CommandOutcome::Stopped, EXIT_PASS),
        ] {
            s.command = Some(CommandRun {
                argv: vec!["fio".into()],
                outcome,
            });
            assert_eq!(exit(&s, &p), code, "{outcome:?}");
        }
        s.command.as_mut().unwrap().outcome = CommandOutcome::Exited { status: 1 };
        assert_eq!(
            decide(&s, &p),
            Verdict::Fail {
                count: 0,
                reasons: vec!["the command exited with status 1".into()]
            }
        );
        p.allow_command_failure = true;
        assert_eq!(exit(&s, &p), EXIT_PASS);
    }

    #[test]
    fn rule_outcomes_agree_with_the_verdict() {
        let bad = summary(RefModel::ZeroBased, true, 0);
        let outcomes = rule_outcomes(&bad, &policy(0, &[]));
        assert_eq!(outcomes.len(), Rule::value_variants().len());
        assert_eq!(
            outcomes[0],
            (Rule::InsertZeroRef, RuleOutcome::Failed { count: 1 })
        );
        assert!(outcomes[1..].iter().all(|(_, o)| matches!(
            o,
            RuleOutcome::Passed { count: 0 } | RuleOutcome::Skipped(_)
        )));
        // Tolerated findings pass.
        assert_eq!(
            rule_outcomes(&bad, &policy(1, &[]))[0].1,
            RuleOutcome::Passed { count: 1 }
        );
        let old = rule_outcomes(&summary(RefModel::AllOneBased, false, 0), &policy(0, &[]));
        let free = old
            .iter()
            .find(|(r, _)| *r == Rule::FreeWhileMapped)
            .unwrap();
        assert!(
            matches!(
                &free.1,
                RuleOutcome::Skipped(why) if why.starts_with("unchecked on this kernel")
            ),
            "{free:?}"
        );
        let dropped = rule_outcomes(&summary(RefModel::ZeroBased, false, 2), &policy(0, &[]));
        assert!(
            dropped
                .iter()
                .all(|(_, o)| matches!(o, RuleOutcome::Skipped(_)))
        );
        assert!(
            dropped
                .iter()
                .any(|(_, o)| matches!(o, RuleOutcome::Skipped(why) if why.contains("dropped")))
        );
        let only = rule_outcomes(&bad, &policy(0, &[Rule::TeardownBusy]));
        assert_eq!(
            only[0].1,
            RuleOutcome::Skipped("not selected (--rule)".into())
        );
    }
}
