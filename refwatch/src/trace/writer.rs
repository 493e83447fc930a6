//! Writing a trace while recording.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

use refwatch_common::Event;

use crate::output::{self, Existing, OutputError};

use super::{Footer, Header, MAGIC, TAG_FOOTER, TAG_STACK, TAG_TASK, VERSION, codec};

pub struct TraceWriter<W: Write> {
    out: W,
    ctx: codec::Baseline,
    tasks: HashMap<(u64, [u8; 16]), u64>,
    stacks: HashSet<i32>,
    buf: Vec<u8>,
    events: u64,
    bytes: u64,
}

impl TraceWriter<BufWriter<File>> {
    /// A trace at `path`, created as [`output::create`] creates files.
    pub fn create(path: &Path, header: &Header, existing: Existing) -> Result<Self, OutputError> {
        let file = output::create(path, existing)?;
        let mut writer = Self::new(BufWriter::with_capacity(1 << 20, file), header)
            .map_err(|e| OutputError::Io(path.into(), e))?;
        // The header on disk at once: a recording killed before its first batch is still a
        // trace (cut off, no events), never an empty file.
        writer
            .flush()
            .map_err(|e| OutputError::Io(path.into(), e))?;
        Ok(writer)
    }

    /// Writes what is buffered and waits until the file's data is on its device, so that a
    /// crash of the kernel loses none of it.
    pub fn sync(&mut self) -> io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()
    }
}

impl<W: Write> TraceWriter<W> {
    pub fn new(mut out: W, header: &Header) -> io::Result<Self> {
        let json = serde_json::to_vec(header)?;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        let bytes = (MAGIC.len() + 6 + json.len()) as u64;
        Ok(Self {
            out,
            ctx: codec::Baseline::new(VERSION),
            tasks: HashMap::new(),
            stacks: HashSet::new(),
            buf: Vec::with_capacity(256),
            events: 0,
            bytes,
        })
    }

    /// Appends one event; `stack` symbolizes its stack id the first time the id is seen.
    pub fn event(&mut self, ev: &Event, stack: impl FnOnce(i32) -> Vec<String>) -> io::Result<()> {
        if ev.stack_id >= 0 && self.stacks.insert(ev.stack_id) {
            self.buf.push(TAG_STACK);
            codec::put_ivar(&mut self.buf, ev.stack_id.into());
            let frames = stack(ev.stack_id);
            codec::put_uvar(&mut self.buf, frames.len() as u64);
            for f in &frames {
                codec::put_bytes(&mut self.buf, f.as_bytes());
            }
        }
        let next = self.tasks.len() as u64;
        let task = *self.tasks.entry((ev.pid_tgid, ev.comm)).or_insert_with(|| {
            self.buf.push(TAG_TASK);
            codec::put_uvar(&mut self.buf, ev.pid_tgid);
            let len = ev
                .comm
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(ev.comm.len());
            codec::put_bytes(&mut self.buf, &ev.comm[..len]);
            next
        });
        self.ctx.encode(ev, task, &mut self.buf);
        self.events += 1;
        self.bytes += self.buf.len() as u64;
        codec::flush_frame(&mut self.out, &mut self.buf)
    }

    /// Pushes what is buffered to the file, so that a kill loses at most the batch in progress.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes written so far, header included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the footer (its event count is this writer's) and flushes.
    pub fn finish(mut self, mut footer: Footer) -> io::Result<W> {
        footer.events = self.events;
        self.buf.push(TAG_FOOTER);
        codec::put_bytes(&mut self.buf, &serde_json::to_vec(&footer)?);
        self.bytes += self.buf.len() as u64;
        codec::flush_frame(&mut self.out, &mut self.buf)?;
        self.out.flush()?;
        Ok(self.out)
    }
}
