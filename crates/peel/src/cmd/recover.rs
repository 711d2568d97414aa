//! `peel recover`: finishes the cleanup of a run that was killed before it could clean up.

use std::path::PathBuf;

use crate::exit::{Fail, Outcome};

/// Finish the cleanup of an interrupted run from its journal.
///
/// Stops background processes the run left behind (checked by pid and start time, so a recycled
/// pid is never touched), runs pending undo commands and restores sysctls, last registered first.
///
/// Example: `peel recover runs/lab-db-churn-20261125T031500Z`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run folder.
    run_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let report = peel_playbook::run::recover(&args.run_dir).map_err(|err| match err {
        peel_playbook::run::RunError::NotARunDir { .. } => Fail::usage(err),
        other => Fail::runtime(other),
    })?;
    if report.cleanup.is_empty() {
        let state = if report.run_finished { "finished normally" } else { "did not finish" };
        println!("nothing to clean up: the run {state} and every cleanup is done");
        return Ok(Outcome::Success);
    }
    let mut failed = 0;
    for c in &report.cleanup {
        println!("{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.description, c.message);
        failed += usize::from(!c.ok);
    }
    if failed > 0 {
        return Err(Fail::runtime(format!("{failed} cleanup action(s) failed"))
            .hint("fix the cause shown above and run `peel recover` again: failed actions are retried")
            .into());
    }
    Ok(Outcome::Success)
}
