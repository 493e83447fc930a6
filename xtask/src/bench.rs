//! `cargo xtask bench`: refwatch's performance figures, measured in the VM lab and on the host.
//!
//! 1. hot path: normal-page churn (`benchload churn`) without tracing (twice: the second
//!    "again" shows what the run cannot resolve), under `refwatch record` (kprobe, fentry,
//!    kprobe with the per-PTE unmap probes the default plan leaves out) and under a bpftrace script with the same probes and
//!    filter, all in one boot, interleaved; ratios of the median rounds to the untraced one.
//!    Under each, `benchload zap` times unmaps alone: the cost of one probed-function entry,
//!    which times the entries of a churn round gives the ratio again, from entries.
//! 2. device events: a DAX fault + GUP pin storm (`benchload storm`) under `refwatch record`,
//!    then the same storm with smaller and smaller ring buffers until events are dropped.
//! 3. offline analysis: a big trace made of copies of a recorded one, `refwatch report --json`
//!    timed on the host, with its peak RSS.
//! 4. trace size: bytes per event of the recorded traces.
//! 5. scale: `refwatch report` on synthetic traces of whole pgmaps up to TiBs, on the host
//!    ([`scale`]; `--only scale` runs it alone, without the VM lab).
//!
//! Timing is only reported here, never asserted: TCG timings depend on the host.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cmd::{self, note};
use crate::lab::{Apt, Assets, GuestJob, Kernel, insncount::Mark, run_in_vm};
use crate::paths;

mod scale;

/// bpftrace from the same Debian release as the default (6.1, bookworm) guest kernel.
const BPFTRACE_DEB: (&str, &str) = ("bpftrace", "0.17.0-1");

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fewer repetitions, a smaller storm and a smaller big trace (a few minutes).
    #[arg(long)]
    quick: bool,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Kernel for the device storm and the traces; the first hot-path kernel.
    #[arg(long, default_value = "6.1")]
    kernel: String,
    /// More kernels to measure the hot path on (one boot each), e.g. `--also 7.2`.
    #[arg(long, value_name = "KERNEL")]
    also: Vec<String>,
    /// Measure one part alone: `scale` (host only, no VM).
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// pgmap sizes of the scale part, in GiB of 4 KiB pages [default: 4,16,64,256; --quick: 4,16].
    #[arg(long, value_name = "GIB", value_delimiter = ',')]
    scale_gib: Vec<u64>,
    /// Another refwatch build (e.g. one from before a change) timed beside this one in the
    /// scale part, on the same traces.
    #[arg(long, value_name = "REFWATCH")]
    baseline: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Part {
    Scale,
}

struct Sizes {
    reps: usize,
    churn_rounds: u32,
    churn_mib: u32,
    zap_rounds: u32,
    storm_passes: u32,
    storm_mib: u32,
    big_events: u64,
}

impl Sizes {
    /// Pages `benchload zap` unmaps per round: one entry of the unmap probes' function each.
    fn zap_pages_per_round(&self) -> u32 {
        self.churn_mib * 256
    }

    fn new(quick: bool) -> Self {
        if quick {
            Self {
                reps: 3,
                churn_rounds: 6,
                churn_mib: 32,
                zap_rounds: 10,
                storm_passes: 8,
                storm_mib: 16,
                big_events: 2_000_000,
            }
        } else {
            Self {
                reps: 9,
                churn_rounds: 12,
                churn_mib: 32,
                zap_rounds: 20,
                storm_passes: 24,
                storm_mib: 16,
                big_events: 10_000_000,
            }
        }
    }
}

pub fn main(args: BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds what the host-side parts run: refwatch and bench_tool (release).
fn build_host_tools(root: &Path) -> Result<PathBuf> {
    cmd::run(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "-p",
                "refwatch",
                "--bin",
                "refwatch",
                "--example",
                "bench_tool",
            ])
            .current_dir(root),
    )?;
    Ok(root.join("target/release/examples/bench_tool"))
}

fn scale_part(args: &BenchArgs, tool: &Path, work: &Path) -> Result<Value> {
    let root = paths::workspace_root();
    let gibs = match (&args.scale_gib[..], args.quick) {
        ([], true) => vec![4, 16],
        ([], false) => vec![4, 16, 64, 256],
        (g, _) => g.to_vec(),
    };
    scale::scale(
        &scale::Binaries {
            tool,
            refwatch: &root.join("target/release/refwatch"),
            baseline: args.baseline.as_deref(),
        },
        work,
        &gibs,
    )
}

/// `--only scale`: the scale part alone, on the host.
fn bench_scale(args: &BenchArgs) -> Result<()> {
    let root = paths::workspace_root();
    let work = root.join("target/bench-scale");
    paths::create_dir(&work)?;
    let tool = build_host_tools(&root)?;
    let out = json!({
        "quick": args.quick,
        "scale": scale_part(args, &tool, &work)?,
        "targets": targets(),
    });
    let mut s = String::new();
    let mut row = |what: &str, value: String, target: &str| {
        let _ = writeln!(s, "| {what} | {value} | {target} | host |");
    };
    row("figure", "value".into(), "target");
    row("---", "---".into(), "---");
    scale::rows(&out["scale"], &mut row);
    print!("{s}");
    write_json(args, &out)
}

fn targets() -> Value {
    json!({
        "hot_path_ratio_max": 1.02,
        "device_dropped": 0,
        "analysis_events_per_s_min": 20e6,
        "trace_bytes_per_event_max": 12.0,
        "scale_events_per_s_min": 20e6,
        "scale_bytes_per_live_page_max": 14,
        "scale_history_bytes_max": scale::HISTORY_BYTES,
    })
}

fn write_json(args: &BenchArgs, out: &Value) -> Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(out)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        note(format_args!("figures written to {}", path.display()));
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    if matches!(args.only, Some(Part::Scale)) {
        return bench_scale(&args);
    }
    crate::setup::run()?;
    // The guest's bpftrace (bookworm's .deb) runs on the host's copies of its libraries.
    crate::setup::install_debian_packages(&[("bpftrace", "bpftrace")])?;
    let sizes = Sizes::new(args.quick);
    let root = paths::workspace_root();
    let work = root.join("target/bench");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    paths::create_dir(&work)?;
    let assets = Assets::build()?;
    let tool = build_host_tools(&root)?;
    let apt = Apt::new()?;

    let started = Instant::now();
    let device = device(&args.kernel, &apt, &assets, &sizes, &work)?;
    let mut hot = Vec::new();
    for kernel in std::iter::once(&args.kernel).chain(&args.also) {
        hot.push(hot_path(kernel, &apt, &assets, &sizes, &work, &tool)?);
    }
    let traces = trace_sizes(&tool, &work)?;
    let analysis = analysis(
        &tool,
        &root.join("target/release/refwatch"),
        &work,
        sizes.big_events,
    )?;
    let scale = scale_part(&args, &tool, &work)?;
    note(format_args!("bench done in {:.0?}", started.elapsed()));

    let first = hot.first().cloned().unwrap_or(Value::Null);
    let mut out = json!({
        "quick": args.quick,
        "hot_path": first,
        "device": device,
        "analysis": analysis,
        "trace": traces,
        "scale": scale,
        "targets": targets(),
    });
    if hot.len() > 1 {
        out["hot_path_other_kernels"] = Value::Array(hot[1..].to_vec());
    }
    print!("{}", table(&out));
    write_json(&args, &out)
}

/// Key=value pairs of the first line of `text` that starts with `prefix`.
fn fields(text: &str, prefix: &str) -> Option<BTreeMap<String, f64>> {
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect(),
    )
}

/// "FILE: N events, D dropped, B bytes (…)" from `refwatch record`'s stderr.
fn record_counts(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr
        .lines()
        .find(|l| l.contains(" events, ") && l.contains(" dropped"))?;
    let mut words = line.split_whitespace();
    let mut events = None;
    let mut dropped = None;
    let mut prev = "";
    for w in words.by_ref() {
        match w.trim_end_matches(',') {
            "events" => events = prev.parse().ok(),
            "dropped" => dropped = prev.parse().ok(),
            _ => {}
        }
        prev = w;
    }
    Some((events?, dropped?))
}

/// Runs `script` in `job` (its files, setup, limits) and collects its output under `work/name`.
fn run_job(
    kernel: &Kernel,
    assets: &Assets,
    script: &str,
    mut job: GuestJob,
    work: &Path,
    name: &str,
) -> Result<PathBuf> {
    let host_script = work.join(format!("{name}.sh"));
    std::fs::write(&host_script, script)?;
    job.files.push((host_script, "/bench/run.sh".into()));
    job.argv = vec!["sh".into(), "/bench/run.sh".into()];
    let label = format!("bench-{name}-{}", std::process::id());
    let result = run_in_vm(kernel, assets, &job, &label)?;
    let out = work.join(name);
    paths::create_dir(&out)?;
    if result.out_dir.is_dir() {
        cmd::run(
            Command::new("cp")
                .arg("-a")
                .arg("-T")
                .arg(&result.out_dir)
                .arg(&out),
        )?;
    }
    std::fs::write(out.join("stdout"), &result.stdout)?;
    std::fs::write(out.join("stderr"), &result.stderr)?;
    if result.exit_code != 0 {
        bail!(
            "the {name} job exited {} in the guest:\n{}",
            result.exit_code,
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(out)
}

/// Ring sizes tried, largest first, until drops appear.
const RINGS_KIB: &[u32] = &[4096, 256, 64, 16, 4];

fn device(name: &str, apt: &Apt, assets: &Assets, sizes: &Sizes, work: &Path) -> Result<Value> {
    let kernel = Kernel::fetch(crate::lab::kernel_spec(name)?, apt)?;
    let storm = format!("benchload storm {} {}", sizes.storm_passes, sizes.storm_mib);
    let mut script = String::from("cd /tmp\n");
    writeln!(script, "{storm} > /out/storm-base.txt 2>&1")?;
    for mode in ["kprobe", "fentry"] {
        writeln!(
            script,
            "refwatch record -o /out/storm-{mode}.rwt --attach {mode} -- {storm} > /out/storm-{mode}.txt 2>&1"
        )?;
    }
    for kib in RINGS_KIB {
        writeln!(
            script,
            "refwatch record -o /tmp/ring.rwt --attach kprobe --ring-kib {kib} -- {storm} > /out/ring-{kib}.txt 2>&1; rm -f /tmp/ring.rwt"
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
    let out = run_job(&kernel, assets, &script, job, work, "device")?;
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();

    let run = |file: &str| -> Value {
        let text = read(file);
        let f = fields(&text, "storm ");
        let counts = record_counts(&text);
        match (f, counts) {
            (Some(f), Some((events, dropped))) => {
                let secs = f["seconds"];
                json!({
                    "seconds": secs,
                    "events": events,
                    "dropped": dropped,
                    "events_per_s": events as f64 / secs,
                    "offered_per_s": (events + dropped) as f64 / secs,
                })
            }
            _ => json!({ "error": text.lines().last().unwrap_or("no output").to_owned() }),
        }
    };
    let base = fields(&read("storm-base.txt"), "storm ");
    let kprobe = run("storm-kprobe.txt");
    let fentry = run("storm-fentry.txt");
    let rings: Vec<Value> = RINGS_KIB
        .iter()
        .map(|kib| {
            let mut v = run(&format!("ring-{kib}.txt"));
            v["ring_kib"] = json!(kib);
            v
        })
        .collect();
    let first_drop = rings
        .iter()
        .find(|r| r["dropped"].as_u64().is_some_and(|d| d > 0));
    let smallest_clean = rings.iter().rfind(|r| r["dropped"].as_u64() == Some(0));
    Ok(json!({
        "kernel": kernel.spec.release,
        "workload": storm,
        "untraced_seconds": base.map(|f| f["seconds"]),
        "events_per_s": kprobe["events_per_s"],
        "dropped": kprobe["dropped"],
        "events": kprobe["events"],
        "kprobe": kprobe,
        "fentry": fentry,
        "ring_sweep": rings,
        "smallest_ring_kib_without_drops": smallest_clean.map(|r| r["ring_kib"].clone()),
        "first_drops": first_drop.cloned(),
    }))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The bookworm bpftrace .deb unpacked in the lab cache; its libraries come from the host
/// (a Debian 12 host, the same release), found with ldd.
fn bpftrace_files(apt: &Apt) -> Result<Vec<(PathBuf, String)>> {
    let (name, version) = BPFTRACE_DEB;
    let tree = paths::lab_cache()?
        .join("tools")
        .join(format!("{name}-{version}"));
    let binary = tree.join("usr/bin/bpftrace");
    if !binary.exists() {
        crate::lab::extract_packages(apt, &[BPFTRACE_DEB], &tree)?;
    }
    let ldd = Command::new("ldd")
        .arg(&binary)
        .output()
        .context("running ldd")?;
    let listing = String::from_utf8_lossy(&ldd.stdout);
    let missing: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("not found"))
        .map(str::trim)
        .collect();
    if !missing.is_empty() {
        bail!(
            "host lacks bpftrace's libraries ({}); `apt-get install bpftrace` provides them",
            missing.join(", ")
        );
    }
    let mut files = vec![(binary, "/usr/bin/bpftrace".to_owned())];
    for line in listing.lines() {
        if let Some(path) = line
            .split("=>")
            .last()
            .and_then(|p| p.split_whitespace().next())
            .filter(|p| p.starts_with('/'))
        {
            files.push((PathBuf::from(path), path.to_owned()));
        }
    }
    Ok(files)
}

fn hot_path(
    name: &str,
    apt: &Apt,
    assets: &Assets,
    sizes: &Sizes,
    work: &Path,
    tool: &Path,
) -> Result<Value> {
    let kernel = Kernel::fetch(crate::lab::kernel_spec(name)?, apt)?;
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
    // The bpftrace script is derived from a trace recorded on this kernel (its plan and layout).
    let mut bpftrace_reason: Option<String> = None;
    let reference = work.join("device/storm-kprobe.rwt");
    let bt_script = if reference.exists()
        && crate::lab::kernel_spec(name)?.release
            == trace_kernel(tool, &reference).unwrap_or_default()
    {
        Some(cmd::output(
            Command::new(tool).arg("bpftrace").arg(&reference),
        )?)
    } else {
        bpftrace_reason = Some(format!(
            "no trace recorded on {name} to derive the probe set from"
        ));
        None
    };
    if let Some(bt) = &bt_script {
        let host = work.join(format!("{label}.bt"));
        std::fs::write(&host, bt)?;
        files.push((host, "/bench/refwatch.bt".to_owned()));
        match bpftrace_files(apt) {
            Ok(f) => files.extend(f),
            Err(e) => bpftrace_reason = Some(format!("{e:#}")),
        }
    }
    let with_bpftrace = bpftrace_reason.is_none();
    // "again" is untraced too: its ratio to "base" is what this run cannot resolve.
    // The hot (per-PTE unmap) probes asked for ("wide"): what the default plan saves.
    let mut variants = vec!["base", "again", "kprobe", "fentry", "wide"];
    if with_bpftrace {
        variants.push("bpftrace");
    }
    let mut script = String::from(include_str!("../lab/scripts/bench-hot-path.sh"))
        .replace("CHURN", &churn)
        .replace("ZAP", &zap)
        .replace("HOT_OPTIONS", &hot_options());
    for rep in 0..sizes.reps {
        // Rotate the order each repetition so no variant always runs first.
        for i in 0..variants.len() {
            let v = variants[(i + rep) % variants.len()];
            writeln!(script, "run {v} {rep}")?;
        }
    }
    writeln!(script, "exit 0")?;
    let marks_file = work.join(format!("{label}.marks"));
    let plugin = format!(
        "{},out={}",
        crate::lab::insncount::build(apt)?.display(),
        marks_file.display()
    );
    let qemu_args = vec!["-plugin".to_owned(), plugin];
    let job = GuestJob {
        files,
        setup,
        qemu_args,
        timeout: Some(Duration::from_secs(2400)),
        ..GuestJob::default()
    };
    let host = HostLoad::start()?;
    let out = run_job(&kernel, assets, &script, job, work, &label)?;
    let others = host.others_cores()?;
    let stdout = std::fs::read_to_string(out.join("stdout"))?;
    let results = results(&stdout, &variants);
    let warmup_rounds = (sizes.churn_rounds + sizes.zap_rounds) as usize;
    let instructions = instructions(
        &results,
        &std::fs::read_to_string(&marks_file)?,
        warmup_rounds,
        &variants,
        sizes,
    );
    // variant -> "churn" / "churn_round" / "zap" / "zap_round" -> seconds.
    let mut runs: BTreeMap<&str, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    for &(v, what, secs) in &results {
        runs.entry(v)
            .or_default()
            .entry(what)
            .or_default()
            .push(secs);
    }
    // A bpftrace that failed to start is skipped from then on; the repetitions before count.
    let bpftrace_failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BPFTRACE_FAILED "))
        .map(str::trim);
    if let Some(failed) = bpftrace_failed.filter(|_| !runs.contains_key("bpftrace")) {
        bpftrace_reason = Some(format!("bpftrace did not start in the guest: {failed}"));
    }
    // The median round of all repetitions: one slow stretch of the host moves it less than it
    // moves a whole run.
    let typical = |v: &str, what: &str| {
        runs.get(v)
            .and_then(|w| w.get(what))
            .cloned()
            .and_then(median)
    };
    let Some(base_round) = typical("base", "churn_round") else {
        bail!("no baseline churn result; guest output:\n{stdout}")
    };
    let base_zap = typical("base", "zap_round");
    let base_median = typical("base", "churn");
    // Entries of the probed functions in one churn round, from the kprobe recording's footer
    // (its own start and exit included: an upper bound). The same for every tracer.
    let churn_calls = tool_stats(tool, &out.join("kprobe-churn.rwt"))
        .ok()
        .and_then(|st| {
            st["calls"]
                .as_object()
                .map(|c| c.values().filter_map(Value::as_u64).sum::<u64>())
        });
    let entries_per_round = churn_calls.map(|c| c as f64 / f64::from(sizes.churn_rounds));
    let zap_pages = f64::from(sizes.zap_pages_per_round());
    let (mut ratios, mut medians, mut per_entry, mut from_entries) = Default::default();
    for v in variants.iter().filter(|v| **v != "base") {
        let put = |map: &mut serde_json::Map<String, Value>, x: Option<f64>| {
            map.insert(v.to_string(), json!(x))
        };
        put(
            &mut ratios,
            typical(v, "churn_round").map(|r| r / base_round),
        );
        put(
            &mut medians,
            typical(v, "churn").zip(base_median).map(|(m, b)| m / b),
        );
        // What one unmap costs this tracer: benchload zap unmaps one page per entry.
        let ns = typical(v, "zap_round")
            .zip(base_zap)
            .map(|(z, b)| (z - b) / zap_pages * 1e9);
        put(&mut per_entry, ns);
        put(
            &mut from_entries,
            entries_per_round
                .zip(ns)
                .map(|(n, ns)| 1.0 + n * ns / 1e9 / base_round),
        );
    }
    let ratio = |v: &str| ratios.get(v).cloned().unwrap_or(Value::Null);
    let bpftrace_ok = bpftrace_reason.is_none();
    let mut value = json!({
        "kernel": kernel.spec.release,
        "workload": churn,
        "zap_workload": zap,
        "repetitions": sizes.reps,
        "estimator": "median of all repetitions' rounds",
        "baseline_s": base_median,
        "baseline_round_s": base_round,
        "untraced_again_ratio": ratio("again"),
        "kprobe_ratio": ratio("kprobe"),
        "fentry_ratio": ratio("fentry"),
        "kprobe_with_unmaps_ratio": ratio("wide"),
        "bpftrace_ratio": if bpftrace_ok { ratio("bpftrace") } else { Value::Null },
        "median_ratios": medians,
        "per_entry_ns": per_entry,
        "churn_entries_per_round": entries_per_round,
        "ratios_from_entries": from_entries,
        "runs_s": runs,
        "host_other_cores": others,
        "instructions": instructions,
    });
    if let Some(failed) = bpftrace_failed {
        value["bpftrace_failed"] = json!(failed);
    }
    if let Some(reason) = bpftrace_reason {
        value["bpftrace_reason"] = json!(reason);
    }
    Ok(value)
}

/// The guest's "RESULT variant=V rep=R WHAT seconds=S …" lines, in order, as (V, WHAT, S);
/// WHAT is churn, churn_round, zap or zap_round.
fn results<'a>(stdout: &'a str, variants: &[&'static str]) -> Vec<(&'static str, &'a str, f64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("RESULT ")?.split_whitespace();
            let (variant, _rep, what) = (words.next()?, words.next()?, words.next()?);
            let v = variant
                .strip_prefix("variant=")
                .and_then(|v| variants.iter().find(|x| **x == v))?;
            Some((*v, what, fields(line, "RESULT ")?.get("seconds").copied()?))
        })
        .collect()
}

/// Guest instructions per round, from the insncount plugin's marks: one pair per round, the
/// warm-up's first, then the rounds in the order of the results. Counted twice: on the
/// workload's (pinned) vCPU, which is what the probes add to its own path, and on all vCPUs,
/// which adds the tracer's reader and whatever else the system ran meanwhile.
fn instructions(
    results: &[(&str, &str, f64)],
    marks: &str,
    warmup_rounds: usize,
    variants: &[&str],
    sizes: &Sizes,
) -> Value {
    let marks = crate::lab::insncount::marks(marks);
    let rounds: Vec<(&str, &str)> = results
        .iter()
        .filter(|(_, what, _)| what.ends_with("_round"))
        .map(|&(v, what, _)| (v, what))
        .collect();
    let pairs: Vec<&[Mark]> = marks.chunks_exact(2).collect();
    if pairs.len() != warmup_rounds + rounds.len() {
        return json!({ "error": format!("{} marked rounds for {} warm-up and {} measured ones", pairs.len(), warmup_rounds, rounds.len()) });
    }
    if let Some(p) = pairs.iter().find(|p| p[0].vcpu != p[1].vcpu) {
        return json!({ "error": format!("a round began on vCPU {} and ended on vCPU {}: the workload was not pinned", p[0].vcpu, p[1].vcpu) });
    }
    let measured = &pairs[warmup_rounds..];
    let own = per_round_ratios(
        &rounds,
        measured.iter().map(|p| p[1].own - p[0].own),
        variants,
        sizes,
    );
    let all = per_round_ratios(
        &rounds,
        measured
            .iter()
            .map(|p| p[1].total.saturating_sub(p[0].total)),
        variants,
        sizes,
    );
    match (own, all) {
        (Ok(mut own), Ok(all)) => {
            own["estimator"] = json!(
                "median guest instructions per round on the workload's vCPU (QEMU TCG plugin)"
            );
            own["all_vcpus"] = all;
            own
        }
        (Err(e), _) | (_, Err(e)) => json!({ "error": e }),
    }
}

/// Ratios of each variant's median round to the untraced one, and the instructions one
/// unmap-probe entry adds (benchload zap unmaps one page per entry).
fn per_round_ratios(
    rounds: &[(&str, &str)],
    counts: impl Iterator<Item = u64>,
    variants: &[&str],
    sizes: &Sizes,
) -> Result<Value, String> {
    let mut by: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for (&(v, what), n) in rounds.iter().zip(counts) {
        by.entry((v, what)).or_default().push(n as f64);
    }
    let typical = |v: &str, what: &str| by.get(&(v, what)).cloned().and_then(median);
    let (Some(base_churn), Some(base_zap)) =
        (typical("base", "churn_round"), typical("base", "zap_round"))
    else {
        return Err("no untraced rounds".into());
    };
    let zap_pages = f64::from(sizes.zap_pages_per_round());
    let others = variants.iter().filter(|v| **v != "base");
    let ratios: BTreeMap<&str, Option<f64>> = others
        .clone()
        .map(|v| (*v, typical(v, "churn_round").map(|n| n / base_churn)))
        .collect();
    let per_entry: BTreeMap<&str, Option<f64>> = others
        .map(|v| {
            (
                *v,
                typical(v, "zap_round").map(|n| (n - base_zap) / zap_pages),
            )
        })
        .collect();
    Ok(json!({
        "untraced_churn_round": base_churn,
        "untraced_zap_round": base_zap,
        "ratios": ratios,
        "per_entry": per_entry,
    }))
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

/// CPU the host spends on processes other than xtask and its children (the VM). The guest's
/// clock is the host's: a busy host slows some repetitions and not others (a compile beside
/// the run moved a ratio by 10 %), so the table says when the host was not quiet.
struct HostLoad {
    at: Instant,
    busy: f64,
    own: f64,
}

/// Other processes' average use, in cores, above which the table flags the hot-path ratios.
const BUSY_HOST_CORES: f64 = 0.1;

impl HostLoad {
    fn start() -> Result<Self> {
        Ok(Self {
            at: Instant::now(),
            busy: host_busy_seconds()?,
            own: own_cpu_seconds(),
        })
    }

    /// Cores kept busy on average by other processes since `start`.
    fn others_cores(&self) -> Result<f64> {
        let busy = host_busy_seconds()? - self.busy;
        let own = own_cpu_seconds() - self.own;
        Ok(((busy - own) / self.at.elapsed().as_secs_f64()).max(0.0))
    }
}

/// Non-idle CPU time of the whole host, from the first line of /proc/stat.
fn host_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("/proc/stat: no cpu line")?;
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: f64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4))
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf has no preconditions.
    Ok(busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

/// CPU time of xtask and of its children that were waited for (the VM, once it exited).
fn own_cpu_seconds() -> f64 {
    [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN]
        .into_iter()
        .map(|who| {
            // SAFETY: a zeroed rusage is a valid out-parameter.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(who, &mut usage) };
            cpu_seconds(&usage)
        })
        .sum()
}

fn tool_stats(tool: &Path, trace: &Path) -> Result<Value> {
    Ok(serde_json::from_str(&cmd::output(
        Command::new(tool).arg("stats").arg(trace),
    )?)?)
}

fn trace_kernel(tool: &Path, trace: &Path) -> Option<String> {
    tool_stats(tool, trace).ok()?["kernel"]
        .as_str()
        .map(str::to_owned)
}

fn trace_sizes(tool: &Path, work: &Path) -> Result<Value> {
    let mut per = serde_json::Map::new();
    for name in ["storm-kprobe.rwt", "storm-fentry.rwt", "gup.rwt"] {
        let path = work.join("device").join(name);
        if path.exists() {
            per.insert(name.into(), tool_stats(tool, &path)?);
        }
    }
    let (events, bytes) = per.values().fold((0u64, 0u64), |(e, b), v| {
        (
            e + v["events"].as_u64().unwrap_or(0),
            b + v["bytes"].as_u64().unwrap_or(0),
        )
    });
    Ok(json!({
        "kernel": per.values().next().map(|v| v["kernel"].clone()),
        "bytes_per_event": bytes as f64 / events.max(1) as f64,
        "traces": per,
    }))
}

/// Runs `cmd` to completion and returns (wall seconds, CPU seconds, peak RSS in KiB) from wait4.
fn timed(cmd: &mut Command) -> Result<(f64, f64, u64)> {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting `{}`", cmd::describe(cmd)))?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; the pid is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if pid < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("`{}` failed (wait status {status})", cmd::describe(cmd));
    }
    Ok((secs, cpu_seconds(&usage), usage.ru_maxrss as u64))
}

/// User plus system time of an rusage.
fn cpu_seconds(usage: &libc::rusage) -> f64 {
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn analysis(tool: &Path, refwatch: &Path, work: &Path, target: u64) -> Result<Value> {
    let source = work.join("device/storm-kprobe.rwt");
    // Peak RSS at a quarter of the events too: bounded by live pages, it must not grow.
    let small = report_on_copies(
        tool,
        refwatch,
        &source,
        &work.join("quarter.rwt"),
        target / 4,
    )?;
    let big = report_on_copies(tool, refwatch, &source, &work.join("big.rwt"), target)?;
    // What checking the rules while recording costs `record` (the quarter trace, rewritten).
    let rerecord: Value = serde_json::from_str(&cmd::output(
        Command::new(tool)
            .arg("rerecord")
            .arg(work.join("quarter.rwt"))
            .arg(work.join("rerecord.rwt")),
    )?)?;
    Ok(json!({
        "record_rules": rerecord,
        "kernel": big.stats["kernel"],
        "host": "this machine (release build)",
        "source": source.file_name().map(|n| n.to_string_lossy().into_owned()),
        "events": big.events,
        "trace_bytes": big.stats["bytes"],
        "seconds": big.secs,
        "events_per_s": big.events as f64 / big.secs,
        "cpu_seconds": big.cpu,
        "events_per_cpu_s": big.events as f64 / big.cpu,
        "peak_rss_mib": big.rss_mib,
        "quarter_events": small.events,
        "quarter_peak_rss_mib": small.rss_mib,
    }))
}

struct Report {
    stats: Value,
    events: u64,
    secs: f64,
    cpu: f64,
    rss_mib: f64,
}

/// `refwatch report --json` on a trace of about `events` events made of copies of `source`.
fn report_on_copies(
    tool: &Path,
    refwatch: &Path,
    source: &Path,
    trace: &Path,
    events: u64,
) -> Result<Report> {
    cmd::run(
        Command::new(tool)
            .arg("replicate")
            .arg(source)
            .arg(trace)
            .arg(events.to_string()),
    )?;
    // Best of three: the figure is the analyzer's speed, not the host's noise.
    best_report(tool, refwatch, trace, 3)
}

/// `refwatch report --json` on `trace` once (a trace too big to read thrice).
fn report_once(tool: &Path, refwatch: &Path, trace: &Path) -> Result<Report> {
    best_report(tool, refwatch, trace, 1)
}

/// The fastest of `runs` reports.
fn best_report(tool: &Path, refwatch: &Path, trace: &Path, runs: usize) -> Result<Report> {
    let stats = tool_stats(tool, trace)?;
    let mut best = (f64::MAX, 0.0, 0);
    for _ in 0..runs {
        let run = timed(
            Command::new(refwatch)
                .arg("report")
                .arg(trace)
                .arg("--json"),
        )?;
        if run.0 < best.0 {
            best = run;
        }
    }
    let (secs, cpu, rss_kib) = best;
    Ok(Report {
        events: stats["events"].as_u64().unwrap_or(0),
        stats,
        secs,
        cpu,
        rss_mib: rss_kib as f64 / 1024.0,
    })
}

fn fmt(v: &Value, digits: usize) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 || digits > 0 => format!("{f:.digits$}"),
            _ => n.to_string(),
        },
        Value::Null => "n/a".into(),
        other => other.to_string(),
    }
}

/// The hot-path rows of one kernel; bpftrace's only where it ran (the first kernel).
fn hot_rows(row: &mut impl FnMut(&str, String, &str, &Value), k: &Value, first: bool) {
    let kernel = &k["kernel"];
    let base = format!(
        "{} s (median run {} s)",
        fmt(&k["baseline_round_s"], 4),
        fmt(&k["baseline_s"], 3)
    );
    row("hot path: untraced churn round (median)", base, "", kernel);
    if k["host_other_cores"]
        .as_f64()
        .is_some_and(|c| c > BUSY_HOST_CORES)
    {
        let busy = format!(
            "{} cores busy on average: ratios unreliable",
            fmt(&k["host_other_cores"], 2)
        );
        row(
            "hot path: WARNING, other host processes",
            busy,
            "quiet host",
            kernel,
        );
    }
    let entries = format!(
        "{} (probed functions, kprobe recording)",
        fmt(&k["churn_entries_per_round"], 0)
    );
    row("hot path: entries per churn round", entries, "", kernel);
    let insns = &k["instructions"];
    if let Some(Value::String(e)) = insns.get("error") {
        row(
            "hot path: instruction counts",
            format!("n/a: {e}"),
            "",
            kernel,
        );
    } else {
        let base = format!(
            "{} per churn round, {} per zap round (all vCPUs: {}, {})",
            fmt(&insns["untraced_churn_round"], 0),
            fmt(&insns["untraced_zap_round"], 0),
            fmt(&insns["all_vcpus"]["untraced_churn_round"], 0),
            fmt(&insns["all_vcpus"]["untraced_zap_round"], 0)
        );
        row(
            "hot path: untraced instructions on the workload's vCPU (median)",
            base,
            "",
            kernel,
        );
    }
    let variants = [
        (
            "again",
            "untraced_again_ratio",
            "untraced again: what this run cannot resolve",
            "1×",
        ),
        (
            "kprobe",
            "kprobe_ratio",
            "refwatch kprobe",
            "≤ 1.02×, < bpftrace",
        ),
        (
            "fentry",
            "fentry_ratio",
            "refwatch fentry",
            "≤ 1.02×, < bpftrace",
        ),
        (
            "bpftrace",
            "bpftrace_ratio",
            "bpftrace, same probes + filter",
            "",
        ),
        (
            "wide",
            "kprobe_with_unmaps_ratio",
            "refwatch kprobe with the per-PTE unmap probes (--with; off by default)",
            "",
        ),
    ];
    for (v, key, what, target) in variants {
        // bpftrace's row stays where it was meant to run and did not, to say why.
        let ran = k["runs_s"].get(v).is_some();
        if (v == "bpftrace" && !first) || (v != "bpftrace" && !ran) {
            continue;
        }
        let mut cell = format!(
            "{}× in instructions ({} per unmap-probe entry; all vCPUs {}×); wall clock {}× (median of runs {}×; {}× from entries at {} ns each)",
            fmt(&insns["ratios"][v], 4),
            fmt(&insns["per_entry"][v], 0),
            fmt(&insns["all_vcpus"]["ratios"][v], 4),
            fmt(&k[key], 3),
            fmt(&k["median_ratios"][v], 3),
            fmt(&k["ratios_from_entries"][v], 3),
            fmt(&k["per_entry_ns"][v], 0)
        );
        if v == "bpftrace" {
            match (k.get("bpftrace_reason"), k.get("bpftrace_failed")) {
                (Some(Value::String(r)), _) => cell = format!("n/a: {r}"),
                (_, Some(Value::String(f))) => {
                    let reps = k["runs_s"]["bpftrace"]["churn"]
                        .as_array()
                        .map_or(0, Vec::len);
                    cell = format!("{cell}, over {reps} repetitions, then it did not start: {f}");
                }
                _ => {}
            }
        }
        row(&format!("hot path: {what}"), cell, target, kernel);
    }
}

fn table(out: &Value) -> String {
    let mut s = String::new();
    let h = &out["hot_path"];
    let d = &out["device"];
    let a = &out["analysis"];
    let t = &out["trace"];
    let mut row = |what: &str, value: String, target: &str, kernel: &Value| {
        let _ = writeln!(
            s,
            "| {what} | {value} | {target} | {} |",
            kernel.as_str().unwrap_or("-")
        );
    };
    row("figure", "value".into(), "target", &json!("measured on"));
    row("---", "---".into(), "---", &json!("---"));
    for (i, k) in std::iter::once(h)
        .chain(
            out["hot_path_other_kernels"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .enumerate()
    {
        hot_rows(&mut row, k, i == 0);
    }
    row(
        "device: events/s delivered (kprobe, 4 MiB ring)",
        fmt(&d["events_per_s"], 0),
        "",
        &d["kernel"],
    );
    row(
        "device: dropped (4 MiB ring)",
        fmt(&d["dropped"], 0),
        "0",
        &d["kernel"],
    );
    row(
        "device: smallest ring without drops (KiB)",
        fmt(&d["smallest_ring_kib_without_drops"], 0),
        "",
        &d["kernel"],
    );
    let first = &d["first_drops"];
    let limit = if first.is_null() {
        "no drops down to 4 KiB".to_owned()
    } else {
        format!(
            "{} KiB: {} of {} dropped at {} events/s offered",
            fmt(&first["ring_kib"], 0),
            fmt(&first["dropped"], 0),
            first["events"].as_u64().unwrap_or(0) + first["dropped"].as_u64().unwrap_or(0),
            fmt(&first["offered_per_s"], 0)
        )
    };
    row("device: first drops", limit, "", &d["kernel"]);
    row(
        "analysis: events/s (refwatch report --json)",
        fmt(&a["events_per_s"], 0),
        "≥ 20 M",
        &json!("host"),
    );
    row(
        "analysis: events per CPU-second (decoder thread included)",
        fmt(&a["events_per_cpu_s"], 0),
        "",
        &json!("host"),
    );
    let rss = format!(
        "{} ({} at a quarter of the events)",
        fmt(&a["peak_rss_mib"], 1),
        fmt(&a["quarter_peak_rss_mib"], 1)
    );
    row(
        "analysis: peak RSS (MiB)",
        rss,
        "bounded by live pages",
        &json!("host"),
    );
    let r = &a["record_rules"];
    row(
        "record: CPU ns/event writing the trace; with the rules checked too (ratio)",
        format!(
            "{}; {} ({}×)",
            fmt(&r["write_ns_per_event"], 0),
            fmt(&r["rules_ns_per_event"], 0),
            fmt(&r["ratio"], 2)
        ),
        "",
        &json!("host"),
    );
    row(
        "record: one sync of the trace at a finding (ms)",
        fmt(&r["sync_ms"], 2),
        "",
        &json!("host"),
    );
    scale::rows(&out["scale"], &mut |what, value, target| {
        row(what, value, target, &json!("host"))
    });
    row(
        "trace: bytes/event",
        fmt(&t["bytes_per_event"], 2),
        "≤ 12",
        &t["kernel"],
    );
    s
}
