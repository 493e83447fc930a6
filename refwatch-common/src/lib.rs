//! What refwatch's eBPF programs and userspace share: event ABI, globals, catalog, model.
#![no_std]

pub mod catalog;
pub mod event;
pub mod globals;
pub mod model;
pub mod startup;
pub mod version;

pub use catalog::{Arg, At, CATALOG, Probe, Refs, Site};
pub use event::{Event, EventKind};
pub use model::{Era, RefModel};
pub use version::KernelVersion;
