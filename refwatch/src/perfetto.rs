//! `refwatch report --perfetto FILE`: a trace's pgmaps and chosen pages as a Perfetto trace
//! (ui.perfetto.dev): a track per pgmap, refcount and mapcount counters per page, each event
//! an instant with its function, task and stack, findings marked.
//!
//! The messages are the few of Perfetto's `perfetto_trace.proto` that this needs, written by
//! hand with their field numbers (protos/perfetto/trace/…); a reader ignores what it lacks.

use prost::Message;

use crate::escape::printable;
use crate::page_story::Story;
use crate::summary::PgmapSummary;

#[derive(Clone, PartialEq, Message)]
struct Trace {
    #[prost(message, repeated, tag = "1")]
    packet: Vec<TracePacket>,
}

#[derive(Clone, PartialEq, Message)]
struct TracePacket {
    #[prost(uint64, optional, tag = "8")]
    timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "10")]
    trusted_packet_sequence_id: Option<u32>,
    #[prost(message, optional, tag = "11")]
    track_event: Option<TrackEvent>,
    #[prost(message, optional, tag = "60")]
    track_descriptor: Option<TrackDescriptor>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackDescriptor {
    #[prost(uint64, optional, tag = "1")]
    uuid: Option<u64>,
    #[prost(string, optional, tag = "2")]
    name: Option<String>,
    #[prost(uint64, optional, tag = "5")]
    parent_uuid: Option<u64>,
    #[prost(message, optional, tag = "8")]
    counter: Option<CounterDescriptor>,
}

/// Present (even empty) to make a track a counter track.
#[derive(Clone, PartialEq, Message)]
struct CounterDescriptor {
    #[prost(string, optional, tag = "6")]
    unit_name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TrackEvent {
    #[prost(message, repeated, tag = "4")]
    debug_annotations: Vec<DebugAnnotation>,
    /// `TrackEvent.Type`: 3 instant, 4 counter.
    #[prost(int32, optional, tag = "9")]
    r#type: Option<i32>,
    #[prost(uint64, optional, tag = "11")]
    track_uuid: Option<u64>,
    #[prost(string, repeated, tag = "22")]
    categories: Vec<String>,
    #[prost(string, optional, tag = "23")]
    name: Option<String>,
    #[prost(int64, optional, tag = "30")]
    counter_value: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct DebugAnnotation {
    #[prost(int64, optional, tag = "4")]
    int_value: Option<i64>,
    #[prost(string, optional, tag = "6")]
    string_value: Option<String>,
    #[prost(string, optional, tag = "10")]
    name: Option<String>,
}

const TYPE_INSTANT: i32 = 3;
const TYPE_COUNTER: i32 = 4;
/// All packets come from one writer.
const SEQUENCE: u32 = 1;

fn int(name: &str, value: i64) -> DebugAnnotation {
    DebugAnnotation {
        int_value: Some(value),
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

fn text(name: &str, value: String) -> DebugAnnotation {
    DebugAnnotation {
        string_value: Some(value),
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

fn track(uuid: u64, name: String, parent: Option<u64>, counter: Option<&str>) -> TracePacket {
    TracePacket {
        trusted_packet_sequence_id: Some(SEQUENCE),
        track_descriptor: Some(TrackDescriptor {
            uuid: Some(uuid),
            name: Some(name),
            parent_uuid: parent,
            counter: counter.map(|unit| CounterDescriptor {
                unit_name: Some(unit.to_owned()),
            }),
        }),
        ..Default::default()
    }
}

fn event(ts: u64, event: TrackEvent) -> TracePacket {
    TracePacket {
        timestamp: Some(ts),
        trusted_packet_sequence_id: Some(SEQUENCE),
        track_event: Some(event),
        ..Default::default()
    }
}

/// Track ids: pgmap tracks count from 1, each page's three tracks from its pfn.
fn pgmap_track(index: usize) -> u64 {
    index as u64 + 1
}

fn page_track(pfn: u64, which: u64) -> u64 {
    (1 << 62) | (pfn << 2) | which
}

/// The Perfetto trace of `pgmaps` and the `stories` of pages, as bytes.
pub fn encode(pgmaps: &[PgmapSummary], stories: &[Story]) -> Vec<u8> {
    let mut packet = Vec::new();
    for (i, p) in pgmaps.iter().enumerate() {
        let pfns: Vec<String> = p
            .ranges
            .iter()
            .map(|(a, b)| format!("{a:#x}-{b:#x}"))
            .collect();
        let name = format!("pgmap {} {} ({})", p.type_name, pfns.join(","), p.address);
        packet.push(track(pgmap_track(i), name, None, None));
    }
    for story in stories {
        let pgmap = pgmaps
            .iter()
            .position(|p| p.ranges.iter().any(|&(a, b)| (a..b).contains(&story.pfn)))
            .map(pgmap_track);
        let pfn = story.pfn;
        let events = page_track(pfn, 0);
        let (refcount, mapcount) = (page_track(pfn, 1), page_track(pfn, 2));
        packet.push(track(events, format!("pfn {pfn:#x}"), pgmap, None));
        packet.push(track(
            refcount,
            format!("pfn {pfn:#x} refcount"),
            pgmap,
            Some("refs"),
        ));
        packet.push(track(
            mapcount,
            format!("pfn {pfn:#x} mapcount"),
            pgmap,
            Some("maps"),
        ));
        for e in &story.entries {
            let t = &e.transition;
            let mut annotations = vec![
                text("task", format!("{}/{}", printable(&t.comm), t.pid)),
                text("stack", e.stack.join("\n")),
            ];
            if e.pgmap_pfns.is_none() {
                annotations.extend([
                    int("refcount", i64::from(t.refcount)),
                    int("mapcount", i64::from(t.mapcount)),
                    int("refs", t.refs as i64),
                ]);
                for (track_uuid, value) in [(refcount, t.refcount), (mapcount, t.mapcount)] {
                    packet.push(event(
                        t.ts_ns,
                        TrackEvent {
                            r#type: Some(TYPE_COUNTER),
                            track_uuid: Some(track_uuid),
                            counter_value: Some(i64::from(value)),
                            ..Default::default()
                        },
                    ));
                }
            }
            packet.push(event(
                t.ts_ns,
                TrackEvent {
                    debug_annotations: annotations,
                    r#type: Some(TYPE_INSTANT),
                    track_uuid: Some(events),
                    categories: vec![t.kind.name().to_owned()],
                    name: Some(format!("{} {}", t.kind.name(), t.function)),
                    ..Default::default()
                },
            ));
            for rule in &e.findings {
                packet.push(event(
                    t.ts_ns,
                    TrackEvent {
                        r#type: Some(TYPE_INSTANT),
                        track_uuid: Some(events),
                        categories: vec!["finding".to_owned()],
                        name: Some(format!("finding: {rule}")),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    Trace { packet }.encode_to_vec()
}
