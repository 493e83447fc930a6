//! `refwatch report`: summary and findings of a recorded trace; needs no root and no BTF.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use refwatch::{summary, trace::TraceReader};

#[derive(Args)]
pub struct ReportArgs {
    /// Trace written by `refwatch record`.
    file: PathBuf,
    /// JSON on stdout instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let reader = TraceReader::open(&args.file).with_context(|| args.file.display().to_string())?;
    let s = summary::from_trace(reader).with_context(|| args.file.display().to_string())?;
    // On stderr too, so that a script notices a partial read whatever the output format.
    for w in &s.warnings {
        eprintln!("refwatch: {}: warning: {w}", args.file.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", s.render(usize::MAX));
    }
    Ok(ExitCode::SUCCESS)
}
