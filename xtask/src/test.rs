//! `cargo xtask test` (what CI runs): setup, the workspace's unit tests, host checks of the
//! release binary, then the VM matrix. Everything runs even after a failure so one CI run
//! shows all of it; the closing line counts host checks and VM cases.

use std::process::{Command, ExitCode};

use anyhow::Result;

use crate::cmd::{self, note};
use crate::lab::{Apt, Assets, matrix, runner};
use crate::paths;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Only run matrix cases whose id (kernel/scenario/attach) contains this.
    #[arg(long)]
    filter: Option<String>,
}

pub fn main(args: TestArgs) -> ExitCode {
    match test(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask test: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(args: TestArgs) -> Result<bool> {
    crate::setup::run()?;
    let root = paths::workspace_root();
    // refwatch-ebpf is a bpfel-unknown-none program (built by refwatch's build script): it
    // cannot link as a host test binary, and it has no host tests.
    note("unit tests: cargo test --workspace --exclude refwatch-ebpf");
    let unit_ok = cmd::run(
        Command::new("cargo")
            .args(["test", "--workspace", "--exclude", "refwatch-ebpf"])
            .current_dir(&root),
    )
    .inspect_err(|e| println!("FAIL unit tests: {e:#}"))
    .is_ok();

    let lint_ok = lint(&root);

    let assets = Assets::build()?;
    let (mut passed, mut failed) = (0, 0);
    // --verify loads every kprobe program into the host kernel's verifier without attaching.
    for check in [
        &["probes"][..],
        &["probes", "--json"][..],
        &["probes", "--verify"][..],
    ] {
        match host_check(&assets, check) {
            Ok(()) => {
                passed += 1;
                println!("PASS host: refwatch {}", check.join(" "));
            }
            Err(e) => {
                failed += 1;
                println!("FAIL host: refwatch {}: {e:#}", check.join(" "));
            }
        }
    }

    match perfetto_check(&assets) {
        Ok(said) => {
            passed += 1;
            println!("PASS host: report --perfetto read back with Perfetto's schema ({said})");
        }
        Err(e) => {
            failed += 1;
            println!("FAIL host: report --perfetto: {e:#}");
        }
    }

    let cases: Vec<&dyn runner::VmCase> = matrix::all_cases()
        .into_iter()
        .filter(|c| args.filter.as_deref().is_none_or(|f| c.id().contains(f)))
        .collect();
    note(format_args!(
        "VM matrix: {} cases, two VMs at a time",
        cases.len()
    ));
    let (vm_passed, vm_failed) = runner::run_all(&cases, &assets, &Apt::new()?);
    passed += vm_passed;
    failed += vm_failed;
    println!("{passed} passed, {failed} failed");
    Ok(unit_ok && lint_ok && failed == 0)
}

/// rustfmt and clippy (warnings denied) on every crate: the eBPF crate on its own target with
/// the nightly that builds it, where its `no_std` binary links.
fn lint(root: &std::path::Path) -> bool {
    let steps = [
        ("rustfmt", "fmt --all --check"),
        (
            "clippy",
            "clippy --release --workspace --exclude refwatch-ebpf --all-targets -- -D warnings",
        ),
        (
            "clippy (eBPF)",
            "+nightly clippy --release -p refwatch-ebpf --target bpfel-unknown-none \
             -Z build-std=core -- -D warnings",
        ),
    ];
    steps.into_iter().fold(true, |ok, (name, args)| {
        note(format_args!("lint: cargo {args}"));
        let mut command = Command::new("cargo");
        command.args(args.split_whitespace()).current_dir(root);
        let passed = cmd::run(&mut command)
            .inspect_err(|e| println!("FAIL {name}: {e:#}"))
            .is_ok();
        ok && passed
    })
}

/// `report --perfetto` on a recorded trace, read back by Perfetto's own schema
/// (xtask/checks/perfetto_check.py): every counter value is what the trace's events read.
fn perfetto_check(assets: &Assets) -> Result<String> {
    let root = paths::workspace_root();
    let trace = root.join("refwatch/tests/traces/7.2-fsdax-pmd.rwt");
    let pfns = ["0x4a000", "0x4a200"];
    // Per run: two test runs at once must not read each other's files.
    let dir = std::env::temp_dir().join(format!("refwatch-perfetto-check-{}", std::process::id()));
    paths::create_dir(&dir)?;
    let (pftrace, events) = (dir.join("trace.pftrace"), dir.join("events.jsonl"));
    let mut report = Command::new(&assets.refwatch);
    report
        .arg("report")
        .arg(&trace)
        .args(pfns.iter().flat_map(|pfn| ["--page", pfn]))
        .arg("--perfetto")
        .arg(&pftrace)
        .arg("--force");
    cmd::output(&mut report)?;
    let jsonl = cmd::output(
        Command::new(&assets.refwatch)
            .args(["stream", "--json", "--trace"])
            .arg(&trace),
    )?;
    std::fs::write(&events, jsonl)?;
    let said = cmd::output(
        Command::new(crate::setup::perfetto_python()?)
            .arg(root.join("xtask/checks/perfetto_check.py"))
            .arg(&pftrace)
            .arg(&events)
            .args(pfns),
    )?;
    std::fs::remove_dir_all(&dir)?;
    Ok(said.trim().to_owned())
}

/// The release binary on the host kernel (no kprobes there): it must still list its probes.
fn host_check(assets: &Assets, args: &[&str]) -> Result<()> {
    let stdout = cmd::output(Command::new(&assets.refwatch).args(args))?;
    if args.contains(&"--json") {
        let whole: Result<serde_json::Value, _> = serde_json::from_str(&stdout);
        if whole.is_err() {
            for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
                serde_json::from_str::<serde_json::Value>(line)
                    .map_err(|e| anyhow::anyhow!("output is not JSON ({e}): {line}"))?;
            }
        }
    }
    Ok(())
}
