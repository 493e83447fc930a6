//! The hot path: normal-page churn (`benchload churn`) untraced, under `refwatch record` and
//! under bpftrace, interleaved in one boot; `benchload zap` under each times one unmap-probe
//! entry. Ratios of median rounds, in wall time and in guest instructions (insncount plugin).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::figures::{HotPath, HotTracer, Instructions, Variant};
use super::guest::{self, Bench, Measured, fields, trace_stats};
use super::insns::{self, Counted, Rounds};
use super::stats::median;
use crate::lab::GuestJob;

pub fn hot_path(bench: &Bench, name: &str) -> Result<HotPath> {
    let kernel = bench.kernel(name)?;
    let sizes = bench.sizes;
    let label = format!("hot-{name}");
    // On one vCPU: a process that ran on both pays TLB-shootdown IPIs at munmap, which moved
    // whole runs' instruction counts by up to 20 % depending on where the scheduler put it.
    let churn = format!(
        "taskset -c 1 benchload churn {} {} /dev/ram0",
        sizes.churn_rounds, sizes.churn_mib
    );
    let zap = format!(
        "taskset -c 1 benchload zap {} {}",
        sizes.zap_rounds, sizes.churn_mib
    );
    // The page-cache half reads a RAM disk (brd): page-cache pages without a disk's I/O noise.
    let mut setup = Vec::new();
    let mut files = Vec::new();
    for ko in kernel.module_load_order(&["brd"])? {
        let guest = format!(
            "/bench/{}",
            ko.file_name().context("module name")?.to_string_lossy()
        );
        setup.push(format!(
            "insmod {guest} rd_nr=1 rd_size={}",
            2 * sizes.churn_mib * 1024
        ));
        files.push((ko, guest));
    }
    let mut bpftrace_reason = match bench.bpftrace_job_files(name)? {
        Ok(f) => {
            files.extend(f);
            None
        }
        Err(reason) => Some(reason),
    };
    // "again" is untraced too: its ratio to "base" is what this run cannot resolve.
    // The hot (per-PTE unmap) probes asked for ("wide"): what the default plan saves.
    let mut variants = vec![
        Variant::Base,
        Variant::Again,
        Variant::Kprobe,
        Variant::Fentry,
        Variant::Wide,
    ];
    if bpftrace_reason.is_none() {
        variants.push(Variant::Bpftrace);
    }
    let mut script = guest::script(include_str!("../../lab/scripts/bench-hot-path.sh"))
        .replace("CHURN", &churn)
        .replace("ZAP", &zap)
        .replace("HOT_OPTIONS", &hot_options());
    for rep in 0..sizes.reps {
        // Rotate the order each repetition so no variant always runs first.
        for i in 0..variants.len() {
            let v = variants[(i + rep) % variants.len()];
            writeln!(script, "run {} {rep}", v.name())?;
        }
    }
    writeln!(script, "exit 0")?;
    let (qemu_args, marks_file) = bench.insncount(&label)?;
    let job = GuestJob {
        files,
        setup,
        qemu_args,
        timeout: Some(Duration::from_secs(2400)),
        ..GuestJob::default()
    };
    let Measured {
        out,
        host_other_cores,
    } = bench.measure(&kernel, &script, job, &label)?;
    let stdout = std::fs::read_to_string(out.join("stdout"))?;
    let results = results(&stdout, &variants);
    let warmup_rounds = (sizes.churn_rounds + sizes.zap_rounds) as usize;
    let counted = instructions(
        &results,
        &std::fs::read_to_string(&marks_file)?,
        warmup_rounds,
    );
    let mut runs_s: BTreeMap<Variant, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for &(v, what, secs) in &results {
        runs_s
            .entry(v)
            .or_default()
            .entry(what.to_owned())
            .or_default()
            .push(secs);
    }
    // A bpftrace that failed to start is skipped from then on; the repetitions before count.
    let bpftrace_failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BPFTRACE_FAILED "))
        .map(|s| s.trim().to_owned());
    if let Some(failed) = bpftrace_failed
        .as_ref()
        .filter(|_| !runs_s.contains_key(&Variant::Bpftrace))
    {
        bpftrace_reason = Some(format!("bpftrace did not start in the guest: {failed}"));
    }
    // The median round of all repetitions: one slow stretch of the host moves it less than it
    // moves a whole run.
    let typical = |v: Variant, what: &str| {
        runs_s
            .get(&v)
            .and_then(|w| w.get(what))
            .cloned()
            .and_then(median)
    };
    let Some(base_round) = typical(Variant::Base, "churn_round") else {
        bail!("no baseline churn result; guest output:\n{stdout}")
    };
    let base_zap = typical(Variant::Base, "zap_round");
    let base_median = typical(Variant::Base, "churn");
    // Entries of the probed functions in one churn round, from the kprobe recording's footer
    // (its own start and exit included: an upper bound). The same for every tracer.
    let entries_per_round = trace_stats(bench.tool, &out.join("kprobe-churn.rwt"))
        .ok()
        .and_then(|st| st.calls)
        .map(|c| c.values().sum::<u64>() as f64 / f64::from(sizes.churn_rounds));
    let zap_pages = f64::from(sizes.zap_pages_per_round());
    let (insn_figures, insn_error) = match counted {
        Ok(i) => (Some(i), None),
        Err(e) => (None, Some(e)),
    };
    let tracers = variants
        .iter()
        .filter(|&&v| v != Variant::Base)
        .filter(|&&v| v != Variant::Bpftrace || bpftrace_reason.is_none())
        .map(|&v| {
            // What one unmap costs this tracer: benchload zap unmaps one page per entry.
            let per_entry_ns = typical(v, "zap_round")
                .zip(base_zap)
                .map(|(z, b)| (z - b) / zap_pages * 1e9);
            let churn =
                |r: &Rounds<Round>| r.ratio((v, "churn_round"), (Variant::Base, "churn_round"));
            HotTracer {
                variant: v,
                attach: v.attach(),
                insn_ratio: insn_figures.as_ref().and_then(|i| churn(&i.own)),
                insn_ratio_all_vcpus: insn_figures.as_ref().and_then(|i| churn(&i.all)),
                insn_per_entry: insn_figures
                    .as_ref()
                    .and_then(|i| per_entry(&i.own, v, zap_pages)),
                ratio: typical(v, "churn_round").map(|r| r / base_round),
                median_run_ratio: typical(v, "churn").zip(base_median).map(|(m, b)| m / b),
                per_entry_ns,
                ratio_from_entries: entries_per_round
                    .zip(per_entry_ns)
                    .map(|(n, ns)| 1.0 + n * ns / 1e9 / base_round),
                target: v.target().map(str::to_owned),
            }
        })
        .collect();
    let untraced = |f: fn(&Counted<Round>) -> &Rounds<Round>, what| {
        insn_figures
            .as_ref()
            .and_then(|i| f(i).typical((Variant::Base, what)))
    };
    Ok(HotPath {
        kernel: kernel.spec.release.to_owned(),
        workload: churn,
        zap_workload: zap,
        repetitions: sizes.reps,
        estimator: "median of all repetitions' rounds".into(),
        baseline_s: base_median,
        baseline_round_s: base_round,
        churn_entries_per_round: entries_per_round,
        host_other_cores,
        instructions: Instructions {
            estimator:
                "median guest instructions per round on the workload's vCPU (QEMU TCG plugin)"
                    .into(),
            untraced_churn_round: untraced(|i| &i.own, "churn_round"),
            untraced_zap_round: untraced(|i| &i.own, "zap_round"),
            all_vcpus_untraced_churn_round: untraced(|i| &i.all, "churn_round"),
            all_vcpus_untraced_zap_round: untraced(|i| &i.all, "zap_round"),
            error: insn_error,
        },
        tracers,
        runs_s,
        bpftrace_reason,
        bpftrace_failed,
    })
}

/// The guest's "RESULT variant=V rep=R WHAT seconds=S …" lines, in order, as (V, WHAT, S);
/// WHAT is churn, churn_round, zap or zap_round.
fn results<'a>(stdout: &'a str, variants: &[Variant]) -> Vec<(Variant, &'a str, f64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("RESULT ")?.split_whitespace();
            let (variant, _rep, what) = (words.next()?, words.next()?, words.next()?);
            let v = variant
                .strip_prefix("variant=")
                .and_then(|v| variants.iter().find(|x| x.name() == v))?;
            Some((*v, what, fields(line, "RESULT ")?.get("seconds").copied()?))
        })
        .collect()
}

/// What a marked round of the hot path was: a variant's churn or zap round.
type Round = (Variant, &'static str);

/// Instructions per round, by variant; an error if the untraced rounds are missing.
fn instructions(
    results: &[(Variant, &str, f64)],
    marks: &str,
    warmup_rounds: usize,
) -> Result<Counted<Round>, String> {
    let rounds: Vec<Round> = results
        .iter()
        .filter_map(|&(v, what, _)| match what {
            "churn_round" => Some((v, "churn_round")),
            "zap_round" => Some((v, "zap_round")),
            _ => None,
        })
        .collect();
    let counted = insns::count(&rounds, marks, (warmup_rounds, 0))?;
    for what in ["churn_round", "zap_round"] {
        if counted.own.typical((Variant::Base, what)).is_none() {
            return Err("no untraced rounds".into());
        }
    }
    Ok(counted)
}

/// Instructions one unmap-probe entry adds (benchload zap unmaps one page per entry).
fn per_entry(r: &Rounds<Round>, v: Variant, zap_pages: f64) -> Option<f64> {
    let zap = |v| r.typical((v, "zap_round"));
    zap(v)
        .zip(zap(Variant::Base))
        .map(|(n, b)| (n - b) / zap_pages)
}

/// `--with` for every hot catalog entry (vm_normal_page, folio_remove_rmap_*: every normal
/// page unmapped passes them), off by default on every kernel: the per-PTE unmap probes that
/// the default plan does without, for what they would cost.
fn hot_options() -> String {
    refwatch_common::CATALOG
        .iter()
        .filter(|p| p.hot)
        .map(|p| format!("--with {}", p.function))
        .collect::<Vec<_>>()
        .join(" ")
}
