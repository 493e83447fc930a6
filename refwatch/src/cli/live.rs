//! `refwatch live` (and bare `refwatch`): tables refreshed in place about once a second;
//! `q` or Ctrl-C quits with a final summary. Without a terminal, plain tables every few seconds.

use std::{
    collections::VecDeque,
    io::IsTerminal,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;
use refwatch::{
    capture::{self, Sink},
    session::Session,
};
use refwatch_common::Event;

use super::{RunArgs, attach};

#[derive(Args)]
pub struct LiveArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// Findings shown under the tables.
const LATEST: usize = 3;

/// Rates are averaged over this long: events arrive in bursts (a ring buffer read per wakeup),
/// and a slow guest can go a whole tick between two of them.
const RATE_WINDOW: Duration = Duration::from_secs(5);

struct Live {
    inner: attach::Aggregate,
    tty: bool,
    keys: Option<RawStdin>,
    /// (when, events, dropped) at the ticks of the last [`RATE_WINDOW`], oldest first.
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Sink for Live {
    fn events(&mut self, session: &mut Session, events: &[Event]) -> Result<bool> {
        self.inner.events(session, events)
    }

    fn tick(&mut self, session: &mut Session) -> Result<bool> {
        let s = self.inner.summary(session);
        let now = (Instant::now(), s.events, s.dropped.unwrap_or(0));
        while self.samples.len() > 1 && self.samples[1].0 + RATE_WINDOW <= now.0 {
            self.samples.pop_front();
        }
        // Never empty: seeded at the start.
        let (then, events, dropped) = self.samples[0];
        let secs = now.0.duration_since(then).as_secs_f64().max(1e-3);
        let rates = format!(
            "{:.0} events/s, {:.0} drops/s (last {:.0} s), {} live pages tracked",
            (now.1 - events) as f64 / secs,
            (now.2 - dropped) as f64 / secs,
            secs,
            self.inner.agg.live_pages(),
        );
        self.samples.push_back(now);
        if self.tty {
            // Home and clear: redraw in place.
            print!(
                "\x1b[H\x1b[2J{rates}   (q quits)\n{}",
                s.render(LATEST).replace('\n', "\r\n")
            );
        } else {
            println!("{rates}\n{}", s.render(LATEST));
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        Ok(!self.keys.as_ref().is_some_and(RawStdin::quit_pressed))
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(if self.tty { 1 } else { 5 }))
    }
}

/// Stdin without line buffering or echo, restored on drop. Ctrl-C still raises SIGINT.
struct RawStdin(libc::termios);

impl RawStdin {
    fn new() -> Option<Self> {
        // SAFETY: plain termios calls on fd 0 with a zeroed, then filled, struct.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if !std::io::stdin().is_terminal() || libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO);
            raw.c_cc[libc::VMIN] = 0;
            raw.c_cc[libc::VTIME] = 0;
            (libc::tcsetattr(0, libc::TCSANOW, &raw) == 0).then_some(Self(saved))
        }
    }

    fn quit_pressed(&self) -> bool {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a local buffer; VMIN=0 makes it non-blocking.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        n > 0 && buf[..n as usize].iter().any(|&b| b == b'q' || b == b'Q')
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        // SAFETY: restores the settings saved in new().
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

pub fn run(args: LiveArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (mut session, _) = attach::open(&args.run)?;
        let tty = std::io::stdout().is_terminal();
        let mut live = Live {
            inner: attach::Aggregate::new(&session, &args.run),
            tty,
            keys: if tty { RawStdin::new() } else { None },
            samples: VecDeque::from([(Instant::now(), 0, 0)]),
        };
        capture::capture(&mut session, &args.run.stop_when(), &mut live).await?;
        drop(live.keys.take());
        let s = live.inner.summary(&mut session);
        println!("\n{}", s.render(usize::MAX));
        Ok(ExitCode::SUCCESS)
    })
}
