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
use super::runner::{self, VmCase, last_lines};
use super::{Assets, Attach, GuestJob, Kernel, VmResult};
use crate::cmd;
use crate::paths;
use anyhow::{Context, Result, bail};

pub struct Case {
    pub kernel: &'static str,
    pub attach: Attach,
}

/// The kernels built with DEVICE_PRIVATE and TEST_HMM=m.
pub const CASES: &[Case] = &[
    Case {
        kernel: "7.3-src",
        attach: Attach::Kprobe,
    },
    Case {
        kernel: "7.3-src",
        attach: Attach::Fentry,
    },
];

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
            let private = check.counted("private");
            // Allocations and faults (gets), migrations there (inserts) and back (puts), frees.
            let seen = [private.gets, private.inserts, private.puts, private.frees];
            if private.pages_seen == 0 || seen.contains(&0) {
                failures.push(format!(
                    "refwatch saw too little of the device-private pages: {private:?}"
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
            setup.push(format!("insmod {guest}"));
            files.push((ko, guest));
        }
        Ok(GuestJob {
            files,
            setup,
            // The suite runs a few minutes under TCG with every probe attached.
            ..checked::job("hmm-tests", self.attach, None, Duration::from_secs(900))
        })
    }
}

impl VmCase for Case {
    fn id(&self) -> String {
        format!("{}/hmm-tests/{}", self.kernel, self.attach.as_str())
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
