//! `refwatch report`: summary and findings of a recorded trace; needs no root and no BTF.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use refwatch::{page_story, summary, trace::TraceReader};

use super::output::OutputArgs;

#[derive(Args)]
pub struct ReportArgs {
    /// Trace written by `refwatch record`.
    file: PathBuf,
    /// JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Every event of this page in the trace (repeatable; 0x… or decimal), with refwatch's
    /// reckoning of its counts after each, instead of the summary.
    #[arg(long = "page", value_name = "PFN", value_parser = parse_pfn)]
    pages: Vec<u64>,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    args.out.check(&[])?;
    let mut reader =
        TraceReader::open(&args.file).with_context(|| args.file.display().to_string())?;
    if !args.pages.is_empty() {
        let stories = page_story::from_trace(&mut reader, &args.pages)
            .with_context(|| args.file.display().to_string())?;
        if let Some(w) = reader.warning() {
            eprintln!("refwatch: {}: warning: {w}", args.file.display());
        }
        let mut out = args.out.open()?;
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&stories)?)?;
        } else {
            write!(out, "{}", page_story::render(&stories))?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
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

fn parse_pfn(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text:?} is not a pfn: {e}"))
}
