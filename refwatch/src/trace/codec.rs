//! Varints and the delta coding of events against the previous one.

use std::io::{self, Write};

use refwatch_common::{CATALOG, Event};

pub fn put_uvar(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

pub fn put_ivar(out: &mut Vec<u8>, v: i64) {
    put_uvar(out, zigzag(v));
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvar(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Event tags are catalog probe ids below this.
const PROBE_TAGS: usize = 0x80;

/// Which of [`Baseline::wheres`] a probe's events use.
fn where_slot(probe: u8) -> usize {
    usize::from(
        CATALOG
            .get(usize::from(probe))
            .is_some_and(|p| p.is_range()),
    )
}

/// What an event is coded against. Writer and reader keep identical copies.
#[derive(Clone, Debug)]
pub struct Baseline {
    prev: Event,
    task: u64,
    /// Whether `prev` holds `task`'s pid and comm yet (the decoder looks tasks up on change).
    task_known: bool,
    /// Format version of the frames: 1 stored the stack id absolute and `extra2` against 0.
    version: u16,
    /// From version 3: the last `extra`, `extra2` of each probe, what its next ones are coded
    /// against (an insert's address is the previous one's plus a page, its mm the same).
    extras: Box<[(u64, u64); PROBE_TAGS]>,
    /// From version 3: the last (pfn, page) of page events and of range zaps (pfn 0, the mm),
    /// each what the next of its sort is coded against, so that a zap between two page events
    /// costs neither of them.
    wheres: [(u64, u64); 2],
}

impl Baseline {
    pub fn new(version: u16) -> Self {
        Self {
            prev: Event::default(),
            task: 0,
            task_known: false,
            version,
            extras: Box::new([(1, 0); PROBE_TAGS]),
            wheres: [(0, 0); 2],
        }
    }

    /// The event coded or decoded last.
    pub fn last(&self) -> &Event {
        &self.prev
    }

    /// What `stack_id` is coded against: consecutive events mostly share it (the same path),
    /// which makes it one byte from version 2.
    fn stack_base(&self) -> i32 {
        if self.version >= 2 {
            self.prev.stack_id
        } else {
            0
        }
    }

    /// What probe `probe`'s `extra` and `extra2` are coded against, and whether as a delta.
    fn extras_base(&self, probe: u8) -> ((u64, u64), bool) {
        match self.version {
            1 => ((1, 0), false),
            2 => ((1, self.prev.extra2), false),
            _ => (self.extras[usize::from(probe) % PROBE_TAGS], true),
        }
    }

    /// What an event of `probe` codes its pfn and page against.
    fn where_base(&self, probe: u8) -> (u64, u64) {
        if self.version >= 3 {
            self.wheres[where_slot(probe)]
        } else {
            (self.prev.pfn, self.prev.page)
        }
    }

    /// Remembers what the event just coded leaves for the next ones.
    fn coded(&mut self, ev_probe: u8, extras: (u64, u64), at: (u64, u64)) {
        self.extras[usize::from(ev_probe) % PROBE_TAGS] = extras;
        self.wheres[where_slot(ev_probe)] = at;
    }
}

fn put_extra(out: &mut Vec<u8>, v: u64, base: u64, delta: bool) {
    if delta {
        put_ivar(out, v.wrapping_sub(base) as i64)
    } else {
        put_uvar(out, v)
    }
}

const TASK: u8 = 1 << 0;
const PAGE: u8 = 1 << 1;
const PGMAP: u8 = 1 << 2;
const TYPE: u8 = 1 << 3;
const CPU: u8 = 1 << 4;
const EXTRA: u8 = 1 << 5;
const EXTRA2: u8 = 1 << 6;
const MAP_KIND: u8 = 1 << 7;

/// The page a pfn has if struct pages are 64 bytes apart from `(base pfn, base page)`.
fn predicted_page((pfn0, page0): (u64, u64), pfn: u64) -> u64 {
    page0.wrapping_add(pfn.wrapping_sub(pfn0).wrapping_mul(64))
}

fn catalog_kind(probe: u8) -> u8 {
    CATALOG
        .get(probe as usize)
        .map_or(u8::MAX, |p| p.kind as u8)
}

impl Baseline {
    /// Appends the event frame (tag included); `task` is the interned index of its task.
    pub fn encode(&mut self, ev: &Event, task: u64, out: &mut Vec<u8>) {
        let p = &self.prev;
        let at = self.where_base(ev.probe);
        let page_delta = ev.page.wrapping_sub(predicted_page(at, ev.pfn)) as i64;
        let mut present = 0;
        present |= if task != self.task { TASK } else { 0 };
        present |= if page_delta != 0 { PAGE } else { 0 };
        present |= if ev.pgmap != p.pgmap { PGMAP } else { 0 };
        present |= if (ev.pgmap_type, ev.flags) != (p.pgmap_type, p.flags) {
            TYPE
        } else {
            0
        };
        present |= if ev.cpu != p.cpu { CPU } else { 0 };
        let stack_base = self.stack_base();
        let ((extra_base, extra2_base), delta) = self.extras_base(ev.probe);
        present |= if ev.extra != extra_base { EXTRA } else { 0 };
        present |= if ev.extra2 != extra2_base { EXTRA2 } else { 0 };
        present |= if ev.mapcount != 0 || ev.kind != catalog_kind(ev.probe) {
            MAP_KIND
        } else {
            0
        };
        out.push(ev.probe);
        out.push(present);
        put_ivar(out, ev.ts_ns.wrapping_sub(p.ts_ns) as i64);
        put_ivar(out, ev.pfn.wrapping_sub(at.0) as i64);
        put_ivar(out, ev.refcount.into());
        put_ivar(out, ev.stack_id.wrapping_sub(stack_base).into());
        if present & TASK != 0 {
            put_uvar(out, task);
        }
        if present & PAGE != 0 {
            put_ivar(out, page_delta);
        }
        if present & PGMAP != 0 {
            put_uvar(out, ev.pgmap);
        }
        if present & TYPE != 0 {
            out.extend_from_slice(&[ev.pgmap_type, ev.flags]);
        }
        if present & CPU != 0 {
            put_uvar(out, ev.cpu.into());
        }
        if present & EXTRA != 0 {
            put_extra(out, ev.extra, extra_base, delta);
        }
        if present & EXTRA2 != 0 {
            put_extra(out, ev.extra2, extra2_base, delta);
        }
        if present & MAP_KIND != 0 {
            put_ivar(out, ev.mapcount.into());
            out.push(ev.kind);
        }
        self.prev = *ev;
        self.task = task;
        self.coded(ev.probe, (ev.extra, ev.extra2), (ev.pfn, ev.page));
    }

    /// Decodes an event frame whose tag (`probe`) was already read, in place of the previous
    /// event (a 96-byte event copied per step was a fifth of `refwatch report`'s time; after
    /// an error the reader stops, so a half-decoded event is never seen). `task` maps a task
    /// index to (pid_tgid, comm), looked up only when the task changes.
    pub fn decode(
        &mut self,
        probe: u8,
        src: &mut Input,
        task: impl Fn(u64) -> Option<(u64, [u8; 16])>,
    ) -> Result<(), Cut> {
        let stack_base = self.stack_base();
        let at = self.where_base(probe);
        let ((extra_base, extra2_base), delta) = self.extras_base(probe);
        let extra = |src: &mut Input, base: u64| -> Result<u64, Cut> {
            if delta {
                Ok(base.wrapping_add(src.ivar()? as u64))
            } else {
                src.uvar()
            }
        };
        let present = src.byte()?;
        let ev = &mut self.prev;
        ev.probe = probe;
        ev.ts_ns = ev.ts_ns.wrapping_add(src.ivar()? as u64);
        ev.pfn = at.0.wrapping_add(src.ivar()? as u64);
        ev.page = predicted_page(at, ev.pfn);
        ev.refcount = src.ivar()? as i32;
        ev.stack_id = (src.ivar()? as i32).wrapping_add(stack_base);
        if present & TASK != 0 || !self.task_known {
            if present & TASK != 0 {
                self.task = src.uvar()?;
            }
            (ev.pid_tgid, ev.comm) = task(self.task)
                .ok_or_else(|| Cut::Corrupt(format!("unknown task {}", self.task)))?;
            self.task_known = true;
        }
        if present & PAGE != 0 {
            ev.page = ev.page.wrapping_add(src.ivar()? as u64);
        }
        if present & PGMAP != 0 {
            ev.pgmap = src.uvar()?;
        }
        if present & TYPE != 0 {
            ev.pgmap_type = src.byte()?;
            ev.flags = src.byte()?;
        }
        if present & CPU != 0 {
            ev.cpu = src.uvar()? as u16;
        }
        ev.extra = if present & EXTRA != 0 {
            extra(src, extra_base)?
        } else {
            extra_base
        };
        ev.extra2 = if present & EXTRA2 != 0 {
            extra(src, extra2_base)?
        } else {
            extra2_base
        };
        (ev.mapcount, ev.kind) = if present & MAP_KIND != 0 {
            (src.ivar()? as i32, src.byte()?)
        } else {
            (0, catalog_kind(probe))
        };
        let coded = ((ev.extra, ev.extra2), (ev.pfn, ev.page));
        self.coded(probe, coded.0, coded.1);
        Ok(())
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum Cut {
    /// The file ends inside the frame.
    Eof,
    Corrupt(String),
    Io(io::Error),
}

/// The most bytes a varint may take (a longer one is corrupt).
pub const MAX_VARINT: usize = 10;

/// The most bytes an event or task frame may take, tag included: an event is the tag, the
/// `present` byte, up to 11 varints and 3 single bytes.
pub const MAX_SMALL_FRAME: usize = 2 + 11 * MAX_VARINT + 3;

/// Bytes for the decoder: a slice of the reader's buffer holding at least the frame being
/// read, or the rest of the file when that is shorter (running out then means a cut frame).
pub struct Input<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes read so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    #[inline]
    pub fn byte(&mut self) -> Result<u8, Cut> {
        // Not `ok_or(Cut::Eof)?`: that built and dropped a `Cut` on every byte.
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(Cut::Eof);
        };
        self.pos += 1;
        Ok(b)
    }

    /// Most varints of an event are one byte: that case is a compare and an increment.
    #[inline]
    pub fn uvar(&mut self) -> Result<u64, Cut> {
        match self.bytes.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => self.long_uvar(),
        }
    }

    fn long_uvar(&mut self) -> Result<u64, Cut> {
        let rest = &self.bytes[self.pos..];
        let mut v = 0u64;
        // Over a slice of at most MAX_VARINT bytes: no bounds check per byte.
        for (i, &b) in rest[..rest.len().min(MAX_VARINT)].iter().enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        if rest.len() < MAX_VARINT {
            Err(Cut::Eof)
        } else {
            Err(Cut::Corrupt("varint longer than 64 bits".into()))
        }
    }

    #[inline]
    pub fn ivar(&mut self) -> Result<i64, Cut> {
        self.uvar().map(unzigzag)
    }

    /// A length-prefixed byte string of at most `limit` bytes.
    pub fn bytes(&mut self, limit: usize) -> Result<&'a [u8], Cut> {
        let n = self.uvar()? as usize;
        if n > limit {
            return Err(Cut::Corrupt(format!("length {n} over {limit}")));
        }
        let Some(b) = self.bytes.get(self.pos..self.pos + n) else {
            return Err(Cut::Eof);
        };
        self.pos += n;
        Ok(b)
    }
}

/// Writes `buf` and clears it.
pub fn flush_frame(out: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<()> {
    out.write_all(buf)?;
    buf.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Every value at every length, read from a buffer that goes on after it and from one
        /// that ends with it; one byte short is a cut frame.
        #[test]
        fn varints_round_trip(
            v in any::<u64>(),
            shift in 0u32..64,
            tail in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let v = v >> shift;
            let mut buf = Vec::new();
            put_uvar(&mut buf, v);
            let len = buf.len();
            for bytes in [buf.clone(), [buf.clone(), tail].concat()] {
                let mut input = Input::new(&bytes);
                prop_assert_eq!(input.uvar().ok(), Some(v));
                prop_assert_eq!(input.consumed(), len);
            }
            let mut cut = Input::new(&buf[..len - 1]);
            prop_assert!(matches!(cut.uvar(), Err(Cut::Eof)));
        }
    }
}
