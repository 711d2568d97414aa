//! `peel compare`: two runs side by side on the same metrics, changes flagged only past floors.

use std::path::PathBuf;

use anyhow::Context;
use peel_playbook::compare::{compare_runs, Floors, MetricRow, StagePair};

use crate::exit::{Fail, Outcome};

/// Compare two runs (run folders or database files) metric by metric.
///
/// Metrics come from each run's v_run_metrics view (phase percentiles per endpoint, churn, load
/// latency per URL class, error rate, throughput, CPU peak). A change is flagged better/worse only
/// when it passes both the relative floor and the absolute floor.
///
/// Example: `peel compare runs/outage runs/after-fix --format md`
///
/// One run's two stages: `peel compare RUN RUN --stage-a reproduce --stage-b verify-fix`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The baseline run.
    run_a: PathBuf,
    /// The run compared with it.
    run_b: PathBuf,
    /// Relative floor in percent.
    #[arg(long, default_value_t = 10.0)]
    min_change_pct: f64,
    /// Absolute floor for time metrics, in microseconds.
    #[arg(long, default_value_t = 1000.0)]
    min_change_us: f64,
    /// Absolute floor for other metrics (per second, counts, percentages).
    #[arg(long, default_value_t = 1.0)]
    min_change: f64,
    /// Compare this stage of RUN_A (with --stage-b; default: equal stage names are paired).
    #[arg(long)]
    stage_a: Option<String>,
    /// Compare this stage of RUN_B.
    #[arg(long)]
    stage_b: Option<String>,
    /// Show only flagged rows.
    #[arg(long)]
    changed: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Md,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let floors = Floors {
        relative: args.min_change_pct / 100.0,
        absolute_us: args.min_change_us,
        absolute_other: args.min_change,
    };
    let stages = StagePair { a: args.stage_a.clone(), b: args.stage_b.clone() };
    if stages.a.is_some() != stages.b.is_some() {
        return Err(Fail::usage("--stage-a and --stage-b go together").into());
    }
    let mut comparison =
        compare_runs(&args.run_a, &args.run_b, floors, &stages).map_err(|err| match err {
            peel_playbook::run::RunError::Store(_) => {
                Fail::usage(err).hint("give two run folders (or their run.duckdb files)")
            }
            other => Fail::runtime(other),
        })?;
    if args.changed {
        comparison.rows.retain(|r| !r.flag.is_empty());
    }
    match args.format {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&comparison).context("rendering JSON")?)
        }
        Format::Table | Format::Md => print!(
            "{}",
            render(&comparison.rows, matches!(args.format, Format::Md), &comparison.sql)
        ),
    }
    Ok(Outcome::Success)
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(
        || "-".to_string(),
        |v| if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") },
    )
}

fn render(rows: &[MetricRow], markdown: bool, sql: &str) -> String {
    let header = ["stage", "endpoint", "metric", "A", "B", "change", "change%", "flag"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.stage.clone(),
                r.endpoint.clone(),
                r.metric.clone(),
                number(r.a),
                number(r.b),
                number(r.change),
                r.change_pct.map_or_else(|| "-".into(), |p| format!("{p:+.1}%")),
                r.flag.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    if markdown {
        out.push_str(&format!("| {} |\n|{}|\n", header.join(" | "), ["---"; 8].join("|")));
        for row in &cells {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out.push_str(&format!("\nSQL (each run): `{sql}`\n"));
        return out;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |values: Vec<&str>| -> String {
        let parts: Vec<String> = values
            .iter()
            .zip(&widths)
            .enumerate()
            .map(
                |(i, (v, w))| {
                    if (3..7).contains(&i) {
                        format!("{v:>w$}")
                    } else {
                        format!("{v:<w$}")
                    }
                },
            )
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    out.push_str(&line(header.to_vec()));
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
