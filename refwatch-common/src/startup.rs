//! Where refwatch's start-up time goes: the phases it times when `REFWATCH_PHASES` names a file.

/// The variable naming the file refwatch writes its [`Phases`] to (as JSON) once attached.
pub const PHASES_ENV: &str = "REFWATCH_PHASES";

/// Wall time of each start-up phase, in milliseconds, summed over its occurrences.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Phases {
    /// Reading /proc/kallsyms: before the plan, and again for the BPF symbols alone once fentry
    /// programs are attached.
    pub kallsyms_ms: f64,
    /// refwatch's own parse of /sys/kernel/btf/vmlinux.
    pub btf_ms: f64,
    /// aya's loader: its own parse of the kernel's BTF, relocations, the maps created.
    pub aya_load_ms: f64,
    /// How many times the object was loaded (each parses the kernel's BTF again).
    pub aya_loads: u32,
    /// aya's parse of the kernel's BTF for fentry programs.
    pub aya_btf_ms: f64,
    /// Program loads: the kernel's verifier.
    pub verify_ms: f64,
    /// The catalog id of the probe whose program took the verifier longest, and how long.
    pub slowest_verify: Option<(u8, f64)>,
    /// Attaching the loaded programs (kprobe creation, fentry trampolines).
    pub attach_ms: f64,
    /// From the first phase's start until the probes are attached.
    pub open_ms: f64,
}
