//! Userspace views of the raw [`Event`]: accessors and the JSON line `refwatch stream` prints.

use refwatch_common::{CATALOG, Event, EventKind, event::PGMAP_TYPE_UNKNOWN};
use serde_json::{Value, json};

use crate::plan::Plan;

pub trait EventExt {
    fn event_kind(&self) -> Option<EventKind>;
    /// A zap of a user address range: (mm, start, end).
    fn zapped_range(&self) -> Option<(u64, u64, u64)>;
    fn tgid(&self) -> u32;
    fn pid(&self) -> u32;
    fn comm_str(&self) -> &str;
}

impl EventExt for Event {
    fn event_kind(&self) -> Option<EventKind> {
        EventKind::from_u8(self.kind)
    }

    fn zapped_range(&self) -> Option<(u64, u64, u64)> {
        CATALOG.get(usize::from(self.probe)).filter(|p| p.is_range()).map(|_| (self.page, self.extra, self.extra2))
    }

    fn tgid(&self) -> u32 {
        (self.pid_tgid >> 32) as u32
    }

    fn pid(&self) -> u32 {
        self.pid_tgid as u32
    }

    fn comm_str(&self) -> &str {
        comm_str(&self.comm)
    }
}

/// A task's comm up to its NUL, or "?" when it is not UTF-8.
pub fn comm_str(comm: &[u8; 16]) -> &str {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    std::str::from_utf8(&comm[..end]).unwrap_or("?")
}

/// One event as a JSON object; `stack` is the symbolized kernel stack, innermost first. A
/// range zap has no page: it names the mm and the `[start, end)` of user addresses instead.
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
    let what = match ev.zapped_range() {
        Some((mm, start, end)) => json!({
            "pfn": null,
            "mm": format!("{mm:#x}"),
            "start": format!("{start:#x}"),
            "end": format!("{end:#x}"),
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
