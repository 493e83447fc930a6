//! refwatch_inject (xtask/lab/inject): a test-only module that breaks ZONE_DEVICE page
//! refcounting on purpose, one scenario at a time, and its user program `inject`. This builds
//! the module against the guest kernel's Debian headers (fetched through the lab's private apt
//! config), describes the guest job that runs `refwatch check --json -- inject SCENARIO`, and
//! holds the matrix cases that assert refwatch reports exactly the injected bug.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::apt::Apt;
use super::checked::{self, Check};
use super::kernel::{self, Kernel, KernelSpec, Origin};
use super::runner::{self, VmCase, last_lines};
use super::{Assets, Attach, GuestJob, VmResult};
use crate::cmd::{self, note};
use crate::paths;

/// `inject`'s scenarios: `healthy` and one per refwatch rule id.
pub const SCENARIOS: &[&str] = &[
    "healthy",
    "insert-zero-ref",
    "free-while-mapped",
    "get-from-zero",
    "put-underflow",
    "teardown-busy",
];

/// e820-reserved (not RAM, not pmem) 128 MiB at 1.5 GiB: one whole memory section that the
/// module hands to memremap_pages().
pub const CMDLINE: &str = "memmap=128M$0x60000000";
/// The pfns of that range; the module's pgmap covers the first 2 MiB of it.
pub const PFNS: std::ops::Range<u64> = 0x60000..0x68000;

const GUEST_MODULE: &str = "/lib/modules/refwatch_inject.ko";
const GUEST_PROGRAM: &str = "/usr/local/bin/inject";
/// The module's sources, as kbuild needs them in M=.
const MODULE_SOURCES: &[&str] = &["refwatch_inject.c", "refwatch_inject.h", "Kbuild"];

/// Matrix cases of one kernel may build the program and its module concurrently.
static BUILD_LOCK: Mutex<()> = Mutex::new(());
/// Module builds share a cache: one at a time.
static MODULE_LOCK: Mutex<()> = Mutex::new(());

fn source_dir() -> PathBuf {
    paths::workspace_root().join("xtask/lab/inject")
}

pub struct Built {
    pub module: PathBuf,
    pub program: PathBuf,
}

/// The module for `spec` (cached per kernel release, rebuilt when its sources change) and the
/// static user program.
pub fn build(spec: &'static KernelSpec, apt: &Apt) -> Result<Built> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Built {
        module: build_module(spec, apt, &source_dir(), "refwatch_inject", MODULE_SOURCES)?,
        program: build_program()?,
    })
}

/// The kbuild directory to build the module against: the lab's own build of a kernel built
/// from source, or Debian's headers, unpacked into the cache and made relocatable.
fn headers(spec: &'static KernelSpec, apt: &Apt) -> Result<PathBuf> {
    let headers = match &spec.origin {
        Origin::Debian { headers, .. } => headers,
        Origin::Built(recipe) => {
            return Ok(super::build::ensure(spec.name, spec.release, recipe, apt)?.build);
        }
    };
    if headers.is_empty() {
        bail!(
            "kernel {}: no header packages in the kernel table, so no test module",
            spec.name
        );
    }
    let tree = paths::lab_cache()?.join("headers").join(spec.release);
    let build = tree
        .join("usr/src")
        .join(format!("linux-headers-{}", spec.release));
    let marker = tree.join(".refwatch-complete");
    if marker.exists() {
        return Ok(build);
    }
    note(format_args!("kernel {}: fetching headers", spec.name));
    if tree.exists() {
        std::fs::remove_dir_all(&tree)
            .with_context(|| format!("removing partial {}", tree.display()))?;
    }
    kernel::extract_packages(apt, headers, &tree)?;
    // The arch Makefile is one `include /usr/src/linux-headers-…-common/Makefile`, an absolute
    // path; the scripts/tools symlinks are relative and already resolve inside the tree.
    let makefile = build.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("reading {}", makefile.display()))?;
    let fixed = text.replace(
        "include /usr/src/",
        &format!("include {}/usr/src/", tree.display()),
    );
    if fixed == text {
        bail!(
            "{}: no `include /usr/src/…` to relocate",
            makefile.display()
        );
    }
    std::fs::write(&makefile, fixed)?;
    std::fs::write(&marker, "")?;
    Ok(build)
}

/// The out-of-tree module `name`.ko from `sources` (its .c, headers and Kbuild) in `src`, for
/// `spec`: cached per kernel release, rebuilt when a source changes.
pub(super) fn build_module(
    spec: &'static KernelSpec,
    apt: &Apt,
    src: &Path,
    name: &str,
    sources: &[&str],
) -> Result<PathBuf> {
    let _guard = MODULE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = paths::lab_cache()?.join(name).join(spec.release);
    let ko = out.join(format!("{name}.ko"));
    let unchanged = |dir: &Path| {
        sources.iter().all(|f| {
            matches!(
                (std::fs::read(src.join(f)), std::fs::read(dir.join(f))),
                (Ok(a), Ok(b)) if a == b
            )
        })
    };
    if ko.is_file() && unchanged(&out) {
        return Ok(ko);
    }
    let kdir = headers(spec, apt)?;
    // kbuild writes into M=: build in a scratch dir, then swap it in.
    let scratch = out.with_file_name(format!("{}.build", spec.release));
    for dir in [&scratch, &out] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
    }
    paths::create_dir(&scratch)?;
    for f in sources {
        std::fs::copy(src.join(f), scratch.join(f)).with_context(|| format!("copying {f}"))?;
    }
    note(format_args!("kernel {}: building {name}.ko", spec.name));
    // The headers' Makefile names the compiler it was built with: the host's Debian 12 gcc-12
    // (`gcc-12` on 6.1, `x86_64-linux-gnu-gcc-12` on 6.12). 6.12 ships vmlinux, so modfinal
    // would run pahole for module BTF; refwatch names module frames from kallsyms and needs no
    // BTF of this module, so that step is switched off.
    cmd::run(
        Command::new("make")
            .arg("-C")
            .arg(&kdir)
            .arg(format!("M={}", scratch.display()))
            .args(["CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"])
            // The lab's stdout carries only the guest command's output.
            .stdout(std::io::stderr()),
    )
    .with_context(|| format!("building {name}.ko for {}", spec.release))?;
    if !scratch.join(format!("{name}.ko")).is_file() {
        bail!("make left no {name}.ko in {}", scratch.display());
    }
    std::fs::rename(&scratch, &out)?;
    Ok(ko)
}

/// `inject`, static with the host gcc like the workloads (the guest has no libc).
fn build_program() -> Result<PathBuf> {
    let out_dir = paths::workspace_root().join("target/lab/inject");
    paths::create_dir(&out_dir)?;
    let binary = out_dir.join("inject");
    let tmp = out_dir.join(format!("inject.{}.tmp", std::process::id()));
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-static", "-Wall", "-Werror", "-o"])
            .arg(&tmp)
            .arg(source_dir().join("inject.c")),
    )?;
    std::fs::rename(&tmp, &binary).with_context(|| format!("installing {}", binary.display()))?;
    Ok(binary)
}

/// The guest job: load the module, then `refwatch check --json` over one `inject SCENARIO`.
/// stdout is refwatch's JSON alone; inject's own output goes to /out/inject.log.
pub fn job(built: &Built, scenario: &str, attach: Attach, timeout: Duration) -> GuestJob {
    refwatch_job(built, &["check", "--json"], scenario, attach, timeout)
}

/// The module loaded, then `refwatch COMMAND…` (with `--attach`) over one `inject SCENARIO`,
/// whose own output goes to /out/inject.log.
pub fn refwatch_job(
    built: &Built,
    command: &[&str],
    scenario: &str,
    attach: Attach,
    timeout: Duration,
) -> GuestJob {
    let argv = std::iter::once("refwatch")
        .chain(command.iter().copied())
        .chain(["--attach", attach.as_str(), "--", "sh", "-c"])
        .map(String::from)
        .chain([format!("exec inject {scenario} >/out/inject.log 2>&1")])
        .collect();
    GuestJob {
        env: vec![("REFWATCH_ATTACH".into(), attach.as_str().into())],
        ..module_job(built, argv, timeout)
    }
}

/// A guest job running `argv` with the module loaded over the memory it is given.
pub fn module_job(built: &Built, argv: Vec<String>, timeout: Duration) -> GuestJob {
    GuestJob {
        argv,
        files: vec![
            (built.module.clone(), GUEST_MODULE.into()),
            (built.program.clone(), GUEST_PROGRAM.into()),
        ],
        setup: vec![format!("insmod {GUEST_MODULE}")],
        cmdline: vec![CMDLINE.into()],
        timeout: Some(timeout),
        ..GuestJob::default()
    }
}

// --- the matrix cases --------------------------------------------------------------------------

/// Kernels the module is built for: Debian's with `headers` in the kernel table, and the lab's
/// build of 7.3.
const CASE_KERNELS: &[&str] = &["6.1", "6.12", "7.3-src"];

pub struct Case {
    pub kernel: &'static str,
    pub scenario: &'static str,
    pub attach: Attach,
    /// The kernel's mappings hold a page reference and a mapcount (6.15+): the module injects
    /// some bugs the way that era has them (xtask/lab/inject/README.md).
    pub mapping_ref: bool,
}

/// What `refwatch check --json -- inject SCENARIO` must report.
#[derive(Debug, PartialEq, Eq)]
pub enum Expect {
    /// No finding, exit 0.
    Clean,
    /// Exactly `count` findings, all of `rule`, on device pages of the module's pgmap, with
    /// `frame` (a function of the module) on each finding's stack; exit 1.
    Finding {
        rule: &'static str,
        count: u64,
        frame: &'static str,
    },
}

/// Every scenario on every kernel the module is built for, in both attach modes (36 cases).
pub static CASES: std::sync::LazyLock<Vec<Case>> = std::sync::LazyLock::new(cases);

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for kernel in CASE_KERNELS {
        let version = kernel::spec(kernel)
            .expect("CASE_KERNELS are in the kernel table")
            .version();
        let mapping_ref = refwatch_common::catalog::era(version)
            .model
            .mapping_takes_ref();
        for attach in [Attach::Kprobe, Attach::Fentry] {
            for scenario in SCENARIOS {
                cases.push(Case {
                    kernel,
                    scenario,
                    attach,
                    mapping_ref,
                });
            }
        }
    }
    cases
}

impl VmCase for Case {
    fn id(&self) -> String {
        format!(
            "{}/inject-{}/{}",
            self.kernel,
            self.scenario,
            self.attach.as_str()
        )
    }
    fn kernel(&self) -> &'static str {
        self.kernel
    }
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        Case::run(self, kernel, assets)
    }
}

impl Case {
    /// The module function that does each scenario's wrong step (xtask/lab/inject/README.md).
    pub fn expect(&self) -> Expect {
        let finding = |rule, frame| Expect::Finding {
            rule,
            count: 1,
            frame,
        };
        match self.scenario {
            "healthy" => Expect::Clean,
            // The user's touch faults the page in at refcount 0 (armed at setup).
            "insert-zero-ref" => finding("insert-zero-ref", "inj_vm_fault"),
            "free-while-mapped" => finding("free-while-mapped", "inj_free_while_mapped"),
            "get-from-zero" => finding("get-from-zero", "inj_get_from_zero"),
            "put-underflow" => finding("put-underflow", "inj_put_underflow"),
            // inject maps and touches pages 0-3 and keeps them mapped (page 0 also pinned)
            // across memunmap_pages: four busy pages, one finding each. From 6.15 a zap touches
            // the struct page, so the module zaps the mappings first and only the pin is left.
            "teardown-busy" => Expect::Finding {
                rule: "teardown-busy",
                count: if self.mapping_ref { 1 } else { 4 },
                frame: "inj_teardown_busy",
            },
            other => unreachable!("scenario {other} has no expectation"),
        }
    }

    pub fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        let job = Apt::new()
            .and_then(|apt| build(kernel.spec, &apt))
            .map(|built| job(&built, self.scenario, self.attach, Duration::from_secs(180)));
        runner::run(&self.id(), kernel, assets, job, |result| {
            self.assess(result)
        })
    }

    fn assess(&self, result: &VmResult) -> Vec<String> {
        let mut failures = Vec::new();
        let expect = self.expect();
        let log = std::fs::read_to_string(result.out_dir.join("inject.log")).unwrap_or_default();
        // inject checks every step the module takes; an UNEXPECTED means the scenario itself
        // did not happen as designed, whatever refwatch says.
        if log.contains("UNEXPECTED") || !log.contains(&format!("inject: {}: done", self.scenario))
        {
            failures.push(format!(
                "inject did not run the scenario as designed: {}",
                last_lines(&log, 4)
            ));
        }
        let check: Check = match serde_json::from_slice(&result.stdout) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!(
                    "no check JSON on stdout ({e}); exit {}; stderr: {}",
                    result.exit_code,
                    last_lines(&String::from_utf8_lossy(&result.stderr), 5),
                ));
                return failures;
            }
        };
        let want_exit = if expect == Expect::Clean { 0 } else { 1 };
        if result.exit_code != want_exit {
            failures.push(format!(
                "exit status {}, expected {want_exit}",
                result.exit_code
            ));
        }
        failures.extend(check.judge_run(self.attach));
        let (want_rule, want_count) = match expect {
            Expect::Clean => (None, 0),
            Expect::Finding { rule, count, .. } => (Some(rule), count),
        };
        let counts: BTreeMap<&str, u64> = check
            .rules
            .iter()
            .map(|r| (r.id.as_str(), r.count))
            .collect();
        for rule in &check.rules {
            let want = if Some(rule.id.as_str()) == want_rule {
                want_count
            } else {
                0
            };
            if rule.count != want {
                failures.push(format!(
                    "rule {}: {} finding(s), expected {want}",
                    rule.id, rule.count
                ));
            }
            if Some(rule.id.as_str()) == want_rule && rule.state != "checked" {
                failures.push(format!(
                    "rule {} is {} here: {}",
                    rule.id,
                    rule.state,
                    rule.reason.as_deref().unwrap_or("")
                ));
            }
        }
        if let Some(rule) = want_rule
            && !counts.contains_key(rule)
        {
            failures.push(format!("rule {rule} missing from the report"));
        }
        if check.findings_total != want_count {
            failures.push(format!(
                "findings_total {}, expected {want_count}",
                check.findings_total
            ));
        }
        if let Expect::Finding { rule, frame, .. } = expect {
            for f in &check.findings {
                let what = format!("{} finding on pfn {:#x}", f.rule, f.pfn);
                if f.rule != rule {
                    continue; // counted above
                }
                if !PFNS.contains(&f.pfn) {
                    failures.push(format!("{what}: outside the module's range {PFNS:#x?}"));
                }
                match (f.pgmap.start, f.pgmap.end) {
                    (Some(s), Some(e))
                        if PFNS.start <= s && s <= f.pfn && f.pfn < e && e <= PFNS.end => {}
                    (s, e) => failures.push(format!(
                        "{what}: pgmap range {s:#x?}..{e:#x?} is not the module's"
                    )),
                }
                if !f
                    .stack
                    .iter()
                    .any(|s| checked::in_frame(s, frame, "refwatch_inject"))
                {
                    failures.push(format!(
                        "{what}: no {frame} [refwatch_inject] frame in {:?}",
                        f.stack
                    ));
                }
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_zero_based_kernel_zaps_before_the_teardown() {
        for case in CASES.iter().filter(|c| c.scenario == "teardown-busy") {
            let Expect::Finding { count, .. } = case.expect() else {
                panic!("{}: teardown-busy expects a finding", case.kernel);
            };
            assert_eq!(count, if case.kernel == "7.3-src" { 1 } else { 4 });
        }
    }
}
