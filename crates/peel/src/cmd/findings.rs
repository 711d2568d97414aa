//! `peel findings`: ranks what a run measured into findings (peel-findings) and prints them as an
//! aligned table, JSON or Markdown. Each finding carries its evidence, the SQL that reproduces it and
//! the next step; rules that lacked data say so.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use peel_findings::{Diagnosis, FindingsError};
use peel_store::{Access, Scope, Store, StoreError};

use crate::exit::{Fail, Outcome};

/// Rank what a run measured into findings, each with its evidence, SQL and next step.
///
/// Every rule (docs/findings.md) runs over each stage of the run on its own; findings are ranked by
/// severity, then impact. A rule whose data is missing says "cannot decide" and what is missing.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    peel findings run.duckdb\n  \
    peel findings run.duckdb --run 20261125-0300 --stage reproduce --format md\n  \
    peel findings run.duckdb --format json | jq '.[].findings[].id'\n  \
    peel findings run.duckdb --save")]
pub struct Args {
    /// The run database (from `peel analyze --db`, `peel snap --db`, `peel load --db` or a playbook).
    pub db: PathBuf,
    /// The run to diagnose; may be left out when the database holds a single run.
    #[arg(long)]
    pub run: Option<String>,
    /// Diagnose only this stage (default: every stage of the run, each on its own).
    #[arg(long)]
    pub stage: Option<String>,
    /// Output format. JSON is a list of diagnoses, one per stage, with stable field names.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Also store the findings in the database's `findings` table (replacing earlier ones).
    #[arg(long)]
    pub save: bool,
}

/// How findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Md,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let access = if args.save { Access::ReadWrite } else { Access::ReadOnly };
    if !args.db.exists() {
        return Err(Fail::usage(format!("database {} does not exist", args.db.display()))
            .hint(
                "write one with `peel analyze FILE --db DB`, `peel snap --db DB` or a playbook run",
            )
            .into());
    }
    let store = Store::open(&args.db, access).map_err(|err| match err {
        StoreError::NotPeel { .. }
        | StoreError::NotFound { .. }
        | StoreError::SchemaTooNew { .. } => anyhow::Error::new(Fail::usage(err)),
        other => anyhow::Error::new(other).context(format!("opening {}", args.db.display())),
    })?;
    let run_id = match &args.run {
        Some(run) => run.clone(),
        None => peel_findings::only_run(&store).map_err(usage_for_runs)?,
    };
    let diagnoses = match &args.stage {
        Some(stage) => {
            let stages = peel_findings::stages(&store, &run_id)?;
            if !stages.contains(stage) {
                let known = if stages.is_empty() { "none".to_string() } else { stages.join(", ") };
                return Err(Fail::usage(format!("run {run_id} has no data for stage '{stage}'"))
                    .hint(format!("stages of this run: {known}"))
                    .into());
            }
            vec![peel_findings::diagnose(&store, &run_id, stage)?]
        }
        None => peel_findings::diagnose_run(&store, &run_id).map_err(usage_for_runs)?,
    };
    if args.save {
        save(&store, &run_id, &diagnoses)?;
        store.close().with_context(|| format!("closing {}", args.db.display()))?;
    }
    let text = match args.format {
        Format::Table => peel_findings::render::table(&diagnoses),
        Format::Md => peel_findings::render::markdown(&diagnoses),
        Format::Json => {
            let mut json =
                serde_json::to_string_pretty(&diagnoses).context("encoding findings as JSON")?;
            json.push('\n');
            json
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).context("writing to stdout")?;
    Ok(Outcome::Success)
}

/// Stores the findings under the run's (first) host.
fn save(store: &Store, run_id: &str, diagnoses: &[Diagnosis]) -> anyhow::Result<()> {
    let host = store
        .runs_and_hosts()?
        .into_iter()
        .find(|(run, _)| run == run_id)
        .map(|(_, host)| host)
        .unwrap_or_default();
    peel_findings::save(store, &Scope::new(run_id, host), diagnoses)?;
    Ok(())
}

/// A missing or ambiguous run is the user's to fix (exit 2), with the runs to choose from.
fn usage_for_runs(err: FindingsError) -> anyhow::Error {
    match &err {
        FindingsError::UnknownRun { known, .. } | FindingsError::SeveralRuns { runs: known } => {
            let hint = format!("pass --run with one of: {known}");
            anyhow::Error::new(Fail::usage(err).hint(hint))
        }
        FindingsError::NoRuns => anyhow::Error::new(Fail::usage(err).hint(
            "the database is empty: record data with `peel analyze --db`, `peel snap --db` or `peel load --db`",
        )),
        _ => anyhow::Error::new(err),
    }
}
