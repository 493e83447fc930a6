//! Cuts a recorded trace down to a fuzz seed: the plan trimmed to the attached probes (the
//! header is most of a small trace, and mutations spent there rarely reach the frames), the
//! first EVENTS events of each probe (a workload's first thousands are all inserts) with their
//! tasks and stacks, and the recording's own footer.
//!
//!     cargo +nightly run --release --example trace_seed -- TRACE SEED EVENTS

use refwatch::trace::{TraceReader, TraceWriter};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, events] = args.as_slice() else {
        eprintln!("usage: trace_seed TRACE SEED EVENTS");
        std::process::exit(2);
    };
    let events: u64 = events.parse().expect("EVENTS is a number");
    let file = std::fs::File::open(input).expect("opening the trace");
    let mut reader = TraceReader::new(std::io::BufReader::new(file)).expect("a trace");
    let mut header = reader.header().clone();
    header
        .plan
        .probes
        .retain(|p| matches!(p.attached, Some(Ok(_))));
    let mut writer = TraceWriter::new(Vec::new(), &header).expect("writing to memory");
    let mut kept = [0u64; 256];
    while let Some(&ev) = reader.next_event().expect("a whole trace") {
        let kept = &mut kept[usize::from(ev.probe)];
        if *kept < events {
            *kept += 1;
            let stack = |id| reader.stack(id).to_vec();
            writer.event(&ev, stack).expect("writing to memory");
        }
    }
    let footer = reader.footer().expect("a finished trace").clone();
    let seed = writer.finish(footer).expect("writing to memory");
    std::fs::write(output, &seed).expect("writing the seed");
    eprintln!("{} bytes", seed.len());
}
