//! Guest instructions per marked round, from the insncount plugin's marks: what the hot-path
//! and device parts judge tracers' costs on (the host's load does not move it).

use std::collections::BTreeMap;

use super::stats::median;
use crate::lab::insncount::{self, Mark};

/// Instructions of each measured round, grouped by what the round was (variant, workload).
pub struct Rounds<K> {
    by: BTreeMap<K, Vec<f64>>,
}

impl<K: Ord + Copy> Rounds<K> {
    fn new(keys: &[K], counts: impl Iterator<Item = u64>) -> Self {
        let mut by: BTreeMap<K, Vec<f64>> = BTreeMap::new();
        for (&k, n) in keys.iter().zip(counts) {
            by.entry(k).or_default().push(n as f64);
        }
        Self { by }
    }

    /// The median round of `k`.
    pub fn typical(&self, k: K) -> Option<f64> {
        self.by.get(&k).cloned().and_then(median)
    }

    /// `k`'s median round over `base`'s.
    pub fn ratio(&self, k: K, base: K) -> Option<f64> {
        self.typical(k).zip(self.typical(base)).map(|(n, b)| n / b)
    }
}

/// Counted twice: on the workload's (pinned) vCPU, which is what the probes add to its own
/// path, and on all vCPUs, which adds the tracer's reader and whatever else the system ran.
pub struct Counted<K> {
    pub own: Rounds<K>,
    pub all: Rounds<K>,
}

/// The marks file's rounds: one pair of marks per round, `before` unmeasured ones first, then
/// one per entry of `keys`, in order, then `after` unmeasured ones.
pub fn count<K: Ord + Copy>(
    keys: &[K],
    marks: &str,
    (before, after): (usize, usize),
) -> Result<Counted<K>, String> {
    let marks = insncount::marks(marks);
    let pairs: Vec<&[Mark]> = marks.chunks_exact(2).collect();
    if pairs.len() != before + keys.len() + after {
        return Err(format!(
            "{} marked rounds for {before} before, {} measured and {after} after",
            pairs.len(),
            keys.len()
        ));
    }
    if let Some(p) = pairs.iter().find(|p| p[0].vcpu != p[1].vcpu) {
        return Err(format!(
            "a round began on vCPU {} and ended on vCPU {}: the workload was not pinned",
            p[0].vcpu, p[1].vcpu
        ));
    }
    let measured = &pairs[before..before + keys.len()];
    Ok(Counted {
        own: Rounds::new(keys, measured.iter().map(|p| p[1].own - p[0].own)),
        all: Rounds::new(
            keys,
            measured
                .iter()
                .map(|p| p[1].total.saturating_sub(p[0].total)),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_skip_the_unmeasured_ones_on_both_sides() {
        // vCPU, all vCPUs' count, its own count; one warm-up round, two measured, one after.
        let marks = "mark 1 0 0\nmark 1 10 5\n\
                     mark 1 100 50\nmark 1 130 70\n\
                     mark 1 200 100\nmark 1 260 160\n\
                     mark 1 300 200\nmark 1 999 999\n";
        let c = count(&["a", "b"], marks, (1, 1)).unwrap();
        assert_eq!(c.own.typical("a"), Some(20.0));
        assert_eq!(c.all.typical("b"), Some(60.0));
        assert_eq!(c.own.ratio("b", "a"), Some(3.0));
        assert!(count(&["a", "b"], marks, (1, 0)).is_err());
    }
}
