//! `cargo xtask bench`: refwatch's performance figures, measured in the VM lab and on the host.
//!
//! Per kernel (`--kernels`, `--all-kernels`), one boot each:
//! 1. device events ([`device`]): the fsdax fault + GUP pin storm and fio's mmap engine on
//!    /mnt/dax untraced, under `refwatch record` and `check` in each attach mode, bpftrace and
//!    `perf record`, in guest instructions and events delivered; then the storm with smaller
//!    rings until events are dropped;
//! 2. time to watching ([`startup`]): exec to "probes attached" for `refwatch check` in each
//!    attach mode and bpftrace with the same probes, with refwatch's phases;
//! 3. hot path ([`hot_path`]): normal-page churn untraced, under refwatch and under bpftrace,
//!    in wall time and guest instructions.
//!
//! Then on the host: offline analysis and trace size ([`analysis`]) from the first kernel's
//! storm trace, and scale ([`scale`]): the aggregator on whole-pgmap synthetic traces.
//! Every figure is typed ([`figures`]) and written by `--json`; timing is only reported,
//! never asserted: TCG timings depend on the host.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cmd::{self, note};
use crate::lab::{Apt, Assets};
use crate::paths;

mod analysis;
mod device;
mod figures;
mod guest;
mod hot_path;
mod insns;
mod scale;
mod startup;
mod stats;
mod table;

use figures::{Figures, TARGETS};

/// Every lab kernel built from Debian's binary packages.
const ALL_KERNELS: &[&str] = &["5.10", "6.1", "6.12", "7.2", "7.3"];

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fewer repetitions, a smaller storm and a smaller big trace (a few minutes).
    #[arg(long)]
    quick: bool,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Kernels to measure on, one boot per part each; the first one's storm trace feeds the
    /// host-side analysis.
    #[arg(
        long,
        value_name = "KERNEL",
        value_delimiter = ',',
        default_value = "6.1"
    )]
    kernels: Vec<String>,
    /// Every lab kernel from Debian's packages: 5.10, 6.1, 6.12, 7.2, 7.3.
    #[arg(long, conflicts_with = "kernels")]
    all_kernels: bool,
    /// Measure one part alone: `scale` (host only, no VM), `device`, or `startup` or
    /// `hot-path` (with the device part first where no storm trace of that kernel is left
    /// from an earlier run: bpftrace's probe set comes from it).
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

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Part {
    Scale,
    Device,
    Startup,
    HotPath,
}

struct Sizes {
    reps: usize,
    churn_rounds: u32,
    churn_mib: u32,
    zap_rounds: u32,
    storm_passes: u32,
    storm_mib: u32,
    /// fio's file on /mnt/dax and the I/O it does there.
    fio_mib: u32,
    fio_io_mib: u32,
    big_events: u64,
    startup_reps: usize,
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
                fio_mib: 32,
                fio_io_mib: 64,
                big_events: 2_000_000,
                startup_reps: 3,
            }
        } else {
            Self {
                reps: 9,
                churn_rounds: 12,
                churn_mib: 32,
                zap_rounds: 20,
                storm_passes: 24,
                storm_mib: 16,
                fio_mib: 32,
                fio_io_mib: 256,
                big_events: 10_000_000,
                startup_reps: 7,
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

fn scale_part(args: &BenchArgs, tool: &Path, work: &Path) -> Result<figures::Scale> {
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

fn write_json(args: &BenchArgs, out: &Figures) -> Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(out)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        note(format_args!("figures written to {}", path.display()));
    }
    Ok(())
}

fn empty(quick: bool) -> Figures {
    Figures {
        quick,
        hot_path: Vec::new(),
        device: Vec::new(),
        startup: Vec::new(),
        analysis: None,
        trace: None,
        scale: None,
        targets: TARGETS,
    }
}

fn bench(args: BenchArgs) -> Result<()> {
    let root = paths::workspace_root();
    let mut out = empty(args.quick);
    if args.only == Some(Part::Scale) {
        let work = root.join("target/bench-scale");
        paths::create_dir(&work)?;
        let tool = build_host_tools(&root)?;
        let scale = scale_part(&args, &tool, &work)?;
        print!("{}", table::scale_table(&scale));
        out.scale = Some(scale);
        return write_json(&args, &out);
    }
    crate::setup::run()?;
    // The guest's bpftrace, fio and perf (bookworm's .debs) run on the host's copies of their
    // libraries.
    crate::setup::install_debian_packages(&[
        ("bpftrace", "bpftrace"),
        ("fio", "fio"),
        ("linux-perf", "perf"),
    ])?;
    let sizes = Sizes::new(args.quick);
    let work = root.join("target/bench");
    // `--only startup|hot-path` reuses the storm traces an earlier run left (bpftrace's probes).
    if work.exists() && args.only.is_none() {
        std::fs::remove_dir_all(&work)?;
    }
    paths::create_dir(&work)?;
    let assets = Assets::build()?;
    let tool = build_host_tools(&root)?;
    let apt = Apt::new()?;
    let kernels: Vec<String> = if args.all_kernels {
        ALL_KERNELS.iter().map(|k| k.to_string()).collect()
    } else {
        args.kernels.clone()
    };

    let bench = guest::Bench {
        apt: &apt,
        assets: &assets,
        sizes: &sizes,
        work: &work,
        tool: &tool,
    };

    let started = Instant::now();
    for kernel in &kernels {
        let reference = guest::reference_trace(&work, kernel);
        if matches!(args.only, None | Some(Part::Device)) || !reference.exists() {
            out.device.push(device::device(&bench, kernel)?);
        }
        if matches!(args.only, None | Some(Part::Startup)) {
            out.startup.push(startup::startup(&bench, kernel)?);
        }
        if matches!(args.only, None | Some(Part::HotPath)) {
            out.hot_path.push(hot_path::hot_path(&bench, kernel)?);
        }
    }
    if args.only.is_none() {
        let first = work.join(format!("device-{}", kernels[0]));
        out.trace = Some(analysis::trace_sizes(&tool, &first, device::TRACES)?);
        out.analysis = Some(analysis::analysis(
            &tool,
            &root.join("target/release/refwatch"),
            &first.join("storm-kprobe.rwt"),
            &work,
            sizes.big_events,
        )?);
        out.scale = Some(scale_part(&args, &tool, &work)?);
    }
    note(format_args!("bench done in {:.0?}", started.elapsed()));
    print!("{}", table::table(&out));
    write_json(&args, &out)
}
