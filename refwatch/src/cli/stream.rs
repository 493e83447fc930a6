//! `refwatch stream`: one line per ZONE_DEVICE refcount transition.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    process::ExitCode,
    time::Duration,
};

use anyhow::Result;
use clap::Args;
use refwatch::{
    capture::{self, End, Sink, StopWhen},
    event::{EventExt, to_json},
    session::{Kernel, Session, SessionOptions},
};
use refwatch_common::{Event, EventKind};
use serde_json::json;

use super::AttachArgs;

#[derive(Args)]
pub struct StreamArgs {
    /// JSON lines on stdout; the summary goes to stderr.
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds.
    #[arg(short, long)]
    duration: Option<f64>,
    #[command(flatten)]
    attach: AttachArgs,
    /// Command to run once the probes are attached; refwatch stops when it exits.
    #[arg(last = true)]
    command: Vec<String>,
}

struct Printer {
    json: bool,
    out: BufWriter<std::io::Stdout>,
    by_kind: BTreeMap<&'static str, u64>,
    events: u64,
}

impl Sink for Printer {
    fn events(&mut self, session: &mut Session, events: &[Event]) -> Result<bool> {
        for ev in events {
            self.events += 1;
            let kind = ev.event_kind().map_or("unknown", EventKind::name);
            *self.by_kind.entry(kind).or_default() += 1;
            let stack = session.stack(ev.stack_id).to_vec();
            if self.json {
                serde_json::to_writer(&mut self.out, &to_json(ev, &session.plan, &stack))?;
                writeln!(self.out)?;
            } else {
                writeln!(
                    self.out,
                    "{:>14.6} {:<12} {:<30} pfn={:#x} ref={} map={} {} {}/{} {}",
                    ev.ts_ns as f64 / 1e9,
                    kind,
                    session.plan.function(ev.probe),
                    ev.pfn,
                    ev.refcount,
                    ev.mapcount,
                    session.plan.pgmap_type_name(ev.pgmap_type),
                    ev.comm_str(),
                    ev.tgid(),
                    stack.first().map_or("", String::as_str),
                )?;
            }
        }
        self.out.flush()?;
        Ok(true)
    }
}

pub fn run(args: StreamArgs) -> Result<ExitCode> {
    let kernel = Kernel::inspect()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut session = Session::open(
            kernel,
            &SessionOptions { attach: args.attach.attach, ring_bytes: args.attach.ring_kib * 1024 },
        )?;
        let stop = StopWhen {
            duration: args.duration.map(Duration::from_secs_f64),
            command: args.command.clone(),
        };
        let mut printer = Printer {
            json: args.json,
            out: BufWriter::new(std::io::stdout()),
            by_kind: BTreeMap::new(),
            events: 0,
        };
        let end = capture::capture(&mut session, &stop, &mut printer).await?;
        let dropped = session.dropped();
        let status = match end {
            End::CommandExited(s) => json!(s.code()),
            _ => json!(null),
        };
        let attached: Vec<String> = session
            .plan
            .attached()
            .map(|p| format!("{}:{:?}", p.function, p.attached.as_ref().and_then(|a| a.as_ref().ok()).unwrap()).to_lowercase())
            .collect();
        if args.json {
            let summary = json!({"summary": {
                "kernel": session.plan.kernel,
                "events": printer.events,
                "dropped": dropped,
                "by_kind": printer.by_kind,
                "attached": attached,
                "command_status": status,
            }});
            eprintln!("{summary}");
        } else {
            eprintln!("\n{} events, {dropped} dropped ({})", printer.events,
                printer.by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
        }
        Ok(ExitCode::SUCCESS)
    })
}
