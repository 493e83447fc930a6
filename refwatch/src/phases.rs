//! Timing start-up phases for the bench (see [`refwatch_common::startup`]); free when unasked.

use std::sync::Mutex;
use std::time::Instant;

use refwatch_common::startup::{PHASES_ENV, Phases};

static PHASES: Mutex<Option<(Instant, Phases)>> = Mutex::new(None);

/// Runs `f`, adding its wall time to the phase `field` picks.
pub fn time<T>(field: fn(&mut Phases) -> &mut f64, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let mut phases = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    let (_, p) = phases.get_or_insert((started, Phases::default()));
    *field(p) += ms;
    out
}

/// Runs `f`, the load (verification) of probe `id`'s program, timed as such.
pub fn verify<T>(id: u8, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = time(|p| &mut p.verify_ms, f);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let mut phases = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = phases.as_mut()
        && p.slowest_verify.is_none_or(|(_, slowest)| ms > slowest)
    {
        p.slowest_verify = Some((id, ms));
    }
    out
}

/// Counts one load of the eBPF object.
pub fn count_load() {
    let mut phases = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    let (_, p) = phases.get_or_insert((Instant::now(), Phases::default()));
    p.aya_loads += 1;
}

/// Writes the phases so far to the file `REFWATCH_PHASES` names, if it names one: the probes
/// are attached now. A failed write is told on stderr and otherwise ignored.
pub fn write() {
    let Some(path) = std::env::var_os(PHASES_ENV) else {
        return;
    };
    let phases = PHASES.lock().unwrap_or_else(|e| e.into_inner());
    let Some((first, mut p)) = *phases else {
        return;
    };
    p.open_ms = first.elapsed().as_secs_f64() * 1e3;
    let written = serde_json::to_string(&p)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&path, json + "\n"));
    if let Err(e) = written {
        eprintln!("refwatch: {PHASES_ENV}={}: {e}", path.to_string_lossy());
    }
}
