//! The VM lab: Debian kernels under QEMU with emulated pmem, running refwatch and workloads.

mod apt;
pub mod bugs;
mod build;
mod checked;
pub mod debug_kernel;
pub mod device_memory;
mod guest;
pub mod hmm;
mod initramfs;
pub mod inject;
pub mod insncount;
mod kernel;
pub mod matrix;
pub mod p2pdma;
pub mod private;
pub mod runner;
pub mod scripts;
mod vm;
pub mod watch;
mod workloads;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

pub use apt::Apt;
pub use guest::{Assets, Disk, GuestJob};
pub use kernel::{Kernel, extract_packages, spec as kernel_spec};
pub use vm::{PMEM_PFNS, VmResult, run_in_vm};

/// Exit status for "the lab itself failed" (boot, fetch, build), as git bisect run uses it.
pub const INFRA_FAILURE: u8 = 125;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Attach {
    Kprobe,
    Fentry,
    Auto,
}

impl Attach {
    pub fn as_str(self) -> &'static str {
        match self {
            Attach::Kprobe => "kprobe",
            Attach::Fentry => "fentry",
            Attach::Auto => "auto",
        }
    }
}

#[derive(clap::Args)]
pub struct LabArgs {
    /// Kernel short name: Debian's 5.10, 6.1, 6.12, 7.2, 7.3, or 6.12-src, 7.3-src built by the
    /// lab from Debian's source with device-private pages, P2PDMA and the HMM test driver
    /// (6.12-src-debug and 7.3-src-debug: the same with the kernel's refcount debugging).
    #[arg(long, default_value = "6.1")]
    kernel: String,
    /// Host file or directory to copy into the guest's /include (on PATH).
    #[arg(long = "include", value_name = "HOST_PATH")]
    includes: Vec<PathBuf>,
    /// Host directory that receives what the guest wrote under /out.
    #[arg(long, value_name = "HOST_DIR")]
    output: Option<PathBuf>,
    /// An interactive shell in the guest instead of a command.
    #[arg(long, conflicts_with = "command")]
    shell: bool,
    /// Attach mode for refwatch: exported as REFWATCH_ATTACH, and passed to the default command.
    #[arg(long, value_enum, default_value = "auto")]
    attach: Attach,
    /// Run `refwatch check --json -- inject SCENARIO` over the refwatch_inject test module
    /// (built for --kernel and loaded; SCENARIO: healthy or a rule id); exits with check's status.
    #[arg(long, value_name = "SCENARIO", conflicts_with_all = ["command", "shell", "output"],
          value_parser = clap::builder::PossibleValuesParser::new(inject::SCENARIOS))]
    inject: Option<String>,
    /// With --inject: `refwatch stream --json --watch PFN` over the scenario instead of
    /// `check` (repeatable; the module's page 0 is pfn 0x60000).
    #[arg(long, value_name = "PFN", requires = "inject")]
    watch: Vec<String>,
    /// An extra QEMU option (repeatable), e.g. `--qemu-arg=-plugin --qemu-arg=FILE.so,out=MARKS`
    /// for the bench's instruction counter.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    qemu_args: Vec<String>,
    /// Seconds one boot may take before it is killed.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Command to run in the guest (default: refwatch live over `daxload fsdax-mmap`).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn main(args: LabArgs) -> ExitCode {
    match lab(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask lab: {err:#}");
            ExitCode::from(INFRA_FAILURE)
        }
    }
}

fn lab(args: LabArgs) -> Result<ExitCode> {
    // The README's main command: on a fresh machine it installs what it needs, as `test` does.
    crate::setup::run()?;
    let spec = kernel::spec(&args.kernel)?;
    let kernel = Kernel::fetch(spec, &Apt::new()?)?;
    let assets = Assets::build()?;
    if let Some(scenario) = &args.inject {
        let built = inject::build(spec, &Apt::new()?)?;
        let command: Vec<&str> = if args.watch.is_empty() {
            vec!["check", "--json"]
        } else {
            ["stream", "--json"]
                .into_iter()
                .chain(args.watch.iter().flat_map(|pfn| ["--watch", pfn.as_str()]))
                .collect()
        };
        let job = inject::refwatch_job(
            &built,
            &command,
            scenario,
            args.attach,
            Duration::from_secs(args.timeout),
        );
        let label = format!("lab-{}-inject-{}", spec.name, std::process::id());
        let result = run_in_vm(&kernel, &assets, &job, &label)?;
        std::io::stdout().write_all(&result.stdout)?;
        std::io::stderr().write_all(&result.stderr)?;
        if let Ok(log) = std::fs::read(result.out_dir.join("inject.log")) {
            std::io::stderr().write_all(&log)?;
        }
        return Ok(ExitCode::from(
            u8::try_from(result.exit_code).unwrap_or(u8::MAX),
        ));
    }
    let argv = if args.command.is_empty() {
        [
            "refwatch",
            "live",
            "--attach",
            args.attach.as_str(),
            "--",
            "daxload",
            "fsdax-mmap",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args.command
    };
    let job = GuestJob {
        argv,
        interactive: args.shell,
        includes: args.includes,
        env: vec![("REFWATCH_ATTACH".into(), args.attach.as_str().into())],
        timeout: (!args.shell).then(|| Duration::from_secs(args.timeout)),
        qemu_args: args.qemu_args,
        ..GuestJob::default()
    };
    let label = format!("lab-{}-{}", spec.name, std::process::id());
    let result = run_in_vm(&kernel, &assets, &job, &label)?;
    std::io::stdout().write_all(&result.stdout)?;
    std::io::stderr().write_all(&result.stderr)?;
    if let Some(dir) = args.output {
        result.copy_out(&dir)?;
    }
    // Exit statuses above 255 cannot come from a shell; clamp rather than wrap.
    Ok(ExitCode::from(
        u8::try_from(result.exit_code).unwrap_or(u8::MAX),
    ))
}
