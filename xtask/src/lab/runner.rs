//! Running the VM matrix: the case trait, one case's boot and judging, and two VMs at a time.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;

use super::{Apt, Assets, GuestJob, Kernel, VmResult, run_in_vm};

/// One case of the matrix (matrix.rs lists them all): it boots its own VM and judges it.
pub trait VmCase: Sync {
    fn id(&self) -> String;
    fn kernel(&self) -> &'static str;
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>>;
}

/// Runs the job of case `id` in a fresh VM, its files under runs/matrix-ID.
pub fn boot(
    id: &str,
    kernel: &Kernel,
    assets: &Assets,
    job: &GuestJob,
) -> Result<VmResult, Vec<String>> {
    let label = format!("matrix-{}", id.replace('/', "-"));
    run_in_vm(kernel, assets, job, &label).map_err(|e| vec![format!("{e:#}")])
}

/// Runs the job of case `id` in a fresh VM and judges the result with `assess`; Err carries
/// every reason the case failed.
pub fn run_job(
    id: &str,
    kernel: &Kernel,
    assets: &Assets,
    job: &GuestJob,
    assess: impl FnOnce(&VmResult) -> Vec<String>,
) -> Result<(), Vec<String>> {
    let result = boot(id, kernel, assets, job)?;
    let failures = assess(&result);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Runs a case whose job may fail to be made (a program to build, a module to load); a failed
/// case's reasons end with its console log.
pub fn run(
    id: &str,
    kernel: &Kernel,
    assets: &Assets,
    job: Result<GuestJob>,
    assess: impl FnOnce(&VmResult) -> Vec<String>,
) -> Result<(), Vec<String>> {
    let job = job.map_err(|e| vec![format!("{e:#}")])?;
    run_job(id, kernel, assets, &job, |result| {
        let mut failures = assess(result);
        if !failures.is_empty() {
            failures.push(format!("console {}", result.console_log.display()));
        }
        failures
    })
}

/// Runs the cases (two VMs at a time: one TCG thread each on a 2-core machine) and returns
/// (passed, failed). Kernels are fetched up front; a kernel that cannot be had fails its cases.
pub fn run_all(cases: &[&dyn VmCase], assets: &Assets, apt: &Apt) -> (usize, usize) {
    let mut kernels: BTreeMap<&str, Result<Kernel, String>> = BTreeMap::new();
    for case in cases {
        kernels.entry(case.kernel()).or_insert_with(|| {
            super::kernel::spec(case.kernel())
                .and_then(|spec| Kernel::fetch(spec, apt))
                .map_err(|e| format!("{e:#}"))
        });
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let tally = std::sync::Mutex::new((0, 0));
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some(case) =
                    cases.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
                {
                    let started = Instant::now();
                    let outcome = match &kernels[case.kernel()] {
                        Ok(kernel) => case.run(kernel, assets),
                        Err(e) => Err(vec![e.clone()]),
                    };
                    let secs = started.elapsed().as_secs_f64();
                    let mut tally = tally.lock().expect("no panics while held");
                    match outcome {
                        Ok(()) => {
                            tally.0 += 1;
                            println!("PASS {} ({secs:.1}s)", case.id());
                        }
                        Err(reasons) => {
                            tally.1 += 1;
                            println!("FAIL {} ({secs:.1}s)", case.id());
                            for reason in reasons {
                                println!("    {reason}");
                            }
                        }
                    }
                }
            });
        }
    });
    tally.into_inner().expect("no panics while held")
}

/// The last `n` lines of `text`, on one line, for a failure message.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}
