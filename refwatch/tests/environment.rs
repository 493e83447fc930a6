//! What refwatch says where it cannot run, tested for real on the machine running the tests.
//!
//! The non-root cases drop to uid/gid 65534 with no capabilities (`setpriv`). The no-kprobes
//! cases need a kernel without the kprobe PMU (the development host); elsewhere they are
//! skipped with a note. What needs another kernel (no BTF, no tracefs, two instances, unknown
//! releases) is covered by the VM matrix's env cases (xtask/src/lab/matrix.rs).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn outcome(cmd: &mut Command) -> Outcome {
    let out = cmd.output().expect("run refwatch");
    let o = Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    o
}

fn refwatch(args: &[&str]) -> Outcome {
    outcome(Command::new(env!("CARGO_BIN_EXE_refwatch")).args(args))
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A copy of the binary that uid 65534 can run (the target directory may not be readable).
/// Made once per test process: tests run in parallel, and copying over a binary another test
/// is executing fails with ETXTBSY.
fn world_runnable_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(copy_world_runnable).clone()
}

fn copy_world_runnable() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("environment");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join(format!("refwatch-{}", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_refwatch"), &bin).unwrap();
    for p in [&bin, &dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut up = dir.parent();
    while let Some(p) = up {
        // Parents must be searchable; leave the mode alone where they already are.
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            eprintln!(
                "note: {} is not searchable by others; non-root tests may fail",
                p.display()
            );
        }
        up = p.parent();
    }
    bin
}

/// Runs refwatch as nobody with every capability dropped; None where that is impossible.
fn as_nobody(args: &[&str]) -> Option<Outcome> {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("note: skipped (needs root and setpriv to drop to nobody)");
        return None;
    }
    let bin = world_runnable_binary();
    let o = outcome(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
            ])
            .arg(&bin)
            .args(args),
    );
    // The copy stays for the other tests of this process (target/tmp is cargo's scratch space).
    Some(o)
}

fn kprobes_available() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

#[test]
fn non_root_attaching_commands_name_the_missing_capabilities() {
    let out = std::env::temp_dir().join(format!("refwatch-nobody-{}.rwt", std::process::id()));
    let out = out.to_str().unwrap();
    for args in [
        &["stream", "-d", "1"][..],
        &["record", "-o", out, "-d", "1"],
        &["check", "-d", "1"],
        &["live", "-d", "1"],
    ] {
        let Some(o) = as_nobody(args) else { return };
        assert_eq!(o.code, 2, "refwatch {args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains(
                "needs root or CAP_BPF+CAP_PERFMON+CAP_SYSLOG: \
                 missing CAP_BPF, CAP_PERFMON, CAP_SYSLOG"
            ),
            "refwatch {args:?}: {}",
            o.stderr
        );
        assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
    }
    assert!(
        !Path::new(out).exists(),
        "no trace file is left behind when recording cannot start"
    );
}

#[test]
fn non_root_probes_works_and_says_what_it_cannot_know() {
    let Some(o) = as_nobody(&["probes"]) else {
        return;
    };
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("kernel:") && o.stdout.contains("BTF:"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("fentry:   not usable: unknown: needs root to try"),
        "{}",
        o.stdout
    );
    let Some(o) = as_nobody(&["probes", "--json"]) else {
        return;
    };
    assert_eq!(o.code, 0, "{}", o.stderr);
    serde_json::from_str::<serde_json::Value>(&o.stdout).expect("probes --json is JSON");
}

#[test]
fn no_kprobes_is_a_clear_environment_error() {
    if kprobes_available() || !is_root() {
        eprintln!("note: skipped (needs root on a kernel without the kprobe PMU)");
        return;
    }
    let trace = std::env::temp_dir().join(format!("refwatch-nokprobes-{}.rwt", std::process::id()));
    let trace = trace.to_str().unwrap();
    let no_kprobes = "kprobes are not available (/sys/bus/event_source/devices/kprobe is absent";
    for args in [
        &["stream", "-d", "1"][..],
        &["record", "-o", trace, "-d", "1"],
        &["check", "-d", "1"],
        &["check"],
    ] {
        let kprobe = [args, &["--attach", "kprobe"]].concat();
        let o = refwatch(&kprobe);
        assert_eq!(o.code, 2, "refwatch {kprobe:?}: {}", o.stderr);
        assert!(
            o.stderr.starts_with("refwatch: refwatch cannot run on ")
                && o.stderr.contains(no_kprobes),
            "refwatch {kprobe:?}: {}",
            o.stderr
        );
        // The default (auto) tries fentry, and says why that failed too when it does.
        let o = refwatch(args);
        if o.code != 2 {
            eprintln!("note: fentry attached here; the auto half of this test does not apply");
            continue;
        }
        assert!(
            o.stderr
                .starts_with("refwatch: no probe could be attached on ")
                && o.stderr.contains("fentry: ")
                && o.stderr
                    .contains(&format!("{no_kprobes}: CONFIG_KPROBES off?): fentry only")),
            "refwatch {args:?}: {}",
            o.stderr
        );
    }
    assert!(
        !Path::new(trace).exists(),
        "no trace file is left behind when recording cannot start"
    );
    // `probes` still explains the plan, and says why it cannot run.
    let o = refwatch(&["probes", "--attach", "kprobe"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout
            .contains("refwatch cannot run here: kprobes are not available"),
        "{}",
        o.stdout
    );
}

/// refwatch writes its trace as root: never through a symbolic link another user planted in a
/// shared directory (not even with --force), and never over an existing file unless told.
#[test]
fn record_writes_no_trace_through_a_link_or_over_a_file() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("environment-shared");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (victim, link, file) = (
        dir.join("victim"),
        dir.join("trace.rwt"),
        dir.join("kept.rwt"),
    );
    for p in [&victim, &link, &file] {
        let _ = std::fs::remove_file(p);
    }
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for force in [false, true] {
        let mut args = vec!["record", "-o", link.to_str().unwrap(), "-d", "1"];
        if force {
            args.push("--force");
        }
        let o = refwatch(&args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("is a symbolic link"), "{}", o.stderr);
        assert!(!victim.exists(), "wrote through the link");
    }
    std::fs::write(&file, "keep").unwrap();
    let o = refwatch(&["record", "-o", file.to_str().unwrap(), "-d", "1"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("exists: --force overwrites it"),
        "{}",
        o.stderr
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    let trace = dir.join("new.rwt");
    let _ = std::fs::remove_file(&trace);
    let o = refwatch(&[
        "record",
        "-o",
        trace.to_str().unwrap(),
        "--summary",
        link.to_str().unwrap(),
        "-d",
        "1",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("is a symbolic link"), "{}", o.stderr);
    assert!(
        !victim.exists() && !trace.exists(),
        "wrote through the link"
    );
}

/// `-o` and `--junit` write as `record -o` does: never through a link, never over a file
/// unless `--force`; what goes to the file is no longer on stdout.
#[test]
fn output_files_are_written_as_traces_are() {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces/6.1-fsdax-mmap.rwt");
    let trace = trace.to_str().unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("environment-output");
    std::fs::create_dir_all(&dir).unwrap();
    let (victim, link, file) = (dir.join("victim"), dir.join("link"), dir.join("out"));
    for p in [&victim, &link, &file] {
        let _ = std::fs::remove_file(p);
    }
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let link = link.to_str().unwrap();
    for args in [
        &["report", trace, "-o", link][..],
        &["report", trace, "-o", link, "--force"],
        &["stream", "--trace", trace, "-o", link],
        &["check", "--trace", trace, "-o", link],
        &["check", "--trace", trace, "--junit", link, "--force"],
    ] {
        let o = refwatch(args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("is a symbolic link"), "{}", o.stderr);
        assert!(!victim.exists(), "{args:?} wrote through the link");
    }
    let out = file.to_str().unwrap();
    let o = refwatch(&["check", "--trace", trace, "--json", "-o", out]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, "", "the verdict went to the file");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(json["verdict"]["verdict"], "pass");
    assert_eq!(json["command"]["status"], 0);
    let o = refwatch(&["report", trace, "-o", out]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("exists: --force overwrites it"),
        "{}",
        o.stderr
    );
    let o = refwatch(&["report", trace, "-o", out, "--force"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(std::fs::read_to_string(&file).unwrap().contains("fsdax"));
}
