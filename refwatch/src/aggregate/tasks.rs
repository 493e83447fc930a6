//! The tasks that page histories refer to, by index: a remembered [`super::state::Step`] holds
//! a `u32` instead of the event's pid_tgid and 16-byte comm.
//!
//! Entries are not counted per step: forgetting a page or evicting its history then writes its
//! ring's header and reads none of its steps (at pmem scale the evictions' reads of cold rings
//! were 40 % of `report`'s time). Instead, when the table has doubled since the last sweep,
//! the aggregator marks the entries its histories and grabs still hold ([`Tasks::sweep`]) and
//! the rest are reused, so the table stays bounded by the steps remembered (pids come and go
//! over a long capture).

use std::collections::HashMap;

/// Sweeps never leave the table smaller than this.
const MIN_SWEEP: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Task {
    pub pid_tgid: u64,
    pub comm: [u8; 16],
}

#[derive(Clone, Debug, Default)]
pub struct Tasks {
    entries: Vec<Task>,
    index: HashMap<Task, u32>,
    /// Entries swept and not yet reused (out of `index`).
    free: Vec<u32>,
    /// Sweep when the table is full at this size.
    limit: usize,
    /// The entry interned last: consecutive events mostly come from one task.
    last: Option<u32>,
}

impl Tasks {
    /// The index of `task`, valid until a sweep that does not find it held. Inlined: every
    /// event and step asks, and mostly for the task of the event before.
    #[inline]
    pub fn hold(&mut self, task: Task) -> u32 {
        match self.last {
            Some(i) if self.entries[i as usize] == task => i,
            _ => self.look_up(task),
        }
    }

    fn look_up(&mut self, task: Task) -> u32 {
        let i = match self.index.get(&task) {
            Some(&i) => i,
            None => self.insert(task),
        };
        self.last = Some(i);
        i
    }

    /// The index of the task that ran `ev`.
    #[inline]
    pub fn hold_event(&mut self, ev: &refwatch_common::Event) -> u32 {
        self.hold(Task {
            pid_tgid: ev.pid_tgid,
            comm: ev.comm,
        })
    }

    pub fn get(&self, i: u32) -> &Task {
        &self.entries[i as usize]
    }

    /// Whether the table is full: the aggregator sweeps it before its next event.
    pub fn due(&self) -> bool {
        self.free.is_empty() && self.entries.len() >= self.limit
    }

    /// Frees every entry not in `held` (the tasks of every step still remembered).
    pub fn sweep(&mut self, held: impl Iterator<Item = u32>) {
        let mut marked = vec![false; self.entries.len()];
        for i in held {
            marked[i as usize] = true;
        }
        self.free.clear();
        for (i, task) in self.entries.iter().enumerate() {
            if !marked[i] {
                self.index.remove(task);
                self.free.push(i as u32);
            }
        }
        self.last = None;
        self.limit = MIN_SWEEP.max(2 * (self.entries.len() - self.free.len()));
    }

    fn insert(&mut self, task: Task) -> u32 {
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = task;
                i
            }
            None => {
                self.entries.push(task);
                (self.entries.len() - 1) as u32
            }
        };
        self.index.insert(task, i);
        i
    }
}
