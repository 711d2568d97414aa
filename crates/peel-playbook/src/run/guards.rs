//! Stage guards: conditions a stage declares (`[[reproduce.guards]]`) that must hold while it runs,
//! so a playbook never becomes the next incident (chaostoolkit#196, k6's abortOnFail).
//!
//! Guards are checked before every step and, while a step runs, from its waiting loop: a `load`
//! step's progress (with the load's own figures so far), a foreground `exec`, a `wait`, a sampling
//! `snapshot`; background steps (servers, captures, samplers) run under those. A violation stops
//! the running step and the stage; cleanup then runs as after any failure. This module measures
//! and judges; stopping is the caller's job.

use std::path::Path;
use std::time::{Duration, Instant};

use peel_store::Store;

use super::{Event, Observer};
use crate::model::Guard;
use crate::threshold::trim_float;

/// Built-in guard metrics, measured without SQL (see docs/playbooks.md, "Guards").
pub(crate) const FREE_DISK: &str = "free_disk_pct";
pub(crate) const ERROR_RATE: &str = "rate_errors";
pub(crate) const ERRORS: &str = "errors";
pub(crate) const LISTEN_OVERFLOWS: &str = "listen_overflows";

/// `rate(errors)` is judged only once the load has this many requests: one failure among the
/// first two requests is not a 50% error rate.
const MIN_REQUESTS_FOR_RATE: u64 = 10;

/// What the running load step has seen so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoadSoFar {
    pub(crate) requests: u64,
    /// Requests without a complete response, and 5xx responses.
    pub(crate) errors: u64,
}

/// A guard that failed, with the numbers that made it fail.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GuardTrip {
    pub stage: String,
    /// The step that was running (or about to run) when it was checked.
    pub step: String,
    /// The guard as written, e.g. `rate(errors) < 10%`.
    pub guard: String,
    /// Where the guard is declared (file:line:column).
    pub location: String,
    pub metric: String,
    /// The measured value and the bound, in the metric's unit (`rate` as a fraction).
    pub value: f64,
    pub bound: f64,
    /// Where the value came from: `load so far: 240 requests, 130 errors`, `sql: ...`.
    pub source: String,
}

impl GuardTrip {
    /// `guard 'rate(errors) < 10%' (playbook.toml:12:1) failed during step 'load': rate_errors = 0.54 (bound 0.1; load so far: 240 requests, 130 errors)`.
    pub fn message(&self) -> String {
        format!(
            "guard '{}' ({}) failed during step '{}': {} = {} (bound {}; {})",
            self.guard,
            self.location,
            self.step,
            self.metric,
            trim_float(self.value),
            trim_float(self.bound),
            self.source
        )
    }
}

/// One guard and its state within the current stage.
#[derive(Debug)]
struct GuardState {
    guard: Guard,
    last: Option<Instant>,
    /// `listen_overflows` counts from the stage's start.
    baseline: Option<u64>,
}

/// The current stage's guards, what they can measure, and the first violation.
#[derive(Debug, Default)]
pub(crate) struct Guards {
    states: Vec<GuardState>,
    stage: String,
    /// The step being run, for messages.
    pub(crate) step: String,
    /// Set by a running load step, cleared when it ends.
    pub(crate) load: Option<LoadSoFar>,
    pub(crate) tripped: Option<GuardTrip>,
}

impl Guards {
    /// The guards of a stage that is starting (counter baselines are read now).
    pub(crate) fn for_stage(stage: &str, guards: &[Guard]) -> Guards {
        let states = guards
            .iter()
            .map(|guard| GuardState {
                guard: guard.clone(),
                last: None,
                baseline: (guard.sql.is_none() && guard.expect.metric_name() == LISTEN_OVERFLOWS)
                    .then(|| listen_overflows(Path::new("/proc")))
                    .flatten(),
            })
            .collect();
        Guards { states, stage: stage.to_string(), ..Guards::default() }
    }

    /// How often a waiting loop should call [`Guards::check`]: the shortest `every`.
    pub(crate) fn every(&self) -> Option<Duration> {
        self.states.iter().map(|s| s.guard.every).min()
    }

    /// Checks the guards that are due. Returns true when a guard has tripped (now or before); the
    /// first violation is reported to `observer` and kept in `tripped`.
    pub(crate) fn check(
        &mut self,
        store: &Store,
        run_dir: &Path,
        observer: &mut dyn Observer,
    ) -> bool {
        if self.tripped.is_some() {
            return true;
        }
        for state in &mut self.states {
            if state.last.is_some_and(|t| t.elapsed() < state.guard.every) {
                continue;
            }
            state.last = Some(Instant::now());
            let Some((value, source)) = measure(state, store, run_dir, self.load) else { continue };
            let threshold = &state.guard.expect;
            if threshold.holds(value) != Ok(false) {
                continue;
            }
            let trip = GuardTrip {
                stage: self.stage.clone(),
                step: self.step.clone(),
                guard: threshold.to_string(),
                location: state.guard.location.to_string(),
                metric: threshold.metric_name(),
                value,
                bound: threshold.bound_in_metric_unit().unwrap_or(f64::NAN),
                source,
            };
            observer.event(&Event::GuardTripped {
                stage: self.stage.clone(),
                message: trip.message(),
                trip: trip.clone(),
            });
            self.tripped = Some(trip);
            return true;
        }
        false
    }
}

/// The guard's metric now, and where it came from; `None` when it cannot be measured at this
/// moment (no load running, a query without a number), which is not a violation.
fn measure(
    state: &GuardState,
    store: &Store,
    run_dir: &Path,
    load: Option<LoadSoFar>,
) -> Option<(f64, String)> {
    let threshold = &state.guard.expect;
    if let Some(sql) = &state.guard.sql {
        let result = store.query(sql).ok()?;
        let value = super::steps::lookup(&result, &threshold.metric_name(), &threshold.column)?;
        return Some((value, format!("sql: {}", one_line(sql))));
    }
    let so_far = |load: LoadSoFar| {
        format!("load so far: {} requests, {} errors", load.requests, load.errors)
    };
    match threshold.metric_name().as_str() {
        FREE_DISK => {
            free_disk_pct(run_dir).map(|pct| (pct, format!("free space of {}", run_dir.display())))
        }
        ERROR_RATE => {
            let load = load.filter(|l| l.requests >= MIN_REQUESTS_FOR_RATE)?;
            Some((load.errors as f64 / load.requests as f64, so_far(load)))
        }
        ERRORS => load.map(|load| (load.errors as f64, so_far(load))),
        LISTEN_OVERFLOWS => {
            let baseline = state.baseline?;
            let now = listen_overflows(Path::new("/proc"))?;
            Some((
                now.saturating_sub(baseline) as f64,
                format!("TcpExt.ListenOverflows {baseline} at stage start, {now} now"),
            ))
        }
        _ => None,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Free space of the filesystem holding `path`, in percent.
fn free_disk_pct(path: &Path) -> Option<f64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    (stat.f_blocks > 0).then(|| stat.f_bavail as f64 * 100.0 / stat.f_blocks as f64)
}

/// `TcpExt.ListenOverflows`, through peel-snap's counter reader (the one netstat parser).
fn listen_overflows(proc_root: &Path) -> Option<u64> {
    let root = peel_snap::ProcRoot::new(proc_root);
    let value = peel_snap::read_counter(&root, "TcpExt.ListenOverflows").ok()??;
    u64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_metric_of_the_spec_is_measured() {
        let names: Vec<&str> = crate::spec::GUARD_METRICS.iter().map(|(name, ..)| *name).collect();
        assert_eq!(names, [FREE_DISK, ERROR_RATE, ERRORS, LISTEN_OVERFLOWS]);
    }

    /// Collects the guard events.
    #[derive(Debug, Default)]
    struct Events(Vec<String>);

    impl Observer for Events {
        fn event(&mut self, event: &Event) {
            if let Event::GuardTripped { message, .. } = event {
                self.0.push(message.clone());
            }
        }
        fn confirm(&mut self, _: &str) -> bool {
            false
        }
    }

    fn guard(expect: &str, sql: Option<&str>) -> Guard {
        Guard {
            location: crate::Location { file: "p.toml".into(), line: 3, column: 1 },
            expect: crate::threshold::Threshold::parse(expect).unwrap(),
            sql: sql.map(str::to_string),
            every: Duration::ZERO,
        }
    }

    #[test]
    fn error_rate_guard_judges_the_running_load_once_it_has_ten_requests() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&dir.path().join("run.duckdb"), peel_store::Access::ReadWrite).unwrap();
        let mut events = Events::default();
        let mut guards = Guards::for_stage("reproduce", &[guard("rate(errors) < 10%", None)]);
        guards.step = "load".into();
        // No load running: nothing to judge.
        assert!(!guards.check(&store, dir.path(), &mut events));
        // 5 of 5 failed, but too few requests to call it a rate.
        guards.load = Some(LoadSoFar { requests: 5, errors: 5 });
        assert!(!guards.check(&store, dir.path(), &mut events));
        guards.load = Some(LoadSoFar { requests: 20, errors: 1 });
        assert!(!guards.check(&store, dir.path(), &mut events));
        guards.load = Some(LoadSoFar { requests: 20, errors: 3 });
        assert!(guards.check(&store, dir.path(), &mut events));
        let trip = guards.tripped.clone().unwrap();
        assert_eq!((trip.metric.as_str(), trip.value, trip.bound), ("rate_errors", 0.15, 0.1));
        assert_eq!(
            events.0,
            ["guard 'rate(errors) < 10%' (p.toml:3:1) failed during step 'load': rate_errors = \
              0.15 (bound 0.1; load so far: 20 requests, 3 errors)"]
        );
        // Tripped stays tripped, and is reported once.
        guards.load = Some(LoadSoFar { requests: 40, errors: 0 });
        assert!(guards.check(&store, dir.path(), &mut events));
        assert_eq!(events.0.len(), 1);
    }

    #[test]
    fn sql_guard_reads_its_metric_from_the_run_database() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&dir.path().join("run.duckdb"), peel_store::Access::ReadWrite).unwrap();
        let mut events = Events::default();
        let sql = "SELECT 7 AS resets";
        let mut guards = Guards::for_stage("reproduce", &[guard("resets < 5", Some(sql))]);
        assert!(guards.check(&store, dir.path(), &mut events));
        let trip = guards.tripped.unwrap();
        assert_eq!((trip.value, trip.source.as_str()), (7.0, "sql: SELECT 7 AS resets"));
    }

    #[test]
    fn listen_overflows_from_netstat() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 12 14\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        let proc_with = |netstat: &str| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("net")).unwrap();
            std::fs::write(dir.path().join("net/netstat"), netstat).unwrap();
            dir
        };
        assert_eq!(listen_overflows(proc_with(text).path()), Some(12));
        assert_eq!(listen_overflows(proc_with("TcpExt: ListenDrops\nTcpExt: 3\n").path()), None);
        assert_eq!(listen_overflows(proc_with("TcpExt: ListenOverflows\n").path()), None);
    }

    #[test]
    fn trip_message_names_the_guard_and_its_numbers() {
        let trip = GuardTrip {
            stage: "reproduce".into(),
            step: "load".into(),
            guard: "rate(errors) < 10%".into(),
            location: "p.toml:12:1".into(),
            metric: "rate_errors".into(),
            value: 0.5416,
            bound: 0.1,
            source: "load so far: 240 requests, 130 errors".into(),
        };
        assert_eq!(
            trip.message(),
            "guard 'rate(errors) < 10%' (p.toml:12:1) failed during step 'load': rate_errors = 0.542 \
             (bound 0.1; load so far: 240 requests, 130 errors)"
        );
    }
}
