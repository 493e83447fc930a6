//! Device events: the fsdax fault + GUP pin storm (`benchload storm`) under `refwatch record`
//! in each attach mode, then with smaller and smaller rings until events are dropped.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;

use super::figures::{Attach, Delivered, Device, Storm, TARGETS};
use super::guest::{Bench, Measured, fields, trace_stats};
use crate::lab::GuestJob;

/// Ring sizes tried, largest first, until drops appear.
const RINGS_KIB: &[u32] = &[4096, 256, 64, 16, 4];

/// The traces kept from the device boot (the trace-size figure reads them).
pub const TRACES: &[&str] = &["storm-kprobe.rwt", "storm-fentry.rwt", "gup.rwt"];

pub fn device(bench: &Bench, name: &str) -> Result<Device> {
    let kernel = bench.kernel(name)?;
    let sizes = bench.sizes;
    let storm = format!("benchload storm {} {}", sizes.storm_passes, sizes.storm_mib);
    let mut script = String::from("cd /tmp\n");
    writeln!(script, "{storm} > /out/storm-base.txt 2>&1")?;
    for mode in Attach::ALL {
        writeln!(
            script,
            "refwatch record -o /out/storm-{mode}.rwt --attach {mode} -- {storm} \
             > /out/storm-{mode}.txt 2>&1"
        )?;
    }
    for kib in RINGS_KIB {
        writeln!(
            script,
            "refwatch record -o /out/ring-{kib}.rwt --attach kprobe --ring-kib {kib} -- {storm} \
             > /out/ring-{kib}.txt 2>&1"
        )?;
    }
    writeln!(
        script,
        "refwatch record -o /out/gup.rwt --attach kprobe -- daxload fsdax-gup > /out/gup.txt 2>&1"
    )?;
    writeln!(script, "exit 0")?;
    let job = GuestJob {
        timeout: Some(Duration::from_secs(900)),
        ..GuestJob::default()
    };
    let Measured {
        out,
        host_other_cores,
    } = bench.measure(&kernel, &script, job, &format!("device-{name}"))?;
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();

    // The storm's own time from benchload's line; events and drops from the trace's footer.
    let run = |stem: &str, attach: Attach, ring_kib: Option<u32>| -> Storm {
        let text = read(&format!("{stem}.txt"));
        let secs = fields(&text, "storm ").and_then(|f| f.get("seconds").copied());
        let stats = trace_stats(bench.tool, &out.join(format!("{stem}.rwt")));
        let (delivered, error) = match (secs, stats) {
            (Some(seconds), Ok(st)) => {
                let dropped = st.dropped.unwrap_or(0);
                let delivered = Delivered {
                    seconds,
                    events: st.events,
                    dropped,
                    events_per_s: st.events as f64 / seconds,
                    offered_per_s: (st.events + dropped) as f64 / seconds,
                };
                (Some(delivered), None)
            }
            (None, _) => (
                None,
                Some(text.lines().last().unwrap_or("no output").to_owned()),
            ),
            (_, Err(e)) => (None, Some(format!("{e:#}"))),
        };
        Storm {
            attach,
            ring_kib,
            delivered,
            error,
        }
    };
    let storms = Attach::ALL
        .into_iter()
        .map(|mode| run(&format!("storm-{mode}"), mode, None))
        .collect();
    let ring_sweep: Vec<Storm> = RINGS_KIB
        .iter()
        .map(|&kib| run(&format!("ring-{kib}"), Attach::Kprobe, Some(kib)))
        .collect();
    let smallest_ring_kib_without_drops = ring_sweep
        .iter()
        .rfind(|r| r.delivered.as_ref().is_some_and(|d| d.dropped == 0))
        .and_then(|r| r.ring_kib);
    for kib in RINGS_KIB {
        std::fs::remove_file(out.join(format!("ring-{kib}.rwt"))).ok();
    }
    Ok(Device {
        kernel: kernel.spec.release.to_owned(),
        untraced_seconds: fields(&read("storm-base.txt"), "storm ")
            .and_then(|f| f.get("seconds").copied()),
        workload: storm,
        host_other_cores,
        storms,
        ring_sweep,
        smallest_ring_kib_without_drops,
        target_dropped: TARGETS.device_dropped,
    })
}
