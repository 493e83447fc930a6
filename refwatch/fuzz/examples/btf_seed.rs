//! Cuts a kernel's BTF (several MiB) down to a fuzz seed of a few KiB: the types refwatch
//! queries and what they are made of, with every struct reached only through a pointer left as
//! a forward declaration. The seed must give refwatch the same kernel facts as the whole BTF
//! (checked before writing), so that mutations of it reach every query.
//!
//!     cargo +nightly run --release --example btf_seed -- VMLINUX_BTF SEED

use std::collections::{BTreeMap, BTreeSet, HashMap};

use refwatch::{btf::Btf, facts::KernelFacts, kallsyms::Kallsyms};
use refwatch_common::CATALOG;

/// Whole definitions kept: the structs `facts::layout_from_btf` looks into (a new one there
/// makes the check below fail until it is added here).
const STRUCTS: &[&str] = &[
    "page",
    "folio",
    "dev_pagemap",
    "zonelist",
    "vm_area_struct",
    "vm_fault",
    "migrate_vma",
];
/// Enums kept, by name or by one of their enumerators.
const ENUMS: &[&str] = &["memory_type"];
const ENUMERATORS: &[&str] = &["ZONE_DEVICE", "__MAX_NR_ZONES", "PG_head"];
/// The seed must fit the fuzz run's -max_len.
const MAX_SEED: usize = 64 << 10;

const HDR_LEN: usize = 24;
const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const FWD: u32 = 7;
const TYPEDEF: u32 = 8;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;
const FLOAT: u32 = 16;
const ENUM64: u32 = 19;
/// volatile, const, restrict, type_tag: one referenced type, like a typedef.
const MODIFIERS: [u32; 4] = [9, 10, 11, 18];

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// One type record, as its bytes in the type section.
struct Record<'a>(&'a [u8]);

impl Record<'_> {
    fn name(&self) -> u32 {
        u32_at(self.0, 0)
    }
    fn kind(&self) -> u32 {
        (u32_at(self.0, 4) >> 24) & 0x1f
    }
    fn vlen(&self) -> usize {
        (u32_at(self.0, 4) & 0xffff) as usize
    }

    /// Byte offsets in the record of the type ids it refers to.
    fn type_refs(&self) -> Vec<usize> {
        let vlen = self.vlen();
        match self.kind() {
            PTR | TYPEDEF | FUNC => vec![8],
            k if MODIFIERS.contains(&k) => vec![8],
            ARRAY => vec![12, 16],
            STRUCT | UNION => (0..vlen).map(|i| 12 + 12 * i + 4).collect(),
            FUNC_PROTO => [8]
                .into_iter()
                .chain((0..vlen).map(|i| 12 + 8 * i + 4))
                .collect(),
            _ => vec![],
        }
    }

    /// Byte offsets in the record of the names it holds.
    fn name_refs(&self) -> Vec<usize> {
        let (stride, vlen) = match self.kind() {
            STRUCT | UNION | ENUM64 => (12, self.vlen()),
            ENUM | FUNC_PROTO => (8, self.vlen()),
            _ => (0, 0),
        };
        [0].into_iter()
            .chain((0..vlen).map(|i| 12 + stride * i))
            .collect()
    }
}

/// Record length by kind; the kinds a seed may hold.
fn record_len(kind: u32, vlen: usize) -> usize {
    12 + match kind {
        INT => 4,
        ARRAY => 12,
        STRUCT | UNION | ENUM64 => 12 * vlen,
        ENUM | FUNC_PROTO => 8 * vlen,
        _ => 0,
    }
}

struct Source<'a> {
    strings: &'a [u8],
    /// Index 0 is `void`.
    records: Vec<Record<'a>>,
}

impl<'a> Source<'a> {
    fn parse(data: &'a [u8]) -> Self {
        assert_eq!(u16::from_le_bytes([data[0], data[1]]), 0xeb9f, "not BTF");
        let hdr_len = u32_at(data, 4) as usize;
        let types = hdr_len + u32_at(data, 8) as usize;
        let types = &data[types..types + u32_at(data, 12) as usize];
        let strings = hdr_len + u32_at(data, 16) as usize;
        let strings = &data[strings..strings + u32_at(data, 20) as usize];
        let mut records = vec![Record(&[])];
        let mut off = 0;
        while off < types.len() {
            let info = u32_at(types, off + 4);
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            // DATASEC, VAR and DECL_TAG are never reached from the types kept, only skipped.
            let len = match kind {
                14 | 17 => 16,
                15 => 12 + 12 * vlen,
                _ => record_len(kind, vlen),
            };
            records.push(Record(&types[off..off + len]));
            off += len;
        }
        Self { strings, records }
    }

    fn str_at(&self, off: u32) -> &'a [u8] {
        let rest = &self.strings[off as usize..];
        &rest[..rest.iter().position(|&b| b == 0).unwrap()]
    }

    fn named(&self, kinds: &[u32], name: &str) -> Vec<u32> {
        (1..self.records.len() as u32)
            .filter(|&id| {
                let r = &self.records[id as usize];
                kinds.contains(&r.kind()) && self.str_at(r.name()) == name.as_bytes()
            })
            .collect()
    }

    fn has_enumerator(&self, id: u32, wanted: &str) -> bool {
        let r = &self.records[id as usize];
        matches!(r.kind(), ENUM | ENUM64)
            && r.name_refs()[1..]
                .iter()
                .any(|&at| self.str_at(u32_at(r.0, at)) == wanted.as_bytes())
    }

    /// What refwatch queries: every definition under the names it looks up.
    fn roots(&self) -> BTreeSet<u32> {
        let mut roots = BTreeSet::new();
        for name in STRUCTS {
            roots.extend(self.named(&[STRUCT, UNION], name));
        }
        for name in ENUMS {
            roots.extend(self.named(&[ENUM, ENUM64], name));
        }
        for p in &CATALOG {
            roots.extend(self.named(&[FUNC], p.function));
        }
        roots.extend(
            (1..self.records.len() as u32)
                .filter(|&id| ENUMERATORS.iter().any(|e| self.has_enumerator(id, e))),
        );
        roots
    }

    /// The types kept whole, and the structs that pointers alone reach (kept as forward
    /// declarations unless also kept whole).
    fn closure(&self, roots: &BTreeSet<u32>) -> (BTreeSet<u32>, BTreeSet<u32>) {
        let (mut whole, mut fwd) = (BTreeSet::new(), BTreeSet::new());
        let mut seen = BTreeSet::new();
        let mut todo: Vec<(u32, bool)> = roots.iter().map(|&id| (id, false)).collect();
        while let Some((id, behind_ptr)) = todo.pop() {
            if id == 0 || !seen.insert((id, behind_ptr)) {
                continue;
            }
            let r = &self.records[id as usize];
            let kind = r.kind();
            if behind_ptr && matches!(kind, STRUCT | UNION) && r.name() != 0 && !roots.contains(&id)
            {
                fwd.insert(id);
                continue;
            }
            whole.insert(id);
            let ptr_context =
                kind == PTR || (behind_ptr && (kind == TYPEDEF || MODIFIERS.contains(&kind)));
            todo.extend(
                r.type_refs()
                    .into_iter()
                    .map(|at| (u32_at(r.0, at), ptr_context)),
            );
        }
        fwd.retain(|id| !whole.contains(id));
        (whole, fwd)
    }
}

/// The string section being built, each name once.
#[derive(Default)]
struct Strings {
    bytes: Vec<u8>,
    at: HashMap<Vec<u8>, u32>,
}

impl Strings {
    fn add(&mut self, s: &[u8]) -> u32 {
        if self.bytes.is_empty() {
            self.bytes.push(0);
            self.at.insert(Vec::new(), 0);
        }
        *self.at.entry(s.to_vec()).or_insert_with(|| {
            let off = self.bytes.len() as u32;
            self.bytes.extend_from_slice(s);
            self.bytes.push(0);
            off
        })
    }
}

fn seed(data: &[u8]) -> Vec<u8> {
    let src = Source::parse(data);
    let roots = src.roots();
    let (whole, fwd) = src.closure(&roots);
    // New ids: the whole types in their old order, then the forward declarations.
    let ids: BTreeMap<u32, u32> = whole
        .iter()
        .chain(&fwd)
        .zip(1..)
        .map(|(&o, n)| (o, n))
        .collect();
    let remap = |old: u32| if old == 0 { 0 } else { ids[&old] };
    let mut strings = Strings::default();
    let mut types = Vec::new();
    for &id in &whole {
        let r = &src.records[id as usize];
        assert!(
            record_len(r.kind(), r.vlen()) == r.0.len() && r.kind() != FLOAT,
            "type {id}: kind {} unexpected in a seed",
            r.kind()
        );
        let mut rec = r.0.to_vec();
        for at in r.type_refs() {
            put_u32(&mut rec, at, remap(u32_at(r.0, at)));
        }
        for at in r.name_refs() {
            put_u32(&mut rec, at, strings.add(src.str_at(u32_at(r.0, at))));
        }
        types.extend(rec);
    }
    for &id in &fwd {
        let r = &src.records[id as usize];
        let union_flag = u32::from(r.kind() == UNION) << 31;
        for v in [strings.add(src.str_at(r.name())), FWD << 24 | union_flag, 0] {
            types.extend(v.to_le_bytes());
        }
    }
    let mut out = data[..4].to_vec();
    for v in [HDR_LEN, 0, types.len(), types.len(), strings.bytes.len()] {
        out.extend((v as u32).to_le_bytes());
    }
    out.extend(types);
    out.extend(strings.bytes);
    eprintln!(
        "{} types ({} roots, {} forward declarations), {} bytes",
        ids.len(),
        roots.len(),
        fwd.len(),
        out.len()
    );
    out
}

/// What refwatch learns from a BTF (`KernelFacts::gather`'s BTF part).
fn facts(data: &[u8]) -> KernelFacts {
    let btf = Btf::parse(data).expect("BTF parses");
    KernelFacts::from_parts(
        String::new(),
        &Kallsyms::parse(""),
        Some(&btf),
        None,
        true,
        None,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: btf_seed VMLINUX_BTF SEED");
        std::process::exit(2);
    };
    let data = std::fs::read(input).expect("reading the BTF");
    let small = seed(&data);
    assert_eq!(
        facts(&small),
        facts(&data),
        "the seed must answer as the whole BTF"
    );
    assert!(small.len() <= MAX_SEED, "seed over {MAX_SEED} bytes");
    std::fs::write(output, small).expect("writing the seed");
}
