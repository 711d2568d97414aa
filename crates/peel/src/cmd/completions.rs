//! `peel completions`: shell completion scripts generated from the clap definition.

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
    clap_complete::generate(args.shell, &mut command, "peel", &mut std::io::stdout());
    Ok(Outcome::Success)
}
