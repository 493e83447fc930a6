//! The tasks that page histories refer to, by index: a remembered [`super::state::Step`] holds
//! a `u32` instead of the event's pid_tgid and 16-byte comm.
//!
//! Each entry counts the steps holding it. Unused entries are reclaimed lazily, when the table
//! has doubled since the last sweep, so it stays bounded by the steps of live pages (pids come
//! and go over a long capture) without a hash update every time a page goes idle.

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
    entries: Vec<(Task, u32)>,
    index: HashMap<Task, u32>,
    /// Entries swept and not yet reused (out of `index`).
    free: Vec<u32>,
    /// Sweep when the table is full at this size.
    limit: usize,
    /// The entry interned last: consecutive events mostly come from one task.
    last: Option<u32>,
}

impl Tasks {
    /// The index of `task`, counted as held once more.
    pub fn hold(&mut self, task: Task) -> u32 {
        let i = match self.last {
            Some(i) if self.entries[i as usize].0 == task => i,
            _ => match self.index.get(&task) {
                Some(&i) => i,
                None => self.insert(task),
            },
        };
        self.entries[i as usize].1 += 1;
        self.last = Some(i);
        i
    }

    /// The index of the task that ran `ev`, counted as held once more.
    pub fn hold_event(&mut self, ev: &refwatch_common::Event) -> u32 {
        self.hold(Task {
            pid_tgid: ev.pid_tgid,
            comm: ev.comm,
        })
    }

    /// Puts `step` into a page's history, letting go of the task of the step it pushes out.
    pub fn remember(&mut self, ring: &mut super::state::Ring, step: super::state::Step) {
        if let Some(old) = ring.push(step) {
            self.release(old.task);
        }
    }

    /// One holder of entry `i` is gone.
    pub fn release(&mut self, i: u32) {
        self.entries[i as usize].1 -= 1;
    }

    pub fn get(&self, i: u32) -> &Task {
        &self.entries[i as usize].0
    }

    fn insert(&mut self, task: Task) -> u32 {
        if self.free.is_empty() && self.entries.len() >= self.limit {
            self.sweep();
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = (task, 0);
                i
            }
            None => {
                self.entries.push((task, 0));
                (self.entries.len() - 1) as u32
            }
        };
        self.index.insert(task, i);
        i
    }

    /// Frees every unheld entry (none is in `free` now: sweeps run only when it is empty).
    fn sweep(&mut self) {
        for (i, (task, holders)) in self.entries.iter().enumerate() {
            if *holders == 0 {
                self.index.remove(task);
                self.free.push(i as u32);
            }
        }
        self.last = None;
        self.limit = MIN_SWEEP.max(2 * (self.entries.len() - self.free.len()));
    }
}
