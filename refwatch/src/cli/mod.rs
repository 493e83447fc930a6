//! Subcommands. Each lives in its own module; exit codes follow `refwatch check`'s convention
//! (kselftest's): 0 ok, 1 fail, 2 usage or environment error, 4 inconclusive.

mod attach;
mod check;
mod generate;
mod live;
mod output;
mod probes;
mod record;
mod report;
mod stream;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use refwatch::{capture::StopWhen, plan::AttachMode};
use refwatch_common::globals::DEFAULT_RING_BYTES;

/// `--version`: the version, the commit built from, and the newest kernel the probe catalog
/// was checked on.
fn version() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let newest = refwatch_common::catalog::NEWEST_CHECKED;
        format!(
            "{} (commit {}; probe catalog checked on kernels up to {newest})",
            env!("CARGO_PKG_VERSION"),
            env!("REFWATCH_GIT_COMMIT"),
        )
    });
    &TEXT
}

#[derive(Parser)]
#[command(
    name = "refwatch",
    version = version(),
    about = "Watch ZONE_DEVICE page reference counts with eBPF"
)]
struct Cli {
    /// Without a subcommand: `live`.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Show the probe plan for the running kernel: what refwatch can and cannot see.
    Probes(probes::ProbesArgs),
    /// Print every ZONE_DEVICE refcount transition as it happens.
    Stream(stream::StreamArgs),
    /// Live tables per pgmap with findings, refreshed about once a second (the default).
    Live(live::LiveArgs),
    /// Record events into a trace file for `report` and `check --trace`.
    Record(record::RecordArgs),
    /// Summarize a trace: per-pgmap counts and findings with stacks (no root needed).
    Report(report::ReportArgs),
    /// Exit 0/1/4 on the findings of a capture or a trace, and on the command run after `--`
    /// (pass/fail/inconclusive).
    #[command(after_help = check::EXIT_CODES)]
    Check(check::CheckArgs),
    /// Write the man pages and shell completions into a directory (for packaging).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// Options shared by every command that attaches probes: how, and until when.
#[derive(Args, Clone)]
pub struct RunArgs {
    /// kprobe, fentry, or auto: a kprobe where the kernel allows it, else fentry (a kernel
    /// stack costs about twice as much from an fentry program; fentry costs less per hit).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,
    /// Leave out the probe on this kernel function (repeatable): less overhead where normal
    /// pages pass through it often, and the rules that need it are reported unchecked.
    #[arg(long, value_name = "FUNCTION")]
    pub skip: Vec<String>,
    /// Attach a probe that is off by default on this kernel (repeatable): one every normal
    /// page passes through, which no rule needs here (`refwatch probes` marks them "hot").
    #[arg(long, value_name = "FUNCTION")]
    pub with: Vec<String>,
    /// Ring buffer size in KiB (a power of two, at least 4).
    #[arg(long, default_value_t = DEFAULT_RING_BYTES / 1024, value_parser = ring_kib)]
    pub ring_kib: u32,
    /// Only page events in the context of this process and its threads (filtered in the
    /// kernel, by the PID of the initial PID namespace); pgmap creation and teardown, the
    /// teardown scan's held pages and the zaps of the process's own mappings always pass.
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,
    /// Put a hardware breakpoint on this page's refcount (repeatable, as many pages as the
    /// CPU has breakpoint slots free, four on x86-64): every change of it, inline or not,
    /// becomes a `watch` event with its kernel stack, until refwatch exits or the page's pgmap
    /// is torn down. A page that cannot have one is reported and left out.
    #[arg(long, value_name = "PFN", value_parser = parse_pfn)]
    pub watch: Vec<u64>,
    /// Put no breakpoint on a page of refwatch's own accord. By default the page of each
    /// finding gets one (and, with slots to spare, a GENERIC page holding references that no
    /// probe sees given back) until it is freed or its pgmap torn down.
    #[arg(long)]
    pub no_auto_watch: bool,
    /// Take no kernel stack with events. The unwind is most of what refwatch costs a
    /// workload that makes device events quickly (a GUP pin storm: about half); findings,
    /// histories and watch hits then show no stack.
    #[arg(long)]
    pub no_stacks: bool,
    /// Stop after this many seconds.
    #[arg(short, long)]
    pub duration: Option<f64>,
    /// Command to run once the probes are attached; refwatch stops when it exits.
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl RunArgs {
    pub fn stop_when(&self) -> StopWhen {
        StopWhen {
            duration: self.duration.map(std::time::Duration::from_secs_f64),
            command: self.command.clone(),
        }
    }
}

/// A pfn, decimal or `0x` hex.
fn parse_pfn(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text:?} is not a pfn: {e}"))
}

fn ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > (1 << 20) {
        return Err("must be a power of two between 4 and 1048576".into());
    }
    Ok(kib)
}

/// The error exit code for usage and environment problems.
pub const EXIT_ERROR: u8 = 2;

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .or_else(|| Cli::parse_from(["refwatch", "live"]).command);
    let result = match command.expect("live parses") {
        Command::Probes(args) => probes::run(args),
        Command::Stream(args) => stream::run(args),
        Command::Live(args) => live::run(args),
        Command::Record(args) => record::run(args),
        Command::Report(args) => report::run(args),
        Command::Check(args) => check::run(args),
        Command::Generate(args) => generate::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("refwatch: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// 0 is the eBPF side's "no filter": it cannot be asked for.
    #[test]
    fn pid_zero_is_refused() {
        use clap::Parser;
        assert!(Cli::try_parse_from(["refwatch", "stream", "-p", "0"]).is_err());
        let cli = Cli::try_parse_from(["refwatch", "check", "--pid", "42", "--", "true"]).unwrap();
        assert!(matches!(cli.command, Some(super::Command::Check(_))));
    }

    #[test]
    fn version_names_the_commit_and_the_newest_kernel_checked() {
        let v = Cli::command().render_version();
        let newest = refwatch_common::catalog::NEWEST_CHECKED;
        assert!(
            v.starts_with(&format!("refwatch {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{v}"
        );
        assert!(v.contains(&format!("up to {newest})")), "{v}");
    }

    /// Every subcommand says what it does and every option and argument has a help line, so
    /// that `--help`, the man page and the shell completions explain all of them.
    #[test]
    fn every_option_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() {
                missing.push(format!("{path}: no about"));
            }
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "refwatch", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }
}
