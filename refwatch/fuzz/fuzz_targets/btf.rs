//! Any bytes given to the BTF reader, and every query refwatch makes of it, must end in an
//! answer or an error: never a panic, an overflow, an endless loop or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refwatch::{btf::Btf, facts::KernelFacts, kallsyms::Kallsyms};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else { return };
    // What KernelFacts::gather asks: the layout, the catalog's prototypes, the pgmap types.
    let _ = KernelFacts::from_parts(
        String::new(),
        &Kallsyms::parse(""),
        Some(&btf),
        None,
        true,
        None,
    );
    // The synthetic seeds' function.
    let _ = btf.function_params("f");
});
