//! `-o FILE` / `--output FILE` (bpftrace's habit): refwatch's own output goes to FILE, while
//! the output of a command run after `--` stays on the terminal.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Result;
use clap::Args;
use refwatch::output::{self, Existing};

#[derive(Args)]
pub struct OutputArgs {
    /// Write refwatch's output to FILE instead of stdout (never through a symbolic link); the
    /// output of the command after `--` stays on the terminal.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite the files refwatch writes (-o, --junit) if they exist.
    #[arg(long)]
    pub force: bool,
}

impl OutputArgs {
    pub fn existing(&self) -> Existing {
        Existing::forced(self.force)
    }

    /// Refuses, before any work, a path that [`Self::open`] would refuse; also `extra` paths
    /// written with the same `--force`.
    pub fn check(&self, extra: &[&Path]) -> Result<()> {
        for path in self
            .output
            .as_deref()
            .into_iter()
            .chain(extra.iter().copied())
        {
            output::check(path, self.existing())?;
        }
        Ok(())
    }

    /// The output file, or stdout.
    pub fn open(&self) -> Result<Box<dyn Write>> {
        Ok(match &self.output {
            Some(path) => Box::new(output::create(path, self.existing())?),
            None => Box::new(std::io::stdout()),
        })
    }
}
