//! The `refwatch record` trace format, version 3 (versions 1 and 2 are still read).
//!
//! A trace is self-describing: `refwatch report` needs nothing from the recording machine.
//!
//! ```text
//! file    = magic "RFWTRACE" | version u16 LE | header_len u32 LE
//!           | header (JSON, header_len bytes) | frame* | footer-frame?
//! frame   = tag u8 | payload
//! ```
//!
//! The header ([`Header`]) holds the kernel release, the probe [`Plan`] (with attach results
//! and the pgmap type names of this kernel), the struct layout, and the command recorded.
//! Integers in frames are LEB128 varints; signed ones are zigzag-encoded first.
//!
//! The frames, by tag:
//!
//! - `0x00..=0x7f`, event: see below; the tag is the catalog probe id, or `0x7f` for a
//!   watchpoint hit (`--watch`, kind `watch`, always coded with its kind).
//! - `0xf0`, task: `pid_tgid`, comm length, comm bytes. Tasks are numbered from 0 in order of
//!   appearance.
//! - `0xf1`, stack: stack id (zigzag), frame count, then per frame: length, UTF-8 bytes
//!   (innermost first).
//! - `0xff`, footer: JSON length, [`Footer`] JSON. Always the last frame of a finished trace.
//!
//! A task and a stack frame come before the first event that uses them. An event is coded
//! against the previous event (the "context"):
//!
//! ```text
//! event = tag=probe | present u8 | ts delta | pfn delta (zigzag) | refcount (zigzag)
//!         | stack id delta (zigzag; version 1: the id itself)
//!         | optional fields, in bit order, when their `present` bit is set:
//!   bit0 task index          (else: same task as the previous event)
//!   bit1 page - predicted    (zigzag; predicted = previous page + 64 × pfn delta)
//!   bit2 pgmap               (else: same as previous)
//!   bit3 pgmap_type, flags   (two bytes; else: same as previous)
//!   bit4 cpu                 (else: same as previous)
//!   bit5 extra               (else: as the probe's previous event's; versions 1, 2: 1)
//!   bit6 extra2              (else: as the probe's previous event's; version 2: as the
//!                             previous event's; version 1: 0)
//!   bit7 mapcount (zigzag), kind (u8) (else: 0, and the catalog kind of the probe)
//! ```
//!
//! From version 3 the pfn delta and the predicted page of a range zap (pfn 0, page the mm)
//! are against the previous range zap's, and those of a page event against the previous page
//! event's; `extra` and `extra2` are zigzag deltas against the same probe's previous event's
//! (before: absolute), a probe's first event against extra 1, extra2 0. The context
//! starts zeroed (task 0 unset, page 0, cpu 0, pgmap 0, type 0, flags 0). A
//! trace cut short (crash, kill, full disk) has no footer: the reader returns every whole
//! frame and reports the cut as a warning. A wrong magic, an unknown version, a bad header or
//! an unknown tag is an error.

mod codec;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use refwatch_common::globals::Layout;

use crate::{
    capture::{CommandOutcome, CommandRun, End},
    plan::Plan,
};

pub use reader::TraceReader;
pub use writer::TraceWriter;

pub const MAGIC: &[u8; 8] = b"RFWTRACE";
/// Written by this refwatch; versions 1 to this one are read.
pub const VERSION: u16 = 3;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub kernel: String,
    pub plan: Plan,
    pub layout: Option<Layout>,
    /// The command refwatch ran while recording, if any.
    pub command: Vec<String>,
    /// True for traces made up by tests rather than recorded.
    #[serde(default)]
    pub synthetic: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub events: u64,
    /// Events the kernel side could not queue (ring buffer full).
    pub dropped: u64,
    /// Why recording stopped: `command-exited`, `duration`, `signal`, `requested`, or
    /// `error: …` (traces from before these words have other text here).
    pub end: String,
    /// The exit status of the command recorded, where it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_status: Option<i32>,
    /// The signal that killed the command recorded, where one did (absent in older traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_signal: Option<i32>,
    /// Entries of each attached function while recording, device pages or not (what the probes
    /// cost the workload); empty in traces from before it was counted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<String, u64>,
}

impl Footer {
    /// What became of the command recorded, if `header` names one.
    pub fn command(footer: Option<&Footer>, header: &Header) -> Option<CommandRun> {
        let outcome = match footer {
            None => CommandOutcome::Unknown,
            Some(f) if f.end == End::COMMAND_EXITED => match f.command_status {
                Some(status) => CommandOutcome::Exited { status },
                None => CommandOutcome::Killed {
                    signal: f.command_signal,
                },
            },
            Some(f) => legacy_exit(&f.end).map_or(CommandOutcome::Stopped, |status| {
                End::CommandExited(status).command_outcome()
            }),
        };
        (!header.command.is_empty()).then(|| CommandRun {
            argv: header.command.clone(),
            outcome,
        })
    }
}

/// Traces from before the stable words kept the exit's Debug text,
/// `commandexited(exitstatus(unix_wait_status(N)))` with N the raw wait status.
fn legacy_exit(end: &str) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let raw = end
        .strip_prefix("commandexited(exitstatus(unix_wait_status(")?
        .strip_suffix(")))")?;
    Some(std::process::ExitStatus::from_raw(raw.parse().ok()?))
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("empty file: not a refwatch trace")]
    Empty,
    #[error("not a refwatch trace (bad magic)")]
    BadMagic,
    #[error(
        "trace format version {found} is not supported \
         (this refwatch reads versions 1 to {VERSION})"
    )]
    Version { found: u16 },
    #[error("trace header is cut off")]
    ShortHeader,
    #[error("bad trace header: {0}")]
    Header(#[from] serde_json::Error),
    #[error("corrupt trace at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },
}

const TAG_TASK: u8 = 0xf0;
const TAG_STACK: u8 = 0xf1;
const TAG_FOOTER: u8 = 0xff;
