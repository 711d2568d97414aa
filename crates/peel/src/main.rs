//! `peel`: the command-line edge. It parses arguments, calls the library crates and renders what they
//! return; anything worth testing lives in a library crate (docs/ARCHITECTURE.md).

#![allow(clippy::print_stdout, clippy::print_stderr)] // the binary is where peel prints

mod cmd;
mod exit;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::{Code, Outcome};

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("PEEL_GIT_REVISION"), ")");

/// Incident playbooks: reproduce, analyze and verify a fix.
///
/// Exit codes: 0 success/verified, 1 verification failed, 2 usage or input error,
/// 3 runtime or environment error (for example a missing privilege).
#[derive(Debug, Parser)]
#[command(name = "peel", version = VERSION, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Analyze(cmd::analyze::Args),
    Archive(cmd::archive::Args),
    Capture(cmd::capture::Args),
    Completions(cmd::completions::Args),
    Snap(cmd::snap::Args),
    Sql(cmd::sql::Args),
    Sysctl(cmd::sysctl::Args),
    Lab(cmd::lab::Args),
    Load(cmd::load::Args),
    Validate(cmd::validate::Args),
    Plan(cmd::plan::Args),
    Run(cmd::run::Args),
    Recover(cmd::recover::Args),
    Compare(cmd::compare::Args),
    Findings(cmd::findings::Args),
}

fn dispatch(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Archive(args) => cmd::archive::run(args),
        Command::Capture(args) => cmd::capture::run(args),
        Command::Completions(args) => cmd::completions::run(args),
        Command::Snap(args) => cmd::snap::run(args),
        Command::Sql(args) => cmd::sql::run(args),
        Command::Sysctl(args) => cmd::sysctl::run(args),
        Command::Lab(args) => cmd::lab::run(args),
        Command::Load(args) => cmd::load::run(args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Recover(args) => cmd::recover::run(args),
        Command::Compare(args) => cmd::compare::run(args),
        Command::Findings(args) => cmd::findings::run(args),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap renders help/version (exit 0) and usage errors; its usage errors become exit 2.
            let _ = err.print();
            return if err.use_stderr() { Code::Usage.into() } else { Code::Success.into() };
        }
    };
    match dispatch(cli.command) {
        Ok(outcome) => Code::from(outcome).into(),
        Err(err) if exit::is_broken_pipe(&err) => Code::Success.into(),
        Err(err) => {
            let (code, message, hint) = exit::classify(&err);
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {message}");
            if let Some(hint) = hint {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            code.into()
        }
    }
}
