//! Device PTEs by (mm, user address) → pfn, where unmaps come as zapped ranges: in chunks of
//! [`SPAN`] consecutive pages of one mm, so a workload mapping a whole device costs about 9
//! bytes a mapping instead of a tree node per PTE (about 96), and a range zap walks chunks.

use std::collections::BTreeMap;

/// Pages per chunk.
const SPAN: u64 = 16;
const PAGE_SHIFT: u32 = 12;

/// The pfns of [`SPAN`] consecutive pages of one mm; a bit per mapped one.
#[derive(Clone, Debug)]
struct Chunk {
    mapped: u16,
    pfns: [u64; SPAN as usize],
}

#[derive(Clone, Debug, Default)]
pub struct Mappings {
    /// By (mm, address >> (PAGE_SHIFT + 4)).
    chunks: BTreeMap<(u64, u64), Chunk>,
    /// Addresses not page-aligned (only a corrupt trace has them), by (mm, address).
    odd: BTreeMap<(u64, u64), u64>,
}

/// The chunk key and lane of a page-aligned address.
fn split((mm, address): (u64, u64)) -> ((u64, u64), usize) {
    let page = address >> PAGE_SHIFT;
    ((mm, page / SPAN), (page % SPAN) as usize)
}

fn aligned(address: u64) -> bool {
    address & ((1 << PAGE_SHIFT) - 1) == 0
}

impl Mappings {
    /// Maps `at` to `pfn`; returns the pfn it mapped before, if any.
    pub fn insert(&mut self, at: (u64, u64), pfn: u64) -> Option<u64> {
        if !aligned(at.1) {
            return self.odd.insert(at, pfn);
        }
        let (key, lane) = split(at);
        let chunk = self.chunks.entry(key).or_insert(Chunk {
            mapped: 0,
            pfns: [0; SPAN as usize],
        });
        let old = (chunk.mapped & (1 << lane) != 0).then_some(chunk.pfns[lane]);
        chunk.mapped |= 1 << lane;
        chunk.pfns[lane] = pfn;
        old
    }

    /// Removes and returns the mappings of `[start, end)` in `mm`, in address order.
    pub fn take_range(&mut self, mm: u64, start: u64, end: u64) -> Vec<((u64, u64), u64)> {
        if start >= end {
            return Vec::new();
        }
        let mut out = Vec::new();
        let first = split((mm, start)).0;
        let last = split((mm, end - 1)).0;
        let keys: Vec<(u64, u64)> = self.chunks.range(first..=last).map(|(k, _)| *k).collect();
        for key in keys {
            let chunk = self.chunks.get_mut(&key).expect("listed above");
            for lane in 0..SPAN as usize {
                let address = (key.1 * SPAN + lane as u64) << PAGE_SHIFT;
                if chunk.mapped & (1 << lane) != 0 && (start..end).contains(&address) {
                    chunk.mapped &= !(1 << lane);
                    out.push(((mm, address), chunk.pfns[lane]));
                }
            }
            if chunk.mapped == 0 {
                self.chunks.remove(&key);
            }
        }
        if !self.odd.is_empty() {
            let odd: Vec<(u64, u64)> = self
                .odd
                .range((mm, start)..(mm, end))
                .map(|(k, _)| *k)
                .collect();
            for k in odd {
                let pfn = self.odd.remove(&k).expect("listed above");
                out.push((k, pfn));
            }
            out.sort_unstable_by_key(|&(k, _)| k);
        }
        out
    }

    /// Every mapping, in (mm, address) order.
    pub fn iter(&self) -> impl Iterator<Item = ((u64, u64), u64)> + '_ {
        let mut all: Vec<((u64, u64), u64)> = self
            .chunks
            .iter()
            .flat_map(|(&(mm, no), chunk)| {
                (0..SPAN as usize)
                    .filter(move |lane| chunk.mapped & (1 << lane) != 0)
                    .map(move |lane| {
                        (
                            (mm, (no * SPAN + lane as u64) << PAGE_SHIFT),
                            chunk.pfns[lane],
                        )
                    })
            })
            .chain(self.odd.iter().map(|(&k, &pfn)| (k, pfn)))
            .collect();
        if !self.odd.is_empty() {
            all.sort_unstable_by_key(|&(k, _)| k);
        }
        all.into_iter()
    }

    /// Keeps the mappings of the pfns `keep` says yes to.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.chunks.retain(|_, chunk| {
            for lane in 0..SPAN as usize {
                if chunk.mapped & (1 << lane) != 0 && !keep(chunk.pfns[lane]) {
                    chunk.mapped &= !(1 << lane);
                }
            }
            chunk.mapped != 0
        });
        self.odd.retain(|_, pfn| keep(*pfn));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u64, u64),
        Take(u64, u64, u64),
        Retain(u64),
    }

    /// Addresses near a chunk boundary, page-aligned or not, and at the top of the space.
    fn address() -> impl Strategy<Value = u64> {
        prop_oneof![
            (0u64..40).prop_map(|p| (p << PAGE_SHIFT) + 0x7f_0000_0000),
            (0u64..40, 1u64..4096).prop_map(|(p, o)| (p << PAGE_SHIFT) + o),
            (0u64..4).prop_map(|p| u64::MAX - (p << PAGE_SHIFT)),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..2, address(), 0u64..8).prop_map(|(mm, a, pfn)| Op::Insert(mm, a, pfn)),
            1 => (0u64..2, address(), address()).prop_map(|(mm, s, e)| Op::Take(mm, s, e)),
            1 => (0u64..8).prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// The same answers as a tree of every (mm, address).
        #[test]
        fn like_a_tree(ops in proptest::collection::vec(op(), 1..200)) {
            let mut m = Mappings::default();
            let mut tree: BTreeMap<(u64, u64), u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(mm, a, pfn) => {
                        prop_assert_eq!(m.insert((mm, a), pfn), tree.insert((mm, a), pfn));
                    }
                    Op::Take(mm, s, e) => {
                        let want: Vec<_> = if s < e {
                            let keys: Vec<_> =
                                tree.range((mm, s)..(mm, e)).map(|(k, _)| *k).collect();
                            keys.into_iter().map(|k| (k, tree.remove(&k).unwrap())).collect()
                        } else {
                            Vec::new()
                        };
                        prop_assert_eq!(m.take_range(mm, s, e), want);
                    }
                    Op::Retain(gone) => {
                        m.retain(|pfn| pfn != gone);
                        tree.retain(|_, pfn| *pfn != gone);
                    }
                }
                let all: Vec<_> = tree.iter().map(|(&k, &v)| (k, v)).collect();
                prop_assert_eq!(m.iter().collect::<Vec<_>>(), all);
            }
        }
    }
}
