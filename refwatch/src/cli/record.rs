//! `refwatch record`: capture into a trace file for `refwatch report` / `check --trace`.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use clap::Args;
use refwatch::{
    capture::{self, Sink},
    output::{self, Existing},
    session::Session,
    trace::{Footer, Header, TraceWriter},
};
use refwatch_common::Event;

use super::{RunArgs, attach};

#[derive(Args)]
pub struct RecordArgs {
    /// Trace file to write (never through a symbolic link).
    #[arg(short, long)]
    output: PathBuf,
    /// Write the closing summary (events, drops, size) to FILE instead of stderr, where the
    /// command's own output goes (never through a symbolic link).
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Overwrite the trace file and the summary file if they exist.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    run: RunArgs,
}

struct Recorder {
    trace: TraceWriter<BufWriter<File>>,
    /// The findings, for the kernel log and to know when the trace must reach the disk.
    watch: attach::Aggregate,
}

impl Sink for Recorder {
    fn events(&mut self, session: &mut Session, events: &[Event]) -> Result<bool> {
        for ev in events {
            self.trace
                .event(ev, |id| session.stack(id).to_vec())
                .context("writing the trace")?;
        }
        // One write per ring-buffer batch: a SIGKILL loses at most this batch.
        self.trace.flush().context("writing the trace")?;
        let found = self.watch.feed(events);
        // Before the sync: the next write of a finding's page may come soon.
        self.watch.rearm(session);
        // A finding may predict a crash of this kernel: the trace up to it goes to the disk
        // now, not when the page cache would have written it.
        if found > 0 {
            self.trace.sync().context("syncing the trace")?;
        }
        Ok(true)
    }
}

pub fn run(args: RecordArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let existing = Existing::forced(args.force);
    // Before attaching: a path refwatch will not write to is the user's to fix first.
    output::check(&args.output, existing)?;
    if let Some(path) = &args.summary {
        output::check(path, existing)?;
    }
    rt.block_on(async {
        let (mut session, layout) = attach::open(&args.run)?;
        // Before the trace file exists: a Ctrl-C from then on ends with a footer.
        capture::watch_signals()?;
        let header = Header {
            kernel: session.plan.kernel.clone(),
            plan: session.plan.clone(),
            layout,
            command: args.run.command.clone(),
            synthetic: false,
        };
        let writer = TraceWriter::create(&args.output, &header, existing)?;
        let mut rec = Recorder {
            trace: writer,
            watch: attach::Aggregate::new(&session, &args.run),
        };
        let stop = args.run.stop_when();
        // A write error ends the capture; the footer is still attempted so the trace stays
        // readable.
        let end = capture::capture(&mut session, &stop, &mut rec).await;
        let dropped = session.dropped();
        let calls = session.calls();
        let (end_name, command_status, command_signal) = match &end {
            Ok(e) => (e.word().to_owned(), e.command_status(), e.command_signal()),
            Err(e) => (format!("error: {e:#}"), None, None),
        };
        let (events, bytes) = (rec.trace.events(), rec.trace.bytes());
        rec.trace
            .finish(Footer {
                dropped,
                end: end_name,
                command_status,
                command_signal,
                calls,
                ..Footer::default()
            })
            .with_context(|| format!("finishing {}", args.output.display()))?;
        end?;
        let line = format!(
            "{}: {events} events, {dropped} dropped, {bytes} bytes ({:.1} bytes/event)",
            args.output.display(),
            bytes as f64 / events.max(1) as f64
        );
        match &args.summary {
            Some(path) => writeln!(output::create(path, existing)?, "{line}")
                .with_context(|| format!("writing {}", path.display()))?,
            None => eprintln!("{line}"),
        }
        Ok(ExitCode::SUCCESS)
    })
}
