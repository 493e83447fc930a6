//! `refwatch generate DIR` (hidden): the man pages and shell completions, made from the
//! command-line definitions themselves so that they never drift (`cargo xtask dist`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Args)]
pub struct GenerateArgs {
    /// Directory to write into: refwatch.1 and a page per subcommand, refwatch.bash,
    /// _refwatch (zsh) and refwatch.fish.
    dir: PathBuf,
}

pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    let what = || format!("writing into {}", args.dir.display());
    let mut cmd = super::Cli::command();
    clap_mangen::generate_to(cmd.clone(), &args.dir).with_context(what)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "refwatch", &args.dir).with_context(what)?;
    }
    Ok(ExitCode::SUCCESS)
}
