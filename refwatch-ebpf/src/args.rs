//! Argument access that works the same for kprobe (pt_regs) and fentry (BTF ctx) programs.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel,
    programs::{FEntryContext, ProbeContext},
};

pub trait Args: EbpfContext {
    fn arg_u64(&self, n: u8) -> u64;
    /// An integer or struct-by-value argument (pte_t, pfn_t): never a pointer.
    fn arg_scalar(&self, n: u8) -> u64 {
        self.arg_u64(n)
    }
    /// Return address of the probed call; `nr_args` is the probed function's argument count.
    fn return_address(&self, nr_args: u8) -> Option<u64>;
}

impl Args for ProbeContext {
    fn arg_u64(&self, n: u8) -> u64 {
        self.arg::<u64>(n as usize).unwrap_or(0)
    }

    fn return_address(&self, _nr_args: u8) -> Option<u64> {
        // At function entry the return address is the word at the stack pointer.
        let sp = unsafe { (*self.regs).rsp };
        unsafe { bpf_probe_read_kernel(sp as *const u64) }.ok()
    }
}

impl Args for FEntryContext {
    fn arg_u64(&self, n: u8) -> u64 {
        // Read the slot through a helper: loaded directly, a pointer argument is BTF-typed and
        // the verifier then refuses the arithmetic refwatch does on it (page -> pfn).
        let slot = unsafe { self.as_ptr().cast::<u64>().add(n as usize) };
        unsafe { bpf_probe_read_kernel(slot) }.unwrap_or(0)
    }

    fn arg_scalar(&self, n: u8) -> u64 {
        // Loaded directly: the verifier types these as scalars, and the helper call of
        // arg_u64 was a good part of what vm_normal_page's every entry cost (docs/performance.md).
        unsafe { *self.as_ptr().cast::<u64>().add(n as usize) }
    }

    fn return_address(&self, nr_args: u8) -> Option<u64> {
        // The x86-64 trampoline of fentry programs (none of them fexit) saves the arguments
        // just below its frame pointer, ctx pointing at the first, then pushes nothing else
        // above: past the last argument come the saved rbp, the return address into the
        // traced function, and the traced function's own return address into its caller.
        // (With an fexit on the same function a return-value slot shifts this by one: the
        // word read is then inside the traced function, and the hit is dropped, not misread.)
        Some(self.arg_u64(nr_args + 2)).filter(|ret| *ret != 0)
    }
}
