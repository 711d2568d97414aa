//! What each step kind does when it runs. Every kind calls its crate's library (peel-load,
//! peel-snap, peel-capture, peel-wire, peel-store, peel-findings); nothing here re-implements them.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peel_store::{CommandRecord, QueryResult, Store};

use super::checks::{self, CheckResult, Comparison};
use super::guards::LoadSoFar;
use super::journal::CleanupAction;
use super::process::{self, Waited};
use super::{now_ns, Ctx, Event, StepStatus};
use crate::model::*;

/// What a step produced.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) status: StepStatus,
    pub(crate) message: String,
    pub(crate) checks: Vec<CheckResult>,
    pub(crate) outputs: serde_json::Value,
}

impl Done {
    fn passed(message: impl Into<String>) -> Done {
        Done {
            status: StepStatus::Passed,
            message: message.into(),
            checks: Vec::new(),
            outputs: serde_json::Value::Null,
        }
    }

    pub(crate) fn error(message: String) -> Done {
        Done {
            status: StepStatus::Error,
            message,
            checks: Vec::new(),
            outputs: serde_json::Value::Null,
        }
    }

    pub(crate) fn skipped(message: String) -> Done {
        Done {
            status: StepStatus::Skipped,
            message,
            checks: Vec::new(),
            outputs: serde_json::Value::Null,
        }
    }

    fn interrupted(message: impl Into<String>) -> Done {
        Done {
            status: StepStatus::Interrupted,
            message: message.into(),
            checks: Vec::new(),
            outputs: serde_json::Value::Null,
        }
    }

    fn with_outputs(mut self, outputs: serde_json::Value) -> Done {
        self.outputs = outputs;
        self
    }
}

/// How long a step is expected to take, for progress bars.
pub(crate) fn expected_duration(action: &Action) -> Option<Duration> {
    match action {
        Action::Load(load) => Some(load.duration),
        Action::Wait(WaitStep::For(d)) => Some(*d),
        Action::Snapshot(SnapshotStep { every: Some(_), for_: Some(d), .. }) => Some(*d),
        _ => None,
    }
}

pub(crate) fn execute(
    ctx: &mut Ctx<'_>,
    step_id: i64,
    stage: &Stage,
    step: &Step,
) -> Result<Done, String> {
    match &step.action {
        Action::Exec(exec) => run_exec(ctx, step_id, stage, step, exec),
        Action::Wait(wait) => Ok(run_wait(ctx, wait)),
        Action::Note { text } => Ok(Done::passed(text.clone())),
        Action::Confirm { prompt } => Ok(if ctx.options.yes {
            Done::passed("confirmed (--yes)")
        } else if ctx.observer.confirm(prompt) {
            Done::passed("confirmed by the operator")
        } else {
            Done::error("the operator declined; the run stops here".into())
        }),
        Action::Query(query) => run_query(&ctx.store, query),
        Action::Compare(compare) => run_compare(&ctx.store, compare),
        Action::Load(load) => run_load(ctx, stage, load),
        Action::Snapshot(snap) => run_snapshot(ctx, step_id, stage, snap),
        Action::Sysctl(sysctl) => run_sysctl(ctx, step_id, sysctl),
        Action::Capture(capture) => run_capture(ctx, stage, capture),
        Action::Analyze(analyze) => run_analyze(ctx, stage, analyze),
        Action::Findings => run_findings(ctx),
        Action::Archive { out } => {
            // The database is still open (and under its temporary name) while the run goes on; the
            // archive is sealed right after it is closed, at the end of the run.
            let out = out.clone().unwrap_or_else(|| ctx.run_dir.join("evidence.tar.zst"));
            ctx.archive = Some(out.clone());
            Ok(Done::passed(format!("archive {} will be sealed when the run ends", out.display())))
        }
    }
}

// ---- guards ---------------------------------------------------------------------------------------

impl Ctx<'_> {
    /// Checks due guards; true when one has tripped (the caller stops).
    pub(crate) fn guards_tripped(&mut self) -> bool {
        self.guards.check(&self.store, &self.run_dir, self.observer)
    }

    fn cancelled(&self) -> bool {
        self.options.cancel.load(Ordering::SeqCst)
    }
}

// ---- exec -----------------------------------------------------------------------------------------

fn file_stem(step_id: i64, stage: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
    };
    format!("{step_id:03}-{}-{}", clean(stage), clean(name))
}

fn run_exec(
    ctx: &mut Ctx<'_>,
    step_id: i64,
    stage: &Stage,
    step: &Step,
    exec: &ExecStep,
) -> Result<Done, String> {
    let stem = file_stem(step_id, &stage.instance, &step.name);
    let stdout = ctx.run_dir.join("steps").join(format!("{stem}.stdout"));
    let stderr = ctx.run_dir.join("steps").join(format!("{stem}.stderr"));
    let mut env: Vec<(String, String)> =
        ctx.plan.vars.iter().map(|v| (crate::env_name(&v.name), v.value.clone())).collect();
    env.push(("PEEL_RUN_DIR".into(), ctx.run_dir.display().to_string()));
    env.push(("PEEL_STAGE".into(), stage.instance.clone()));
    // `peel` in a step means this peel: its directory comes first on the step's PATH.
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(PathBuf::from))
    {
        let path = std::env::var("PATH").unwrap_or_default();
        env.push(("PATH".into(), format!("{}:{path}", dir.display())));
    }
    if let Some(undo) = &exec.undo {
        // Registered before the action: if the step half-applies a change, the undo still runs.
        let undo_env: Vec<(String, String)> = env.iter().cloned().chain(exec.env.clone()).collect();
        ctx.register(
            false,
            CleanupAction::Undo {
                argv: undo.clone(),
                env: undo_env,
                cwd: exec.cwd.clone(),
                label: step.name.clone(),
            },
        )
        .map_err(|e| e.to_string())?;
    }
    let argv = match &exec.program {
        Program::Argv(argv) => argv.clone(),
        Program::Shell(command) => vec!["/bin/sh".into(), "-c".into(), command.clone()],
    };
    let started_ts_ns = now_ns();
    let started = Instant::now();
    let mut child = process::spawn(exec, &env, &stdout, &stderr).map_err(|e| e.to_string())?;
    let pid = child.id() as i32;
    let command_id = ctx.next_command_id();
    let run_dir = ctx.run_dir.clone();
    let relative = |p: &PathBuf| p.strip_prefix(&run_dir).unwrap_or(p).display().to_string();
    let mut record = CommandRecord {
        command_id,
        step_id: Some(step_id),
        purpose: if exec.background { "background".into() } else { "step".into() },
        argv_json: serde_json::to_string(&argv).unwrap_or_default(),
        cwd: exec.cwd.as_ref().map(|c| c.display().to_string()),
        started_ts_ns,
        ended_ts_ns: None,
        duration_us: None,
        exit_code: None,
        signal: None,
        timed_out: false,
        stdout_path: Some(relative(&stdout)),
        stderr_path: Some(relative(&stderr)),
    };
    let outputs =
        serde_json::json!({"pid": pid, "stdout": relative(&stdout), "stderr": relative(&stderr)});

    if exec.background {
        let ticks = process::start_ticks(pid).unwrap_or(0);
        let id = ctx
            .register(
                true,
                CleanupAction::StopProcess { pid, start_ticks: ticks, label: step.name.clone() },
            )
            .map_err(|e| e.to_string())?;
        // A server that dies at once (port taken, bad flag) is an error now, not a mystery later.
        std::thread::sleep(Duration::from_millis(150));
        let early = child.try_wait().ok().flatten();
        ctx.attach_child(id, child);
        let _ = ctx.store.ingest(&ctx.scope(&stage.instance), [&record]);
        if let Some(status) = early {
            return Ok(Done::error(format!(
                "background process ended at once ({}); see {}",
                process::describe(&status),
                relative(&stderr)
            ))
            .with_outputs(outputs));
        }
        return Ok(
            Done::passed(format!("started in the background (pid {pid})")).with_outputs(outputs)
        );
    }

    let cancel = Arc::clone(&ctx.options.cancel);
    let waited = {
        let (store, guards, run_dir) = (&ctx.store, &mut ctx.guards, &ctx.run_dir);
        let observer = &mut *ctx.observer;
        process::wait(&mut child, exec.timeout, &cancel, &mut || {
            guards.check(store, run_dir, observer)
        })
        .map_err(|e| e.to_string())?
    };
    record.ended_ts_ns = Some(now_ns());
    record.duration_us = Some(started.elapsed().as_secs_f64() * 1e6);
    let done = match waited {
        Waited::Exited(status) => {
            use std::os::unix::process::ExitStatusExt;
            record.exit_code = status.code();
            record.signal = status.signal();
            match status.code() {
                Some(code) if exec.expect_exit.contains(&code) => {
                    Done::passed(format!("exit {code}"))
                }
                _ => Done::error(format!(
                    "{} (expected exit {}){}",
                    process::describe(&status),
                    exec.expect_exit.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" or "),
                    last_line(&stderr).map(|l| format!(": {l}")).unwrap_or_default()
                )),
            }
        }
        Waited::TimedOut => {
            record.timed_out = true;
            let timeout = exec
                .timeout
                .map(humantime::format_duration)
                .map(|d| d.to_string())
                .unwrap_or_default();
            Done::error(format!("timed out after {timeout}; its process group was killed"))
        }
        Waited::Interrupted => Done::interrupted("stopped: its process group was terminated"),
    };
    let _ = ctx.store.ingest(&ctx.scope(&stage.instance), [&record]);
    Ok(done.with_outputs(outputs))
}

fn last_line(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(line.chars().take(200).collect())
}

// ---- wait -----------------------------------------------------------------------------------------

fn run_wait(ctx: &mut Ctx<'_>, wait: &WaitStep) -> Done {
    let started = Instant::now();
    match wait {
        WaitStep::For(duration) => {
            while started.elapsed() < *duration {
                if ctx.cancelled() || ctx.guards_tripped() {
                    return Done::interrupted("wait interrupted");
                }
                std::thread::sleep((*duration - started.elapsed()).min(Duration::from_millis(50)));
            }
            Done::passed(format!("waited {}", humantime::format_duration(*duration)))
        }
        WaitStep::Port { address, timeout } => {
            let addrs: Vec<_> = match address.to_socket_addrs() {
                Ok(addrs) => addrs.collect(),
                Err(err) => return Done::error(format!("cannot resolve {address}: {err}")),
            };
            loop {
                if addrs
                    .iter()
                    .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(500)).is_ok())
                {
                    return Done::passed(format!(
                        "{address} accepted after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ));
                }
                if ctx.cancelled() || ctx.guards_tripped() {
                    return Done::interrupted("wait interrupted");
                }
                if started.elapsed() >= *timeout {
                    return Done::error(format!(
                        "{address} did not accept a connection within {}",
                        humantime::format_duration(*timeout)
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

// ---- query and compare ----------------------------------------------------------------------------

/// The value of `metric` in the first row: the column named `metric` (or `alternative`), case
/// insensitive; a one-column result stands for any name.
pub(crate) fn lookup(result: &QueryResult, metric: &str, alternative: &str) -> Option<f64> {
    let row = result.rows.first()?;
    let index = result
        .columns
        .iter()
        .position(|c| {
            c.name.eq_ignore_ascii_case(metric) || c.name.eq_ignore_ascii_case(alternative)
        })
        .or_else(|| (result.columns.len() == 1).then_some(0))?;
    row.get(index)?.as_f64()
}

fn result_json(result: &QueryResult) -> serde_json::Value {
    let columns: Vec<&str> = result.columns.iter().map(|c| c.name.as_str()).collect();
    let rows: Vec<Vec<String>> =
        result.rows.iter().take(50).map(|r| r.iter().map(|c| c.to_string()).collect()).collect();
    serde_json::json!({"columns": columns, "rows": rows, "total_rows": result.rows.len()})
}

fn run_query(store: &Store, query: &QueryStep) -> Result<Done, String> {
    let result = store.query(&query.sql).map_err(|e| e.to_string())?;
    let checks: Vec<CheckResult> = query
        .expect
        .iter()
        .map(|t| {
            let original = match &t.function {
                Some(f) => format!("{f}({})", t.column),
                None => t.column.clone(),
            };
            checks::check_threshold(t, lookup(&result, &t.metric_name(), &original), &query.sql)
        })
        .collect();
    let first_row = result.rows.first().map(|row| {
        result
            .columns
            .iter()
            .zip(row)
            .map(|(c, v)| format!("{}={v}", c.name))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let message = match (&first_row, result.rows.len()) {
        (None, _) => "no rows".to_string(),
        (Some(row), 1) => row.clone(),
        (Some(row), n) => format!("{row} (+{} more rows)", n - 1),
    };
    Ok(Done { status: StepStatus::Passed, message, checks, outputs: result_json(&result) })
}

fn run_compare(store: &Store, compare: &CompareStep) -> Result<Done, String> {
    let value = |sql: &str, side: &str| -> Result<f64, String> {
        let result = store.query(sql).map_err(|e| format!("{side}: {e}"))?;
        lookup(&result, &compare.metric, &compare.metric)
            .or_else(|| result.rows.first().and_then(|r| r.first()).and_then(|c| c.as_f64()))
            .ok_or_else(|| format!("{side}: the query gave no number (no row, or NULL): {sql}"))
    };
    let baseline = value(&compare.sql_baseline, &compare.baseline);
    let candidate = value(&compare.sql_candidate, &compare.candidate);
    let (baseline, candidate) = match (baseline, candidate) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), _) | (_, Err(e)) => {
            // A metric that cannot be measured is a failed check, with the reason, not a crash.
            let check = CheckResult {
                name: compare.metric.clone(),
                passed: false,
                detail: e.clone(),
                sql: vec![compare.sql_baseline.clone(), compare.sql_candidate.clone()],
            };
            return Ok(Done {
                status: StepStatus::Passed,
                message: e,
                checks: vec![check],
                outputs: serde_json::Value::Null,
            });
        }
    };
    let values = Comparison { baseline, candidate };
    let checks = checks::check_compare(compare, values);
    let message = checks.first().map_or_else(String::new, |c| c.detail.clone());
    let outputs = serde_json::json!({
        "metric": compare.metric,
        "baseline": {"stage": compare.baseline, "value": baseline},
        "candidate": {"stage": compare.candidate, "value": candidate},
        "relative_change": values.relative_change(),
    });
    Ok(Done { status: StepStatus::Passed, message, checks, outputs })
}

// ---- load -----------------------------------------------------------------------------------------

fn run_load(ctx: &mut Ctx<'_>, stage: &Stage, load: &LoadStep) -> Result<Done, String> {
    use peel_load::{LoadConfig, Model, RequestRecord, Target};
    let targets = if load.mix.is_empty() {
        vec![Target::new(&load.url).map_err(|e| e.to_string())?]
    } else {
        let mix: Vec<String> =
            load.mix.iter().filter(|(_, w)| *w > 0).map(|(p, w)| format!("{p}={w}")).collect();
        peel_load::targets_from_mix(&load.url, &mix.join(",")).map_err(|e| e.to_string())?
    };
    let model = match load.model {
        LoadModel::RatePerS(rate) => Model::Open { rate_per_s: f64::from(rate) },
        LoadModel::Concurrency(c) => Model::Closed { concurrency: c },
    };
    let mut config = LoadConfig::new(targets, model, load.duration);
    if let Some(connections) = load.connections {
        config.connections = connections;
    }
    config.keepalive = load.keepalive;
    if let Some(timeout) = load.timeout {
        config.timeout = timeout;
    }
    let stop = Arc::new(AtomicBool::new(false));
    config.stop = Some(Arc::clone(&stop));
    // Guards are checked on every progress call: as often as the most frequent one asks.
    if let Some(every) = ctx.guards.every() {
        config.progress_every = config.progress_every.min(every.max(Duration::from_millis(100)));
    }
    let scope = ctx.scope(&stage.instance);
    let expected = Some(load.duration);
    // What the load has seen so far, for `rate(errors)` guards: failed requests and 5xx answers.
    let so_far = std::cell::Cell::new(LoadSoFar::default());
    let report = {
        let (store, guards, run_dir) = (&ctx.store, &mut ctx.guards, &ctx.run_dir);
        let observer = &mut *ctx.observer;
        let cancel = Arc::clone(&ctx.options.cancel);
        let mut sink = store.sink::<RequestRecord>(&scope).map_err(|e| e.to_string())?;
        let captures = &ctx.captures;
        let mut progress = |p: &peel_load::Progress| {
            observer.event(&Event::StepProgress {
                elapsed: p.elapsed,
                expected,
                detail: format!(
                    "{:.0} req/s  p50 {}  p99 {}  errors {}  conns {}{}",
                    p.requests_per_s,
                    micros(p.latency_p50_us as f64),
                    micros(p.latency_p99_us as f64),
                    p.errors,
                    p.connections_opened,
                    capture_progress(captures)
                ),
            });
            guards.load = Some(so_far.get());
            let tripped = guards.check(store, run_dir, observer);
            if cancel.load(Ordering::SeqCst) || tripped {
                stop.store(true, Ordering::SeqCst);
            }
        };
        // Ctrl-C between progress calls must stop the load too: a watcher forwards it.
        let watcher_done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (cancel, stop, done) =
                (Arc::clone(&ctx.options.cancel), Arc::clone(&stop), Arc::clone(&watcher_done));
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    if cancel.load(Ordering::SeqCst) {
                        stop.store(true, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let mut record = |r: RequestRecord| {
            let mut counts = so_far.get();
            counts.requests += 1;
            if r.error_kind.is_some() || r.status.is_some_and(|s| s >= 500) {
                counts.errors += 1;
            }
            so_far.set(counts);
            sink.push(&r).map_err(|e| Box::new(e) as peel_load::SinkError)
        };
        let result = peel_load::run_load(&config, &mut progress, &mut record);
        guards.load = None;
        watcher_done.store(true, Ordering::SeqCst);
        let _ = watcher.join();
        let report = result.map_err(|e| e.to_string())?;
        sink.finish().map_err(|e| e.to_string())?;
        report
    };
    ctx.store.ingest(&scope, &report.classes).map_err(|e| e.to_string())?;
    let total = &report.total;
    let message = format!(
        "{} requests, {:.0} req/s, p50 {}, p99 {}, {} errors, {} connections",
        total.requests,
        total.requests_per_s,
        micros(total.latency_p50_us as f64),
        micros(total.latency_p99_us as f64),
        total.errors,
        report.connections_opened
    );
    let classes: Vec<serde_json::Value> = report
        .classes
        .iter()
        .map(|c| {
            serde_json::json!({
                "url_class": c.url_class, "requests": c.requests, "requests_per_s": c.requests_per_s,
                "errors": c.errors, "latency_p50_us": c.latency_p50_us, "latency_p99_us": c.latency_p99_us,
                "connections_opened": c.connections_opened,
            })
        })
        .collect();
    let done = Done::passed(message).with_outputs(
        serde_json::json!({"classes": classes, "stopped_early": report.stopped_early}),
    );
    if report.stopped_early {
        return Ok(Done { status: StepStatus::Interrupted, ..done });
    }
    Ok(done)
}

/// `  pkts 120433  drops 0` for the captures running now, or nothing without one.
fn capture_progress(captures: &[super::SharedCapture]) -> String {
    let stats: Vec<peel_capture::InterfaceStats> = captures
        .iter()
        .filter_map(|c| c.borrow().as_ref().map(|handle| handle.stats()))
        .flatten()
        .collect();
    if stats.is_empty() {
        return String::new();
    }
    let packets: u64 = stats.iter().map(|s| s.packets_captured).sum();
    let drops: u64 =
        stats.iter().map(|s| s.packets_dropped_kernel + s.packets_dropped_interface).sum();
    format!("  pkts {packets}  drops {drops}")
}

/// `850µs`, `38.2ms`, `1.20s`.
pub(crate) fn micros(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

// ---- snapshot and sysctl --------------------------------------------------------------------------

fn run_snapshot(
    ctx: &mut Ctx<'_>,
    step_id: i64,
    stage: &Stage,
    snap: &SnapshotStep,
) -> Result<Done, String> {
    use peel_snap::{ProcessMatch, Sampler, SnapOptions};
    let options = SnapOptions {
        sysctl_patterns: snap.sysctls.clone(),
        processes: snap.processes.iter().map(|p| ProcessMatch::parse(p)).collect(),
        ..SnapOptions::default()
    };
    // Snapshot ids stay unique within the run: each step numbers from its own block.
    let first_id = u64::try_from(step_id).unwrap_or(0) * 1_000_000;
    let scope = ctx.scope(&stage.instance);
    match (snap.every, snap.for_) {
        (None, _) => {
            let records = Sampler::new(options)
                .with_first_snap_id(first_id)
                .snapshot()
                .map_err(|e| e.to_string())?;
            ctx.store.ingest_snapshot(&scope, &records).map_err(|e| e.to_string())?;
            Ok(Done::passed(format!(
                "1 snapshot: {} sockets, {} processes",
                records.sockets.len(),
                records.processes.len()
            )))
        }
        (Some(every), Some(total)) => {
            let mut sampler = Sampler::new(options).with_first_snap_id(first_id);
            let mut series = Vec::new();
            // Stops on Ctrl-C (the run's flag) or a tripped guard, checked after every sample.
            let stop = AtomicBool::new(false);
            let taken = {
                let (store, guards, run_dir) = (&ctx.store, &mut ctx.guards, &ctx.run_dir);
                let (observer, cancel) = (&mut *ctx.observer, &ctx.options.cancel);
                sampler
                    .run(every, total, &stop, |s| {
                        series.push(s);
                        if cancel.load(Ordering::SeqCst) || guards.check(store, run_dir, observer) {
                            stop.store(true, Ordering::SeqCst);
                        }
                        Ok::<(), peel_snap::SnapError>(())
                    })
                    .map_err(|e| e.to_string())?
            };
            for records in &series {
                ctx.store.ingest_snapshot(&scope, records).map_err(|e| e.to_string())?;
            }
            let message = format!("{taken} snapshots every {}", humantime::format_duration(every));
            if stop.load(Ordering::SeqCst) {
                return Ok(Done::interrupted(format!("{message}, stopped early")));
            }
            Ok(Done::passed(message))
        }
        (Some(every), None) => {
            // Bounded anyway: a stage that never ends still stops sampling after a day.
            let handle = Sampler::new(options)
                .with_first_snap_id(first_id)
                .spawn(every, Duration::from_secs(24 * 3600));
            ctx.register_in_process(
                format!("stop snapshot sampling of {}", stage.instance),
                Box::new(move |ctx: &mut Ctx<'_>| {
                    let series = handle.stop().map_err(|e| e.to_string())?;
                    for records in &series {
                        ctx.store.ingest_snapshot(&scope, records).map_err(|e| e.to_string())?;
                    }
                    Ok(format!("{} snapshots stored", series.len()))
                }),
            );
            Ok(Done::passed(format!(
                "sampling every {} until the stage ends",
                humantime::format_duration(every)
            )))
        }
    }
}

fn run_sysctl(ctx: &mut Ctx<'_>, step_id: i64, sysctl: &SysctlStep) -> Result<Done, String> {
    let journal = ctx.run_dir.join(format!("sysctl-journal-{step_id}.json"));
    // Journaled before anything is written: `peel recover` restores even after a SIGKILL.
    ctx.register(false, CleanupAction::RestoreSysctls { journal: journal.clone() })
        .map_err(|e| e.to_string())?;
    let guard = peel_snap::sysctl::journal::SysctlGuard::apply(
        &peel_snap::ProcRoot::live(),
        &journal,
        &sysctl.set,
    )
    .map_err(|e| e.to_string())?;
    let changed: Vec<String> = guard
        .entries()
        .iter()
        .map(|e| format!("{}: {} -> {}", e.key, e.old_value, e.new_value))
        .collect();
    // The run's journaled cleanup restores from the sysctl journal (at run end, or `peel recover`);
    // dropping the guard here would restore at once.
    std::mem::forget(guard);
    Ok(Done::passed(changed.join(", ")))
}

// ---- capture, analyze, findings -------------------------------------------------------------------

/// Where a stage's capture files go.
pub(crate) fn captures_dir(run_dir: &std::path::Path, stage: &str) -> PathBuf {
    run_dir.join("captures").join(stage.replace(['/', '[', ']', '='], "_"))
}

fn run_capture(ctx: &mut Ctx<'_>, stage: &Stage, capture: &CaptureStep) -> Result<Done, String> {
    let dir = captures_dir(&ctx.run_dir, &stage.instance);
    let mut config = peel_capture::CaptureConfig::new(vec![capture.interface.clone()], &dir);
    config.bpf_filter = capture.filter.clone();
    if let Some(snaplen) = capture.snaplen_bytes {
        config.snaplen_bytes = snaplen;
    }
    if let Some((size_mb, count)) = capture.ring {
        config.ring = Some(peel_capture::RingSpec {
            file_size_bytes: u64::from(size_mb) * peel_capture::RING_MB_BYTES,
            file_count: count,
        });
    }
    let handle = peel_capture::Capture::start(config).map_err(|e| {
        format!("{e} (without capture privilege, run with --skip capture; the report marks it)")
    })?;
    // Shared with progress lines (packets, drops) until the stage's cleanup stops it.
    let shared = std::rc::Rc::new(std::cell::RefCell::new(Some(handle)));
    ctx.captures.push(std::rc::Rc::clone(&shared));
    ctx.register_in_process(
        format!("stop capture on {} ({})", capture.interface, stage.instance),
        Box::new(move |ctx: &mut Ctx<'_>| {
            let handle = shared.borrow_mut().take();
            ctx.captures.retain(|c| c.borrow().is_some());
            let Some(handle) = handle else { return Err("already stopped".into()) };
            let report = handle.stop();
            Ok(format!(
                "{} packets in {} file(s), {} dropped by the kernel, {} by the interface",
                report.packets_captured(),
                report.files().count(),
                report.packets_dropped_kernel(),
                report.packets_dropped_interface()
            ))
        }),
    );
    Ok(Done::passed(format!(
        "capturing on {} into {} until the stage ends",
        capture.interface,
        dir.display()
    )))
}

fn run_analyze(ctx: &mut Ctx<'_>, stage: &Stage, analyze: &AnalyzeStep) -> Result<Done, String> {
    let of = analyze.captures_of.clone().unwrap_or_else(|| stage.instance.clone());
    let dir = captures_dir(&ctx.run_dir, &of);
    let has_files = dir.read_dir().is_ok_and(|mut entries| entries.next().is_some());
    if !has_files {
        return Ok(Done::skipped(format!(
            "no captures of '{of}' to analyze (its capture step was skipped or did not run)"
        )));
    }
    // The connections belong to the stage that was captured, so its queries find them.
    let scope = ctx.scope(&of);
    let config =
        peel_wire::Config { server_ports: analyze.ports.clone(), ..peel_wire::Config::default() };
    let mut sink = ctx.store.connection_sink(&scope).map_err(|e| e.to_string())?;
    let mut sink_error = None;
    let end = peel_wire::analyze_paths(std::slice::from_ref(&dir), config, &mut |finished| {
        if sink_error.is_none() {
            if let Err(err) = sink.push(&finished) {
                sink_error = Some(err.to_string());
            }
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(err) = sink_error {
        return Err(err);
    }
    let counts = sink.finish().map_err(|e| e.to_string())?;
    ctx.store.ingest(&scope, &end.warnings).map_err(|e| e.to_string())?;
    let warnings: u64 = end.warnings.iter().map(|w| w.count).sum();
    Ok(Done::passed(format!(
        "{} packets, {} connections into stage '{of}'{}",
        end.stats.packets,
        end.stats.connections,
        if warnings > 0 { format!(", {warnings} capture warnings") } else { String::new() }
    ))
    .with_outputs(serde_json::json!({"captures": dir.strip_prefix(&ctx.run_dir).unwrap_or(&dir), "stored": format!("{counts:?}")})))
}

fn run_findings(ctx: &mut Ctx<'_>) -> Result<Done, String> {
    let diagnoses =
        peel_findings::diagnose_run(&ctx.store, &ctx.run_id).map_err(|e| e.to_string())?;
    let scope = peel_store::Scope::new(&ctx.run_id, &ctx.host);
    peel_findings::save(&ctx.store, &scope, &diagnoses).map_err(|e| e.to_string())?;
    let mut titles = Vec::new();
    let mut total = 0;
    for diagnosis in &diagnoses {
        total += diagnosis.findings.len();
        titles.extend(
            diagnosis.findings.iter().take(3).map(|f| format!("[{}] {}", diagnosis.stage, f.title)),
        );
    }
    let message = if total == 0 {
        "no findings".to_string()
    } else {
        format!("{total} findings: {}", titles.join("; "))
    };
    Ok(Done::passed(message))
}
