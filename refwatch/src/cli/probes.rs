//! `refwatch probes`: the probe plan for the running kernel, in plain words or JSON.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use refwatch::{
    mechanisms::{Fentry, Mechanisms},
    plan::{self, AttachMode, Plan, Resolution},
    privileges,
    session::{self, Kernel},
};
use refwatch_common::{CATALOG, EventKind, KernelVersion};
use serde_json::json;

#[derive(Args)]
pub struct ProbesArgs {
    /// The plan as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Print the kernel facts the plan was resolved from (to save for tests and bug reports).
    #[arg(long, conflicts_with = "json")]
    facts: bool,
    /// Also load (verify) every kprobe program into the running kernel, without attaching, and
    /// the fentry programs of the functions the plan uses where the kernel allows fentry.
    #[arg(long)]
    verify: bool,
    /// The attach mode to plan for, as the attaching commands take it.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    attach: AttachMode,
}

pub fn run(args: ProbesArgs) -> Result<ExitCode> {
    let kernel = Kernel::inspect()?;
    if args.facts {
        println!("{}", serde_json::to_string_pretty(&kernel.facts)?);
        return Ok(ExitCode::SUCCESS);
    }
    let plan = plan::resolve(&kernel.facts, args.attach);
    let root = privileges::missing().is_empty();
    // A real load tells whether fentry is allowed; it needs privileges and one resolved function.
    // One object for the fentry trial and --verify: each loader parses the kernel's BTF again.
    let mut trial = None;
    let fentry = match plan.used().next() {
        _ if !root => Fentry::Unknown("needs root to try"),
        None => Fentry::Unknown("no function to try it on"),
        Some(p) => match session::Trial::load(&kernel) {
            Ok(t) => match trial.insert(t).fentry_allowed(p.id, &p.function) {
                Ok(()) => Fentry::Allowed,
                Err(e) => Fentry::Refused(e),
            },
            Err(e) => Fentry::Refused(session::error_chain(&e)),
        },
    };
    let breakpoints = if root {
        match trial
            .take()
            .map_or_else(|| session::Trial::load(&kernel), Ok)
        {
            Ok(t) => trial.insert(t).breakpoint_slots(),
            Err(e) => Err(session::error_chain(&e)),
        }
    } else {
        Err("unknown: needs root to try".to_owned())
    };
    let mechanisms = Mechanisms {
        kprobes: kernel.facts.kprobes,
        fentry,
    };
    let nothing_attaches = mechanisms.nothing_attaches(plan.used());
    let verified = if args.verify {
        let fentry_targets: Vec<(u8, &str)> = match mechanisms.fentry {
            Fentry::Allowed => plan
                .used()
                .filter(|p| {
                    plan::fentry_capable(&refwatch_common::CATALOG[p.id as usize], plan.version)
                })
                .map(|p| (p.id, p.function.as_str()))
                .collect(),
            Fentry::Refused(_) | Fentry::Unknown(_) => Vec::new(),
        };
        let trial = match trial {
            Some(t) => t,
            None => session::Trial::load(&kernel)?,
        };
        Some(trial.verify(&fentry_targets))
    } else {
        None
    };
    let verify_failed = verified.iter().flatten().any(|(_, r)| r.is_err());
    if args.json {
        let verified = verified.map(|v| {
            v.into_iter()
                .map(|(name, r)| json!({"program": name, "loaded": r.is_ok(), "error": r.err()}))
                .collect::<Vec<_>>()
        });
        let fentry = match &mechanisms.fentry {
            Fentry::Allowed => json!({"allowed": true, "error": null}),
            Fentry::Refused(e) => json!({"allowed": false, "error": e}),
            Fentry::Unknown(why) => json!({"allowed": false, "error": format!("unknown: {why}")}),
        };
        let out = json!({
            "kernel": plan.kernel,
            "btf": kernel.facts.btf,
            "kprobes": kernel.facts.kprobes,
            "fentry": fentry,
            "breakpoints": match &breakpoints {
                Ok(slots) => json!({"slots": slots, "error": null}),
                Err(e) => json!({"slots": 0, "error": e}),
            },
            "nothing_attaches": nothing_attaches,
            "plan": plan,
            "verified": verified,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(
            &kernel,
            &plan,
            &mechanisms,
            &breakpoints,
            nothing_attaches.as_deref(),
        );
        if let Some(verified) = &verified {
            let ok = verified.iter().filter(|(_, r)| r.is_ok()).count();
            println!(
                "\nverifier: {ok}/{} programs load on this kernel",
                verified.len()
            );
            for (name, r) in verified {
                if let Err(e) = r {
                    println!("  {name}: {e}");
                }
            }
        }
    }
    Ok(if verify_failed {
        ExitCode::from(super::EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_text(
    kernel: &Kernel,
    plan: &Plan,
    mechanisms: &Mechanisms,
    breakpoints: &Result<usize, String>,
    nothing_attaches: Option<&[String]>,
) {
    let f = &kernel.facts;
    println!("kernel:   {} (refcount era: {})", f.release, plan.era);
    match &f.layout {
        Ok(_) => println!("BTF:      yes ({})", refwatch::facts::BTF_PATH),
        Err(e) => println!("BTF:      no: {e}"),
    }
    if f.kprobes {
        println!("kprobes:  yes");
    } else {
        println!(
            "kprobes:  no: {} is absent (CONFIG_KPROBES off?): kprobe mode cannot attach",
            refwatch::facts::KPROBE_PMU
        );
    }
    match &mechanisms.fentry {
        Fentry::Allowed => println!("fentry:   allowed"),
        Fentry::Refused(e) => println!("fentry:   not usable: {e}"),
        Fentry::Unknown(why) => println!("fentry:   not usable: unknown: {why}"),
    }
    match breakpoints {
        Ok(n) => println!(
            "watch:    {n} breakpoint slot(s) free on CPU 0 (x86-64 has 4): --watch and the \
             pages of findings take up to {n} page(s)"
        ),
        Err(e) => println!(
            "watch:    no kernel breakpoint: {e}: neither --watch nor auto-arming is available"
        ),
    }
    println!("attach:   {} requested", plan.requested);
    if let Some(why) = nothing_attaches {
        println!("\nnothing can attach on this kernel:");
        for line in why {
            println!("  {line}");
        }
    }
    // Watchpoint hits come from --watch's breakpoints, not from catalog functions.
    for kind in EventKind::ALL
        .into_iter()
        .filter(|&k| k != EventKind::Watch)
    {
        println!("\n{}:", kind.name());
        let carries = |p: &&refwatch::plan::ProbeEntry| CATALOG[usize::from(p.id)].carries(kind);
        for p in plan.probes.iter().filter(carries) {
            let modes: Vec<String> = mechanisms
                .modes(p)
                .iter()
                .map(AttachMode::to_string)
                .collect();
            let what = match &p.resolution {
                Resolution::Use if modes.is_empty() => "cannot attach on this kernel".to_owned(),
                Resolution::Use => format!("will attach ({})", modes.join(", then ")),
                Resolution::Missing => "not in kallsyms (inlined or absent)".to_owned(),
                Resolution::NoPrototype => {
                    "in kallsyms but not in BTF: argument layout unverifiable, skipped".to_owned()
                }
                Resolution::OtherPrototype { found } => {
                    format!(
                        "other prototype here ({}), not this entry",
                        found.join(", ")
                    )
                }
                Resolution::Superseded { by } => format!("covered by {by}"),
                Resolution::NotThisKernel { since, until: None } => {
                    format!("applies from {since} on")
                }
                Resolution::NotThisKernel {
                    since,
                    until: Some(until),
                } if *since == KernelVersion::ANY => {
                    format!("applies up to {until}")
                }
                Resolution::NotThisKernel {
                    since,
                    until: Some(until),
                } => format!("applies to {since}–{until}"),
                Resolution::CallerMissing { caller } => format!("caller {caller} not in kallsyms"),
                Resolution::Skipped => "left out (--skip)".to_owned(),
                Resolution::Hot => format!(
                    "hot, left out: normal pages pass through it too, and no rule needs it here; \
                     --with {} attaches it",
                    p.function
                ),
            };
            let mark = if p.resolution == Resolution::Use && !modes.is_empty() {
                "+"
            } else {
                "-"
            };
            println!("  {mark} {:<34} {what}", p.function);
        }
        let hot = plan
            .probes
            .iter()
            .filter(carries)
            .any(|p| p.resolution == Resolution::Hot);
        if !plan.used().any(|p| carries(&p)) && !hot {
            println!("  ! nothing on this kernel carries {} events", kind.name());
        }
    }
    println!();
    for i in &plan.inlines {
        if i.out_of_line {
            println!(
                "{}: an out-of-line symbol on this kernel (not probed directly)",
                i.name
            );
        } else if i.covered_by.is_empty() {
            println!(
                "{}: inline in this kernel, not covered by any probe here; {}",
                i.name, i.note
            );
        } else {
            println!(
                "{}: inline in this kernel, covered by {}; {}",
                i.name,
                i.covered_by.join(", "),
                i.note
            );
        }
    }
    for note in &plan.notes {
        println!("\nnote: {note}");
    }
    if !plan.blockers.is_empty() {
        println!("\nrefwatch cannot run here: {}", plan.blockers.join("; "));
    }
}
