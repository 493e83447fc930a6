//! `refwatch check --junit`: the check as JUnit XML for CI systems, one test case per rule
//! (and one for the command run after `--`).

use std::io::{self, Write};

use crate::{
    summary::{FindingOut, Summary, render_findings},
    verdict::{Policy, RuleOutcome, rule_outcomes},
};

const CLASS: &str = "refwatch.check";

/// `s` as XML character data or, with `attr`, an attribute value. Process names, stack frames
/// and a trace's strings are untrusted: markup characters become references, and characters
/// XML 1.0 cannot carry at all (C0 controls but tab, newline and return; U+FFFE, U+FFFF)
/// become `\xNN` / `\u{NNNN}` text.
fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\'' if attr => out.push_str("&apos;"),
            // An attribute's whitespace is normalized to spaces unless written as references.
            '\t' | '\n' | '\r' if attr => out.push_str(&format!("&#{};", c as u32)),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{fffe}' | '\u{ffff}' => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

pub fn write(out: &mut impl Write, s: &Summary, p: &Policy) -> io::Result<()> {
    let rules = rule_outcomes(s, p);
    let command_failed = s
        .command
        .as_ref()
        .is_some_and(|c| c.outcome.failed() && !p.allow_command_failure);
    let tests = rules.len() + usize::from(s.command.is_some());
    let failures = rules
        .iter()
        .filter(|(_, o)| matches!(o, RuleOutcome::Failed { .. }))
        .count()
        + usize::from(command_failed);
    let skipped = rules
        .iter()
        .filter(|(_, o)| matches!(o, RuleOutcome::Skipped(_)))
        .count();
    let counts = format!(r#"tests="{tests}" failures="{failures}" errors="0" skipped="{skipped}""#);
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(out, r#"<testsuites name="refwatch check" {counts}>"#)?;
    writeln!(out, r#"  <testsuite name="refwatch check" {counts}>"#)?;
    writeln!(out, "    <properties>")?;
    let dropped = s.dropped.map_or("unknown".to_owned(), |d| d.to_string());
    for (name, value) in [
        ("kernel", s.kernel.clone()),
        ("attach", s.attach.clone()),
        ("events", s.events.to_string()),
        ("dropped", dropped),
        ("max_violations", p.max_violations.to_string()),
    ] {
        writeln!(
            out,
            r#"      <property name="{name}" value="{}"/>"#,
            escape(&value, true)
        )?;
    }
    writeln!(out, "    </properties>")?;
    for (rule, outcome) in &rules {
        write!(out, r#"    <testcase classname="{CLASS}" name="{}""#, rule)?;
        match outcome {
            RuleOutcome::Passed { count: 0 } => writeln!(out, "/>")?,
            RuleOutcome::Passed { count } => writeln!(
                out,
                ">\n      <system-out>{count} findings, within \
                 --max-violations</system-out>\n    </testcase>"
            )?,
            RuleOutcome::Failed { count } => {
                let mine: Vec<FindingOut> = s
                    .findings
                    .iter()
                    .filter(|f| f.finding.rule == *rule)
                    .cloned()
                    .collect();
                writeln!(
                    out,
                    ">\n      <failure message=\"{count} findings\" type=\"{}\">{}\
                     </failure>\n    </testcase>",
                    rule,
                    escape(&render_findings(&mine, usize::MAX), false)
                )?;
            }
            RuleOutcome::Skipped(why) => writeln!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                escape(why, true)
            )?,
        }
    }
    if let Some(c) = &s.command {
        let argv = escape(&c.argv.join(" "), true);
        write!(
            out,
            r#"    <testcase classname="{CLASS}" name="command: {argv}""#
        )?;
        if command_failed {
            writeln!(
                out,
                ">\n      <failure message=\"the command {}\" type=\"command\"/>\n    </testcase>",
                escape(&c.outcome.to_string(), true)
            )?;
        } else {
            writeln!(out, "/>")?;
        }
    }
    writeln!(out, "  </testsuite>\n</testsuites>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::Rule,
        capture::{CommandOutcome, CommandRun},
        summary::tests::summary,
    };
    use clap::ValueEnum;
    use refwatch_common::RefModel;

    fn junit(s: &Summary, p: &Policy) -> String {
        let mut out = Vec::new();
        write(&mut out, s, p).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_case_per_rule_with_failures_and_skips() {
        let mut s = summary(RefModel::ZeroBased, true, 0);
        s.command = Some(CommandRun {
            argv: vec!["fio".into(), "--name=x".into()],
            outcome: CommandOutcome::Exited { status: 2 },
        });
        let xml = junit(&s, &Policy::default());
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let cases: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        assert_eq!(cases.len(), Rule::value_variants().len() + 1);
        let failed: Vec<&str> = cases
            .iter()
            .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
            .map(|c| c.attribute("name").unwrap())
            .collect();
        assert_eq!(failed, ["insert-zero-ref", "command: fio --name=x"]);
        let suite = doc
            .descendants()
            .find(|n| n.has_tag_name("testsuite"))
            .unwrap();
        assert_eq!(suite.attribute("failures"), Some("2"));
        // 7.x waits for a page to go idle before its block goes back: truncate-busy is unchecked.
        let truncate = cases
            .iter()
            .find(|c| c.attribute("name") == Some("truncate-busy"))
            .unwrap();
        assert!(truncate.children().any(|n| n.has_tag_name("skipped")
            && n.attribute("message").unwrap().starts_with("unchecked")));
    }

    #[test]
    fn untrusted_strings_are_escaped() {
        let evil = "x</failure><script>&\"'\x1b[2J\u{ffff}";
        let mut s = summary(RefModel::ZeroBased, true, 0);
        s.kernel = evil.into();
        s.findings[0].finding.comm = evil.into();
        s.findings[0].stack = vec![evil.into()];
        s.command = Some(CommandRun {
            argv: vec![evil.into()],
            outcome: CommandOutcome::Killed { signal: Some(9) },
        });
        let xml = junit(&s, &Policy::default());
        assert!(!xml.contains("<script>") && !xml.contains('\x1b'), "{xml}");
        let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
        let kernel = doc
            .descendants()
            .find(|n| n.attribute("name") == Some("kernel"))
            .unwrap();
        assert_eq!(
            kernel.attribute("value"),
            Some("x</failure><script>&\"'\\x1b[2J\\u{ffff}")
        );
        let failure = doc
            .descendants()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        assert!(failure.text().unwrap().contains("x</failure><script>&"));
    }

    #[test]
    fn attribute_whitespace_survives() {
        assert_eq!(escape("a\tb\nc", true), "a&#9;b&#10;c");
        assert_eq!(escape("a\tb\nc", false), "a\tb\nc");
        assert_eq!(escape("\x00\x7f", false), "\\x00\x7f");
    }
}
