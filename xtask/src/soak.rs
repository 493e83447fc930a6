//! `cargo xtask soak [--minutes N] [--kernel K]`: mixed DAX workloads under `refwatch record` in
//! one VM for N minutes (default 30), sampling refwatch's RSS from the guest's /proc every 5 s.
//! Passes with zero dropped events, a trace that reads clean and flat RSS. The matrix runs the
//! same script for one minute (the `soak-1min` case in lab/matrix.rs).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::lab::{Apt, Assets, Kernel, kernel_spec, scripts};

#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long to record, in minutes.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Kernel short name (see `cargo xtask lab --help`).
    #[arg(long, default_value = "7.3")]
    kernel: String,
}

pub fn main(args: SoakArgs) -> ExitCode {
    match soak(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask soak: {err:#}");
            ExitCode::from(crate::lab::INFRA_FAILURE)
        }
    }
}

fn soak(args: &SoakArgs) -> Result<bool> {
    crate::setup::run()?;
    let kernel = Kernel::fetch(kernel_spec(&args.kernel)?, &Apt::new()?)?;
    let assets = Assets::build()?;
    let (case, script) = scripts::soak(kernel.spec.name, args.minutes * 60);
    // Boot and the final report take a few minutes under TCG.
    let timeout = Duration::from_secs(args.minutes * 60 + 300);
    match scripts::run_script(&case, &script, timeout, &kernel, &assets) {
        Ok(stdout) => {
            print!("{stdout}");
            println!("PASS soak {} min on {}", args.minutes, args.kernel);
            Ok(true)
        }
        Err(reasons) => {
            println!("FAIL soak {} min on {}", args.minutes, args.kernel);
            for r in reasons {
                println!("    {r}");
            }
            Ok(false)
        }
    }
}
