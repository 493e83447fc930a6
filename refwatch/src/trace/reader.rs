//! Reading a trace back, tolerating a cut-off tail.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufReader, ErrorKind, Read},
    path::Path,
};

use refwatch_common::Event;

use super::{
    Footer, Header, MAGIC, TAG_FOOTER, TAG_STACK, TAG_TASK, TraceError, VERSION,
    codec::{self, Cut, Source},
};

/// Larger headers or strings are taken as corruption rather than allocated.
const MAX_HEADER: usize = 64 << 20;
const MAX_STRING: usize = 64 << 10;
const MAX_FRAMES: usize = 1024;

/// Bytes from its own buffer: `byte()` is a bounds check and an index, the decoder's
/// inner loop (BufRead's fill_buf/consume per byte was half of `refwatch report`'s time).
struct Bytes<R> {
    r: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    offset: u64,
}

impl<R: Read> Bytes<R> {
    fn new(r: R, offset: u64) -> Self {
        Self { r, buf: vec![0; 1 << 16].into_boxed_slice(), pos: 0, end: 0, offset }
    }

    #[cold]
    fn refill(&mut self) -> Result<(), Cut> {
        loop {
            match self.r.read(&mut self.buf) {
                Ok(0) => return Err(Cut::Eof),
                Ok(n) => {
                    (self.pos, self.end) = (0, n);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Cut::Io(e)),
            }
        }
    }
}

impl<R: Read> Source for Bytes<R> {
    #[inline]
    fn byte(&mut self) -> Result<u8, Cut> {
        if self.pos == self.end {
            self.refill()?;
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        self.offset += 1;
        Ok(b)
    }
}

pub struct TraceReader<R> {
    src: Bytes<BufReader<R>>,
    header: Header,
    ctx: codec::Context,
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
    pub fn new(inner: R) -> Result<Self, TraceError> {
        let mut r = BufReader::with_capacity(1 << 20, inner);
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
            return Err(TraceError::Corrupt { offset: 10, what: format!("header length {len}") });
        }
        let mut json = vec![0; len];
        if read_exact(&mut r, &mut json)? < len {
            return Err(TraceError::ShortHeader);
        }
        let header = serde_json::from_slice(&json)?;
        Ok(Self {
            src: Bytes::new(r, (14 + len) as u64),
            header,
            ctx: codec::Context::new(version),
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

    /// The next event; Ok(None) at the end, including the end of a cut-off trace.
    pub fn next_event(&mut self) -> Result<Option<Event>, TraceError> {
        while !self.done {
            let start = self.src.offset;
            match self.frame() {
                Ok(ev @ Some(_)) => {
                    self.events += 1;
                    return Ok(ev);
                }
                Ok(None) => {}
                Err(Cut::Eof) => {
                    self.done = true;
                    if self.footer.is_none() {
                        let inside = if self.src.offset > start { " inside a frame" } else { "" };
                        self.warning = Some(format!(
                            "trace cut off at byte {}{inside} (no footer: recording did not finish); \
                             read {} events, drop count unknown",
                            self.src.offset, self.events
                        ));
                    }
                }
                Err(Cut::Io(e)) => return Err(e.into()),
                Err(Cut::Corrupt(what)) => return Err(TraceError::Corrupt { offset: start, what }),
            }
        }
        Ok(None)
    }

    /// One frame: Some(event) for an event frame, None for the others.
    fn frame(&mut self) -> Result<Option<Event>, Cut> {
        let tag = self.src.byte()?;
        if self.footer.is_some() {
            return Err(Cut::Corrupt("data after the footer".into()));
        }
        match tag {
            TAG_TASK => {
                let pid_tgid = self.src.uvar()?;
                let name = self.src.bytes(16)?;
                let mut comm = [0u8; 16];
                comm[..name.len()].copy_from_slice(&name);
                self.tasks.push((pid_tgid, comm));
                Ok(None)
            }
            TAG_STACK => {
                let id = self.src.ivar()? as i32;
                let n = self.src.uvar()? as usize;
                if n > MAX_FRAMES {
                    return Err(Cut::Corrupt(format!("{n} stack frames")));
                }
                let frames = (0..n)
                    .map(|_| Ok(String::from_utf8_lossy(&self.src.bytes(MAX_STRING)?).into_owned()))
                    .collect::<Result<_, Cut>>()?;
                self.stacks.insert(id, frames);
                Ok(None)
            }
            TAG_FOOTER => {
                let json = self.src.bytes(MAX_STRING)?;
                let footer: Footer =
                    serde_json::from_slice(&json).map_err(|e| Cut::Corrupt(format!("footer: {e}")))?;
                if footer.events != self.events {
                    self.warning = Some(format!(
                        "the footer counts {} events but the trace holds {}",
                        footer.events, self.events
                    ));
                }
                self.footer = Some(footer);
                Ok(None)
            }
            probe if (probe as usize) < 0x80 => {
                let tasks = &self.tasks;
                self.ctx.decode(probe, &mut self.src, |i| tasks.get(i as usize).copied()).map(Some)
            }
            other => Err(Cut::Corrupt(format!("unknown frame tag {other:#x}"))),
        }
    }
}
