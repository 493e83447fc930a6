//! Device PTEs by (mm, user address) → pfn, where unmaps come as zapped ranges: in chunks of
//! [`SPAN`] consecutive pages of one mm, so a workload mapping a whole device costs about 9
//! bytes a mapping instead of a tree node per PTE (about 96), and a range zap walks chunks;
//! whole chunks mapping consecutive pfns fold into runs, one entry each whatever their
//! length, so that mapping a device linearly costs memory by its stretches, not its size.

use std::collections::BTreeMap;

/// Pages per chunk.
const SPAN: u64 = 16;
const PAGE_SHIFT: u32 = 12;
/// Every lane mapped.
const FULL: u16 = u16::MAX;

/// The pfns of [`SPAN`] consecutive pages of one mm; a bit per mapped one.
#[derive(Clone, Debug)]
struct Chunk {
    mapped: u16,
    pfns: [u64; SPAN as usize],
}

impl Chunk {
    /// Maps `lane` to `pfn`: the pfn it mapped before, and whether the chunk is now full and
    /// linear (it may fold).
    fn set(&mut self, lane: usize, pfn: u64) -> (Option<u64>, bool) {
        let old = (self.mapped & (1 << lane) != 0).then_some(self.pfns[lane]);
        self.mapped |= 1 << lane;
        self.pfns[lane] = pfn;
        let linear = self.mapped == FULL && Self::linear(self.pfns[0]).pfns == self.pfns;
        (old, linear)
    }

    /// Every lane mapped, to `pfn0` onwards.
    fn linear(pfn0: u64) -> Self {
        Self {
            mapped: FULL,
            pfns: std::array::from_fn(|l| pfn0.wrapping_add(l as u64)),
        }
    }
}

/// `chunks` whole chunks of one mm, their pages mapping `pfn0` onwards.
#[derive(Clone, Copy, Debug)]
struct Run {
    chunks: u64,
    pfn0: u64,
}

type Key = (u64, u64);

#[derive(Clone, Debug, Default)]
pub struct Mappings {
    /// By (mm, address >> (PAGE_SHIFT + 4)).
    chunks: BTreeMap<Key, Chunk>,
    /// By the key of their first chunk; never one of `chunks`' keys.
    runs: BTreeMap<Key, Run>,
    /// Addresses not page-aligned (only a corrupt trace has them), by (mm, address).
    odd: BTreeMap<Key, u64>,
}

/// The chunk key and lane of a page-aligned address.
fn split((mm, address): Key) -> (Key, usize) {
    let page = address >> PAGE_SHIFT;
    ((mm, page / SPAN), (page % SPAN) as usize)
}

fn aligned(address: u64) -> bool {
    address & ((1 << PAGE_SHIFT) - 1) == 0
}

impl Mappings {
    /// Maps `at` to `pfn`; returns the pfn it mapped before, if any.
    pub fn insert(&mut self, at: Key, pfn: u64) -> Option<u64> {
        if !aligned(at.1) {
            return self.odd.insert(at, pfn);
        }
        let (key, lane) = split(at);
        // Most inserts land in a chunk that is there already (a workload maps a range in
        // order): one search of the tree for those.
        let (old, linear) = match self.chunks.get_mut(&key) {
            Some(chunk) => chunk.set(lane, pfn),
            None => {
                if let Some((start, run)) = self.run_of(key) {
                    let old = run
                        .pfn0
                        .wrapping_add((key.1 - start.1) * SPAN + lane as u64);
                    if old == pfn {
                        return Some(old);
                    }
                    self.unfold(start, run, key);
                }
                let chunk = self.chunks.entry(key).or_insert(Chunk {
                    mapped: 0,
                    pfns: [0; SPAN as usize],
                });
                chunk.set(lane, pfn)
            }
        };
        if linear {
            self.fold(key);
        }
        old
    }

    /// The run holding chunk `key`, by its first chunk's key.
    fn run_of(&self, key: Key) -> Option<(Key, Run)> {
        if self.runs.is_empty() {
            return None;
        }
        let (&start, &run) = self.runs.range(..=key).next_back()?;
        (start.0 == key.0 && key.1 - start.1 < run.chunks).then_some((start, run))
    }

    /// Takes chunk `key` out of `run` (starting at `start`) as a chunk of its own.
    fn unfold(&mut self, start: Key, run: Run, key: Key) {
        self.cut(start, run, key, 1);
        let pfn0 = run.pfn0.wrapping_add((key.1 - start.1) * SPAN);
        self.chunks.insert(key, Chunk::linear(pfn0));
    }

    /// Takes the `n` chunks from `key` on out of `run` (starting at `start`), leaving the
    /// parts before and after them as runs.
    fn cut(&mut self, start: Key, run: Run, key: Key, n: u64) {
        let at = key.1 - start.1;
        if at > 0 {
            self.runs.get_mut(&start).expect("a run").chunks = at;
        } else {
            self.runs.remove(&start);
        }
        if at + n < run.chunks {
            let rest = Run {
                chunks: run.chunks - at - n,
                pfn0: run.pfn0.wrapping_add((at + n) * SPAN),
            };
            self.runs.insert((key.0, key.1 + n), rest);
        }
    }

    /// Folds the full, linear chunk `key` into a run, joining its neighbours where they go on.
    fn fold(&mut self, key: Key) {
        let chunk = self.chunks.remove(&key).expect("a chunk");
        let mut run = Run {
            chunks: 1,
            pfn0: chunk.pfns[0],
        };
        let mut start = key;
        if let Some((&s, prev)) = self.runs.range(..key).next_back()
            && s.0 == key.0
            && s.1 + prev.chunks == key.1
            && prev.pfn0.wrapping_add(prev.chunks * SPAN) == run.pfn0
        {
            (start, run.chunks, run.pfn0) = (s, prev.chunks + 1, prev.pfn0);
        }
        let next_key = (key.0, key.1 + 1);
        if let Some(next) = self.runs.get(&next_key).copied()
            && chunk.pfns[0].wrapping_add(SPAN) == next.pfn0
        {
            self.runs.remove(&next_key);
            run.chunks += next.chunks;
        }
        self.runs.insert(start, run);
    }

    /// Removes the mappings of `[start, end)` in `mm` and puts them in `out` (emptied first;
    /// the caller's buffer, reused from batch to batch), in address order: the first `limit`
    /// or so (whole chunks) where every address is page-aligned, all of them otherwise.
    pub fn take_range(
        &mut self,
        (mm, start, end): (u64, u64, u64),
        limit: usize,
        out: &mut Vec<(Key, u64)>,
    ) {
        out.clear();
        if start >= end {
            return;
        }
        let limit = if self.odd.is_empty() {
            limit
        } else {
            usize::MAX
        };
        let mut cursor = split((mm, start)).0;
        let last = split((mm, end - 1)).0;
        // Whether every page of chunk number `c` is in the range.
        let whole = |c: u64| {
            (c * SPAN) << PAGE_SHIFT >= start && ((c * SPAN + SPAN - 1) << PAGE_SHIFT) < end
        };
        while out.len() < limit && cursor <= last {
            let next = self.chunks.range(cursor..=last).next().map(|(k, _)| *k);
            // A run before the next chunk: its chunks wholly in range are taken as they are (a
            // zap of a whole device walks runs), one at the range's edge becomes a chunk.
            let run = self
                .run_of(cursor)
                .or_else(|| self.runs.range(cursor..=last).next().map(|(k, r)| (*k, *r)));
            if let Some((s, run)) = run {
                let key = s.max(cursor);
                if next.is_none_or(|n| key < n) {
                    let room = (limit - out.len()).div_ceil(SPAN as usize);
                    let n = (key.1..s.1 + run.chunks)
                        .take(room)
                        .take_while(|&c| whole(c))
                        .count() as u64;
                    if n == 0 {
                        self.unfold(s, run, key);
                    } else {
                        self.cut(s, run, key, n);
                        let pfn0 = run.pfn0.wrapping_add((key.1 - s.1) * SPAN);
                        out.extend((0..n * SPAN).map(|i| {
                            let address = (key.1 * SPAN + i) << PAGE_SHIFT;
                            ((mm, address), pfn0.wrapping_add(i))
                        }));
                        cursor = (mm, key.1 + n);
                        continue;
                    }
                }
            }
            let Some((&key, chunk)) = self.chunks.range_mut(cursor..=last).next() else {
                break;
            };
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
            cursor = (mm, key.1 + 1);
        }
        if !self.odd.is_empty() {
            let odd: Vec<Key> = self
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
    }

    /// Every mapping, in (mm, address) order.
    pub fn iter(&self) -> impl Iterator<Item = (Key, u64)> + '_ {
        let lanes = |(mm, no): Key, chunk: &Chunk| {
            (0..SPAN as usize)
                .filter(|lane| chunk.mapped & (1 << lane) != 0)
                .map(|lane| {
                    (
                        (mm, (no * SPAN + lane as u64) << PAGE_SHIFT),
                        chunk.pfns[lane],
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut all: Vec<(Key, u64)> = self
            .chunks
            .iter()
            .flat_map(|(&key, chunk)| lanes(key, chunk))
            .chain(self.runs.iter().flat_map(|(&(mm, first), run)| {
                (0..run.chunks).flat_map(move |c| {
                    lanes(
                        (mm, first + c),
                        &Chunk::linear(run.pfn0.wrapping_add(c * SPAN)),
                    )
                })
            }))
            .chain(self.odd.iter().map(|(&k, &pfn)| (k, pfn)))
            .collect();
        if !self.odd.is_empty() || !self.runs.is_empty() {
            all.sort_unstable_by_key(|&(k, _)| k);
        }
        all.into_iter()
    }

    /// Keeps the mappings of the pfns `keep` says yes to.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        let runs: Vec<(Key, Run)> = self.runs.iter().map(|(&k, &r)| (k, r)).collect();
        for ((mm, first), run) in runs {
            let pfns = || (0..run.chunks * SPAN).map(|i| run.pfn0.wrapping_add(i));
            if pfns().all(&keep) {
                continue;
            }
            // Some go: its chunks are sorted out one by one below.
            self.runs.remove(&(mm, first));
            for c in 0..run.chunks {
                let pfn0 = run.pfn0.wrapping_add(c * SPAN);
                self.chunks.insert((mm, first + c), Chunk::linear(pfn0));
            }
        }
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
        /// Inserts of `len` pages from page `first` on, mapping `pfn` onwards.
        Sweep(u64, u64, u64, u64),
        Take(u64, u64, u64, usize),
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
            2 => (0u64..2, 0u64..80, 1u64..80, 0u64..3)
                .prop_map(|(mm, first, len, pfn)| Op::Sweep(mm, first, len, pfn * 16)),
            1 => (0u64..2, address(), address(), 1usize..40)
                .prop_map(|(mm, s, e, limit)| Op::Take(mm, s, e, limit)),
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
                    Op::Sweep(mm, first, len, pfn) => {
                        for i in 0..len {
                            let at = (mm, ((first + i) << PAGE_SHIFT) + 0x7f_0000_0000);
                            prop_assert_eq!(m.insert(at, pfn + i), tree.insert(at, pfn + i));
                        }
                    }
                    Op::Take(mm, s, e, limit) => {
                        let all: Vec<_> = if s < e {
                            tree.range((mm, s)..(mm, e)).map(|(&k, &v)| (k, v)).collect()
                        } else {
                            Vec::new()
                        };
                        let mut got = Vec::new();
                        m.take_range((mm, s, e), limit, &mut got);
                        // A prefix in address order: at least `limit` of them, whole chunks.
                        prop_assert!(got.len() >= limit.min(all.len()));
                        prop_assert_eq!(&got[..], &all[..got.len()]);
                        for (k, _) in got {
                            tree.remove(&k);
                        }
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
