//! What refwatch's eBPF programs and its userspace agree on: the event record that crosses the
//! ring buffer, the names of the globals the loader fills in, the probe catalog and the
//! refcount model.
#![no_std]

pub mod catalog;
pub mod event;
pub mod globals;
pub mod model;
pub mod version;

pub use catalog::{Arg, At, CATALOG, Probe, Refs, Site};
pub use event::{Event, EventKind};
pub use model::{Era, RefModel};
pub use version::KernelVersion;
