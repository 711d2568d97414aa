//! `peel completions`: shell completion scripts generated from the clap definition.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::exit::Outcome;

/// Print a completion script for your shell.
///
/// Example: `peel completions bash > /etc/bash_completion.d/peel`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to generate for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut command = crate::Cli::command();
    // clap_complete panics on a write error, so render into memory and write with error handling
    // (a closed pipe is then an ordinary error that main treats as such).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "peel", &mut script);
    std::io::stdout().lock().write_all(&script).context("writing the completion script")?;
    Ok(Outcome::Success)
}
