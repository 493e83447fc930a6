//! `refwatch report`: summary and findings of a recorded trace; needs no root and no BTF.

use std::{collections::BTreeSet, io::Write, path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::Args;
use refwatch::{output, page_story, perfetto, summary, trace::TraceReader};

use super::output::OutputArgs;

/// Pages with findings, and pages watched, given their own tracks in a Perfetto file, at most
/// (each): a torn-down pgmap can make thousands, and `--page` adds any other.
const PERFETTO_FINDING_PAGES: usize = 64;

#[derive(Args)]
pub struct ReportArgs {
    /// Trace written by `refwatch record`.
    file: PathBuf,
    /// JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Every event of this page in the trace (repeatable; 0x… or decimal), with refwatch's
    /// reckoning of its counts after each, instead of the summary.
    #[arg(long = "page", value_name = "PFN", value_parser = super::parse_pfn)]
    pages: Vec<u64>,
    /// Also write a Perfetto trace (ui.perfetto.dev) to FILE: a track per pgmap, refcount and
    /// mapcount counters and every event of the pages with findings (the first 64), of the
    /// pages watchpoints saw written (the first 64) and of the `--page` ones.
    #[arg(long, value_name = "FILE")]
    perfetto: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let name = || args.file.display().to_string();
    args.out.check(args.perfetto.as_deref().as_slice())?;
    let s = summary::from_trace(TraceReader::open(&args.file).with_context(name)?)
        .with_context(name)?;
    // On stderr too, so that a script notices a partial read whatever the output format.
    for w in &s.warnings {
        eprintln!("refwatch: {}: warning: {w}", args.file.display());
    }
    let mut pfns: BTreeSet<u64> = args.pages.iter().copied().collect();
    if args.perfetto.is_some() {
        let with_findings: BTreeSet<u64> = s.findings.iter().map(|f| f.finding.pfn).collect();
        if with_findings.len() > PERFETTO_FINDING_PAGES {
            eprintln!(
                "refwatch: {} pages have findings; the Perfetto trace has the first \
                 {PERFETTO_FINDING_PAGES} (add others with --page)",
                with_findings.len()
            );
        }
        pfns.extend(with_findings.into_iter().take(PERFETTO_FINDING_PAGES));
        let watched =
            page_story::watched_pages(&mut TraceReader::open(&args.file).with_context(name)?)
                .with_context(name)?;
        pfns.extend(watched.into_iter().take(PERFETTO_FINDING_PAGES));
    }
    // The stories need a second pass: a page's first events come before its findings.
    let pfns: Vec<u64> = pfns.into_iter().collect();
    let stories = if pfns.is_empty() {
        Vec::new()
    } else {
        page_story::from_trace(
            &mut TraceReader::open(&args.file).with_context(name)?,
            &pfns,
        )
        .with_context(name)?
    };
    if let Some(path) = &args.perfetto {
        let mut file = output::create(path, args.out.existing())?;
        file.write_all(&perfetto::encode(&s.pgmaps, &stories))
            .with_context(|| path.display().to_string())?;
    }
    let mut out = args.out.open()?;
    let asked: Vec<&page_story::Story> = stories
        .iter()
        .filter(|story| args.pages.contains(&story.pfn))
        .collect();
    match (args.json, asked.is_empty()) {
        (true, true) => writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?,
        (false, true) => write!(out, "{}", s.render(usize::MAX))?,
        (true, false) => writeln!(out, "{}", serde_json::to_string_pretty(&asked)?)?,
        (false, false) => write!(out, "{}", page_story::render(asked))?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
