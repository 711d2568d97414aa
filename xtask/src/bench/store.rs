//! peel-store ingest: 10 million connection rows through the Appender (records in memory into a
//! new database file) next to DuckDB's own `read_csv` loading the same rows from a CSV file into the
//! same table, both ending with a closed (checkpointed) database. Target: Appender >= CSV path.
//!
//! The worker is peel-store's `ingest_bench` example (built in the same target directory as peel,
//! so DuckDB is compiled once); each timed run is its own process.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use super::{measure, median, Ctx, Row};

/// Rows per run (the figure).
const ROWS: u64 = 10_000_000;

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    crate::run::cmd("cargo", ["build", "-p", "peel-store", "--example", "ingest_bench"])?;
    let worker = ctx
        .peel
        .parent()
        .map(|debug| debug.join("examples").join("ingest_bench"))
        .context("peel has no parent folder")?;
    if !worker.is_file() {
        bail!("built ingest_bench but cannot find it at {}", worker.display());
    }
    let csv = ctx.scratch.join("connections.csv");
    let rows = ROWS.to_string();
    run_worker(&worker, &["write-csv", &rows, path(&csv)?])?;

    let mut appender_s = Vec::new();
    let mut csv_s = Vec::new();
    for attempt in 0..ctx.runs {
        let db = ctx.scratch.join(format!("appender-{attempt}.duckdb"));
        let measured = measure(Command::new(&worker).args(["appender", &rows, path(&db)?]))?;
        appender_s.push(measured.wall.as_secs_f64());
        let db = ctx.scratch.join(format!("csv-{attempt}.duckdb"));
        let measured = measure(Command::new(&worker).args(["read-csv", path(&csv)?, path(&db)?]))?;
        csv_s.push(measured.wall.as_secs_f64());
        for name in [format!("appender-{attempt}.duckdb"), format!("csv-{attempt}.duckdb")] {
            let _ = std::fs::remove_file(ctx.scratch.join(name));
        }
    }
    let appender_rate = ROWS as f64 / median(&mut appender_s);
    let csv_rate = ROWS as f64 / median(&mut csv_s);
    let _ = std::fs::remove_file(&csv);
    Ok(vec![Row {
        bench: "store".to_owned(),
        metric: "ingest 10M connection rows".to_owned(),
        unit: "rows/s".to_owned(),
        peel: appender_rate,
        peer_name: "duckdb read_csv".to_owned(),
        peer: csv_rate,
        higher_is_better: true,
        skipped: None,
    }])
}

fn run_worker(worker: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(worker)
        .args(args)
        .status()
        .with_context(|| format!("starting {}", worker.display()))?;
    if !status.success() {
        bail!("{} {args:?} failed ({status})", worker.display());
    }
    Ok(())
}

fn path(path: &Path) -> anyhow::Result<&str> {
    path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))
}
