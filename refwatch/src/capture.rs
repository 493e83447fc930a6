//! The capture loop every attaching command shares: read events until Ctrl-C/SIGTERM, a
//! duration, or the exit of a command refwatch started after its probes were attached.

use std::{os::unix::process::ExitStatusExt, process::ExitStatus, time::Duration};

use serde::Serialize;

use refwatch_common::Event;
use tokio::{
    process::{Child, Command},
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, sleep_until},
};

use crate::session::Session;

/// When to stop.
#[derive(Clone, Debug, Default)]
pub struct StopWhen {
    pub duration: Option<Duration>,
    /// Run this command (argv) once the probes are attached; stop when it exits.
    pub command: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    CommandExited(ExitStatus),
    Duration,
    Signal,
    /// The sink asked to stop (e.g. `q` in the live view).
    Requested,
}

impl End {
    /// [`End::word`] of a command's exit, which a footer's command status goes with.
    pub const COMMAND_EXITED: &str = "command-exited";

    /// The stable word a trace's footer keeps: `command-exited`, `duration`, `signal`,
    /// `requested`.
    pub const fn word(self) -> &'static str {
        match self {
            End::CommandExited(_) => Self::COMMAND_EXITED,
            End::Duration => "duration",
            End::Signal => "signal",
            End::Requested => "requested",
        }
    }

    /// The command's exit status where it exited (None when a signal ended it).
    pub fn command_status(self) -> Option<i32> {
        match self {
            End::CommandExited(status) => status.code(),
            _ => None,
        }
    }

    /// The signal that killed the command.
    pub fn command_signal(self) -> Option<i32> {
        match self {
            End::CommandExited(status) => status.signal(),
            _ => None,
        }
    }

    /// What became of the command of a capture that ran one.
    pub fn command_outcome(self) -> CommandOutcome {
        match self {
            End::CommandExited(status) => match status.code() {
                Some(status) => CommandOutcome::Exited { status },
                None => CommandOutcome::Killed {
                    signal: status.signal(),
                },
            },
            End::Duration | End::Signal | End::Requested => CommandOutcome::Stopped,
        }
    }
}

/// What became of the command run after `--`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum CommandOutcome {
    Exited {
        status: i32,
    },
    /// A signal killed it; its number is unknown in traces from before it was recorded.
    Killed {
        signal: Option<i32>,
    },
    /// Still running when refwatch stopped (duration, Ctrl-C), and stopped by refwatch.
    Stopped,
    /// A trace cut off before its footer does not say.
    Unknown,
}

impl CommandOutcome {
    /// A nonzero status or a death by signal; a command refwatch stopped did not fail.
    pub fn failed(self) -> bool {
        match self {
            CommandOutcome::Exited { status } => status != 0,
            CommandOutcome::Killed { .. } => true,
            CommandOutcome::Stopped | CommandOutcome::Unknown => false,
        }
    }
}

impl std::fmt::Display for CommandOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandOutcome::Exited { status } => write!(f, "exited with status {status}"),
            CommandOutcome::Killed { signal: Some(n) } => write!(f, "was killed by signal {n}"),
            CommandOutcome::Killed { signal: None } => f.write_str("was killed by a signal"),
            CommandOutcome::Stopped => f.write_str("was still running when refwatch stopped it"),
            CommandOutcome::Unknown => f.write_str("has no recorded end (the trace is cut off)"),
        }
    }
}

/// A command refwatch ran after `--`, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommandRun {
    pub argv: Vec<String>,
    #[serde(flatten)]
    pub outcome: CommandOutcome,
}

/// What a capture feeds.
pub trait Sink {
    /// A batch of events, in ring-buffer order. Returning `Ok(false)` stops the capture.
    fn events(&mut self, session: &mut Session, events: &[Event]) -> anyhow::Result<bool>;
    /// Called about every `tick()`; returning `Ok(false)` stops the capture.
    fn tick(&mut self, _session: &mut Session) -> anyhow::Result<bool> {
        Ok(true)
    }
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
}

fn spawn(argv: &[String]) -> anyhow::Result<Option<Child>> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(None);
    };
    let child = Command::new(prog)
        .args(args)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {prog}: {e}"))?;
    Ok(Some(child))
}

async fn wait(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// SIGINT and SIGTERM listeners registered early by [`watch_signals`].
static EARLY: std::sync::Mutex<Option<(Signal, Signal)>> = std::sync::Mutex::new(None);

/// Starts listening for SIGINT/SIGTERM now, for the next [`capture`]: a signal arriving between
/// this call and the capture (e.g. while a trace file is being created) stops the capture at
/// once instead of being lost or killing the process. Must be called inside the runtime.
pub fn watch_signals() -> std::io::Result<()> {
    let pair = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    *EARLY.lock().unwrap_or_else(|e| e.into_inner()) = Some(pair);
    Ok(())
}

/// Runs the capture; the session's probes stay attached until it returns, and every event
/// already in the ring buffer at the end is delivered before it does.
pub async fn capture(
    session: &mut Session,
    stop: &StopWhen,
    sink: &mut impl Sink,
) -> anyhow::Result<End> {
    let early = EARLY.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (mut sigint, mut sigterm) = match early {
        Some(pair) => pair,
        None => (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ),
    };
    let deadline = stop.duration.map(|d| Instant::now() + d);
    let tick = sink.tick_interval();
    let mut next_tick = tick.map(|t| Instant::now() + t);
    let mut child = spawn(&stop.command)?;
    let mut batch = Vec::with_capacity(4096);
    let end = loop {
        let mut end = None;
        let mut ticked = false;
        tokio::select! {
            r = session.next_batch(&mut batch) => r?,
            status = wait(&mut child) => end = Some(End::CommandExited(status?)),
            _ = at(deadline) => end = Some(End::Duration),
            _ = at(next_tick) => ticked = true,
            _ = sigint.recv() => end = Some(End::Signal),
            _ = sigterm.recv() => end = Some(End::Signal),
        }
        if end.is_some() {
            session.drain(&mut batch);
        }
        if !batch.is_empty() && !sink.events(session, &batch)? {
            end = end.or(Some(End::Requested));
        }
        batch.clear();
        if ticked {
            next_tick = tick.map(|t| Instant::now() + t);
            if !sink.tick(session)? {
                end = end.or(Some(End::Requested));
            }
        }
        if let Some(end) = end {
            break end;
        }
    };
    if let Some(mut c) = child.filter(|_| !matches!(end, End::CommandExited(_))) {
        // We stop watching, so the command stops too.
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
    Ok(end)
}
