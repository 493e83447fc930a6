//! Round trip, size and damage tests on synthetic traces (made by the aggregator's
//! synthetic kernel model, not recorded).

use refwatch_common::{Event, EventKind, RefModel, event::WATCH_PROBE};

use super::{TraceError, TraceReader, VERSION};
use crate::aggregate::synth::{Op, Probes, healthy};

fn fsdax_stream(ops: usize) -> (Probes, Vec<Event>) {
    let p = Probes::for_model(RefModel::FsdaxOneBased);
    // A busy fsdax workload: faults, GUP and unpins over a few dozen pages.
    let ops: Vec<Op> = (0..ops)
        .map(|i| match i % 6 {
            0 => Op::Map(i * 7),
            1 | 2 => Op::Grab(i * 7 - 7 * (i % 6), i % 4 == 1),
            3 | 4 => Op::Release(i * 7 - 7 * (i % 6)),
            _ => Op::Unmap(i * 7 - 35),
        })
        .collect();
    let events = healthy(&p, false, 64, &ops);
    (p, events)
}

fn read_all(bytes: &[u8]) -> Result<(Vec<Event>, Option<String>), TraceError> {
    let mut r = TraceReader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(&ev) = r.next_event()? {
        out.push(ev);
    }
    Ok((out, r.warning().map(str::to_owned)))
}

#[test]
fn round_trip() {
    let (p, events) = fsdax_stream(3000);
    let bytes = p.trace(&events, 7);
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    assert!(r.header().synthetic);
    assert_eq!(r.header().plan, p.plan());
    let mut back = Vec::new();
    while let Some(&ev) = r.next_event().unwrap() {
        back.push(ev);
    }
    assert_eq!(back, events);
    assert_eq!(
        r.footer().map(|f| (f.events, f.dropped)),
        Some((events.len() as u64, 7))
    );
    assert_eq!(r.warning(), None);
    assert_eq!(r.stack(events[1].stack_id)[1], "caller+0x20");
}

#[test]
fn round_trip_of_odd_values() {
    let (p, mut events) = fsdax_stream(10);
    events[3].refcount = i32::MIN;
    events[4].mapcount = -7;
    events[5].page = 0;
    events[6].ts_ns = 3; // time going backwards
    events[7].kind = 0x7e;
    events[8].extra = u64::MAX;
    events[9].stack_id = -14;
    events[10].comm = *b"0123456789abcdef";
    let (back, warning) = read_all(&p.trace(&events, 0)).unwrap();
    assert_eq!(back, events);
    assert_eq!(warning, None);
}

#[test]
fn watchpoint_hits_round_trip_between_probe_events() {
    let (p, mut events) = fsdax_stream(12);
    for i in [2, 3, 7] {
        events[i].probe = WATCH_PROBE;
        events[i].kind = EventKind::Watch as u8;
        events[i].extra = 0;
    }
    let (back, warning) = read_all(&p.trace(&events, 0)).unwrap();
    assert_eq!(back, events);
    assert_eq!(warning, None);
}

#[test]
fn fsdax_events_stay_small() {
    let (p, events) = fsdax_stream(20_000);
    let bytes = p.trace(&events, 0);
    let header = TraceReader::new(&bytes[..])
        .map(|r| serde_json::to_vec(r.header()).unwrap().len())
        .unwrap();
    let per_event = (bytes.len() - header) as f64 / events.len() as f64;
    eprintln!("{} events, {:.2} bytes/event", events.len(), per_event);
    assert!(per_event <= 12.0, "{per_event:.2} bytes/event");
}

#[test]
fn every_truncation_reads_a_prefix() {
    let (p, events) = fsdax_stream(12);
    let bytes = p.trace(&events, 0);
    let header_end = 14
        + serde_json::to_vec(TraceReader::new(&bytes[..]).unwrap().header())
            .unwrap()
            .len();
    for cut in 0..bytes.len() {
        match read_all(&bytes[..cut]) {
            Ok((got, warning)) => {
                assert!(cut >= header_end, "cut {cut}: header accepted");
                assert_eq!(&events[..got.len()], &got[..], "cut {cut}");
                assert!(warning.is_some(), "cut {cut}: no warning");
            }
            Err(TraceError::Empty) => assert_eq!(cut, 0),
            Err(TraceError::ShortHeader) => assert!(cut < header_end),
            Err(e) => panic!("cut {cut}: {e}"),
        }
    }
}

#[test]
fn bad_files_are_errors() {
    let (p, events) = fsdax_stream(2);
    let good = p.trace(&events, 0);
    assert!(matches!(TraceReader::new(&b""[..]), Err(TraceError::Empty)));
    assert!(matches!(
        TraceReader::new(&b"PK\x03\x04 not a trace"[..]),
        Err(TraceError::BadMagic)
    ));
    let mut newer = good.clone();
    newer[8] = VERSION as u8 + 1;
    assert!(matches!(
        TraceReader::new(&newer[..]),
        Err(TraceError::Version { found }) if found == VERSION + 1
    ));
    let mut v0 = good.clone();
    v0[8] = 0;
    assert!(matches!(
        TraceReader::new(&v0[..]),
        Err(TraceError::Version { found: 0 })
    ));
    let mut bad_header = good.clone();
    bad_header[14] = b'!';
    assert!(matches!(
        TraceReader::new(&bad_header[..]),
        Err(TraceError::Header(_))
    ));
    let mut junk = good.clone();
    let at = junk.len() - 40;
    junk[at..].fill(0xee);
    assert!(matches!(read_all(&junk), Err(TraceError::Corrupt { .. })));
    let mut trailing = good;
    trailing.push(0);
    assert!(matches!(
        read_all(&trailing),
        Err(TraceError::Corrupt { .. })
    ));
}

#[test]
fn events_handed_over_by_the_decoder_thread_are_the_same() {
    // More than a few batches, so that batches are recycled; then damage past the middle.
    let (p, events) = fsdax_stream(30_000);
    let good = p.trace(&events, 0);
    let mut corrupt = good.clone();
    let at = good.len() * 2 / 3;
    corrupt[at..at + 64].fill(0xee);
    for (bytes, damaged) in [(good, false), (corrupt, true)] {
        let (serial, serial_end) = match read_all(&bytes) {
            Ok((got, _)) => (got, None),
            Err(e) => {
                // The events before the error, one by one.
                let mut r = TraceReader::new(&bytes[..]).unwrap();
                let mut got = Vec::new();
                while let Ok(Some(&ev)) = r.next_event() {
                    got.push(ev);
                }
                (got, Some(e.to_string()))
            }
        };
        let mut r = TraceReader::new(&bytes[..]).unwrap();
        let mut handed = Vec::new();
        let end = r
            .for_each_event(|ev| handed.push(*ev))
            .err()
            .map(|e| e.to_string());
        assert_eq!(end, serial_end);
        assert_eq!(end.is_some(), damaged);
        assert!(handed.len() > 5000, "{} events", handed.len());
        assert_eq!(handed, serial);
    }
}

/// Past the batches in flight (the decoder waits for the aggregating thread to give emptied
/// ones back): every event in order, and a panic of the consumer comes back out instead of
/// leaving the decoder waiting.
#[test]
fn a_long_trace_is_handed_over_in_order() {
    let (p, events) = fsdax_stream(30_000);
    let bytes = p.trace(&events, 7);
    let (serial, _) = read_all(&bytes).unwrap();
    assert!(serial.len() > 8 * 4096, "{} events", serial.len());
    let mut handed = Vec::new();
    let mut r = TraceReader::new(&bytes[..]).unwrap();
    r.for_each_event(|ev| handed.push(*ev)).unwrap();
    assert_eq!(handed, serial);
    let panicked = std::panic::catch_unwind(|| {
        let mut r = TraceReader::new(&bytes[..]).unwrap();
        let _ = r.for_each_event(|_| panic!("the consumer gives up"));
    });
    assert!(panicked.is_err());
}

/// `check --trace` judges the command recorded as `check -- CMD` judges it live.
#[test]
fn the_footer_says_what_became_of_the_command() {
    use super::{Footer, Header};
    use crate::capture::CommandOutcome::{self, *};
    let p = Probes::for_model(RefModel::ZeroBased);
    let header = |command: &[&str]| Header {
        kernel: "7.2".into(),
        plan: p.plan(),
        layout: None,
        command: command.iter().map(|s| (*s).to_owned()).collect(),
        synthetic: true,
    };
    let footer = |end: &str, command_status, command_signal| Footer {
        end: end.into(),
        command_status,
        command_signal,
        ..Footer::default()
    };
    let outcome = |f: Option<&Footer>| -> Option<CommandOutcome> {
        Footer::command(f, &header(&["daxload"])).map(|c| c.outcome)
    };
    assert_eq!(
        outcome(Some(&footer("command-exited", Some(3), None))),
        Some(Exited { status: 3 })
    );
    assert_eq!(
        outcome(Some(&footer("command-exited", None, Some(9)))),
        Some(Killed { signal: Some(9) })
    );
    assert_eq!(
        outcome(Some(&footer("duration", None, None))),
        Some(Stopped)
    );
    assert_eq!(outcome(None), Some(Unknown));
    // Before the stable words: the exit's Debug text, with the raw wait status.
    let legacy = |raw: &str| format!("commandexited(exitstatus(unix_wait_status({raw})))");
    assert_eq!(
        outcome(Some(&footer(&legacy("0"), None, None))),
        Some(Exited { status: 0 })
    );
    assert_eq!(
        outcome(Some(&footer(&legacy("256"), None, None))),
        Some(Exited { status: 1 })
    );
    assert_eq!(
        outcome(Some(&footer(&legacy("9"), None, None))),
        Some(Killed { signal: Some(9) })
    );
    assert_eq!(
        Footer::command(Some(&footer("duration", None, None)), &header(&[])),
        None
    );
}
