//! A reader for the parts of kernel BTF refwatch needs: struct member offsets, enum values,
//! array lengths and function prototypes. Kernel BTF is small and flat, so it is parsed whole.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF (bad magic {0:#x})")]
    BadMagic(u16),
    #[error("BTF truncated at offset {0}")]
    Truncated(usize),
    #[error("unknown BTF kind {kind} for type {id}")]
    UnknownKind { kind: u32, id: u32 },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset.
    offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    Int {
        name: u32,
    },
    Ptr(u32),
    Array {
        nelems: u32,
    },
    Composite {
        name: u32,
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        name: u32,
        values: Vec<(u32, i64)>,
    },
    Fwd(u32),
    Typedef {
        name: u32,
        ty: u32,
    },
    /// const/volatile/restrict/type_tag: transparent.
    Modifier(u32),
    Func {
        name: u32,
        proto: u32,
    },
    FuncProto {
        params: Vec<u32>,
    },
    Other,
}

/// Typedef/modifier chains followed at most this far: real kernels stay within a handful, a
/// corrupt BTF may loop.
const MAX_CHAIN: usize = 64;
/// Structs and unions looked into for one member: `struct page` nests a few dozen anonymous
/// ones, a corrupt BTF may nest one in itself again and again.
const MAX_VISITS: usize = 4096;

pub struct Btf {
    strings: Vec<u8>,
    /// Index 0 is `void`.
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .ok_or(BtfError::Truncated(off))
}

impl Btf {
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .unwrap_or(0);
        if magic != 0xeb9f {
            return Err(BtfError::BadMagic(magic));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = hdr_len + u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = hdr_len + u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .ok_or(BtfError::Truncated(str_off))?
            .to_vec();
        let mut types = vec![Type::Other];
        let end = type_off + type_len;
        let mut off = type_off;
        while off < end {
            let name = u32_at(data, off)?;
            let info = u32_at(data, off + 4)?;
            let size_or_type = u32_at(data, off + 8)?;
            off += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let ty = match kind {
                KIND_INT => {
                    off += 4;
                    Type::Int { name }
                }
                KIND_PTR => Type::Ptr(size_or_type),
                KIND_ARRAY => {
                    let nelems = u32_at(data, off + 8)?;
                    off += 12;
                    Type::Array { nelems }
                }
                KIND_STRUCT | KIND_UNION => {
                    let bitfield = info >> 31 == 1;
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let raw = u32_at(data, off + 8)?;
                        members.push(Member {
                            name: u32_at(data, off)?,
                            ty: u32_at(data, off + 4)?,
                            offset: if bitfield { raw & 0xff_ffff } else { raw },
                        });
                        off += 12;
                    }
                    Type::Composite {
                        name,
                        size: size_or_type,
                        members,
                    }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        values.push((u32_at(data, off)?, u32_at(data, off + 4)? as i32 as i64));
                        off += 8;
                    }
                    Type::Enum { name, values }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let lo = u32_at(data, off + 4)? as u64;
                        let hi = u32_at(data, off + 8)? as u64;
                        values.push((u32_at(data, off)?, (hi << 32 | lo) as i64));
                        off += 12;
                    }
                    Type::Enum { name, values }
                }
                KIND_FWD => Type::Fwd(name),
                KIND_TYPEDEF => Type::Typedef {
                    name,
                    ty: size_or_type,
                },
                KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Modifier(size_or_type)
                }
                KIND_FUNC => Type::Func {
                    name,
                    proto: size_or_type,
                },
                KIND_FUNC_PROTO => {
                    let mut params = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        params.push(u32_at(data, off + 4)?);
                        off += 8;
                    }
                    Type::FuncProto { params }
                }
                KIND_VAR | KIND_DECL_TAG => {
                    off += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    off += 12 * vlen;
                    Type::Other
                }
                KIND_FLOAT => Type::Other,
                kind => {
                    return Err(BtfError::UnknownKind {
                        kind,
                        id: types.len() as u32,
                    });
                }
            };
            types.push(ty);
        }
        let mut btf = Btf {
            strings,
            types,
            by_name: HashMap::new(),
        };
        for id in 1..btf.types.len() as u32 {
            if let Some(name) = btf.name_of(id).filter(|n| !n.is_empty()) {
                btf.by_name.entry(name.to_owned()).or_default().push(id);
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn name_of(&self, id: u32) -> Option<&str> {
        match self.types.get(id as usize)? {
            Type::Int { name, .. }
            | Type::Composite { name, .. }
            | Type::Enum { name, .. }
            | Type::Fwd(name)
            | Type::Typedef { name, .. }
            | Type::Func { name, .. } => Some(self.str_at(*name)),
            _ => None,
        }
    }

    fn find(&self, name: &str, pred: impl Fn(&Type) -> bool) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&id| pred(&self.types[id as usize]))
    }

    fn composite(&self, name: &str) -> Option<u32> {
        // Prefer the definition with members over an empty forward-ish duplicate.
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .filter(|&id| matches!(self.types[id as usize], Type::Composite { .. }))
            .max_by_key(|&id| match &self.types[id as usize] {
                Type::Composite { members, .. } => members.len(),
                _ => 0,
            })
    }

    /// `sizeof(struct name)`.
    pub fn struct_size(&self, name: &str) -> Option<u64> {
        match self.types.get(self.composite(name)? as usize)? {
            Type::Composite { size, .. } => Some(*size as u64),
            _ => None,
        }
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u64> {
        let mut budget = MAX_VISITS;
        self.member(self.composite(name)?, member, &mut budget)
            .map(|(bits, _)| bits / 8)
    }

    /// Number of elements of an array member.
    pub fn member_array_len(&self, name: &str, member: &str) -> Option<u64> {
        let mut budget = MAX_VISITS;
        let (_, ty) = self.member(self.composite(name)?, member, &mut budget)?;
        match self.types.get(self.resolve(ty) as usize)? {
            Type::Array { nelems, .. } => Some(*nelems as u64),
            _ => None,
        }
    }

    /// (bit offset, type) of a member, searched depth-first through anonymous members, looking
    /// at most `budget` structs (a corrupt BTF may nest a struct in itself, several times).
    fn member(&self, id: u32, wanted: &str, budget: &mut usize) -> Option<(u64, u32)> {
        let Some(Type::Composite { members, .. }) = self.types.get(id as usize) else {
            return None;
        };
        *budget = budget.checked_sub(1)?;
        for m in members {
            let name = self.str_at(m.name);
            if name == wanted {
                return Some((m.offset as u64, m.ty));
            }
            if name.is_empty() {
                let inner = self.resolve(m.ty);
                if let Some((off, ty)) = self.member(inner, wanted, budget) {
                    return Some((m.offset as u64 + off, ty));
                }
            }
        }
        None
    }

    /// Skips typedefs and modifiers, at most [`MAX_CHAIN`] (a corrupt BTF may loop them).
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_CHAIN {
            match self.types.get(id as usize) {
                Some(Type::Typedef { ty, .. }) | Some(Type::Modifier(ty)) => id = *ty,
                _ => return id,
            }
        }
        id
    }

    /// Values of `enum name`, by enumerator name.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, i64)>> {
        let id = self.find(name, |t| matches!(t, Type::Enum { .. }))?;
        let Some(Type::Enum { values, .. }) = self.types.get(id as usize) else {
            return None;
        };
        Some(
            values
                .iter()
                .map(|(n, v)| (self.str_at(*n).to_owned(), *v))
                .collect(),
        )
    }

    /// Value of one enumerator, searched in every enum (kernel enumerators are unique).
    pub fn enumerator(&self, wanted: &str) -> Option<i64> {
        self.types.iter().find_map(|t| match t {
            Type::Enum { values, .. } => values
                .iter()
                .find(|(n, _)| self.str_at(*n) == wanted)
                .map(|(_, v)| *v),
            _ => None,
        })
    }

    /// The parameters of function `name` as patterns: `page*`, `pfn_t`, `unsigned int`, ….
    pub fn function_params(&self, name: &str) -> Option<Vec<String>> {
        let id = self.find(name, |t| matches!(t, Type::Func { .. }))?;
        let Some(Type::Func { proto, .. }) = self.types.get(id as usize) else {
            return None;
        };
        let Some(Type::FuncProto { params }) = self.types.get(*proto as usize) else {
            return None;
        };
        Some(params.iter().map(|&ty| self.pattern(ty)).collect())
    }

    /// A short spelling of a type: typedef names are kept (`pfn_t`, `pte_t`), pointers to
    /// structs become `name*`.
    fn pattern(&self, id: u32) -> String {
        let id = self.resolve_modifiers(id);
        match self.types.get(id as usize) {
            Some(Type::Ptr(to)) => {
                let to = self.resolve_modifiers(*to);
                format!("{}*", self.name_of(to).unwrap_or("void"))
            }
            Some(_) => self.name_of(id).unwrap_or("?").to_owned(),
            None => "?".to_owned(),
        }
    }

    /// Skips modifiers, at most [`MAX_CHAIN`].
    fn resolve_modifiers(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_CHAIN {
            match self.types.get(id as usize) {
                Some(Type::Modifier(ty)) => id = *ty,
                _ => return id,
            }
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: int, struct page { flags; union { pgmap; compound_head }; int
    /// _refcount; }, a pointer to it and `void f(struct page *, unsigned long)`.
    fn sample() -> Vec<u8> {
        blob(false)
    }

    /// The sample, or with `cyclic` a corrupt one: both members of the union an anonymous
    /// `struct page` (the struct nests itself twice at every level: a search of it doubles
    /// with each) and type 4 a `const` of itself.
    fn blob(cyclic: bool) -> Vec<u8> {
        let mut strings =
            b"\0int\0page\0flags\0pgmap\0compound_head\0_refcount\0f\0p\0n\0".to_vec();
        let s = |name: &str, strings: &[u8]| -> u32 {
            let pat = format!("\0{name}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::<u32>::new();
        // 1: int
        t.extend([s("int", &strings), KIND_INT << 24, 8, 64]);
        // 2: anonymous union { pgmap: int (8); compound_head: int (8) }
        t.extend([0, KIND_UNION << 24 | 2, 8]);
        let members = if cyclic {
            [0, 3, 0, 0, 3, 0]
        } else {
            [
                s("pgmap", &strings),
                1,
                0,
                s("compound_head", &strings),
                1,
                0,
            ]
        };
        t.extend(members);
        // 3: struct page { flags @0; union @64 bits; _refcount @128 bits }
        t.extend([s("page", &strings), KIND_STRUCT << 24 | 3, 24]);
        t.extend([
            s("flags", &strings),
            1,
            0,
            0,
            2,
            64,
            s("_refcount", &strings),
            1,
            128,
        ]);
        // 4: struct page *
        t.extend(if cyclic {
            [0, KIND_CONST << 24, 4]
        } else {
            [0, KIND_PTR << 24, 3]
        });
        // 5: proto (struct page *p, int n)
        t.extend([0, KIND_FUNC_PROTO << 24 | 2, 0]);
        t.extend([s("p", &strings), 4, s("n", &strings), 1]);
        // 6: func f
        t.extend([s("f", &strings), KIND_FUNC << 24, 5]);
        let types: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend(0xeb9fu16.to_le_bytes());
        out.extend([1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(types);
        out.append(&mut strings);
        out
    }

    #[test]
    fn offsets_through_anonymous_unions() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("page", "flags"), Some(0));
        assert_eq!(btf.member_offset("page", "pgmap"), Some(8));
        assert_eq!(btf.member_offset("page", "compound_head"), Some(8));
        assert_eq!(btf.member_offset("page", "_refcount"), Some(16));
        assert_eq!(btf.member_offset("page", "missing"), None);
        assert_eq!(btf.struct_size("page"), Some(24));
    }

    #[test]
    fn function_prototype_patterns() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.function_params("f").unwrap(), vec!["page*", "int"]);
        assert!(btf.function_params("g").is_none());
    }

    /// A corrupt BTF that loops its chains gets an answer, not a hang or a stack overflow.
    #[test]
    fn cycles_end() {
        let btf = Btf::parse(&blob(true)).unwrap();
        assert_eq!(btf.member_offset("page", "missing"), None);
        // Found past the self-nesting branch: where is meaningless in a corrupt BTF.
        assert!(btf.member_offset("page", "_refcount").is_some());
        assert_eq!(btf.function_params("f").unwrap(), vec!["?", "int"]);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(matches!(Btf::parse(b"hello"), Err(BtfError::BadMagic(_))));
        let mut blob = sample();
        blob.truncate(40);
        assert!(Btf::parse(&blob).is_err());
    }
}
