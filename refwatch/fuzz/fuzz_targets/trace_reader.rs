//! Any bytes given to the trace reader and to `refwatch report`'s summary path must end in
//! events, a warning or an error: never a panic, an overflow or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refwatch::{summary, trace::TraceReader, verdict};

fuzz_target!(|data: &[u8]| {
    // What `refwatch report` (text and --json) and `check --trace` do: the summary reads every
    // event (and the stacks of findings) through the reader until the end or the first error.
    let Ok(reader) = TraceReader::new(data) else { return };
    if let Ok(s) = summary::from_trace(reader) {
        let _ = s.render(usize::MAX);
        let _ = serde_json::to_string_pretty(&s).expect("a summary always serializes");
        let _ = verdict::decide(&s, &verdict::Policy::default());
    }
});
