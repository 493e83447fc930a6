//! Loading the programs, attaching them per the plan, and reading events, drops and stacks.

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use aya::{
    EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        FEntry, KProbe, PerfEvent,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use aya_obj::generated::{
    HW_BREAKPOINT_LEN_4, HW_BREAKPOINT_W, PERF_EVENT_IOC_SET_BPF, PERF_FLAG_FD_CLOEXEC,
    perf_event_attr, perf_type_id,
};
use refwatch_common::{
    Event,
    globals::{self, Callers, Layout},
    model::MemoryType,
};
use tokio::io::unix::AsyncFd;

use crate::{
    btf::Btf,
    facts::{BTF_PATH, KernelFacts, VMEMMAP_BASE},
    kallsyms::Kallsyms,
    phases,
    plan::{self, AttachMode, Plan},
    privileges,
};

static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/refwatch"));

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(
        "refwatch needs root or {}: missing {}",
        "CAP_BPF+CAP_PERFMON+CAP_SYSLOG",
        .0.join(", ")
    )]
    Privileges(Vec<&'static str>),
    #[error("cannot read /proc/kallsyms: {0}")]
    Kallsyms(std::io::Error),
    #[error("kernel addresses are hidden in /proc/kallsyms (kptr_restrict): run as root")]
    HiddenAddresses,
    #[error("refwatch cannot run on {kernel}: {}", .reasons.join("; "))]
    Unsupported {
        kernel: String,
        reasons: Vec<String>,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, String),
    #[error("{0}: the probe catalog has no such function (`refwatch probes` lists them)")]
    UnknownProbe(String),
    #[error("no probe could be attached on {kernel}:\n  {}", .errors.join("\n  "))]
    NothingAttached { kernel: String, errors: Vec<String> },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub struct SessionOptions {
    pub attach: AttachMode,
    /// Catalog functions to leave out.
    pub skip: Vec<String>,
    /// Catalog functions off by default (hot) to attach.
    pub with: Vec<String>,
    /// Ring buffer size in bytes (rounded up to a power of two pages by the caller).
    pub ring_bytes: u32,
    /// Page events only from this process's threads (see the eBPF `wanted_task`).
    pub pid: Option<u32>,
    /// Pfns whose `_refcount` gets a hardware breakpoint (`--watch`).
    pub watch: Vec<u64>,
    /// Get breakpoints ready for pages chosen while capturing ([`Session::arm`]).
    pub auto_watch: bool,
    /// Events carry kernel stacks (`--no-stacks` turns them off).
    pub stacks: bool,
}

/// A `--watch` pfn and whether its breakpoints could be armed (on every online CPU).
#[derive(Clone, Debug)]
pub struct Watchpoint {
    pub pfn: u64,
    pub armed: Result<(), String>,
}

/// The running kernel as refwatch sees it, before anything is loaded.
pub struct Kernel {
    pub kallsyms: Kallsyms,
    pub facts: KernelFacts,
    /// The kernel's BTF as read for the facts (None where refwatch could not parse it), kept
    /// so that aya's parse for the fentry loads does not read the file again.
    btf_bytes: Option<Vec<u8>>,
    /// aya's own parse of those bytes: fentry loads take the attach target's type id from it
    /// (aya's API, FEntry::load, takes an aya::Btf). Parsed on first use: kprobe loads never
    /// need it.
    aya_btf: std::cell::OnceCell<Option<aya::Btf>>,
}

impl Kernel {
    pub fn inspect() -> Result<Self, SessionError> {
        let kallsyms =
            phases::time(|p| &mut p.kallsyms_ms, Kallsyms::read).map_err(SessionError::Kallsyms)?;
        let (btf, btf_error) = match std::fs::read(BTF_PATH) {
            Ok(bytes) => match phases::time(|p| &mut p.btf_ms, || Btf::parse(&bytes)) {
                Ok(btf) => (Some((btf, bytes)), None),
                Err(e) => (None, Some(format!("{BTF_PATH}: {e}"))),
            },
            Err(e) => (None, Some(format!("{BTF_PATH}: {e}"))),
        };
        let facts = KernelFacts::gather(&kallsyms, btf.as_ref().map(|(btf, _)| btf), btf_error);
        Ok(Self {
            kallsyms,
            facts,
            btf_bytes: btf.map(|(_, bytes)| bytes),
            aya_btf: std::cell::OnceCell::new(),
        })
    }

    pub fn aya_btf(&self) -> Option<&aya::Btf> {
        self.aya_btf
            .get_or_init(|| {
                let bytes = self.btf_bytes.as_deref()?;
                phases::time(
                    |p| &mut p.aya_btf_ms,
                    || aya::Btf::parse(bytes, aya::Endianness::default()),
                )
                .ok()
            })
            .as_ref()
    }
}

pub struct Session {
    // Owns the programs and links: dropping it detaches everything.
    _ebpf: aya::Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    drops: PerCpuArray<MapData, u64>,
    calls: PerCpuArray<MapData, u64>,
    stacks: StackTraceMap<MapData>,
    pub plan: Plan,
    kallsyms: Kallsyms,
    /// With fentry programs, their symbols read again beside the workload rather than before
    /// it starts: loaded into `kallsyms` at the first stack symbolized.
    bpf_symbols: Option<std::thread::JoinHandle<std::io::Result<String>>>,
    pub watchpoints: Vec<Watchpoint>,
    breakpoints: Breakpoints,
    symbolized: HashMap<i32, Vec<String>>,
}

fn raise_memlock() {
    // 5.10 still charges BPF maps to RLIMIT_MEMLOCK.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

impl Session {
    /// Loads and attaches; must be called inside a tokio runtime (the ring buffer is polled).
    pub fn open(kernel: Kernel, opts: &SessionOptions) -> Result<Self, SessionError> {
        let missing = privileges::missing();
        if !missing.is_empty() {
            return Err(SessionError::Privileges(missing));
        }
        let Kernel {
            kallsyms, facts, ..
        } = &kernel;
        if !kallsyms.addresses_visible() {
            return Err(SessionError::HiddenAddresses);
        }
        let mut plan = plan::resolve(facts, opts.attach);
        if !plan.blockers.is_empty() {
            return Err(SessionError::Unsupported {
                kernel: plan.kernel,
                reasons: plan.blockers,
            });
        }
        // --with first: a function named by both is left out.
        if let Some(unknown) = opts.with.iter().find(|f| !plan.with(f)) {
            return Err(SessionError::UnknownProbe(format!("--with {unknown}")));
        }
        if let Some(unknown) = opts.skip.iter().find(|f| !plan.skip(f)) {
            return Err(SessionError::UnknownProbe(format!("--skip {unknown}")));
        }
        let mut layout = facts
            .layout
            .as_ref()
            .expect("no blockers implies a layout")
            .with_vmemmap_base(kallsyms.get(VMEMMAP_BASE).map_or(0, |s| s.addr));
        layout.idle_one_types = idle_one_types(&plan);
        let mut callers = Callers::default();
        for entry in plan.used() {
            if let Some(caller) = refwatch_common::CATALOG[entry.id as usize].caller
                && let Some((lo, hi)) = kallsyms.range(caller)
            {
                callers.range[entry.id as usize] = [lo, hi];
            }
        }
        let mut ebpf = load_object(&layout, &callers, opts.into(), opts.ring_bytes)?;
        // Error -> functions that failed with it: one line for a refusal they all share.
        let mut errors: Vec<(String, Vec<String>)> = Vec::new();
        for entry in plan
            .probes
            .iter_mut()
            .filter(|p| p.resolution == plan::Resolution::Use)
        {
            let mut last_err = String::from("no attach mode is available for it on this kernel");
            for &mode in &entry.modes {
                match attach(&mut ebpf, entry.id, &entry.function, mode, &kernel) {
                    Ok(()) => {
                        entry.attached = Some(Ok(mode));
                        break;
                    }
                    Err(e) => last_err = format!("{mode}: {e}"),
                }
            }
            if entry.attached.is_none() {
                match errors.iter_mut().find(|(e, _)| *e == last_err) {
                    Some((_, functions)) => functions.push(entry.function.clone()),
                    None => errors.push((last_err.clone(), vec![entry.function.clone()])),
                }
                entry.attached = Some(Err(last_err));
            }
        }
        if plan.attached().next().is_none() {
            let errors = errors
                .into_iter()
                .map(|(e, f)| format!("{}: {e}", f.join(", ")))
                .chain(plan.notes.clone())
                .collect();
            return Err(SessionError::NothingAttached {
                kernel: plan.kernel,
                errors,
            });
        }
        let mut breakpoints = Breakpoints::new(
            &mut ebpf,
            &layout,
            opts.auto_watch || !opts.watch.is_empty(),
        );
        let mut asked: Vec<u64> = Vec::new();
        for &pfn in &opts.watch {
            if !asked.contains(&pfn) {
                asked.push(pfn);
            }
        }
        let watchpoints = asked
            .into_iter()
            .map(|pfn| Watchpoint {
                pfn,
                armed: breakpoints.arm(pfn),
            })
            .collect();
        let take = |ebpf: &mut aya::Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| SessionError::Map(name, "missing".into()))
        };
        let ring = RingBuf::try_from(take(&mut ebpf, globals::EVENTS)?)
            .map_err(|e| SessionError::Map(globals::EVENTS, e.to_string()))?;
        let drops = PerCpuArray::try_from(take(&mut ebpf, globals::DROPS)?)
            .map_err(|e| SessionError::Map(globals::DROPS, e.to_string()))?;
        let calls = PerCpuArray::try_from(take(&mut ebpf, globals::CALLS)?)
            .map_err(|e| SessionError::Map(globals::CALLS, e.to_string()))?;
        let stacks = StackTraceMap::try_from(take(&mut ebpf, globals::STACKS)?)
            .map_err(|e| SessionError::Map(globals::STACKS, e.to_string()))?;
        let Kernel { kallsyms, .. } = kernel;
        // fentry programs and their trampolines are frames of the stacks they take, dropped by
        // name: read their symbols, which did not exist at the first read. kprobe and perf_event
        // programs unwind from the probed context and never see their own frames.
        let bpf_symbols = plan
            .attached()
            .any(|p| p.attached == Some(Ok(AttachMode::Fentry)))
            .then(|| std::thread::spawn(Kallsyms::read_bpf));
        let session = Self {
            _ebpf: ebpf,
            // SAFETY: the ring buffer owns its fd and outlives the registration (both are moved
            // into the AsyncFd together).
            ring: unsafe { AsyncFd::register(ring) }.map_err(|e| SessionError::Io(e.into()))?,
            drops,
            calls,
            stacks,
            plan,
            kallsyms,
            bpf_symbols,
            watchpoints,
            breakpoints,
            symbolized: HashMap::new(),
        };
        // Parsing BTF and kallsyms peaks at tens of MiB that a long recording never needs
        // again: give it back to the kernel instead of keeping it as heap high-water mark.
        // (musl's allocator, in the static build, unmaps freed memory by itself.) The figures:
        // docs/performance.md, session memory.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0)
        };
        phases::write();
        Ok(session)
    }

    /// Waits until the ring buffer has data, then moves every pending event into `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        drain(guard.get_inner_mut(), out);
        guard.clear_ready();
        Ok(())
    }

    /// Moves pending events into `out` without waiting (used at shutdown).
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        drain(self.ring.get_mut(), out);
    }

    /// Puts a hardware breakpoint on page `pfn`'s `_refcount`, on every online CPU or none;
    /// why not where the kernel refuses (no slot free, no kernel breakpoints).
    pub fn arm(&mut self, pfn: u64) -> Result<(), String> {
        self.breakpoints.arm(pfn)
    }

    /// Removes page `pfn`'s breakpoints: its slots are free again.
    pub fn disarm(&mut self, pfn: u64) {
        self.breakpoints.by_pfn.remove(&pfn);
    }

    /// Failed ring-buffer reservations, summed over CPUs.
    pub fn dropped(&self) -> u64 {
        self.drops.get(&0, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }

    /// Entries of each attached function since attach (device pages or not), summed over CPUs.
    pub fn calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.plan
            .attached()
            .map(|p| {
                (
                    p.function.clone(),
                    self.calls
                        .get(&u32::from(p.id), 0)
                        .map_or(0, |v| v.iter().sum()),
                )
            })
            .collect()
    }

    /// The symbolized kernel stack of a stack id, innermost frame first.
    pub fn stack(&mut self, id: i32) -> &[String] {
        if id < 0 {
            return &[];
        }
        if let Some(reading) = self.bpf_symbols.take() {
            match reading.join() {
                Ok(Ok(lines)) => self.kallsyms.load_bpf(&lines),
                // It was read moments before; the frames of refwatch's own programs stay in.
                Ok(Err(e)) => eprintln!(
                    "refwatch: cannot read /proc/kallsyms again for the fentry programs' \
                     symbols ({e}): their frames stay in the stacks"
                ),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        let Self {
            symbolized,
            stacks,
            kallsyms,
            ..
        } = self;
        symbolized.entry(id).or_insert_with(|| {
            stacks
                .get(&(id as u32), 0)
                .map(|trace| {
                    trace
                        .frames()
                        .iter()
                        .filter(|f| !kallsyms.is_bpf(f.ip))
                        .map(|f| kallsyms.symbolize(f.ip))
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

/// The raw `enum memory_type` values whose pages idle at refcount 1 in the plan's era, as the
/// teardown scan's bit mask.
fn idle_one_types(plan: &Plan) -> u64 {
    plan.pgmap_types
        .iter()
        .filter(|&(&raw, name)| raw < 64 && plan.model.idle(MemoryType::from_name(name)) == Some(1))
        .fold(0, |mask, (&raw, _)| mask | 1 << raw)
}

/// What the programs filter and take, as their frozen globals.
struct Switches {
    pid: Option<u32>,
    stacks: bool,
}

impl From<&SessionOptions> for Switches {
    fn from(opts: &SessionOptions) -> Self {
        Self {
            pid: opts.pid,
            stacks: opts.stacks,
        }
    }
}

fn load_object(
    layout: &Layout,
    callers: &Callers,
    switches: Switches,
    ring_bytes: u32,
) -> Result<aya::Ebpf, aya::EbpfError> {
    let Switches { pid, stacks } = switches;
    raise_memlock();
    // A parse of the kernel's BTF that cannot be avoided: aya 0.14's EbpfLoader::new(), its
    // only constructor, reads and parses /sys/kernel/btf/vmlinux itself whatever `.btf()` is
    // given after, and keeps that parse private (fentry loads cannot have it). One loader per
    // command: `probes` loads one object for all its trials (Trial), a session one.
    phases::count_load();
    phases::time(
        |p| &mut p.aya_load_ms,
        || {
            EbpfLoader::new()
                .override_global(globals::LAYOUT, layout, true)
                .override_global(globals::CALLERS, callers, true)
                .override_global(globals::PID_FILTER, &pid.unwrap_or(0), true)
                .override_global(globals::NO_STACKS, &u32::from(!stacks), true)
                .map_max_entries(globals::EVENTS, ring_bytes)
                .load(PROGRAMS)
        },
    )
}

/// A program's name and whether the running kernel's verifier accepted it.
pub type VerifyOutcome = (String, Result<(), String>);

/// The object loaded once, unattached, to try its programs on the running kernel's verifier:
/// whether fentry is allowed at all, and `probes --verify`. One load for both, as aya's loader
/// parses the kernel's BTF each time it is made.
pub struct Trial<'k> {
    kernel: &'k Kernel,
    ebpf: aya::Ebpf,
}

impl<'k> Trial<'k> {
    pub fn load(kernel: &'k Kernel) -> Result<Self, SessionError> {
        let layout = kernel.facts.layout.clone().unwrap_or(Layout::PLACEHOLDER);
        // A pid filter and stacks on: the verifier knows the frozen globals, and would prune
        // the helper calls they guard instead of checking them.
        let ebpf = load_object(
            &layout.with_vmemmap_base(0),
            &Callers::default(),
            Switches {
                pid: Some(1),
                stacks: true,
            },
            globals::DEFAULT_RING_BYTES,
        )?;
        Ok(Self { kernel, ebpf })
    }

    /// Whether the kernel accepts an fentry program on `function` (some kernels refuse every
    /// fentry load with EPERM). The program is unloaded again.
    pub fn fentry_allowed(&mut self, id: u8, function: &str) -> Result<(), String> {
        self.kernel
            .facts
            .layout
            .as_ref()
            .map_err(ToString::to_string)?;
        let btf = self.kernel.aya_btf().ok_or("no kernel BTF")?;
        let prog: &mut FEntry = program(&mut self.ebpf, &format!("f_{id}"))?;
        prog.load(function, btf).map_err(|e| error_chain(&e))?;
        prog.unload().map_err(|e| error_chain(&e))
    }

    /// Loads (verifies) the kprobe program of every catalog entry that applies to the running
    /// kernel's version, the watchpoint programs, and, in `fentry` (function names by catalog
    /// id), the fentry program of each of those functions: the object's programs must pass the
    /// verifier of the running kernel even where it cannot attach them. Name → outcome.
    pub fn verify(mut self, fentry: &[(u8, &str)]) -> Vec<VerifyOutcome> {
        let version = self.kernel.facts.version;
        let mut outcomes: Vec<_> = (0..refwatch_common::CATALOG.len())
            .filter(|&id| refwatch_common::CATALOG[id].applies_to(version))
            .map(|id| {
                let name = format!("k_{id}");
                let outcome = program::<KProbe>(&mut self.ebpf, &name)
                    .and_then(|p| p.load().map_err(|e| error_chain(&e)));
                (name, outcome)
            })
            .collect();
        // The watchpoint programs; `watch` may be loaded already (breakpoint_slots).
        for name in [globals::WATCH_PROGRAM, globals::VMEMMAP_PROGRAM] {
            let outcome = program::<PerfEvent>(&mut self.ebpf, name).and_then(|p| {
                if p.fd().is_ok() {
                    return Ok(());
                }
                p.load().map_err(|e| error_chain(&e))
            });
            outcomes.push((name.to_owned(), outcome));
        }
        for &(id, function) in fentry {
            let name = format!("f_{id}");
            let outcome = self
                .kernel
                .aya_btf()
                .ok_or_else(|| "no kernel BTF".to_owned())
                .and_then(|btf| {
                    program::<FEntry>(&mut self.ebpf, &name)?
                        .load(function, btf)
                        .map_err(|e| error_chain(&e))
                });
            outcomes.push((format!("{name} ({function})"), outcome));
        }
        outcomes
    }
}

/// Breakpoint slots tried for by [`Trial::breakpoint_slots`]; x86-64 has four.
const MAX_SLOTS: usize = 8;

impl Trial<'_> {
    /// How many kernel data breakpoints CPU 0 can take now, found by arming them on a word
    /// that is never written (the start of kernel text) until the kernel refuses; the refusal
    /// when none can be had. They are released again.
    pub fn breakpoint_slots(&mut self) -> Result<usize, String> {
        let text = self
            .kernel
            .kallsyms
            .get("_stext")
            .ok_or("no _stext in kallsyms")?
            .addr;
        let prog: &mut PerfEvent = program(&mut self.ebpf, globals::WATCH_PROGRAM)?;
        prog.load().map_err(|e| error_chain(&e))?;
        let prog_fd = prog.fd().map_err(|e| error_chain(&e))?.as_fd().as_raw_fd();
        // Held until counted, then closed: the slots are free again.
        let mut held = Vec::new();
        while held.len() < MAX_SLOTS {
            match breakpoint(prog_fd, text, 0) {
                Ok(fd) => held.push(fd),
                Err(e) if held.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(held.len())
    }
}

/// A write breakpoint on the 4-byte word at `address`, on one CPU, with the program `prog_fd`
/// run on every hit; closing the fd removes both. Opened by hand: aya's `PerfEvent::attach`
/// sets `precise_ip`, and with it a kernel refuses a program that takes stacks (EPROTO from
/// `perf_event_set_bpf_handler`) unless the sample carries callchains. Without it the stack is
/// unwound from the breakpoint's registers.
///
/// # Minimum kernel version
///
/// 4.17 (the program reads the sample address, `bpf_perf_event_data.addr`).
fn breakpoint(prog_fd: RawFd, address: u64, cpu: u32) -> Result<OwnedFd, String> {
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = perf_type_id::PERF_TYPE_BREAKPOINT as u32;
    attr.size = size_of::<perf_event_attr>() as u32;
    attr.__bindgen_anon_1.sample_period = 1;
    attr.bp_type = HW_BREAKPOINT_W;
    attr.__bindgen_anon_3.bp_addr = address;
    attr.__bindgen_anon_4.bp_len = u64::from(HW_BREAKPOINT_LEN_4);
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            -1,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "perf_event_open: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_BPF as _, prog_fd) } < 0 {
        return Err(format!(
            "attaching the program (PERF_EVENT_IOC_SET_BPF): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// What arming a page's breakpoints needs, found once, and the breakpoints armed.
struct Breakpoints {
    /// The vmemmap base, the online CPUs and the watch program's fd; or why there are none.
    setup: Result<(u64, Vec<u32>, RawFd), String>,
    page_size: u64,
    off_refcount: u64,
    /// Each watched page's perf events, one per CPU: closing them detaches the program.
    by_pfn: HashMap<u64, Vec<OwnedFd>>,
}

impl Breakpoints {
    /// Loads the watch program and reads the vmemmap base where `wanted`.
    fn new(ebpf: &mut aya::Ebpf, layout: &Layout, wanted: bool) -> Self {
        let setup = if wanted {
            vmemmap_base(ebpf, layout).and_then(|base| {
                let cpus = aya::util::online_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
                let prog: &mut PerfEvent = program(ebpf, globals::WATCH_PROGRAM)?;
                prog.load().map_err(|e| error_chain(&e))?;
                let prog_fd = prog.fd().map_err(|e| error_chain(&e))?.as_fd().as_raw_fd();
                Ok((base, cpus, prog_fd))
            })
        } else {
            Err("watchpoints are off".to_owned())
        };
        Self {
            setup,
            page_size: layout.page_size,
            off_refcount: layout.off_refcount,
            by_pfn: HashMap::new(),
        }
    }

    /// All CPUs or none: a partial watch would miss writes without saying so.
    fn arm(&mut self, pfn: u64) -> Result<(), String> {
        let (base, cpus, prog_fd) = self.setup.as_ref().map_err(Clone::clone)?;
        let address = base + pfn * self.page_size + self.off_refcount;
        let fds = cpus
            .iter()
            .map(|&cpu| breakpoint(*prog_fd, address, cpu).map_err(|e| format!("cpu {cpu}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        self.by_pfn.insert(pfn, fds);
        Ok(())
    }
}

/// The vmemmap base: fixed, or (randomized at boot) read by the `vmemmap` program from a page
/// fault refwatch makes while it is attached.
fn vmemmap_base(ebpf: &mut aya::Ebpf, layout: &Layout) -> Result<u64, String> {
    if layout.vmemmap_base_addr == 0 {
        return Ok(layout.vmemmap_start);
    }
    let prog: &mut PerfEvent = program(ebpf, globals::VMEMMAP_PROGRAM)?;
    prog.load().map_err(|e| error_chain(&e))?;
    let link = prog
        .attach(
            PerfEventConfig::Software(SoftwareEvent::PageFaults),
            PerfEventScope::CallingProcess { cpu: None },
            SamplePolicy::Period(1),
            false,
        )
        .map_err(|e| error_chain(&e))?;
    fault_a_page();
    prog.detach(link).map_err(|e| error_chain(&e))?;
    let map = ebpf
        .map(globals::VMEMMAP)
        .ok_or_else(|| format!("map {} missing", globals::VMEMMAP))?;
    let base = Array::<_, u64>::try_from(map)
        .and_then(|a| a.get(&0, 0))
        .map_err(|e| error_chain(&e))?;
    (base != 0)
        .then_some(base)
        .ok_or_else(|| "the vmemmap base could not be read".to_owned())
}

/// Touches a new anonymous page: one page fault in this thread.
fn fault_a_page() {
    const PAGE: usize = 4096;
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p != libc::MAP_FAILED {
            std::ptr::write_volatile(p.cast::<u8>(), 1);
            libc::munmap(p, PAGE);
        }
    }
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<Event>) {
    while let Some(item) = ring.next() {
        if item.len() >= size_of::<Event>() {
            // The ring only holds Events; read unaligned since the item is a byte slice.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
        }
    }
}

fn attach(
    ebpf: &mut aya::Ebpf,
    id: u8,
    function: &str,
    mode: AttachMode,
    kernel: &Kernel,
) -> Result<(), String> {
    match mode {
        AttachMode::Kprobe => {
            let prog: &mut KProbe = program(ebpf, &format!("k_{id}"))?;
            phases::verify(id, || prog.load()).map_err(|e| error_chain(&e))?;
            phases::time(|p| &mut p.attach_ms, || prog.attach(function, 0))
                .map_err(|e| error_chain(&e))?;
        }
        AttachMode::Fentry => {
            let btf = kernel.aya_btf().ok_or("no kernel BTF")?;
            let prog: &mut FEntry = program(ebpf, &format!("f_{id}"))?;
            phases::verify(id, || prog.load(function, btf)).map_err(|e| error_chain(&e))?;
            phases::time(|p| &mut p.attach_ms, || prog.attach()).map_err(|e| error_chain(&e))?;
        }
        AttachMode::Auto => unreachable!("the plan expands auto into concrete modes"),
    }
    Ok(())
}

/// A program of the object, as its concrete type.
fn program<'a, P>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e| error_chain(&e))
}

/// An error with its sources, on one line (aya's errors keep the useful part in `source`).
/// A verifier log is cut to its verdict ([`verifier_verdict`]).
/// A source whose text is already in the message (aya repeats the errno) is left out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    match s.split_once("Verifier output:") {
        // No log at all: the kernel refused the program before the verifier ran.
        Some((head, log)) => match verifier_verdict(log) {
            "" => head.trim_end().trim_end_matches('.').to_owned(),
            verdict => format!("{head}verifier: {verdict}"),
        },
        None => s,
    }
}

/// The line of a verifier log that says why: the last one before its statistics. Kernels
/// end the log with some of "verification time", "stack depth", per-subprogram lines and
/// "processed N insns", in an order that changed over the versions.
pub fn verifier_verdict(log: &str) -> &str {
    const STATISTICS: [&str; 5] = [
        "processed ",
        "verification time ",
        "stack depth ",
        "subprog ",
        "max_states_per_insn ",
    ];
    log.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rev()
        .find(|l| !STATISTICS.iter().any(|s| l.starts_with(s)))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::verifier_verdict;

    #[test]
    fn verdict_is_the_line_before_the_statistics() {
        // 6.1's ending, and 6.12's onwards (stack depth and per-subprogram lines first).
        let old = "12: (85) call bpf_probe_read_kernel#113\nR9 !read_ok\n\
            processed 1209 insns (limit 1000000) max_states_per_insn 2 total_states 70\n";
        let new = "235: (07) r9 += 1\nR9 !read_ok\nverification time 2327 usec\n\
            stack depth 184+0\nsubprog 1 (memset) static insns_self 794 stack 0\n\
            processed 1209 insns (limit 1000000) max_states_per_insn 2 total_states 70\n";
        assert_eq!(verifier_verdict(old), "R9 !read_ok");
        assert_eq!(verifier_verdict(new), "R9 !read_ok");
        assert_eq!(verifier_verdict("\n"), "");
    }
}
