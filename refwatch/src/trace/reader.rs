//! Reading a trace back, tolerating a cut-off tail.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, ErrorKind, Read},
    path::Path,
    sync::mpsc,
    thread,
};

use refwatch_common::Event;

use super::{
    Footer, Header, MAGIC, TAG_FOOTER, TAG_STACK, TAG_TASK, TraceError, VERSION,
    codec::{self, Cut, Input, MAX_SMALL_FRAME, MAX_VARINT},
};

/// Larger headers or strings are taken as corruption rather than allocated.
const MAX_HEADER: usize = 64 << 20;
const MAX_STRING: usize = 64 << 10;
const MAX_FRAMES: usize = 1024;

/// Read-ahead, in bytes. Frames are decoded in place from this buffer.
const BUFFER: usize = 1 << 20;

/// The file through a buffer of its own, handed to the decoder a frame's worth at a time as
/// a slice: the varint reads are then a compare and an index (a `Read` or `BufRead` call per
/// byte was half of `refwatch report`'s time).
struct Bytes<R> {
    r: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl<R: Read> Bytes<R> {
    fn new(r: R, offset: u64) -> Self {
        Self {
            r,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
            base: offset,
            eof: false,
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The unread bytes: at least `n` (at most [`BUFFER`]) unless the file ends sooner.
    #[inline]
    fn window(&mut self, n: usize) -> Result<&[u8], Cut> {
        if self.end - self.pos < n && !self.eof {
            self.fill(n).map_err(Cut::Io)?;
        }
        Ok(&self.buf[self.pos..self.end])
    }

    #[cold]
    fn fill(&mut self, n: usize) -> io::Result<()> {
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        (self.pos, self.end) = (0, self.end - self.pos);
        while self.end < n {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(k) => self.end += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    /// After a cut: the whole rest of the file was read.
    fn consume_all(&mut self) {
        self.pos = self.end;
    }
}

pub struct TraceReader<R> {
    src: Bytes<R>,
    header: Header,
    ctx: codec::Baseline,
    tasks: Vec<(u64, [u8; 16])>,
    stacks: HashMap<i32, Vec<String>>,
    footer: Option<Footer>,
    warning: Option<String>,
    done: bool,
    events: u64,
}

impl TraceReader<File> {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        Self::new(File::open(path)?)
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, TraceError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

impl<R: Read> TraceReader<R> {
    pub fn new(mut r: R) -> Result<Self, TraceError> {
        let mut fixed = [0u8; 14];
        let n = read_exact(&mut r, &mut fixed)?;
        if n == 0 {
            return Err(TraceError::Empty);
        }
        let magic = &fixed[..n.min(8)];
        if magic != &MAGIC[..magic.len()] {
            return Err(TraceError::BadMagic);
        }
        if n < fixed.len() {
            return Err(TraceError::ShortHeader);
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if !(1..=VERSION).contains(&version) {
            return Err(TraceError::Version { found: version });
        }
        let len = u32::from_le_bytes(fixed[10..14].try_into().expect("4 bytes")) as usize;
        if len > MAX_HEADER {
            return Err(TraceError::Corrupt {
                offset: 10,
                what: format!("header length {len}"),
            });
        }
        // Grown as the bytes arrive: a short file claiming a long header costs what it holds.
        let mut json = Vec::new();
        if (&mut r).take(len as u64).read_to_end(&mut json)? < len {
            return Err(TraceError::ShortHeader);
        }
        let header = serde_json::from_slice(&json)?;
        Ok(Self {
            src: Bytes::new(r, (14 + len) as u64),
            header,
            ctx: codec::Baseline::new(version),
            tasks: Vec::new(),
            stacks: HashMap::new(),
            footer: None,
            warning: None,
            done: false,
            events: 0,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The footer, once the reader has reached it; None for a trace cut short.
    pub fn footer(&self) -> Option<&Footer> {
        self.footer.as_ref()
    }

    /// Set when the trace turned out to be cut short.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Symbolized frames of a stack id seen so far, innermost first.
    pub fn stack(&self, id: i32) -> &[String] {
        self.stacks.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The next event; Ok(None) at the end, including the end of a cut-off trace. The event
    /// is the decoder's own copy, valid until the next call.
    pub fn next_event(&mut self) -> Result<Option<&Event>, TraceError> {
        while !self.done {
            let start = self.src.offset();
            match self.frame() {
                Ok(true) => {
                    self.events += 1;
                    return Ok(Some(self.ctx.last()));
                }
                Ok(false) => {}
                Err(Cut::Eof) => {
                    self.done = true;
                    self.src.consume_all();
                    if self.footer.is_none() {
                        let end = self.src.offset();
                        let inside = if end > start { " inside a frame" } else { "" };
                        self.warning = Some(format!(
                            "trace cut off at byte {end}{inside} \
                             (no footer: recording did not finish); \
                             read {} events, drop count unknown",
                            self.events
                        ));
                    }
                }
                Err(Cut::Io(e)) => return Err(e.into()),
                Err(Cut::Corrupt(what)) => {
                    return Err(TraceError::Corrupt {
                        offset: start,
                        what,
                    });
                }
            }
        }
        Ok(None)
    }

    /// Hands every event left to `f`, in order, decoding on a second thread meanwhile (decoding
    /// and aggregating cost about the same: `refwatch report` runs at the pace of the slower
    /// one instead of their sum). On an error `f` has seen every event before it.
    pub fn for_each_event(&mut self, mut f: impl FnMut(&Event)) -> Result<(), TraceError>
    where
        R: Send,
    {
        // Batches of events that fit in a core's L2 cache, recycled; 4,096 (384 KiB) rather
        // than 1,024: each wake-up of the other thread costs the aggregating one, 6 % of its
        // time at 1,024.
        const BATCH: usize = 4096;
        // Batches in all: filled, waiting, aggregated, and given back.
        const BATCHES: usize = 6;
        // Empty batches are given back to the decoder this many at a time, so that a decoder
        // waiting for one (it is the faster thread) is woken once for them, not once each.
        const GIVE_BACK: usize = 3;
        let (full_tx, full_rx) = mpsc::channel::<Vec<Event>>();
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<Event>>();
        // Moved in: if `f` panics, its ends of the channels hang up, so that a decoder waiting
        // on them returns and the scope can re-raise the panic.
        thread::scope(move |s| {
            let decoder = s.spawn(move || {
                let mut made = 0;
                loop {
                    let mut batch = match empty_rx.try_recv() {
                        Ok(batch) => batch,
                        Err(_) if made < BATCHES => {
                            made += 1;
                            Vec::with_capacity(BATCH)
                        }
                        Err(_) => match empty_rx.recv() {
                            Ok(batch) => batch,
                            // The consumer only hangs up by panicking, which the scope re-raises.
                            Err(_) => return Ok(()),
                        },
                    };
                    batch.clear();
                    let end = loop {
                        match self.next_event() {
                            Ok(Some(ev)) => batch.push(*ev),
                            Ok(None) => break Some(Ok(())),
                            Err(e) => break Some(Err(e)),
                        }
                        if batch.len() == BATCH {
                            break None;
                        }
                    };
                    if full_tx.send(batch).is_err() {
                        return Ok(());
                    }
                    if let Some(end) = end {
                        return end;
                    }
                }
            });
            let mut emptied = Vec::with_capacity(GIVE_BACK);
            let give_back = |emptied: &mut Vec<Vec<Event>>| {
                for batch in emptied.drain(..) {
                    let _ = empty_tx.send(batch);
                }
            };
            loop {
                let batch = match full_rx.try_recv() {
                    Ok(batch) => batch,
                    Err(mpsc::TryRecvError::Empty) => {
                        // About to wait for the decoder: it may be waiting for these.
                        give_back(&mut emptied);
                        match full_rx.recv() {
                            Ok(batch) => batch,
                            Err(_) => break,
                        }
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                };
                batch.iter().for_each(&mut f);
                emptied.push(batch);
                if emptied.len() == GIVE_BACK {
                    give_back(&mut emptied);
                }
            }
            decoder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// One frame: true for an event frame (then in `self.ctx`), false for the others.
    fn frame(&mut self) -> Result<bool, Cut> {
        let mut input = Input::new(self.src.window(MAX_SMALL_FRAME)?);
        let tag = input.byte()?;
        if self.footer.is_some() {
            return Err(Cut::Corrupt("data after the footer".into()));
        }
        let event = match tag {
            TAG_TASK => {
                let pid_tgid = input.uvar()?;
                let name = input.bytes(16)?;
                let mut comm = [0u8; 16];
                comm[..name.len()].copy_from_slice(name);
                self.tasks.push((pid_tgid, comm));
                false
            }
            TAG_STACK => {
                let id = input.ivar()? as i32;
                let n = input.uvar()? as usize;
                if n > MAX_FRAMES {
                    return Err(Cut::Corrupt(format!("{n} stack frames")));
                }
                let read = input.consumed();
                self.src.consume(read);
                let frames = (0..n)
                    .map(|_| Ok(String::from_utf8_lossy(&self.long_bytes()?).into_owned()))
                    .collect::<Result<_, Cut>>()?;
                self.stacks.insert(id, frames);
                return Ok(false);
            }
            TAG_FOOTER => {
                let read = input.consumed();
                self.src.consume(read);
                let json = self.long_bytes()?;
                let footer: Footer = serde_json::from_slice(&json)
                    .map_err(|e| Cut::Corrupt(format!("footer: {e}")))?;
                if footer.events != self.events {
                    self.warning = Some(format!(
                        "the footer counts {} events but the trace holds {}",
                        footer.events, self.events
                    ));
                }
                self.footer = Some(footer);
                return Ok(false);
            }
            probe if (probe as usize) < 0x80 => {
                let tasks = &self.tasks;
                self.ctx
                    .decode(probe, &mut input, |i| tasks.get(i as usize).copied())?;
                true
            }
            other => return Err(Cut::Corrupt(format!("unknown frame tag {other:#x}"))),
        };
        let read = input.consumed();
        self.src.consume(read);
        Ok(event)
    }

    /// A length-prefixed string of a stack or footer frame, which may be longer than the
    /// window of a small frame.
    fn long_bytes(&mut self) -> Result<Vec<u8>, Cut> {
        let mut input = Input::new(self.src.window(MAX_VARINT + MAX_STRING)?);
        let bytes = input.bytes(MAX_STRING)?.to_vec();
        let read = input.consumed();
        self.src.consume(read);
        Ok(bytes)
    }
}
