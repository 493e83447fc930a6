//! The refwatch command line.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Behave like other command-line tools when output goes to `head`: exit quietly.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    cli::run()
}
