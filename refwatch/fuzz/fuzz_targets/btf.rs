//! Any bytes given to the BTF reader, and every query refwatch makes of it, must end in an
//! answer or an error: never a panic, an overflow, an endless loop or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refwatch::{btf::Btf, facts::layout_from_btf};

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else { return };
    // What KernelFacts::gather asks: the layout, the catalog's prototypes, the pgmap types.
    let _ = layout_from_btf(&btf, None);
    for function in ["memunmap_pages", "try_grab_folio", "dax_disassociate_entry", "f"] {
        let _ = btf.function_params(function);
    }
    let _ = btf.enum_values("memory_type");
    let _ = btf.member_offset("page", "_refcount");
    let _ = btf.member_array_len("zonelist", "_zonerefs");
});
