//! `refwatch check`: pass/fail on the findings of a live capture or a trace.
//! Exit 0: findings ≤ --max-violations; 1: more; 3: inconclusive; 2: usage/environment.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use refwatch::{
    aggregate::Rule,
    capture,
    summary::{self, Summary},
    trace::TraceReader,
};
use serde_json::json;

use super::{RunArgs, attach};

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
    rules: Vec<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    run: RunArgs,
}

fn live(args: &CheckArgs) -> Result<Summary> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (mut session, _) = attach::open(&args.run)?;
        let mut sink = attach::Aggregate::new(&session);
        capture::capture(&mut session, &args.run.stop_when(), &mut sink).await?;
        Ok(sink.summary(&mut session))
    })
}

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let rules = args
        .rules
        .iter()
        .map(|id| {
            Rule::from_id(id).with_context(|| {
                let ids: Vec<_> = Rule::ALL.iter().map(|r| r.id()).collect();
                format!("unknown rule {id} (rules: {})", ids.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let s = match &args.trace {
        Some(path) => {
            let reader = TraceReader::open(path).with_context(|| path.display().to_string())?;
            summary::from_trace(reader).with_context(|| path.display().to_string())?
        }
        None => live(&args)?,
    };
    let verdict = s.verdict(args.max_violations, &rules);
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        v["verdict"] = serde_json::to_value(&verdict)?;
        v["max_violations"] = json!(args.max_violations);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", s.render(20));
        println!("verdict: {}", serde_json::to_value(&verdict)?);
    }
    Ok(ExitCode::from(verdict.exit_code()))
}
