//! Every figure the bench reports, typed: each with the kernel and attach mode it was measured
//! with and the target beside it. `--json` writes [`Figures`]; the table is drawn from it.

use std::collections::BTreeMap;
use std::fmt;

use refwatch_common::startup::Phases;
use serde::{Deserialize, Serialize};

/// Everything one `cargo xtask bench` run measured, side by side.
#[derive(Serialize, Deserialize)]
pub struct Figures {
    pub quick: bool,
    /// One entry per kernel, in the order measured.
    pub hot_path: Vec<HotPath>,
    pub device: Vec<Device>,
    pub startup: Vec<Startup>,
    /// On the host, from the first kernel's storm trace.
    pub analysis: Option<Analysis>,
    pub trace: Option<TraceSizes>,
    pub scale: Option<Scale>,
    pub targets: Targets,
}

/// The targets of issue 18, as numbers.
#[derive(Serialize, Deserialize)]
pub struct Targets {
    pub hot_path_ratio_max: f64,
    /// refwatch's instruction ratio on the storm, and below bpftrace's and perf's.
    pub device_storm_ratio_max: f64,
    pub device_dropped: u64,
    pub analysis_events_per_s_min: f64,
    pub trace_bytes_per_event_max: f64,
    pub scale_events_per_s_min: f64,
    pub scale_bytes_per_live_page_max: f64,
    pub scale_history_bytes_max: u64,
    /// refwatch's exec-to-attached time below bpftrace's with the same probes.
    pub startup_below_bpftrace: bool,
}

pub const TARGETS: Targets = Targets {
    hot_path_ratio_max: 1.02,
    device_storm_ratio_max: 1.10,
    device_dropped: 0,
    analysis_events_per_s_min: 20e6,
    trace_bytes_per_event_max: 12.0,
    scale_events_per_s_min: 20e6,
    scale_bytes_per_live_page_max: 14.0,
    scale_history_bytes_max: super::scale::HISTORY_BYTES,
    startup_below_bpftrace: true,
};

/// refwatch's attach modes, as `--attach` spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attach {
    Kprobe,
    Fentry,
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Attach::Kprobe => "kprobe",
            Attach::Fentry => "fentry",
        })
    }
}

/// What runs beside the hot-path workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Untraced.
    Base,
    /// Untraced again: its ratio to `Base` is what the run cannot resolve.
    Again,
    Kprobe,
    Fentry,
    /// kprobe with the per-PTE unmap probes the default plan leaves out (`--with`).
    Wide,
    /// bpftrace with the same probes and filter.
    Bpftrace,
}

impl Variant {
    /// The guest script's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Base => "base",
            Variant::Again => "again",
            Variant::Kprobe => "kprobe",
            Variant::Fentry => "fentry",
            Variant::Wide => "wide",
            Variant::Bpftrace => "bpftrace",
        }
    }

    pub fn attach(self) -> Option<Attach> {
        match self {
            Variant::Kprobe | Variant::Wide => Some(Attach::Kprobe),
            Variant::Fentry => Some(Attach::Fentry),
            Variant::Base | Variant::Again | Variant::Bpftrace => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Variant::Base => "untraced",
            Variant::Again => "untraced again: what this run cannot resolve",
            Variant::Kprobe => "refwatch kprobe",
            Variant::Fentry => "refwatch fentry",
            Variant::Wide => {
                "refwatch kprobe with the per-PTE unmap probes (--with; off by default)"
            }
            Variant::Bpftrace => "bpftrace, same probes + filter",
        }
    }

    pub fn target(self) -> Option<&'static str> {
        match self {
            Variant::Again => Some("1×"),
            Variant::Kprobe | Variant::Fentry => Some("≤ 1.02×, < bpftrace"),
            _ => None,
        }
    }
}

/// Normal-page churn under each tracer, on one kernel.
#[derive(Serialize, Deserialize)]
pub struct HotPath {
    pub kernel: String,
    pub workload: String,
    pub zap_workload: String,
    pub repetitions: usize,
    pub estimator: String,
    /// Median untraced run, and median untraced round (seconds).
    pub baseline_s: Option<f64>,
    pub baseline_round_s: f64,
    /// Entries of the probed functions in one churn round (kprobe recording).
    pub churn_entries_per_round: Option<f64>,
    /// Cores other processes kept busy on average during the boot.
    pub host_other_cores: f64,
    pub instructions: Instructions,
    pub tracers: Vec<HotTracer>,
    /// variant → churn / churn_round / zap / zap_round → seconds of each repetition.
    pub runs_s: BTreeMap<Variant, BTreeMap<String, Vec<f64>>>,
    /// Why bpftrace's row is empty, if it is.
    pub bpftrace_reason: Option<String>,
    /// bpftrace stopped starting after some repetitions.
    pub bpftrace_failed: Option<String>,
}

/// The untraced instruction counts of a hot-path run (medians per round).
#[derive(Serialize, Deserialize, Default)]
pub struct Instructions {
    pub estimator: String,
    /// On the workload's (pinned) vCPU.
    pub untraced_churn_round: Option<f64>,
    pub untraced_zap_round: Option<f64>,
    /// On all vCPUs.
    pub all_vcpus_untraced_churn_round: Option<f64>,
    pub all_vcpus_untraced_zap_round: Option<f64>,
    pub error: Option<String>,
}

/// One tracer's hot-path figures: ratios to the untraced run.
#[derive(Serialize, Deserialize)]
pub struct HotTracer {
    pub variant: Variant,
    pub attach: Option<Attach>,
    /// Guest instructions per churn round on the workload's vCPU: the figure judged.
    pub insn_ratio: Option<f64>,
    pub insn_ratio_all_vcpus: Option<f64>,
    /// Instructions one unmap-probe entry adds.
    pub insn_per_entry: Option<f64>,
    /// Wall clock: median round, median run, and from the per-entry cost.
    pub ratio: Option<f64>,
    pub median_run_ratio: Option<f64>,
    pub per_entry_ns: Option<f64>,
    pub ratio_from_entries: Option<f64>,
    pub target: Option<String>,
}

/// What runs beside a device workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceVariant {
    /// Untraced.
    Base,
    /// Untraced again: its ratio to `Base` is what the run cannot resolve.
    Again,
    RecordKprobe,
    RecordFentry,
    CheckKprobe,
    CheckFentry,
    /// `record --no-stacks`: what the kernel stack of each event costs, beside `Record*`.
    NoStacksKprobe,
    NoStacksFentry,
    /// bpftrace with the same probes and filter, printing a line per event to a file.
    Bpftrace,
    /// The same with each event's kernel stack, as `record` takes it by default.
    BpftraceStacks,
    /// `perf record` on kprobe events of the same functions, unfiltered.
    Perf,
    /// The same with each event's kernel call chain (`-g`).
    PerfStacks,
    /// Empty BPF programs on the same functions (bpftrace): what every hit costs before a
    /// tracer does anything, the floor no tracer of these functions goes below.
    FloorKprobe,
    FloorFentry,
}

impl DeviceVariant {
    pub const ALL: [DeviceVariant; 14] = [
        DeviceVariant::Base,
        DeviceVariant::Again,
        DeviceVariant::RecordKprobe,
        DeviceVariant::RecordFentry,
        DeviceVariant::CheckKprobe,
        DeviceVariant::CheckFentry,
        DeviceVariant::NoStacksKprobe,
        DeviceVariant::NoStacksFentry,
        DeviceVariant::Bpftrace,
        DeviceVariant::BpftraceStacks,
        DeviceVariant::Perf,
        DeviceVariant::PerfStacks,
        DeviceVariant::FloorKprobe,
        DeviceVariant::FloorFentry,
    ];

    /// The guest script's name for it.
    pub fn name(self) -> &'static str {
        match self {
            DeviceVariant::Base => "base",
            DeviceVariant::Again => "again",
            DeviceVariant::RecordKprobe => "record-kprobe",
            DeviceVariant::RecordFentry => "record-fentry",
            DeviceVariant::CheckKprobe => "check-kprobe",
            DeviceVariant::CheckFentry => "check-fentry",
            DeviceVariant::NoStacksKprobe => "nostacks-kprobe",
            DeviceVariant::NoStacksFentry => "nostacks-fentry",
            DeviceVariant::Bpftrace => "bpftrace",
            DeviceVariant::BpftraceStacks => "bpftrace-stacks",
            DeviceVariant::Perf => "perf",
            DeviceVariant::PerfStacks => "perf-stacks",
            DeviceVariant::FloorKprobe => "floor-kprobe",
            DeviceVariant::FloorFentry => "floor-fentry",
        }
    }

    /// How it attaches: every variant but the untraced ones and the peers' own.
    pub fn attach(self) -> Option<Attach> {
        match self {
            DeviceVariant::RecordKprobe
            | DeviceVariant::CheckKprobe
            | DeviceVariant::NoStacksKprobe
            | DeviceVariant::FloorKprobe => Some(Attach::Kprobe),
            DeviceVariant::RecordFentry
            | DeviceVariant::CheckFentry
            | DeviceVariant::NoStacksFentry
            | DeviceVariant::FloorFentry => Some(Attach::Fentry),
            _ => None,
        }
    }

    pub fn is_refwatch(self) -> bool {
        self.attach().is_some() && !self.is_floor()
    }

    pub fn is_floor(self) -> bool {
        matches!(
            self,
            DeviceVariant::FloorKprobe | DeviceVariant::FloorFentry
        )
    }

    /// Whether bpftrace runs it (the guest's script is then `/tmp/NAME.bt`).
    pub fn runs_bpftrace(self) -> bool {
        matches!(
            self,
            DeviceVariant::Bpftrace
                | DeviceVariant::BpftraceStacks
                | DeviceVariant::FloorKprobe
                | DeviceVariant::FloorFentry
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            DeviceVariant::Base => "untraced",
            DeviceVariant::Again => "untraced again: what this run cannot resolve",
            DeviceVariant::RecordKprobe => "refwatch record, kprobe",
            DeviceVariant::RecordFentry => "refwatch record, fentry",
            DeviceVariant::CheckKprobe => "refwatch check, kprobe",
            DeviceVariant::CheckFentry => "refwatch check, fentry",
            DeviceVariant::NoStacksKprobe => "refwatch record --no-stacks, kprobe",
            DeviceVariant::NoStacksFentry => "refwatch record --no-stacks, fentry",
            DeviceVariant::Bpftrace => {
                "bpftrace 0.17, same probes + filter, printf per event, 8 MiB buffer a CPU"
            }
            DeviceVariant::BpftraceStacks => "bpftrace 0.17, the same printing kstack too",
            DeviceVariant::Perf => "perf record -e 'probe:*' -a, same functions, unfiltered",
            DeviceVariant::PerfStacks => "perf record -g, the same with call chains",
            DeviceVariant::FloorKprobe => "floor: empty kprobe programs (bpftrace), same functions",
            DeviceVariant::FloorFentry => "floor: empty kfunc programs (bpftrace), same functions",
        }
    }

    /// The target on `work`: refwatch's on the storm.
    pub fn target(self, work: Workload) -> Option<&'static str> {
        match (self, work) {
            (DeviceVariant::Again, _) => Some("1×"),
            (v, Workload::Storm) if v.is_refwatch() => {
                Some("≤ 1.10×, < bpftrace and perf; 0 dropped")
            }
            (v, Workload::Fio) if v.is_refwatch() => Some("0 dropped"),
            _ => None,
        }
    }
}

/// The device workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `benchload storm`: fsdax faults, then GUP pins and releases in passes.
    Storm,
    /// fio's mmap engine on a file in /mnt/dax, run whole between marks (`benchload run`).
    Fio,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::Storm, Workload::Fio];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Storm => "storm",
            Workload::Fio => "fio",
        }
    }
}

/// The device workloads under each tracer, then the storm with smaller rings, on one kernel.
#[derive(Serialize, Deserialize)]
pub struct Device {
    pub kernel: String,
    pub repetitions: usize,
    pub estimator: String,
    /// Cores other processes kept busy on average during the boot.
    pub host_other_cores: f64,
    pub loads: Vec<DeviceLoad>,
    /// Why the instruction counts are missing, if they are.
    pub instructions_error: Option<String>,
    /// kprobe, smaller and smaller rings.
    pub ring_sweep: Vec<Storm>,
    pub smallest_ring_kib_without_drops: Option<u32>,
    pub target_dropped: u64,
}

impl Device {
    /// The largest ring of the sweep that dropped events.
    pub fn first_drops(&self) -> Option<&Storm> {
        self.ring_sweep
            .iter()
            .find(|r| r.delivered.as_ref().is_some_and(|d| d.dropped > 0))
    }
}

/// One device workload under every tracer.
#[derive(Serialize, Deserialize)]
pub struct DeviceLoad {
    pub workload: Workload,
    pub command: String,
    /// Median untraced round: guest instructions on the workload's vCPU, and on all vCPUs.
    pub untraced_instructions: Option<f64>,
    pub all_vcpus_untraced_instructions: Option<f64>,
    pub untraced_seconds: Option<f64>,
    pub tracers: Vec<DeviceTracer>,
}

/// One tracer's figures on one device workload: ratios of median rounds to the untraced one.
#[derive(Serialize, Deserialize)]
pub struct DeviceTracer {
    pub variant: DeviceVariant,
    pub attach: Option<Attach>,
    /// Rounds measured (fewer than the repetitions where a tracer stopped starting).
    pub rounds: usize,
    /// Guest instructions on the workload's vCPU: the figure judged.
    pub insn_ratio: Option<f64>,
    pub insn_ratio_all_vcpus: Option<f64>,
    /// Instructions the tracer added per event it was offered (delivered or dropped), on the
    /// workload's vCPU (the probe and its ring reserve) and on all vCPUs (the reader too).
    pub insn_per_event: Option<f64>,
    pub insn_per_event_all_vcpus: Option<f64>,
    /// Wall clock (TCG: the host's load moves it).
    pub time_ratio: Option<f64>,
    /// What it delivered in the last repetition.
    pub delivered: Option<Delivered>,
    pub target: Option<String>,
    pub error: Option<String>,
}

/// The storm under `record` with a smaller ring (the ring sweep).
#[derive(Serialize, Deserialize)]
pub struct Storm {
    pub attach: Attach,
    pub ring_kib: u32,
    pub delivered: Option<Delivered>,
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Delivered {
    pub seconds: f64,
    pub events: u64,
    pub dropped: u64,
    pub events_per_s: f64,
    pub offered_per_s: f64,
}

/// Exec to "probes attached" (the command after `--` starts), on one kernel.
#[derive(Serialize, Deserialize)]
pub struct Startup {
    pub kernel: String,
    pub repetitions: usize,
    /// Cores other processes kept busy on average during the boot: TCG's clock is the host's.
    pub host_other_cores: f64,
    pub tools: Vec<StartupTool>,
    pub target: String,
}

/// A tracer's start-up: refwatch in one attach mode, or bpftrace.
#[derive(Serialize, Deserialize)]
pub struct StartupTool {
    /// `refwatch check` or `bpftrace -c`.
    pub tool: String,
    pub attach: Option<Attach>,
    /// Exec to the command's start, each repetition (ms).
    pub ready_ms: Vec<f64>,
    pub median_ms: Option<f64>,
    /// refwatch's phases (medians over repetitions, field by field).
    pub phases: Option<Phases>,
    pub error: Option<String>,
}

/// `refwatch report --json` on a big trace, on the host.
#[derive(Serialize, Deserialize)]
pub struct Analysis {
    pub kernel: String,
    pub host: String,
    pub source: String,
    pub events: u64,
    pub trace_bytes: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub cpu_seconds: f64,
    pub events_per_cpu_s: f64,
    pub peak_rss_mib: f64,
    pub quarter_events: u64,
    pub quarter_peak_rss_mib: f64,
    pub record_rules: Rerecord,
    pub target_events_per_s_min: f64,
}

/// `bench_tool rerecord`: what checking the rules while recording costs `record`.
#[derive(Serialize, Deserialize)]
pub struct Rerecord {
    pub events: u64,
    pub write_ns_per_event: f64,
    pub rules_ns_per_event: f64,
    pub ratio: f64,
    pub findings: u64,
    pub sync_ms: f64,
}

/// `bench_tool stats` of a trace.
#[derive(Clone, Serialize, Deserialize)]
pub struct TraceStats {
    pub kernel: String,
    pub events: u64,
    pub dropped: Option<u64>,
    pub calls: Option<BTreeMap<String, u64>>,
    pub bytes: u64,
    pub bytes_per_event: f64,
    pub span_ns: u64,
}

#[derive(Serialize, Deserialize)]
pub struct TraceSizes {
    pub kernel: Option<String>,
    pub bytes_per_event: f64,
    pub traces: BTreeMap<String, TraceStats>,
    pub target_max: f64,
}

/// The aggregator on whole-pgmap synthetic traces, on the host.
#[derive(Serialize, Deserialize)]
pub struct Scale {
    pub host: String,
    pub workload: String,
    pub today: ReportRun,
    pub today_baseline: Option<ReportRun>,
    pub sizes: Vec<ScaleSize>,
    pub target: String,
}

#[derive(Serialize, Deserialize)]
pub struct ScaleSize {
    pub gib: u64,
    pub pages: u64,
    pub trace_bytes: u64,
    pub refwatch: ReportRun,
    pub baseline: Option<BaselineRun>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineRun {
    Ran(ReportRun),
    Skipped(String),
}

/// One timed `refwatch report --json`.
#[derive(Serialize, Deserialize)]
pub struct ReportRun {
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    pub cpu_seconds: f64,
    pub events_per_cpu_s: f64,
    pub peak_rss_mib: f64,
    /// Where the trace keeps every page of the pgmap live at its peak.
    pub rss_bytes_per_page: Option<f64>,
}
