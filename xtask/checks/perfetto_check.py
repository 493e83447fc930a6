"""Reads a Perfetto trace written by `refwatch report --perfetto` with Perfetto's own schema
(the `perfetto` package's perfetto_trace_pb2) and checks it against the refwatch trace's events
(`refwatch stream --json --trace`): every page asked for has its tracks, and its refcount and
mapcount counters hold exactly the values its events read, at their timestamps.

usage: perfetto_check.py PFTRACE EVENTS_JSONL PFN...
"""
import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

# The event kinds that name one page (pgmap events carry their first pfn, moves an address).
PAGE_KINDS = {"insert", "get", "put", "free", "unmap", "truncate", "held"}


def main(pftrace, events, pfns):
    trace = pb.Trace()
    with open(pftrace, "rb") as f:
        trace.ParseFromString(f.read())
    tracks = {
        p.track_descriptor.uuid: p.track_descriptor
        for p in trace.packet
        if p.HasField("track_descriptor")
    }
    got = {}
    for p in trace.packet:
        if p.HasField("track_event") and p.track_event.type == pb.TrackEvent.TYPE_COUNTER:
            track = tracks[p.track_event.track_uuid]
            assert track.HasField("counter"), f"counter value on a non-counter track {track.name}"
            _, pfn, what = track.name.split()
            got.setdefault((int(pfn, 16), what), []).append((p.timestamp, p.track_event.counter_value))
    want = {}
    with open(events) as f:
        for line in f:
            e = json.loads(line)
            if e.get("kind") in PAGE_KINDS and e["pfn"] in pfns and e["pfn"] != 0:
                for what in ("refcount", "mapcount"):
                    want.setdefault((e["pfn"], what), []).append((e["ts_ns"], e[what]))
    for pfn in pfns:
        assert (pfn, "refcount") in want, f"pfn {pfn:#x} has no event in the trace"
        if not any(t.name == f"pfn {pfn:#x}" for t in tracks.values()):
            raise AssertionError(f"pfn {pfn:#x} has no track")
    if got != want:
        for key in sorted(set(got) | set(want)):
            if got.get(key) != want.get(key):
                raise AssertionError(
                    f"{key[1]} of pfn {key[0]:#x}: perfetto {got.get(key)} != trace {want.get(key)}"
                )
    values = sum(len(v) for v in got.values())
    print(f"perfetto: {len(trace.packet)} packets; {values} counter values match the trace")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(p, 0) for p in sys.argv[3:]])
