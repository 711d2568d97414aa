//! `peel compare RUN_A RUN_B`: the same metrics of two runs side by side, per stage and endpoint,
//! with a change flagged only when it passes both a relative and an absolute floor (k6#1843: a
//! 40% change of a 20 µs handshake is noise, and so is a 0.5% change of anything).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peel_store::{Access, Store};

use crate::run::{RunError, DB_FILE};

/// Floors a change must pass to be flagged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floors {
    /// Relative change, as a fraction (0.10 = 10%).
    pub relative: f64,
    /// Absolute change for time metrics (`*_us`), in microseconds.
    pub absolute_us: f64,
    /// Absolute change for rates, counts and percentages.
    pub absolute_other: f64,
}

impl Default for Floors {
    fn default() -> Self {
        Floors { relative: 0.10, absolute_us: 1000.0, absolute_other: 1.0 }
    }
}

/// One metric of both runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricRow {
    pub stage: String,
    pub endpoint: String,
    pub metric: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub change: Option<f64>,
    pub change_pct: Option<f64>,
    /// `better`, `worse`, or `` when under the floors (or missing on one side).
    pub flag: String,
}

/// Both runs' metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunComparison {
    pub run_a: PathBuf,
    pub run_b: PathBuf,
    pub rows: Vec<MetricRow>,
    /// The SQL each side was read with.
    pub sql: String,
}

const METRICS_SQL: &str =
    "SELECT stage, endpoint, metric, value FROM v_run_metrics WHERE value IS NOT NULL";

/// Which stage of each run to compare; `None` pairs equal stage names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagePair {
    pub a: Option<String>,
    pub b: Option<String>,
}

/// Reads `v_run_metrics` of two run folders (or database files) and flags changes over the floors.
/// With a [`StagePair`], stage `a` of the first run is matched with stage `b` of the second (the
/// same run may be given twice: `reproduce` against `verify-fix`).
pub fn compare_runs(
    a: &Path,
    b: &Path,
    floors: Floors,
    stages: &StagePair,
) -> Result<RunComparison, RunError> {
    let metrics_a = select_stage(read_metrics(a)?, stages.a.as_deref(), stages);
    let metrics_b = select_stage(read_metrics(b)?, stages.b.as_deref(), stages);
    let mut keys: Vec<&(String, String, String)> =
        metrics_a.keys().chain(metrics_b.keys()).collect();
    keys.sort();
    keys.dedup();
    let rows = keys
        .into_iter()
        .map(|key| {
            let (va, vb) = (metrics_a.get(key).copied(), metrics_b.get(key).copied());
            let change = va.zip(vb).map(|(x, y)| y - x);
            let change_pct =
                va.zip(vb).and_then(|(x, y)| (x != 0.0).then(|| 100.0 * (y - x) / x.abs()));
            let flag = match (change, change_pct) {
                (Some(change), Some(pct)) if passes_floors(&key.2, change, pct, floors) => {
                    direction(&key.2, change).to_string()
                }
                _ => String::new(),
            };
            MetricRow {
                stage: key.0.clone(),
                endpoint: key.1.clone(),
                metric: key.2.clone(),
                a: va,
                b: vb,
                change,
                change_pct,
                flag,
            }
        })
        .collect();
    Ok(RunComparison {
        run_a: a.to_path_buf(),
        run_b: b.to_path_buf(),
        rows,
        sql: METRICS_SQL.to_string(),
    })
}

type Metrics = BTreeMap<(String, String, String), f64>;

/// Keeps one stage and relabels it `a->b`, so rows of two different stages line up.
fn select_stage(metrics: Metrics, stage: Option<&str>, pair: &StagePair) -> Metrics {
    let Some(stage) = stage else { return metrics };
    let label =
        format!("{}->{}", pair.a.as_deref().unwrap_or("*"), pair.b.as_deref().unwrap_or("*"));
    metrics
        .into_iter()
        .filter(|((s, _, _), _)| s == stage)
        .map(|((_, endpoint, metric), value)| ((label.clone(), endpoint, metric), value))
        .collect()
}

fn passes_floors(metric: &str, change: f64, change_pct: f64, floors: Floors) -> bool {
    let absolute = if metric.ends_with("_us") { floors.absolute_us } else { floors.absolute_other };
    change.abs() >= absolute && change_pct.abs() >= floors.relative * 100.0
}

/// `better`, `worse`, or `changed` for metrics that have no better direction: a pooled
/// connection's lifetime and idle time grow by design.
fn direction(metric: &str, change: f64) -> &'static str {
    if metric.contains("_idle_") || metric.contains("_lifetime_") {
        return "changed";
    }
    if lower_is_better(metric) == (change < 0.0) {
        "better"
    } else {
        "worse"
    }
}

/// Latency, churn, errors and CPU are better lower; throughput and reuse better higher.
pub fn lower_is_better(metric: &str) -> bool {
    !(metric == "requests_per_s" || metric == "requests_per_conn")
}

fn read_metrics(path: &Path) -> Result<Metrics, RunError> {
    let db = if path.is_dir() { path.join(DB_FILE) } else { path.to_path_buf() };
    let store = Store::open(&db, Access::ReadOnly)?;
    let result = store.query(METRICS_SQL)?;
    let mut metrics = BTreeMap::new();
    for row in &result.rows {
        let text = |i: usize| {
            row.get(i)
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string))
                .unwrap_or_default()
        };
        if let Some(value) = row.get(3).and_then(|c| c.as_f64()) {
            metrics.insert((text(0), text(1), text(2)), value);
        }
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_floors_must_pass() {
        let floors = Floors::default();
        // 40% of 20 µs is under the absolute floor.
        assert!(!passes_floors("p99_handshake_us", 8.0, 40.0, floors));
        // 2 ms but only 1%: under the relative floor.
        assert!(!passes_floors("latency_p99_us", 2000.0, 1.0, floors));
        assert!(passes_floors("latency_p99_us", -20_000.0, -60.0, floors));
        assert!(passes_floors("new_conn_per_s", -150.0, -95.0, floors));
    }
}
