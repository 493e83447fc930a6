//! Developer tasks for refwatch: `cargo xtask setup | dist | lab | test`.

mod bench;
mod cmd;
mod dist;
mod lab;
mod paths;
mod setup;
mod soak;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "refwatch developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the build's and the lab's dependencies (idempotent).
    Setup,
    /// A static refwatch for x86-64 with its man pages and shell completions, in target/dist.
    Dist,
    /// Boot a Debian kernel in QEMU with emulated pmem and run a command there.
    Lab(lab::LabArgs),
    /// Unit tests, host checks and the VM matrix (what CI runs).
    Test(test::TestArgs),
    /// Minutes of mixed DAX workloads under `refwatch record` in a VM: flat RSS, no drops.
    Soak(soak::SoakArgs),
    /// Performance figures: hot-path overhead, device-event throughput, analysis speed, trace size.
    Bench(bench::BenchArgs),
    /// What a kernel built with DEBUG_VM, DEBUG_PAGE_REF and PAGE_OWNER says of each injected
    /// and real bug, beside refwatch on the same source without them: the README's table.
    DebugKernel(lab::debug_kernel::DebugKernelArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Task::Setup => report(setup::run()),
        Task::Dist => report(dist::run()),
        Task::Lab(args) => lab::main(args),
        Task::Test(args) => test::main(args),
        Task::Soak(args) => soak::main(args),
        Task::Bench(args) => bench::main(args),
        Task::DebugKernel(args) => lab::debug_kernel::main(args),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
