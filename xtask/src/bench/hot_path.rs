//! The hot path: normal-page churn (`benchload churn`) untraced, under `refwatch record` and
//! under bpftrace, interleaved in one boot; `benchload zap` under each times one unmap-probe
//! entry. Ratios of median rounds, in wall time and in guest instructions (insncount plugin).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::figures::{HotPath, HotTracer, Instructions, Variant};
use super::guest::{Bench, Measured, fields, trace_stats};
use super::stats::median;
use crate::lab::{GuestJob, insncount::Mark};

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
    let mut script = String::from(include_str!("../../lab/scripts/bench-hot-path.sh"))
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
    let marks_file = bench.work.join(format!("{label}.marks"));
    let plugin = format!(
        "{},out={}",
        crate::lab::insncount::build(bench.apt)?.display(),
        marks_file.display()
    );
    let job = GuestJob {
        files,
        setup,
        qemu_args: vec!["-plugin".to_owned(), plugin],
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
    let insns = instructions(
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
    let (insn_figures, insn_error) = match insns {
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
            let insn = |f: fn(&InsnFigures) -> &InsnCounts| insn_figures.as_ref().map(f);
            HotTracer {
                variant: v,
                attach: v.attach(),
                insn_ratio: insn(|i| &i.own).and_then(|c| c.ratio(v)),
                insn_ratio_all_vcpus: insn(|i| &i.all).and_then(|c| c.ratio(v)),
                insn_per_entry: insn(|i| &i.own).and_then(|c| c.per_entry(v, zap_pages)),
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
            untraced_churn_round: insn_figures.as_ref().map(|i| i.own.churn),
            untraced_zap_round: insn_figures.as_ref().map(|i| i.own.zap),
            all_vcpus_untraced_churn_round: insn_figures.as_ref().map(|i| i.all.churn),
            all_vcpus_untraced_zap_round: insn_figures.as_ref().map(|i| i.all.zap),
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

/// Instructions per round of each variant, on one set of vCPUs.
struct InsnCounts {
    by: BTreeMap<(Variant, &'static str), Vec<f64>>,
    churn: f64,
    zap: f64,
}

impl InsnCounts {
    fn new(rounds: &[(Variant, &str)], counts: impl Iterator<Item = u64>) -> Result<Self, String> {
        let mut by: BTreeMap<(Variant, &'static str), Vec<f64>> = BTreeMap::new();
        for (&(v, what), n) in rounds.iter().zip(counts) {
            let what = if what == "churn_round" {
                "churn_round"
            } else {
                "zap_round"
            };
            by.entry((v, what)).or_default().push(n as f64);
        }
        let typical = |what| by.get(&(Variant::Base, what)).cloned().and_then(median);
        let (Some(churn), Some(zap)) = (typical("churn_round"), typical("zap_round")) else {
            return Err("no untraced rounds".into());
        };
        Ok(Self { by, churn, zap })
    }

    fn typical(&self, v: Variant, what: &'static str) -> Option<f64> {
        self.by.get(&(v, what)).cloned().and_then(median)
    }

    /// The variant's median churn round over the untraced one.
    fn ratio(&self, v: Variant) -> Option<f64> {
        self.typical(v, "churn_round").map(|n| n / self.churn)
    }

    /// Instructions one unmap-probe entry adds (benchload zap unmaps one page per entry).
    fn per_entry(&self, v: Variant, zap_pages: f64) -> Option<f64> {
        self.typical(v, "zap_round")
            .map(|n| (n - self.zap) / zap_pages)
    }
}

/// Counted twice: on the workload's (pinned) vCPU, which is what the probes add to its own
/// path, and on all vCPUs, which adds the tracer's reader and whatever else the system ran.
struct InsnFigures {
    own: InsnCounts,
    all: InsnCounts,
}

/// Guest instructions per round, from the insncount plugin's marks: one pair per round, the
/// warm-up's first, then the rounds in the order of the results.
fn instructions(
    results: &[(Variant, &str, f64)],
    marks: &str,
    warmup_rounds: usize,
) -> Result<InsnFigures, String> {
    let marks = crate::lab::insncount::marks(marks);
    let rounds: Vec<(Variant, &str)> = results
        .iter()
        .filter(|(_, what, _)| what.ends_with("_round"))
        .map(|&(v, what, _)| (v, what))
        .collect();
    let pairs: Vec<&[Mark]> = marks.chunks_exact(2).collect();
    if pairs.len() != warmup_rounds + rounds.len() {
        return Err(format!(
            "{} marked rounds for {} warm-up and {} measured ones",
            pairs.len(),
            warmup_rounds,
            rounds.len()
        ));
    }
    if let Some(p) = pairs.iter().find(|p| p[0].vcpu != p[1].vcpu) {
        return Err(format!(
            "a round began on vCPU {} and ended on vCPU {}: the workload was not pinned",
            p[0].vcpu, p[1].vcpu
        ));
    }
    let measured = &pairs[warmup_rounds..];
    Ok(InsnFigures {
        own: InsnCounts::new(&rounds, measured.iter().map(|p| p[1].own - p[0].own))?,
        all: InsnCounts::new(
            &rounds,
            measured
                .iter()
                .map(|p| p[1].total.saturating_sub(p[0].total)),
        )?,
    })
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
