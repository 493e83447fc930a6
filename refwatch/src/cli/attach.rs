//! Opening a session for the commands that watch the running kernel, and a sink that feeds
//! the aggregator.

use anyhow::Result;
use refwatch::{
    aggregate::{Aggregator, Context},
    capture::Sink,
    session::{Kernel, Session, SessionOptions},
    summary::Summary,
};
use refwatch_common::{Event, globals::Layout};

use super::RunArgs;

/// Loads and attaches (inside a tokio runtime); also returns the struct layout for traces.
pub fn open(args: &RunArgs) -> Result<(Session, Option<Layout>)> {
    let kernel = Kernel::inspect()?;
    let layout = kernel.facts.layout.clone().ok();
    let session = Session::open(kernel, &SessionOptions {
        attach: args.attach,
        skip: args.skip.clone(),
        with: args.with.clone(),
        ring_bytes: args.ring_kib * 1024,
    })?;
    Ok((session, layout))
}

/// Feeds every event to the aggregator.
pub struct Aggregate {
    pub agg: Aggregator,
}

impl Aggregate {
    pub fn new(session: &Session) -> Self {
        Self { agg: Aggregator::new(Context::from_plan(&session.plan)) }
    }

    pub fn summary(&self, session: &mut Session) -> Summary {
        let (dropped, calls) = (session.dropped(), session.calls());
        Summary::build(&self.agg, &session.plan.clone(), Some(dropped), calls, |id| session.stack(id).to_vec())
    }
}

impl Sink for Aggregate {
    fn events(&mut self, _session: &mut Session, events: &[Event]) -> Result<bool> {
        for ev in events {
            self.agg.observe(ev);
        }
        Ok(true)
    }
}
