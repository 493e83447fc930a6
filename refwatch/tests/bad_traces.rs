//! `refwatch report` on damaged traces: a truncated file reads up to the cut with a warning on
//! stderr, anything else bad is a one-line error with exit 2, and nothing ever panics.
//!
//! The fixture is a real 6.1 recording (fsdax-gup, kprobes) cut after 3000 bytes of frames, with
//! the plan trimmed to the attached probes; the tests rebuild a finished trace from its whole
//! frames with the library's writer.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use refwatch::trace::{Footer, TraceReader, TraceWriter};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/traces/gup-6.1-cut.rwt");

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn report(path: &Path, json: bool) -> Outcome {
    let path = path.to_str().unwrap();
    refwatch(&if json {
        vec!["report", path, "--json"]
    } else {
        vec!["report", path]
    })
}

fn refwatch(args: &[&str]) -> Outcome {
    let path = args.get(1).copied().unwrap_or_default();
    let out = Command::new(env!("CARGO_BIN_EXE_refwatch"))
        .args(args)
        .output()
        .expect("run refwatch");
    let o = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !o.stderr.contains("panicked"),
        "refwatch panicked on {path}: {}",
        o.stderr
    );
    assert!(
        o.code == 0 || o.code == 2 || (args[0] == "check" && o.code == 1),
        "exit {} on {path}: {}",
        o.code,
        o.stderr
    );
    o
}

/// A finished trace (with footer) holding the fixture's whole frames: (bytes, events, header
/// length).
fn finished_trace() -> (Vec<u8>, u64, usize) {
    let mut r = TraceReader::open(Path::new(FIXTURE)).unwrap();
    let mut events = Vec::new();
    while let Some(&ev) = r.next_event().unwrap() {
        events.push(ev);
    }
    assert!(
        r.warning().is_some() && events.len() > 100,
        "the fixture is a cut recording"
    );
    let mut out = Vec::new();
    let mut w = TraceWriter::new(&mut out, r.header()).unwrap();
    for ev in &events {
        w.event(ev, |id| r.stack(id).to_vec()).unwrap();
    }
    w.finish(Footer {
        events: events.len() as u64,
        dropped: 0,
        end: "duration".into(),
        ..Footer::default()
    })
    .unwrap();
    let header = 14 + u32::from_le_bytes(out[10..14].try_into().unwrap()) as usize;
    (out, events.len() as u64, header)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad_traces");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn finished_trace_reads_clean() {
    let (bytes, events, _) = finished_trace();
    let o = report(&write("finished.rwt", &bytes), true);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
    let json: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(json["events"], events);
    assert_eq!(json["dropped"], 0);
}

#[test]
fn truncated_reads_to_the_cut_with_a_warning() {
    let (bytes, events, header) = finished_trace();
    // Every cut inside the frames, footer included (a step keeps the process count down).
    let mut cuts: Vec<usize> = (header..bytes.len())
        .step_by(97)
        .chain([bytes.len() - 1])
        .collect();
    cuts.sort();
    let mut last = 0;
    for cut in cuts {
        let o = report(&write("truncated.rwt", &bytes[..cut]), true);
        assert_eq!(o.code, 0, "cut at {cut}: {}", o.stderr);
        assert!(
            o.stderr.contains("warning: trace cut off at byte"),
            "cut at {cut}: {}",
            o.stderr
        );
        let json: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        let n = json["events"].as_u64().unwrap();
        assert!(n >= last && n <= events, "cut at {cut}: {n} events");
        assert!(
            json["dropped"].is_null(),
            "cut at {cut}: the drop count is unknown"
        );
        last = n;
    }
    assert_eq!(last, events, "a cut inside the footer keeps every event");
    // The text report says it too.
    let o = report(
        &write(
            "truncated.rwt",
            &bytes[..header + (bytes.len() - header) / 2],
        ),
        false,
    );
    assert!(
        o.stdout.contains("warning: trace cut off") && o.stdout.contains("unknown dropped"),
        "{}",
        o.stdout
    );
}

#[test]
fn cut_inside_the_header_is_an_error() {
    let (bytes, _, header) = finished_trace();
    for cut in [9, 13, 14, 100, header - 1] {
        let o = report(&write("short-header.rwt", &bytes[..cut]), false);
        assert_eq!(o.code, 2, "cut at {cut}");
        assert!(
            o.stderr.contains("trace header is cut off"),
            "cut at {cut}: {}",
            o.stderr
        );
    }
}

#[test]
fn bit_flips_never_panic() {
    let (bytes, _, header) = finished_trace();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut clean, mut warned, mut errors) = (0, 0, 0);
    for i in 0..150 {
        let mut b = bytes.clone();
        // Mostly in the frames, some in the header; one to three flips.
        let (lo, hi) = if i % 5 == 0 {
            (0, header)
        } else {
            (header, b.len())
        };
        for _ in 0..=(next() % 3) {
            let at = lo + (next() as usize) % (hi - lo);
            b[at] ^= 1 << (next() % 8);
        }
        let o = report(&write("flipped.rwt", &b), true);
        match o.code {
            0 if o.stderr.contains("warning") => warned += 1,
            0 => clean += 1,
            _ => {
                errors += 1;
                let line = o.stderr.trim();
                assert!(
                    line.starts_with("refwatch: ") && !line.contains('\n'),
                    "flip {i}: {line}"
                );
                assert!(
                    [
                        "corrupt trace at byte",
                        "bad trace header",
                        "not a refwatch trace",
                        "version",
                        "header is cut off"
                    ]
                    .iter()
                    .any(|m| line.contains(m)),
                    "flip {i}: unclear error: {line}"
                );
            }
        }
    }
    // Flips in the frames are mostly detected (a bad tag, task or length) rather than silent.
    assert!(
        errors > 0,
        "clean {clean}, warned {warned}, errors {errors}"
    );
}

#[test]
fn wrong_version() {
    let (mut bytes, _, _) = finished_trace();
    bytes[8..10].copy_from_slice(&4u16.to_le_bytes());
    let o = report(&write("v4.rwt", &bytes), false);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains(
            "trace format version 4 is not supported (this refwatch reads versions 1 to 3)"
        ),
        "{}",
        o.stderr
    );
}

#[test]
fn wrong_magic() {
    let (mut bytes, _, _) = finished_trace();
    bytes[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    let o = report(&write("elf.rwt", &bytes), false);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("not a refwatch trace (bad magic)"),
        "{}",
        o.stderr
    );
    let o = report(&write("text.rwt", b"hello\n"), false);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("not a refwatch trace"), "{}", o.stderr);
}

#[test]
fn empty_file() {
    let o = report(&write("empty.rwt", b""), false);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("empty file: not a refwatch trace"),
        "{}",
        o.stderr
    );
}

#[test]
fn missing_file_names_it_once() {
    let o = report(&scratch("does-not-exist.rwt"), false);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .contains("does-not-exist.rwt: No such file or directory"),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.matches("No such file").count(), 1, "{}", o.stderr);
}

#[test]
fn footer_count_disagreeing_with_the_events_warns() {
    let (bytes, events, _) = finished_trace();
    // The footer is the last frame: 0xff, a one-byte length, JSON.
    let at = bytes.iter().rposition(|&b| b == 0xff).unwrap();
    let mut footer: serde_json::Value = serde_json::from_slice(&bytes[at + 2..]).unwrap();
    footer["events"] = (events + 5).into();
    let json = serde_json::to_vec(&footer).unwrap();
    let mut b = bytes[..at + 1].to_vec();
    b.push(json.len() as u8);
    b.extend_from_slice(&json);
    let o = report(&write("footer-count.rwt", &b), false);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "the footer counts {} events but the trace holds {events}",
            events + 5
        )),
        "{}",
        o.stderr
    );
}

/// A process may name itself with terminal escapes, and a trace's author may write anything in
/// its stack frames: every text output shows them escaped, JSON carries them JSON-escaped.
#[test]
fn hostile_names_are_escaped_in_text_outputs() {
    let mut r = TraceReader::open(Path::new(FIXTURE)).unwrap();
    let mut events = Vec::new();
    while let Some(&ev) = r.next_event().unwrap() {
        events.push(ev);
    }
    let hostile = *b"\x1b]0;PWN\x07\x1b[2J\xff\n\0\0";
    for ev in &mut events {
        ev.comm = hostile;
    }
    // An insert at refcount 0: a finding, so the name is printed in its block too.
    let insert = events
        .iter()
        .position(|e| e.kind == refwatch_common::EventKind::Insert as u8)
        .unwrap();
    events[insert].refcount = 0;
    let mut out = Vec::new();
    let mut w = TraceWriter::new(&mut out, r.header()).unwrap();
    for ev in &events {
        w.event(ev, |_| {
            vec![
                "evil\x1b[31m+0x1".into(),
                format!("{}\x1b[2J+0x2", "a_very_long_symbol_".repeat(400)),
            ]
        })
        .unwrap();
    }
    w.finish(Footer::default()).unwrap();
    let trace = write("hostile.rwt", &out);
    let trace = trace.to_str().unwrap();
    let page = format!("{:#x}", events[insert].pfn);
    for args in [
        vec!["report", trace],
        vec!["report", trace, "--page", &page],
        vec!["stream", "--trace", trace],
        vec!["check", "--trace", trace],
    ] {
        let o = refwatch(&args);
        assert!(
            o.stdout.contains("\\x1b]0;PWN\\x07"),
            "{args:?}: {}",
            o.stdout
        );
        assert!(
            !o.stdout.contains('\x1b') && !o.stdout.contains('\x07'),
            "{args:?} printed raw control bytes"
        );
    }
    let json = refwatch(&["report", trace, "--json"]);
    assert!(
        json.stdout.contains("\\u001b]0;PWN\\u0007"),
        "{}",
        json.stdout
    );
}
