//! `refwatch stream`: one line per ZONE_DEVICE refcount transition, live or from a trace.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use clap::Args;
use refwatch::{
    capture::{self, End, Sink},
    escape::printable,
    event::{EventExt, to_json},
    plan::Plan,
    session::Session,
    trace::TraceReader,
};
use refwatch_common::{Event, EventKind};
use serde_json::{Value, json};

use super::{RunArgs, attach, output::OutputArgs};

#[derive(Args)]
pub struct StreamArgs {
    /// JSON lines instead of text; the closing summary goes to stderr either way.
    #[arg(long)]
    json: bool,
    /// Replay a trace written by `refwatch record` instead of attaching (no root needed).
    #[arg(long, conflicts_with_all = ["duration", "command"])]
    trace: Option<PathBuf>,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    run: RunArgs,
}

struct Printer {
    json: bool,
    out: BufWriter<Box<dyn Write>>,
    by_kind: BTreeMap<&'static str, u64>,
    events: u64,
    /// The rules, checked as the transitions go by; its findings are printed among them.
    watch: Option<attach::Aggregate>,
    /// Findings printed so far.
    shown: usize,
}

impl Printer {
    fn new(json: bool, out: Box<dyn Write>) -> Self {
        Self {
            json,
            out: BufWriter::new(out),
            by_kind: BTreeMap::new(),
            events: 0,
            watch: None,
            shown: 0,
        }
    }

    /// Feeds `events` to the rules and prints the findings they raised: a JSON line of kind
    /// "finding" (the fields of `check --json`'s findings), or the kernel-log line.
    fn check(&mut self, events: &[Event], mut stack: impl FnMut(i32) -> Vec<String>) -> Result<()> {
        let Some(watch) = &mut self.watch else {
            return Ok(());
        };
        if watch.feed(events) == 0 {
            return Ok(());
        }
        let new = &watch.agg.findings()[self.shown..];
        self.shown += new.len();
        if self.json {
            for f in new {
                let mut line = serde_json::to_value(f)?;
                line["kind"] = json!("finding");
                line["stack"] = json!(stack(f.stack_id));
                serde_json::to_writer(&mut self.out, &line)?;
                writeln!(self.out)?;
            }
        } else {
            for line in refwatch::announce::lines(new) {
                writeln!(self.out, "FINDING {line}")?;
            }
        }
        Ok(())
    }

    fn print(&mut self, ev: &Event, plan: &Plan, stack: &[String]) -> Result<()> {
        self.events += 1;
        let kind = ev.event_kind().map_or("unknown", EventKind::name);
        *self.by_kind.entry(kind).or_default() += 1;
        if self.json {
            serde_json::to_writer(&mut self.out, &to_json(ev, plan, stack))?;
            writeln!(self.out)?;
        } else {
            let what = match ev.user_range() {
                Some(r) => {
                    let to = r.to.map(|to| format!(" -> {to:#x}")).unwrap_or_default();
                    format!("mm={:#x} [{:#x}, {:#x}){to}", r.mm, r.start, r.end)
                }
                None => format!(
                    "pfn={:#x} ref={} map={} {}",
                    ev.pfn,
                    ev.refcount,
                    ev.mapcount,
                    printable(plan.pgmap_type_name(ev.pgmap_type))
                ),
            };
            writeln!(
                self.out,
                "{:>14.6} {:<12} {:<30} {what} {}/{} {}",
                ev.ts_ns as f64 / 1e9,
                kind,
                printable(plan.function(ev.probe)),
                printable(&ev.comm_str()),
                ev.tgid(),
                printable(stack.first().map_or("", String::as_str)),
            )?;
        }
        Ok(())
    }

    /// The closing count: a JSON line on stderr with --json, a sentence otherwise.
    fn summary(&self, kernel: &str, dropped: Option<u64>, extra: Value) {
        if self.json {
            let mut summary = json!({
                "kernel": kernel,
                "events": self.events,
                "dropped": dropped,
                "by_kind": self.by_kind,
            });
            if let (Some(map), Value::Object(extra)) = (summary.as_object_mut(), extra) {
                map.extend(extra);
            }
            eprintln!("{}", json!({ "summary": summary }));
        } else {
            let dropped = dropped.map_or("unknown".to_owned(), |d| d.to_string());
            let kinds: Vec<String> = self
                .by_kind
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            eprintln!(
                "\n{} events, {dropped} dropped ({})",
                self.events,
                kinds.join(", ")
            );
        }
    }
}

impl Sink for Printer {
    fn events(&mut self, session: &mut Session, events: &[Event]) -> Result<bool> {
        for ev in events {
            let stack = session.stack(ev.stack_id).to_vec();
            self.print(ev, &session.plan, &stack)?;
        }
        self.check(events, |id| session.stack(id).to_vec())?;
        if let Some(watch) = &mut self.watch {
            watch.rearm(session);
        }
        self.out.flush()?;
        Ok(true)
    }
}

pub fn run(args: StreamArgs) -> Result<ExitCode> {
    args.out.check(&[])?;
    match &args.trace {
        Some(path) => replay(&args, path),
        None => live(&args),
    }
}

fn replay(args: &StreamArgs, path: &Path) -> Result<ExitCode> {
    let what = || path.display().to_string();
    let mut reader = TraceReader::open(path).with_context(what)?;
    let plan = reader.header().plan.clone();
    let printer = &mut Printer::new(args.json, args.out.open()?);
    printer.watch = Some(attach::Aggregate::replay(&plan));
    while let Some(&ev) = reader.next_event().with_context(what)? {
        printer.print(&ev, &plan, reader.stack(ev.stack_id))?;
        printer.check(&[ev], |id| reader.stack(id).to_vec())?;
    }
    printer.out.flush()?;
    if let Some(warning) = reader.warning() {
        eprintln!("refwatch: {}: {warning}", what());
    }
    let footer = reader.footer();
    printer.summary(
        &plan.kernel,
        footer.map(|f| f.dropped),
        json!({"end": footer.map(|f| &f.end)}),
    );
    Ok(ExitCode::SUCCESS)
}

fn live(args: &StreamArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (mut session, _) = attach::open(&args.run)?;
        let printer = &mut Printer::new(args.json, args.out.open()?);
        printer.watch = Some(attach::Aggregate::new(&session, &args.run));
        let end = capture::capture(&mut session, &args.run.stop_when(), printer).await?;
        let status = match end {
            End::CommandExited(s) => json!(s.code()),
            _ => json!(null),
        };
        let attached: Vec<String> = session
            .plan
            .attached()
            .filter_map(|p| {
                Some(format!(
                    "{}:{}",
                    p.function,
                    p.attached.as_ref()?.as_ref().ok()?
                ))
            })
            .collect();
        printer.summary(
            &session.plan.kernel,
            Some(session.dropped()),
            json!({"attached": attached, "command_status": status}),
        );
        Ok(ExitCode::SUCCESS)
    })
}
