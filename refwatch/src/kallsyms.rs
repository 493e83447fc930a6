//! /proc/kallsyms: which functions exist, where they are, and address → `func+0x1f/0x40`.

use std::sync::Arc;

/// What a name lookup gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub addr: u64,
    /// kallsyms type letter: `T`/`t` text, `D`/`d` data, ….
    pub ty: char,
}

/// A symbol of the table: its name is a slice of the table's one name buffer (a few hundred
/// thousand small allocations were a third of the parse).
#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: u64,
    name: u32,
    len: u16,
    /// Index into `modules`, or [`NO_MODULE`] for vmlinux.
    module: u16,
    ty: u8,
}

const NO_MODULE: u16 = u16::MAX;
/// The module name the kernel gives BPF programs and trampolines.
const BPF: &str = "bpf";

/// Symbols sorted by address, with a name index. Kept compact: a session holds the whole table
/// (a few hundred thousand symbols) for as long as it symbolizes stacks.
pub struct Kallsyms {
    names: String,
    modules: Vec<Arc<str>>,
    /// vmlinux and modules, by address.
    sorted: Vec<Entry>,
    /// BPF programs and trampolines, by address: apart, so that [`Kallsyms::load_bpf`]
    /// replaces them alone.
    bpf: Vec<Entry>,
    /// (hash of the name, index into `sorted`), ordered: sorting hashes is several times
    /// cheaper than sorting names, and a lookup compares the few names of one hash.
    by_name: Vec<(u64, u32)>,
}

/// FNV-1a: names are short, and only equal names need equal hashes.
fn hash(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// One line: address, type letter, name, `[module]`.
fn fields(line: &str) -> Option<(u64, u8, &str, Option<&str>)> {
    let mut it = line.split_ascii_whitespace();
    let addr = u64::from_str_radix(it.next()?, 16).ok()?;
    let ty = *it.next()?.as_bytes().first()?;
    let name = it.next()?;
    let module = it.next().map(|m| m.trim_matches(['[', ']']));
    Some((addr, ty, name, module))
}

impl Kallsyms {
    pub fn read() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    pub fn parse(text: &str) -> Self {
        let mut table = Self {
            names: String::with_capacity(text.len() / 2),
            modules: Vec::new(),
            sorted: Vec::new(),
            bpf: Vec::new(),
            by_name: Vec::new(),
        };
        for (addr, ty, name, module) in text.lines().filter_map(fields) {
            let module = match module {
                None => NO_MODULE,
                // Lines of one module come together: reuse its name.
                Some(m) if table.modules.last().is_some_and(|l| &**l == m) => {
                    (table.modules.len() - 1) as u16
                }
                Some(m) => {
                    table.modules.push(m.into());
                    (table.modules.len() - 1) as u16
                }
            };
            let entry = table.entry(addr, ty, name, module);
            if table.module_name(&entry) == Some(BPF) {
                table.bpf.push(entry);
            } else {
                table.sorted.push(entry);
            }
        }
        // Stable, and nearly sorted already: vmlinux comes in address order.
        table.sorted.sort_by_key(|e| e.addr);
        table.bpf.sort_by_key(|e| e.addr);
        table.by_name = (0..table.sorted.len() as u32)
            .map(|i| (hash(table.name_of(&table.sorted[i as usize]).as_bytes()), i))
            .collect();
        // By index second: among equal names the lower address (vmlinux, before modules)
        // comes first.
        table.by_name.sort_unstable();
        table
    }

    fn entry(&mut self, addr: u64, ty: u8, name: &str, module: u16) -> Entry {
        let at = self.names.len() as u32;
        // kallsyms names are at most KSYM_NAME_LEN (512) bytes.
        let name = &name[..name.len().min(usize::from(u16::MAX))];
        self.names.push_str(name);
        Entry {
            addr,
            name: at,
            len: name.len() as u16,
            module,
            ty,
        }
    }

    /// The lines of the BPF programs and trampolines in /proc/kallsyms, read again: those
    /// attached since the first read have symbols of their own, and stacks drop them by name.
    /// For [`Kallsyms::load_bpf`]; it needs no table, so it may run on another thread.
    pub fn read_bpf() -> std::io::Result<String> {
        let text = std::fs::read_to_string("/proc/kallsyms")?;
        Ok(text
            .lines()
            .filter(|l| l.ends_with("[bpf]"))
            .flat_map(|l| [l, "\n"])
            .collect())
    }

    /// Replaces the BPF programs' and trampolines' symbols with those of `lines`
    /// ([`Kallsyms::read_bpf`]).
    pub fn load_bpf(&mut self, lines: &str) {
        let module = match self.modules.iter().position(|m| &**m == BPF) {
            Some(i) => i as u16,
            None => {
                self.modules.push(BPF.into());
                (self.modules.len() - 1) as u16
            }
        };
        // Their names are few; the old ones stay in the buffer, unused.
        self.bpf.clear();
        for line in lines.lines() {
            if let Some((addr, ty, name, _)) = fields(line) {
                let entry = self.entry(addr, ty, name, module);
                self.bpf.push(entry);
            }
        }
        self.bpf.sort_by_key(|e| e.addr);
    }

    fn name_of(&self, e: &Entry) -> &str {
        &self.names[e.name as usize..e.name as usize + usize::from(e.len)]
    }

    fn module_name(&self, e: &Entry) -> Option<&str> {
        self.modules.get(usize::from(e.module)).map(|m| &**m)
    }

    fn index(&self, name: &str) -> Option<usize> {
        let h = hash(name.as_bytes());
        let first = self.by_name.partition_point(|&(k, _)| k < h);
        self.by_name[first..]
            .iter()
            .take_while(|&&(k, _)| k == h)
            .map(|&(_, i)| i as usize)
            .find(|&i| self.name_of(&self.sorted[i]) == name)
    }

    pub fn get(&self, name: &str) -> Option<Symbol> {
        self.index(name).map(|i| {
            let e = &self.sorted[i];
            Symbol {
                addr: e.addr,
                ty: char::from(e.ty),
            }
        })
    }

    /// Addresses are all zero when kptr_restrict hides them (not root).
    pub fn addresses_visible(&self) -> bool {
        self.sorted.iter().chain(&self.bpf).any(|s| s.addr != 0)
    }

    /// `[start, end)` of a function: up to the next symbol at a higher address.
    pub fn range(&self, name: &str) -> Option<(u64, u64)> {
        let i = self.index(name)?;
        let start = self.sorted[i].addr;
        Some((start, self.next_above(start)?))
    }

    /// The lowest symbol address above `addr`, in either table.
    fn next_above(&self, addr: u64) -> Option<u64> {
        let next = |table: &[Entry]| {
            let i = table.partition_point(|s| s.addr <= addr);
            table.get(i).map(|s| s.addr)
        };
        match (next(&self.sorted), next(&self.bpf)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The symbol an address falls in: the highest at or below it, in either table.
    fn containing(&self, addr: u64) -> Option<&Entry> {
        let last = |table: &'_ [Entry]| -> Option<usize> {
            table.partition_point(|s| s.addr <= addr).checked_sub(1)
        };
        let a = last(&self.sorted).map(|i| &self.sorted[i]);
        let b = last(&self.bpf).map(|i| &self.bpf[i]);
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.addr >= a.addr { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Whether the address is in a BPF program or trampoline (refwatch's own frames, for fentry).
    pub fn is_bpf(&self, addr: u64) -> bool {
        self.containing(addr)
            .is_some_and(|s| self.module_name(s) == Some(BPF))
    }

    /// The kernel's own `%pS` form: `func+0x1f/0x40 [module]`.
    pub fn symbolize(&self, addr: u64) -> String {
        let Some(s) = self.containing(addr) else {
            return format!("{addr:#x}");
        };
        let size = self.next_above(s.addr).map_or(0, |n| n - s.addr);
        let module = self
            .module_name(s)
            .map(|m| format!(" [{m}]"))
            .unwrap_or_default();
        format!(
            "{}+{:#x}/{:#x}{}",
            self.name_of(s),
            addr - s.addr,
            size,
            module
        )
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
ffffffffc0001200 t insert_pfn\t[refwatch_inject]
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

    /// Programs loaded after the first read replace the BPF symbols of that read.
    #[test]
    fn bpf_symbols_are_replaced_by_a_later_read() {
        let mut k = Kallsyms::parse(SAMPLE);
        assert!(k.is_bpf(0xffffffffc0002010));
        k.load_bpf("ffffffffc0009000 t bpf_prog_0123456789abcdef_f_7\t[bpf]\n");
        assert!(k.is_bpf(0xffffffffc0009010));
        assert!(!k.is_bpf(0xffffffffc0002010));
        assert!(
            k.symbolize(0xffffffffc0009010)
                .starts_with("bpf_prog_0123456789abcdef_f_7+0x10")
        );
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
        // vmlinux's before a module's of the same name.
        assert_eq!(k.get("insert_pfn").unwrap().addr, 0xffffffff81234000);
        assert!(k.addresses_visible());
        assert!(k.is_bpf(0xffffffffc0002010));
        assert!(k.is_bpf(0xffffffffc0003010));
        assert!(!k.is_bpf(0xffffffffc0001010));
        assert!(!Kallsyms::parse("0000000000000000 T foo\n").addresses_visible());
    }
}
