//! Version 2 of the trace format codes stack ids and GUP flags against the previous event,
//! version 3 `extra`/`extra2` against the same probe's previous event. Traces recorded in the
//! lab as version 1 must read unchanged, and re-encode to the current version with the same
//! events in fewer frame bytes.

use std::path::PathBuf;

use refwatch::trace::{Footer, TraceReader, TraceWriter, VERSION};

fn recorded(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/traces")
        .join(format!("{name}.rwt"))
}

#[test]
fn version_1_traces_reencode_smaller_with_the_same_events() {
    assert_eq!(VERSION, 3);
    for name in ["5.10-fsdax-mmap", "6.1-fsdax-mmap", "7.2-fsdax-pmd"] {
        let path = recorded(name);
        let v1_bytes = std::fs::metadata(&path).unwrap().len();
        let mut reader = TraceReader::open(&path).unwrap();
        let mut writer = TraceWriter::new(Vec::new(), reader.header()).unwrap();
        let mut events = Vec::new();
        while let Some(&ev) = reader.next_event().unwrap() {
            writer.event(&ev, |id| reader.stack(id).to_vec()).unwrap();
            events.push(ev);
        }
        let footer = reader.footer().cloned().unwrap_or_else(Footer::default);
        let now = writer.finish(footer).unwrap();
        // Compare the frames: the JSON header is the same data in both, spelled differently.
        let header_len = |b: &[u8]| 14 + u32::from_le_bytes(b[10..14].try_into().unwrap()) as u64;
        let v1_frames = v1_bytes - header_len(&std::fs::read(&path).unwrap());
        let now_frames = now.len() as u64 - header_len(&now);
        assert!(
            now_frames < v1_frames,
            "{name}: v{VERSION} frames {now_frames} bytes, v1 {v1_frames}"
        );
        let mut again = TraceReader::new(&now[..]).unwrap();
        let mut n = 0;
        while let Some(&ev) = again.next_event().unwrap() {
            assert_eq!(ev, events[n], "{name}: event {n}");
            assert_eq!(
                again.stack(ev.stack_id),
                reader.stack(ev.stack_id),
                "{name}: stack of event {n}"
            );
            n += 1;
        }
        assert_eq!(n, events.len());
        eprintln!(
            "{name}: {n} events, frames: v1 {v1_frames} bytes, v{VERSION} {now_frames} bytes"
        );
    }
}
