//! The kernel's own HMM selftest under `refwatch check`: `hmm-tests`, built from the same
//! source tree as the lab's kernel, drives lib/test_hmm.ko, whose fake device allocates
//! device-private pages, migrates anonymous memory to them and back, and faults them in.
//! refwatch must see those pages (pgmap type `private`) and report nothing: the kernel is
//! healthy. A test of the suite that fails on its own fails the case under its own name.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::checked;
use super::device_memory::{COHERENT_BASE, Memory};
use super::runner::{self, VmCase, last_lines};
use super::{Assets, Attach, GuestJob, Kernel, VmResult};
use crate::cmd;
use crate::paths;
use anyhow::{Context, Result, bail};

pub struct Case {
    pub kernel: &'static str,
    pub memory: Memory,
    pub attach: Attach,
}

/// The kernels built with DEVICE_PRIVATE and TEST_HMM=m.
pub const CASES: &[Case] = &[
    Case {
        kernel: "7.3-src",
        memory: Memory::Private,
        attach: Attach::Kprobe,
    },
    Case {
        kernel: "7.3-src",
        memory: Memory::Private,
        attach: Attach::Fentry,
    },
    Case {
        kernel: "7.3-src",
        memory: Memory::Coherent,
        attach: Attach::Kprobe,
    },
    Case {
        kernel: "7.3-src",
        memory: Memory::Coherent,
        attach: Attach::Fentry,
    },
];

/// test_hmm's two coherent devices: a 256 MiB chunk each (its DEVMEM_CHUNK_SIZE).
fn coherent_params() -> String {
    format!(
        "spm_addr_dev0={COHERENT_BASE:#x} spm_addr_dev1={:#x}",
        COHERENT_BASE + (256 << 20)
    )
}

/// The coherent run's suite: its coherent variants only, without the tests that need
/// transparent huge pages. test_hmm gives a coherent device one 256 MiB chunk at its address,
/// split at the first allocation into small pages or into 2 MiB folios; a device page of the
/// other size needs a second chunk at the same address, which memremap_pages refuses
/// ("Conflicting mapping in same section"), and 7.3.4's test_hmm then oopses on a NULL page
/// in dmirror_migrate_to_device. So that guest has no THP (`transparent_hugepage=never`), and a
/// test that needs one is left out (`-T`, before the `-v`: the harness takes the first match).
const COHERENT_SUITE: &str = "hmm-tests -T anon_write_huge -T migrate_anon_huge_empty \
    -T migrate_anon_huge_zero -T migrate_anon_huge_free -T migrate_anon_huge_fault \
    -T migrate_partial_unmap_fault -T migrate_remap_fault -T migrate_anon_huge_err \
    -T migrate_anon_huge_zero_err -T benchmark_thp_migration \
    -v hmm_device_coherent -v hmm2_device_coherent";

const GUEST_PROGRAM: &str = "/usr/local/bin/hmm-tests";

/// Cases of one kernel may build the program concurrently.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// `hmm-tests`, static like the other guest programs, from `src`'s selftests. Newer trees
/// split helpers into vm_util.c and a settings file; those present are linked in.
fn build_program(src: &Path, release: &str) -> Result<PathBuf> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = src.join("tools/testing/selftests/mm");
    let out_dir = paths::workspace_root().join("target/lab/hmm").join(release);
    paths::create_dir(&out_dir)?;
    let binary = out_dir.join("hmm-tests");
    if binary.is_file() {
        return Ok(binary);
    }
    let helpers = ["vm_util.c", "thp_settings.c", "hugepage_settings.c"]
        .into_iter()
        .filter(|f| dir.join(f).is_file());
    let tmp = out_dir.join(format!("hmm-tests.{}.tmp", std::process::id()));
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-static", "-w", "-I", "../../../..", "-I", ".."])
            .args(["-isystem", "../../../include/uapi", "-o"])
            .arg(&tmp)
            .arg("hmm-tests.c")
            .args(helpers)
            .args(["-lrt", "-lpthread", "-lm"])
            .current_dir(&dir)
            .stdout(std::io::stderr()),
    )
    .with_context(|| format!("building hmm-tests from {}", dir.display()))?;
    std::fs::rename(&tmp, &binary)?;
    Ok(binary)
}

/// The KTAP lines of the kselftest harness: `ok N name`, `not ok N name`, `# SKIP` after
/// either. Returns (passed, failed names).
fn suite_results(log: &str) -> (usize, Vec<String>) {
    let mut passed = 0;
    let mut failed = Vec::new();
    for line in log.lines() {
        if line.contains("# SKIP") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("not ok ") {
            failed.push(rest.trim().to_owned());
        } else if line.starts_with("ok ") {
            passed += 1;
        }
    }
    (passed, failed)
}

impl Case {
    fn assess(&self, result: &VmResult) -> Vec<String> {
        let outcome = checked::read(result, self.attach, "0");
        let mut failures = outcome.failures;
        let (passed, failed) = suite_results(&outcome.log);
        if passed == 0 {
            failures.push(format!(
                "hmm-tests passed no test (status {}): {}",
                outcome.status,
                last_lines(&outcome.log, 3)
            ));
        }
        if !failed.is_empty() {
            failures.push(format!(
                "hmm-tests failed on its own (not refwatch): {}",
                failed.join("; ")
            ));
        }
        if let Some(check) = outcome.check {
            failures.extend(check.judge_findings(None));
            let name = self.memory.pgmap_type();
            let pages = check.counted(name);
            // Allocations and faults (gets), migrations there (inserts) and back (puts), frees.
            let seen = [pages.gets, pages.inserts, pages.puts, pages.frees];
            if pages.pages_seen == 0 || seen.contains(&0) {
                failures.push(format!(
                    "refwatch saw too little of the {name} pages: {pages:?}"
                ));
            }
        }
        failures
    }

    fn job(&self, kernel: &Kernel) -> Result<GuestJob> {
        let Some(built) = kernel.built() else {
            bail!(
                "kernel {} is Debian's binary, without device-private pages",
                kernel.spec.name
            );
        };
        let program = build_program(&built.src, kernel.spec.release)?;
        let modules = kernel.module_load_order(&["test_hmm"])?;
        let mut files = vec![(program, GUEST_PROGRAM.to_owned())];
        let mut setup = Vec::new();
        for ko in modules {
            let name = ko
                .file_name()
                .context("module without a name")?
                .to_string_lossy()
                .into_owned();
            let guest = format!("/lib/modules/{name}");
            let params = match self.memory {
                Memory::Coherent if name == "test_hmm.ko" => coherent_params(),
                _ => String::new(),
            };
            setup.push(format!("insmod {guest} {params}"));
            files.push((ko, guest));
        }
        let (workload, cmdline) = match self.memory {
            Memory::Private => ("hmm-tests", Vec::new()),
            Memory::Coherent => {
                let mut cmdline = self.memory.cmdline();
                cmdline.push("transparent_hugepage=never".to_owned());
                (COHERENT_SUITE, cmdline)
            }
        };
        Ok(GuestJob {
            files,
            setup,
            cmdline,
            // The suite runs a few minutes under TCG with every probe attached.
            ..checked::job(workload, self.attach, None, Duration::from_secs(900))
        })
    }
}

impl VmCase for Case {
    fn id(&self) -> String {
        let suite = match self.memory {
            Memory::Private => "hmm-tests",
            Memory::Coherent => "hmm-tests-coherent",
        };
        format!("{}/{suite}/{}", self.kernel, self.attach.as_str())
    }

    fn kernel(&self) -> &'static str {
        self.kernel
    }

    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        runner::run(&self.id(), kernel, assets, self.job(kernel), |result| {
            self.assess(result)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suites_own_failures_are_named_and_skips_are_not_failures() {
        let log = "TAP version 13\n1..3\n# Starting 3 tests from 2 test cases.\n\
                   ok 1 hmm.hmm_device_private.open_close\n\
                   not ok 2 hmm.hmm_device_private.anon_write\n\
                   ok 3 hmm.hmm_device_coherent.open_close # SKIP no device\n";
        let (passed, failed) = suite_results(log);
        assert_eq!(passed, 1);
        assert_eq!(failed, ["2 hmm.hmm_device_private.anon_write"]);
    }
}
