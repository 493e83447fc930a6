//! Lab cases whose guest script asserts by itself (xtask/lab/scripts/*.sh): environment
//! errors (no BTF, no tracefs, two instances, an unreadable release), kills during a
//! recording, the CI options, hostile names, the verifier, and the soak. A script prints
//! `FAIL: …` lines and exits 1 on failure; the host reports those lines.

use super::runner::{VmCase, boot, last_lines};
use super::{Assets, GuestJob, Kernel};

pub struct ScriptCase {
    pub kernel: &'static str,
    pub name: &'static str,
    /// The script's body, after the prelude.
    pub body: &'static str,
}

impl ScriptCase {
    const fn new(kernel: &'static str, name: &'static str, body: &'static str) -> Self {
        ScriptCase { kernel, name, body }
    }

    /// The script the guest runs: the prelude's helpers, the body, and its verdict.
    pub fn script(&self) -> String {
        format!("{PRELUDE}\n{}\nexit $failed\n", self.body)
    }
}

/// Helpers every script starts with (`fail`, `events`, `wait_for`).
const PRELUDE: &str = include_str!("../../lab/scripts/prelude.sh");
const NO_BTF: &str = include_str!("../../lab/scripts/no-btf.sh");
const VERIFIER: &str = include_str!("../../lab/scripts/verifier.sh");
const DROPS_INCONCLUSIVE: &str = include_str!("../../lab/scripts/drops-inconclusive.sh");
const CI_OPTIONS: &str = include_str!("../../lab/scripts/ci-options.sh");
const HOSTILE_NAMES: &str = include_str!("../../lab/scripts/hostile-names.sh");
const NO_TRACEFS: &str = include_str!("../../lab/scripts/no-tracefs.sh");
const TWO_INSTANCES: &str = include_str!("../../lab/scripts/two-instances.sh");
const UNKNOWN_RELEASE: &str = include_str!("../../lab/scripts/unknown-release.sh");
const SIGNALS: &str = include_str!("../../lab/scripts/signals.sh");
/// A minute of mixed DAX workloads under `refwatch record`, or `$seconds`.
const SOAK: &str = include_str!("../../lab/scripts/soak.sh");

/// `seconds` of mixed DAX workloads under `refwatch record` (xtask/lab/scripts/soak.sh).
pub fn soak(kernel: &'static str, seconds: u64) -> (ScriptCase, String) {
    let case = ScriptCase::new(kernel, "soak", SOAK);
    let script = format!("{PRELUDE}\nseconds={seconds}\n{SOAK}\nexit $failed\n");
    (case, script)
}

pub const CASES: &[ScriptCase] = &[
    ScriptCase::new("5.10", "verifier", VERIFIER),
    ScriptCase::new("6.1", "verifier", VERIFIER),
    ScriptCase::new("6.12", "verifier", VERIFIER),
    ScriptCase::new("7.2", "verifier", VERIFIER),
    ScriptCase::new("7.3", "verifier", VERIFIER),
    ScriptCase::new("6.1", "drops-inconclusive", DROPS_INCONCLUSIVE),
    ScriptCase::new("6.1", "env-no-btf", NO_BTF),
    ScriptCase::new("6.1", "env-no-tracefs", NO_TRACEFS),
    ScriptCase::new("6.1", "env-two-instances", TWO_INSTANCES),
    ScriptCase::new("6.1", "env-unknown-release", UNKNOWN_RELEASE),
    ScriptCase::new("6.1", "signals", SIGNALS),
    ScriptCase::new("6.1", "ci-options", CI_OPTIONS),
    ScriptCase::new("6.1", "hostile-names", HOSTILE_NAMES),
    ScriptCase::new("7.3", "soak-1min", SOAK),
];

/// Runs one script case in a VM with `timeout`: the guest's stdout, or the reasons it failed.
pub fn run_script(
    case: &ScriptCase,
    script: &str,
    timeout: std::time::Duration,
    kernel: &Kernel,
    assets: &Assets,
) -> Result<String, Vec<String>> {
    let job = GuestJob {
        argv: vec!["sh".into(), "-c".into(), script.to_owned()],
        timeout: Some(timeout),
        ..GuestJob::default()
    };
    let result = boot(&case.id(), kernel, assets, &job)?;
    let stdout = String::from_utf8_lossy(&result.stdout);
    if result.exit_code == 0 {
        return Ok(stdout.into_owned());
    }
    let mut reasons: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .map(str::to_owned)
        .collect();
    reasons.push(format!(
        "exit status {} (stderr: {}; out: {}; console: {})",
        result.exit_code,
        last_lines(&String::from_utf8_lossy(&result.stderr), 5),
        result.out_dir.display(),
        result.console_log.display()
    ));
    Err(reasons)
}

impl VmCase for ScriptCase {
    fn id(&self) -> String {
        format!("{}/{}", self.kernel, self.name)
    }
    fn kernel(&self) -> &'static str {
        self.kernel
    }
    fn run(&self, kernel: &Kernel, assets: &Assets) -> Result<(), Vec<String>> {
        // Each script is well under a minute of guest time (the soak: 60 s) plus the boot.
        run_script(
            self,
            &self.script(),
            std::time::Duration::from_secs(240),
            kernel,
            assets,
        )
        .map(drop)
    }
}
