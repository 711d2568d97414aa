//! `peel plan`: what a playbook would do, in order, with every variable resolved. Touches nothing.

use std::path::PathBuf;

use anyhow::Context;
use peel_playbook::{LoadError, Plan};

use crate::exit::{Fail, Outcome};

/// Print what a playbook would run, in order, with resolved variables; runs nothing.
///
/// Example: `peel plan playbooks/lab-db-churn.toml --set url=http://10.0.0.5:8000`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The playbook.
    file: PathBuf,
    /// Override a variable (repeatable): --set name=value.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = super::validate::parse_set)]
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

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let plan = load_plan(&args.file, &args.set)?;
    match args.format {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&plan).context("rendering JSON")?)
        }
        Format::Table => print!("{}", render(&plan)),
    }
    Ok(Outcome::Success)
}

/// Loads a playbook; invalid playbooks become a usage error (exit 2) with every diagnostic.
pub fn load_plan(file: &std::path::Path, set: &[(String, String)]) -> anyhow::Result<Plan> {
    peel_playbook::load(file, set).map_err(|err| match err {
        LoadError::Invalid { diagnostics, path } => {
            eprintln!("{diagnostics}");
            Fail::usage(format!("{} is invalid ({} error(s))", path.display(), diagnostics.len()))
                .hint(format!("run `peel validate {}`", path.display()))
                .into()
        }
        err @ LoadError::Io { .. } => anyhow::Error::new(Fail::usage(err)),
    })
}

/// The plan as aligned text.
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    out.push_str(&format!("playbook {}", plan.meta.name));
    if !plan.meta.description.is_empty() {
        out.push_str(&format!(": {}", plan.meta.description));
    }
    out.push('\n');
    if !plan.vars.is_empty() {
        out.push_str("\nvariables\n");
        let width = plan.vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
        for var in &plan.vars {
            let origin = if var.overridden { "  (--set)" } else { "" };
            out.push_str(&format!("  {:width$}  {}{origin}\n", var.name, var.value));
        }
    }
    for stage in &plan.stages {
        out.push_str(&format!("\nstage {}\n", stage.instance));
        for guard in &stage.guards {
            out.push_str(&format!(
                "  guard  {} (every {})\n",
                guard.expect,
                humantime_secs(guard.every)
            ));
        }
        let width = stage.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for (i, step) in stage.steps.iter().enumerate() {
            out.push_str(&format!(
                "  {:>2}. {:8} {:width$}  {}\n",
                i + 1,
                step.kind().as_str(),
                step.name,
                step.action.summary()
            ));
        }
        if stage.steps.is_empty() {
            out.push_str("  (no steps)\n");
        }
    }
    out
}

fn humantime_secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
