//! `refwatch report`: summary and findings of a recorded trace; needs no root and no BTF.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use refwatch::{summary, trace::TraceReader};

use super::output::OutputArgs;

#[derive(Args)]
pub struct ReportArgs {
    /// Trace written by `refwatch record`.
    file: PathBuf,
    /// JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    args.out.check(&[])?;
    let reader = TraceReader::open(&args.file).with_context(|| args.file.display().to_string())?;
    let s = summary::from_trace(reader).with_context(|| args.file.display().to_string())?;
    // On stderr too, so that a script notices a partial read whatever the output format.
    for w in &s.warnings {
        eprintln!("refwatch: {}: warning: {w}", args.file.display());
    }
    let mut out = args.out.open()?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
    } else {
        write!(out, "{}", s.render(usize::MAX))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
