//! /proc/kallsyms: which functions exist, where they are, and address → `func+0x1f/0x40`.

use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    /// kallsyms type letter: `T`/`t` text, `D`/`d` data, ….
    pub ty: char,
    pub name: Box<str>,
    /// Shared between the symbols of one module.
    pub module: Option<Arc<str>>,
}

/// Symbols sorted by address, with a name index. Kept compact: a session holds the whole table
/// (a few hundred thousand symbols) for as long as it symbolizes stacks.
pub struct Kallsyms {
    sorted: Vec<Symbol>,
    /// Indices into `sorted`, ordered by name, then by address (vmlinux before modules).
    by_name: Vec<u32>,
}

impl Kallsyms {
    pub fn read() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    pub fn parse(text: &str) -> Self {
        let mut module: Option<Arc<str>> = None;
        let mut sorted: Vec<Symbol> = text
            .lines()
            .filter_map(|line| {
                let mut it = line.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let ty = it.next()?.chars().next()?;
                let name = it.next()?.into();
                let m = it.next().map(|m| m.trim_matches(['[', ']']));
                // Lines of one module come together: reuse its name.
                if m != module.as_deref() {
                    module = m.map(Arc::from);
                }
                Some(Symbol {
                    addr,
                    ty,
                    name,
                    module: module.clone(),
                })
            })
            .collect();
        sorted.sort_by_key(|s| s.addr);
        let mut by_name: Vec<u32> = (0..sorted.len() as u32).collect();
        // Stable: among equal names the lower address (vmlinux, before modules) comes first.
        by_name.sort_by(|&a, &b| sorted[a as usize].name.cmp(&sorted[b as usize].name));
        Self { sorted, by_name }
    }

    fn index(&self, name: &str) -> Option<usize> {
        let i = self
            .by_name
            .partition_point(|&i| &*self.sorted[i as usize].name < name);
        let &i = self.by_name.get(i)?;
        (&*self.sorted[i as usize].name == name).then_some(i as usize)
    }

    pub fn get(&self, name: &str) -> Option<&Symbol> {
        self.index(name).map(|i| &self.sorted[i])
    }

    /// Addresses are all zero when kptr_restrict hides them (not root).
    pub fn addresses_visible(&self) -> bool {
        self.sorted.iter().any(|s| s.addr != 0)
    }

    /// `[start, end)` of a function: up to the next symbol at a higher address.
    pub fn range(&self, name: &str) -> Option<(u64, u64)> {
        let i = self.index(name)?;
        let start = self.sorted[i].addr;
        let end = self.sorted[i + 1..].iter().find(|s| s.addr > start)?.addr;
        Some((start, end))
    }

    /// The symbol an address falls in.
    fn containing(&self, addr: u64) -> Option<&Symbol> {
        let i = self.sorted.partition_point(|s| s.addr <= addr);
        i.checked_sub(1).map(|i| &self.sorted[i])
    }

    /// Whether the address is in a BPF program or trampoline (refwatch's own frames, for fentry).
    pub fn is_bpf(&self, addr: u64) -> bool {
        self.containing(addr)
            .is_some_and(|s| s.module.as_deref() == Some("bpf"))
    }

    /// The kernel's own `%pS` form: `func+0x1f/0x40 [module]`.
    pub fn symbolize(&self, addr: u64) -> String {
        let i = self.sorted.partition_point(|s| s.addr <= addr);
        if i == 0 {
            return format!("{addr:#x}");
        }
        let s = &self.sorted[i - 1];
        let size = self.sorted[i..]
            .iter()
            .find(|n| n.addr > s.addr)
            .map_or(0, |n| n.addr - s.addr);
        let module = s
            .module
            .as_ref()
            .map(|m| format!(" [{m}]"))
            .unwrap_or_default();
        format!("{}+{:#x}/{:#x}{}", s.name, addr - s.addr, size, module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81234000 t insert_pfn
ffffffff81234200 T vmf_insert_mixed
ffffffff81234240 T vmf_insert_mixed_mkwrite
ffffffff82600000 D vmemmap_base
ffffffffc0001000 t inject_fault\t[refwatch_inject]
ffffffffc0001100 t inject_ioctl\t[refwatch_inject]
ffffffffc0002000 t bpf_trampoline_6442\t[bpf]
ffffffffc0003000 t bpf_prog_6deef7357e7b4530_f_3\t[bpf]
";

    #[test]
    fn symbolizes_like_the_kernel() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.symbolize(0xffffffff8123401f), "insert_pfn+0x1f/0x200");
        assert_eq!(
            k.symbolize(0xffffffffc0001010),
            "inject_fault+0x10/0x100 [refwatch_inject]"
        );
        assert_eq!(k.symbolize(0x1000), "0x1000");
    }

    #[test]
    fn lookups_and_ranges() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.get("insert_pfn").unwrap().ty, 't');
        assert_eq!(k.get("vmemmap_base").unwrap().addr, 0xffffffff82600000);
        assert_eq!(
            k.range("vmf_insert_mixed"),
            Some((0xffffffff81234200, 0xffffffff81234240))
        );
        assert!(k.get("get_page").is_none());
        assert!(k.addresses_visible());
        assert!(k.is_bpf(0xffffffffc0002010));
        assert!(k.is_bpf(0xffffffffc0003010));
        assert!(!k.is_bpf(0xffffffffc0001010));
        assert!(!Kallsyms::parse("0000000000000000 T foo\n").addresses_visible());
    }
}
