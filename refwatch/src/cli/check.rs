//! `refwatch check`: pass/fail on the findings of a live capture or a trace, and on the
//! command run after `--`.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use refwatch::{
    aggregate::Rule,
    capture::{self, CommandRun},
    junit, output,
    summary::{self, Summary},
    trace::TraceReader,
    verdict::{self, Policy},
};
use serde_json::json;

use super::{RunArgs, attach, output::OutputArgs};

/// `check --help`'s epilogue.
pub const EXIT_CODES: &str = "\
Exit status (kselftest's convention):
  0  pass: findings within --max-violations, and the command after -- (if any) exited 0
  1  fail: more findings, or the command failed (nonzero status or killed by a signal;
     --allow-command-failure ignores that)
  2  usage or environment error (bad option, not root, no BTF, nothing can attach)
  4  skip, inconclusive: a rule named with --rule cannot be checked on this kernel, events
     were dropped, or no device memory was seen: not one ZONE_DEVICE event in the whole
     check (--allow-idle passes that)";

#[derive(Args)]
pub struct CheckArgs {
    /// Judge a recorded trace instead of the running kernel.
    #[arg(long, conflicts_with_all = ["duration", "command"])]
    trace: Option<PathBuf>,
    /// Findings tolerated before failing.
    #[arg(long, default_value_t = 0)]
    max_violations: u64,
    /// Only these rules count (and each must be checkable here); default: all.
    #[arg(long = "rule", value_name = "ID", num_args = 1..)]
    rules: Vec<Rule>,
    /// Pass when no ZONE_DEVICE event was seen at all, instead of exiting 4 (inconclusive).
    #[arg(long)]
    allow_idle: bool,
    /// A command after `--` that fails does not fail the check.
    #[arg(long)]
    allow_command_failure: bool,
    /// The summary and verdict as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write the result as JUnit XML to FILE: one test case per rule, and one for the
    /// command.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    run: RunArgs,
}

fn live(args: &CheckArgs) -> Result<Summary> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (mut session, _) = attach::open(&args.run)?;
        let mut sink = attach::Aggregate::new(&session, &args.run);
        let end = capture::capture(&mut session, &args.run.stop_when(), &mut sink).await?;
        let mut s = sink.summary(&mut session);
        s.command = (!args.run.command.is_empty()).then(|| CommandRun {
            argv: args.run.command.clone(),
            outcome: end.command_outcome(),
        });
        Ok(s)
    })
}

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let policy = Policy {
        max_violations: args.max_violations,
        rules: args.rules.clone(),
        allow_idle: args.allow_idle,
        allow_command_failure: args.allow_command_failure,
    };
    args.out.check(args.junit.as_deref().as_slice())?;
    let s = match &args.trace {
        Some(path) => {
            let reader = TraceReader::open(path).with_context(|| path.display().to_string())?;
            summary::from_trace(reader).with_context(|| path.display().to_string())?
        }
        None => live(&args)?,
    };
    let verdict = verdict::decide(&s, &policy);
    if let Some(path) = &args.junit {
        let mut file = std::io::BufWriter::new(output::create(path, args.out.existing())?);
        junit::write(&mut file, &s, &policy)
            .and_then(|()| file.flush())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = args.out.open()?;
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["verdict"] = serde_json::to_value(&verdict)?;
        v["max_violations"] = json!(args.max_violations);
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write!(out, "{}", s.render(20))?;
        writeln!(out, "verdict: {}", serde_json::to_value(&verdict)?)?;
    }
    out.flush()?;
    Ok(ExitCode::from(verdict.exit_code()))
}
