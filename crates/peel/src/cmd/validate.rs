//! `peel validate`: every error in a playbook at once, each with file:line:column.

use std::path::PathBuf;

use anyhow::Context;
use peel_playbook::LoadError;

use crate::exit::{Fail, Outcome};

/// Check playbooks without running anything.
///
/// Reports every problem at once, each as FILE:LINE:COLUMN with what was expected and a
/// did-you-mean suggestion where one fits. Variables are checked with their defaults, or with the
/// values given by --set.
///
/// Example: `peel validate playbooks/lab-db-churn.toml --set rate=400`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Playbook files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Override a variable (repeatable): --set name=value.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// clap value parser for `--set name=value`.
pub fn parse_set(text: &str) -> Result<(String, String), String> {
    peel_playbook::parse_override(text).ok_or_else(|| format!("'{text}' is not NAME=VALUE"))
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut invalid = 0;
    let mut json = Vec::new();
    for file in &args.files {
        match peel_playbook::load(file, &args.set) {
            Ok(plan) => {
                let steps: usize = plan.stages.iter().map(|s| s.steps.len()).sum();
                match args.format {
                    Format::Table => println!(
                        "ok: {} ({} stage runs, {steps} steps)",
                        file.display(),
                        plan.stages.len()
                    ),
                    Format::Json => {
                        json.push(serde_json::json!({"file": file, "ok": true, "errors": []}))
                    }
                }
            }
            Err(LoadError::Invalid { diagnostics, .. }) => {
                invalid += 1;
                match args.format {
                    Format::Table => eprintln!("{diagnostics}"),
                    Format::Json => json.push(
                        serde_json::json!({"file": file, "ok": false, "errors": diagnostics}),
                    ),
                }
            }
            Err(err @ LoadError::Io { .. }) => return Err(Fail::usage(err).into()),
        }
    }
    if let Format::Json = args.format {
        println!("{}", serde_json::to_string_pretty(&json).context("rendering JSON")?);
    }
    if invalid > 0 {
        let what = if invalid == 1 { "playbook is" } else { "playbooks are" };
        return Err(Fail::usage(format!("{invalid} {what} invalid"))
            .hint("fix the errors above; run `peel validate FILE` again")
            .into());
    }
    Ok(Outcome::Success)
}
