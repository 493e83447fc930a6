//! What refwatch's eBPF programs and its userspace agree on: the event record that crosses the
//! ring buffer, the names of the globals the loader fills in, and the probe catalog.
#![no_std]

pub mod catalog;
pub mod event;
pub mod globals;

pub use catalog::{Arg, At, CATALOG, Era, Probe, RefModel, Refs};
pub use event::{Event, EventKind};
