//! refwatch's reusable core: kernel facts, probe plan, loader and event decoding. The CLI in
//! main.rs is a thin layer over it.

pub mod aggregate;
pub mod announce;
pub mod btf;
pub mod capture;
pub mod escape;
pub mod event;
pub mod facts;
pub mod junit;
pub mod kallsyms;
pub mod mechanisms;
pub mod output;
pub mod page_story;
pub mod perfetto;
pub mod phases;
pub mod plan;
pub mod privileges;
pub mod session;
pub mod summary;
pub mod trace;
pub mod verdict;
pub mod watch_slots;
