//! `cargo xtask bench`: peel measured next to a peer tool in the same run, reported as ratios.
//!
//! Contract for a benchmark module (one file per area, e.g. `wire.rs`):
//! `pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>>`, registered in [`BENCHES`]. A benchmark
//! prepares its own inputs under `ctx.scratch`, runs peel and the peer `ctx.runs` times each with
//! [`measure`], and returns rows built from the medians. Traffic goes to loopback only, every loop
//! is bounded, and a missing peer tool is a skip with a reason (`Row::skipped`), not a failure.
//! Results are printed as a table and written to `target/bench/results.tsv`.

mod capture;
mod load;
mod process;
mod snap;
mod store;
mod wire;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

pub use process::{measure, Measured};

/// What a benchmark gets: where things are and how many repetitions to take medians over.
#[derive(Debug)]
pub struct Ctx {
    /// The `peel` binary under test (built by xtask in the dev profile, DuckDB optimized).
    pub peel: PathBuf,
    /// A scratch folder of this benchmark's own, emptied before it runs.
    pub scratch: PathBuf,
    /// Repetitions per measurement; report medians.
    pub runs: usize,
}

/// One comparison: a metric of peel next to the same metric of a peer.
#[derive(Debug, Clone)]
pub struct Row {
    pub bench: String,
    pub metric: String,
    pub unit: String,
    pub peel: f64,
    pub peer_name: String,
    pub peer: f64,
    /// Whether a larger value is better (throughput) or worse (time, memory).
    pub higher_is_better: bool,
    /// Set when the comparison could not be made (peer missing, no privilege).
    pub skipped: Option<String>,
}

impl Row {
    /// A comparison that could not run, with the reason.
    pub fn skipped(bench: &str, metric: &str, reason: impl Into<String>) -> Row {
        Row {
            bench: bench.to_owned(),
            metric: metric.to_owned(),
            unit: String::new(),
            peel: f64::NAN,
            peer_name: String::new(),
            peer: f64::NAN,
            higher_is_better: false,
            skipped: Some(reason.into()),
        }
    }

    /// How many times better peel is than the peer (>1 means peel wins).
    pub fn advantage(&self) -> f64 {
        if self.peel == self.peer {
            // Equal, including 0 vs 0 (no drops on either side): a tie, not NaN.
            return 1.0;
        }
        if self.higher_is_better {
            self.peel / self.peer
        } else {
            self.peer / self.peel
        }
    }
}

type BenchFn = fn(&Ctx) -> anyhow::Result<Vec<Row>>;

/// Every benchmark, by name.
const BENCHES: &[(&str, BenchFn)] = &[
    ("capture", capture::run),
    ("load", load::run),
    ("wire", wire::run),
    ("snap", snap::run),
    ("store", store::run),
];

/// Median of the samples (mean of the middle two for an even count).
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

pub fn run(names: &[String]) -> anyhow::Result<()> {
    let unknown: Vec<&String> =
        names.iter().filter(|n| !BENCHES.iter().any(|(b, _)| b == n)).collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = BENCHES.iter().map(|(n, _)| *n).collect();
        bail!("unknown benchmark(s) {unknown:?}; known: {known:?}");
    }
    if BENCHES.is_empty() {
        bail!("no benchmarks are registered yet (see xtask/src/bench/mod.rs)");
    }
    crate::run::cmd("cargo", ["build", "-p", "peel"])?;
    let peel = crate::built_peel()?;
    let target_dir = crate::target_dir();
    let mut rows = Vec::new();
    for (name, bench) in BENCHES {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        let scratch = target_dir.join("bench").join(name);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let ctx = Ctx { peel: peel.clone(), scratch, runs: 3 };
        eprintln!("bench: {name}");
        rows.extend(bench(&ctx).with_context(|| format!("benchmark {name}"))?);
    }
    let table = render(&rows);
    print!("{table}");
    let results = target_dir.join("bench").join("results.tsv");
    std::fs::write(&results, tsv(&rows))
        .with_context(|| format!("writing {}", results.display()))?;
    eprintln!("bench: results in {}", results.display());
    Ok(())
}

fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<34} {:>14} {:<18} {:>14} {:>9}",
        "bench", "metric", "peel", "peer", "peer value", "peel adv."
    );
    for row in rows {
        if let Some(reason) = &row.skipped {
            let _ = writeln!(out, "{:<10} {:<34} skipped: {reason}", row.bench, row.metric);
            continue;
        }
        let _ = writeln!(
            out,
            "{:<10} {:<34} {:>10.3} {:<3} {:<18} {:>10.3} {:<3} {:>8.2}x",
            row.bench,
            row.metric,
            row.peel,
            row.unit,
            row.peer_name,
            row.peer,
            row.unit,
            row.advantage()
        );
    }
    out
}

fn tsv(rows: &[Row]) -> String {
    let mut out =
        String::from("bench\tmetric\tunit\tpeel\tpeer\tpeer_value\tpeel_advantage\tskipped\n");
    for row in rows {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.bench,
            row.metric,
            row.unit,
            row.peel,
            row.peer_name,
            row.peer,
            row.advantage(),
            row.skipped.as_deref().unwrap_or("")
        );
    }
    out
}

/// Converts a duration to seconds as f64, for rows.
pub fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn advantage_follows_direction() {
        let mut row = Row::skipped("x", "y", "");
        row.skipped = None;
        row.peel = 2.0;
        row.peer = 8.0;
        assert_eq!(row.advantage(), 4.0, "time: smaller is better");
        row.higher_is_better = true;
        assert_eq!(row.advantage(), 0.25, "throughput: larger is better");
        row.peel = 0.0;
        row.peer = 0.0;
        assert_eq!(row.advantage(), 1.0, "0 drops vs 0 drops is a tie");
    }
}
