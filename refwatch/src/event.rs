//! Userspace views of the raw [`Event`]: accessors and the JSON line `refwatch stream` prints.

use refwatch_common::{Arg, CATALOG, Event, EventKind, event::PGMAP_TYPE_UNKNOWN};
use serde_json::{Value, json};

use crate::plan::Plan;

pub trait EventExt {
    fn event_kind(&self) -> Option<EventKind>;
    /// The user address range a range zap or move is about.
    fn user_range(&self) -> Option<UserRange>;
    fn tgid(&self) -> u32;
    fn pid(&self) -> u32;
    fn comm_str(&self) -> std::borrow::Cow<'_, str>;
}

impl EventExt for Event {
    fn event_kind(&self) -> Option<EventKind> {
        EventKind::from_u8(self.kind)
    }

    fn user_range(&self) -> Option<UserRange> {
        let probe = CATALOG
            .get(usize::from(self.probe))
            .filter(|p| p.is_range())?;
        let to = matches!(probe.arg, Arg::Move { .. }).then_some(self.pfn);
        Some(UserRange {
            mm: self.page,
            start: self.extra,
            end: self.extra2,
            to,
        })
    }

    fn tgid(&self) -> u32 {
        (self.pid_tgid >> 32) as u32
    }

    fn pid(&self) -> u32 {
        self.pid_tgid as u32
    }

    fn comm_str(&self) -> std::borrow::Cow<'_, str> {
        comm_str(&self.comm)
    }
}

/// `[start, end)` of an mm's user addresses, zapped, or moved to `to`.
pub struct UserRange {
    pub mm: u64,
    pub start: u64,
    pub end: u64,
    pub to: Option<u64>,
}

/// A task's comm up to its NUL, or "?" when it is not UTF-8.
/// The process name up to its NUL; bytes that are not UTF-8 become U+FFFD. Untrusted: print it
/// through [`crate::escape::printable`].
pub fn comm_str(comm: &[u8; 16]) -> std::borrow::Cow<'_, str> {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end])
}

/// One event as a JSON object; `stack` is the symbolized kernel stack, innermost first. A
/// range zap or move has no page: it names the mm and the `[start, end)` of user addresses
/// instead, and where a move puts them.
pub fn to_json(ev: &Event, plan: &Plan, stack: &[String]) -> Value {
    let mut out = json!({
        "kind": ev.event_kind().map_or("unknown", EventKind::name),
        "probe": plan.function(ev.probe),
        "ts_ns": ev.ts_ns,
        "cpu": ev.cpu,
        "pid": ev.pid(),
        "tgid": ev.tgid(),
        "comm": ev.comm_str(),
        "stack": stack,
    });
    let what = match ev.user_range() {
        Some(r) => json!({
            "pfn": null,
            "mm": format!("{:#x}", r.mm),
            "start": format!("{:#x}", r.start),
            "end": format!("{:#x}", r.end),
            "to": r.to.map(|to| format!("{to:#x}")),
        }),
        None => json!({
            "pfn": ev.pfn,
            "page": format!("{:#x}", ev.page),
            "refcount": ev.refcount,
            "mapcount": ev.mapcount,
            "pgmap": format!("{:#x}", ev.pgmap),
            "pgmap_type": if ev.pgmap_type == PGMAP_TYPE_UNKNOWN {
                "unknown"
            } else {
                plan.pgmap_type_name(ev.pgmap_type)
            },
            "extra": ev.extra,
            "extra2": ev.extra2,
            "flags": ev.flags,
        }),
    };
    if let (Value::Object(out), Value::Object(what)) = (&mut out, what) {
        out.extend(what);
    }
    out
}
