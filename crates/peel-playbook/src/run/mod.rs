//! The runner: executes a [`Plan`] into a run folder, step by step, with a journal written before
//! every action and cleanup that always happens.
//!
//! Cleanup comes in two scopes. Stage scope: background processes, samplers and captures stop when
//! their stage ends. Run scope: `undo` commands and sysctl restores run when the run ends. Both run
//! in reverse order on success, on failure, on a tripped guard and on cancellation (the binary sets
//! the cancel flag on Ctrl-C/SIGTERM); after a SIGKILL, [`recover`] finishes them from the journal.
//!
//! The runner never prints; it reports [`Event`]s to an [`Observer`], which also answers `confirm`
//! steps.

pub mod checks;
mod guards;
pub mod journal;
pub mod process;
mod recover;
mod steps;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peel_store::{Access, RunRecord, Scope, StepRecord, Store};

use crate::model::{Plan, Stage, StageName, Step, StepKind};
pub use checks::CheckResult;
pub use guards::GuardTrip;
pub use journal::{CleanupAction, Entry, JOURNAL_FILE};
pub use recover::{recover, RecoverReport};
pub(crate) use steps::micros;

/// The run database's file name inside a run folder.
pub const DB_FILE: &str = "run.duckdb";

/// Why a run could not be carried out (as opposed to a check that failed).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("run folder {path} already exists and is not empty")]
    RunDirExists { path: PathBuf },
    #[error("journal {path} line {line}: {message}")]
    Journal { path: PathBuf, line: usize, message: String },
    #[error("cannot start '{program}': {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("run database: {0}")]
    Store(#[from] peel_store::StoreError),
    #[error("{path} is not a run folder (no {JOURNAL_FILE})")]
    NotARunDir { path: PathBuf },
}

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run folder; `None` creates `<runs_root>/<name>-<UTC timestamp>`.
    pub out_dir: Option<PathBuf>,
    pub runs_root: PathBuf,
    /// Answer every `confirm` step with yes.
    pub yes: bool,
    /// Step kinds not to run (reported as skipped).
    pub skip: BTreeSet<StepKind>,
    /// Run only this stage.
    pub only_stage: Option<StageName>,
    /// Set from outside (Ctrl-C, SIGTERM) to stop the run and clean up.
    pub cancel: Arc<AtomicBool>,
    /// The playbook text as run, copied into the run folder.
    pub playbook_text: Option<String>,
    /// peel's version for the run record.
    pub tool_version: String,
}

impl RunOptions {
    pub fn new(tool_version: impl Into<String>) -> RunOptions {
        RunOptions {
            out_dir: None,
            runs_root: PathBuf::from("runs"),
            yes: false,
            skip: BTreeSet::new(),
            only_stage: None,
            cancel: Arc::new(AtomicBool::new(false)),
            playbook_text: None,
            tool_version: tool_version.into(),
        }
    }
}

/// What the runner reports while it works.
#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        run_dir: PathBuf,
        run_id: String,
    },
    StageStarted {
        instance: String,
        steps: usize,
    },
    StepStarted {
        stage: String,
        index: usize,
        of: usize,
        name: String,
        kind: StepKind,
        summary: String,
        expected: Option<Duration>,
    },
    /// Live figures of a long step (`rps 412  p99 38ms  errors 0`).
    StepProgress {
        elapsed: Duration,
        expected: Option<Duration>,
        detail: String,
    },
    StepFinished(StepOutcome),
    /// A stage guard failed: the running step and the stage stop, cleanup follows.
    GuardTripped {
        stage: String,
        message: String,
        trip: GuardTrip,
    },
    Cleanup(CleanupOutcome),
    RunFinished {
        status: RunStatus,
    },
}

/// Receives events and answers questions; the binary renders, tests collect.
pub trait Observer {
    fn event(&mut self, event: &Event);
    /// Asks the operator; false stops the run.
    fn confirm(&mut self, prompt: &str) -> bool;
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Done, and every check passed.
    Passed,
    /// Done, and a check failed.
    Failed,
    /// Could not be done.
    Error,
    /// Not run (`--skip`, or an earlier error stopped the run).
    Skipped,
    /// Stopped by Ctrl-C/SIGTERM or a guard.
    Interrupted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Passed => "passed",
            StepStatus::Failed => "failed",
            StepStatus::Error => "error",
            StepStatus::Skipped => "skipped",
            StepStatus::Interrupted => "interrupted",
        }
    }
}

/// The record of one step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepOutcome {
    pub step_id: i64,
    pub stage: String,
    pub name: String,
    pub kind: StepKind,
    pub status: StepStatus,
    pub message: String,
    pub duration: Duration,
    pub checks: Vec<CheckResult>,
    /// Files written and values measured.
    pub outputs: serde_json::Value,
}

/// The record of one cleanup action.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CleanupOutcome {
    pub description: String,
    pub ok: bool,
    pub message: String,
}

/// How the whole run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Every step ran and every check passed.
    Passed,
    /// Every step ran, and a check failed.
    Failed,
    /// A step could not be done (or a guard tripped).
    Error,
    /// Cancelled by Ctrl-C/SIGTERM.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Error => "error",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// Everything a finished run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub db: PathBuf,
    pub status: RunStatus,
    pub steps: Vec<StepOutcome>,
    pub cleanup: Vec<CleanupOutcome>,
    pub report: Option<PathBuf>,
    pub report_error: Option<String>,
    /// The sealed evidence archive (archive step) and its SHA-256, or why it was not written.
    pub archive: Option<PathBuf>,
    pub archive_sha256: Option<String>,
    pub archive_error: Option<String>,
    /// SHA-256 (hex) of the playbook text this run executed (also kept as `playbook.toml`), so a
    /// run can be tied to the exact file version.
    pub playbook_sha256: Option<String>,
    /// The stage guard that stopped the run, with its numbers.
    pub guard: Option<GuardTrip>,
}

/// Where a cleanup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CleanupScope {
    Stage,
    Run,
}

/// Stops an in-process background task and says what it left (or why it failed).
pub(crate) type StopFn = Box<dyn FnOnce(&mut Ctx<'_>) -> Result<String, String>>;

/// A registered cleanup: journaled ones carry their id; in-process ones their own stop function.
enum Pending {
    Journaled { id: u64, action: CleanupAction, child: Option<std::process::Child> },
    InProcess { description: String, stop: StopFn },
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pending::Journaled { id, action, .. } => write!(f, "Journaled({id}, {action:?})"),
            Pending::InProcess { description, .. } => write!(f, "InProcess({description})"),
        }
    }
}

/// The state of a run in progress, shared by the step implementations.
pub(crate) struct Ctx<'o> {
    pub(crate) plan: &'o Plan,
    pub(crate) options: &'o RunOptions,
    pub(crate) observer: &'o mut dyn Observer,
    pub(crate) run_dir: PathBuf,
    pub(crate) run_id: String,
    pub(crate) host: String,
    pub(crate) store: Store,
    pub(crate) journal: journal::Journal,
    cleanups: Vec<(CleanupScope, Pending)>,
    next_cleanup_id: u64,
    next_command_id: i64,
    /// The current stage's guards; a tripped one stops the stage like a cancel, but the run
    /// reports an error.
    pub(crate) guards: guards::Guards,
    /// Set by an archive step: sealed after the database is closed.
    pub(crate) archive: Option<PathBuf>,
    /// Captures running in this stage, for packets and drops in progress lines.
    pub(crate) captures: Vec<SharedCapture>,
}

/// A running capture, stopped (taken) by its stage's cleanup.
pub(crate) type SharedCapture =
    std::rc::Rc<std::cell::RefCell<Option<peel_capture::CaptureHandle>>>;

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("run_dir", &self.run_dir).field("run_id", &self.run_id).finish()
    }
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Runs `plan`. Returns `Err` only when the run could not start or its folder could not be written;
/// failures of steps and checks are in the summary.
pub fn run(
    plan: &Plan,
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunSummary, RunError> {
    let run_dir = prepare_run_dir(plan, options)?;
    let run_id = run_dir
        .file_name()
        .map_or_else(|| plan.meta.name.clone(), |n| n.to_string_lossy().into_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "localhost".into(), |h| h.trim().to_string());
    write_file(
        &run_dir.join("plan.json"),
        &serde_json::to_string_pretty(plan).unwrap_or_default(),
    )?;
    if let Some(text) = &options.playbook_text {
        write_file(&run_dir.join("playbook.toml"), text)?;
    }
    let mut journal = journal::Journal::open(&run_dir)?;
    journal.append(&Entry::RunStarted {
        run_id: run_id.clone(),
        playbook: plan.meta.name.clone(),
        ts_ns: now_ns(),
        pid: std::process::id(),
    })?;
    let playbook_sha256 = options.playbook_text.as_deref().map(sha256_hex);
    let store = Store::open(&run_dir.join(DB_FILE), Access::ReadWrite)?;
    let scope = Scope::new(&run_id, &host);
    let variables: serde_json::Map<String, serde_json::Value> = plan
        .vars
        .iter()
        .map(|v| (v.name.clone(), serde_json::Value::String(v.value.clone())))
        .collect();
    store.ingest(
        &scope,
        [&RunRecord {
            playbook: plan.meta.name.clone(),
            playbook_path: Some(plan.file.display().to_string()),
            playbook_sha256: playbook_sha256.clone(),
            variables_json: Some(serde_json::Value::Object(variables).to_string()),
            started_ts_ns: now_ns(),
            ended_ts_ns: None,
            status: "running".into(),
            tool_version: options.tool_version.clone(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_string()),
            run_dir: Some(run_dir.display().to_string()),
        }],
    )?;
    observer.event(&Event::RunStarted { run_dir: run_dir.clone(), run_id: run_id.clone() });

    let mut ctx = Ctx {
        plan,
        options,
        observer,
        run_dir: run_dir.clone(),
        run_id: run_id.clone(),
        host,
        store,
        journal,
        cleanups: Vec::new(),
        next_cleanup_id: 0,
        next_command_id: 0,
        guards: guards::Guards::default(),
        archive: None,
        captures: Vec::new(),
    };
    let mut outcomes = Vec::new();
    let mut cleanup = Vec::new();
    let mut stop_reason: Option<RunStatus> = None;
    let mut guard_trip = None;
    let mut step_id = 0i64;
    for stage in plan.stages.iter().filter(|s| options.only_stage.is_none_or(|only| only == s.name))
    {
        if stop_reason.is_some() {
            for step in &stage.steps {
                outcomes.push(ctx.not_run(
                    step_id,
                    stage,
                    step,
                    "not run: the run stopped earlier",
                ));
                step_id += 1;
            }
            continue;
        }
        ctx.observer.event(&Event::StageStarted {
            instance: stage.instance.clone(),
            steps: stage.steps.len(),
        });
        ctx.guards = guards::Guards::for_stage(&stage.instance, &stage.guards);
        for (index, step) in stage.steps.iter().enumerate() {
            ctx.guards.step = step.name.clone();
            if stop_reason.is_none() && ctx.guards_tripped() {
                stop_reason = Some(RunStatus::Error);
            }
            let outcome = if stop_reason.is_some() {
                let why = match &ctx.guards.tripped {
                    Some(trip) => format!("not run: {}", trip.message()),
                    None => "not run: the stage stopped earlier".to_string(),
                };
                ctx.not_run(step_id, stage, step, &why)
            } else {
                let outcome = ctx.run_step(step_id, stage, index, step);
                if options.cancel.load(Ordering::SeqCst) {
                    stop_reason = Some(RunStatus::Interrupted);
                } else if ctx.guards.tripped.is_some()
                    || (matches!(outcome.status, StepStatus::Error | StepStatus::Interrupted)
                        && !step.continue_on_error)
                {
                    stop_reason = Some(RunStatus::Error);
                }
                outcome
            };
            step_id += 1;
            outcomes.push(outcome);
        }
        guard_trip = guard_trip.or_else(|| ctx.guards.tripped.take());
        cleanup.extend(ctx.run_cleanups(CleanupScope::Stage));
    }
    cleanup.extend(ctx.run_cleanups(CleanupScope::Run));

    let status = match stop_reason {
        Some(status) => status,
        None if outcomes.iter().any(|o| o.status == StepStatus::Failed) => RunStatus::Failed,
        None => RunStatus::Passed,
    };
    let _ = ctx.store.finish_run(&scope, now_ns(), status.as_str());
    let mut summary = RunSummary {
        run_id,
        run_dir: run_dir.clone(),
        db: run_dir.join(DB_FILE),
        status,
        steps: outcomes,
        cleanup,
        report: None,
        report_error: None,
        archive: None,
        archive_sha256: None,
        archive_error: None,
        playbook_sha256,
        guard: guard_trip,
    };
    match crate::report::write(&ctx.store, plan, &summary) {
        Ok(path) => summary.report = Some(path),
        Err(message) => summary.report_error = Some(message),
    }
    let Ctx { store, mut journal, observer, archive, .. } = ctx;
    store.close()?;
    write_file(
        &run_dir.join("summary.json"),
        &serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )?;
    if let Some(out) = archive {
        let options = peel_store::CreateOptions {
            parquet: false,
            redact: false,
            pseudonymize_ips: false,
            ip_map: None,
            tool_version: options.tool_version.clone(),
        };
        match peel_store::create_archive(&run_dir, &out, &options) {
            Ok(created) => {
                summary.archive = Some(out);
                summary.archive_sha256 = Some(created.sha256.clone());
            }
            Err(err) => summary.archive_error = Some(err.to_string()),
        }
    }
    write_file(
        &run_dir.join("summary.json"),
        &serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )?;
    journal.append(&Entry::RunFinished { status: status.as_str().into(), ts_ns: now_ns() })?;
    observer.event(&Event::RunFinished { status });
    Ok(summary)
}

fn prepare_run_dir(plan: &Plan, options: &RunOptions) -> Result<PathBuf, RunError> {
    let dir = match &options.out_dir {
        Some(dir) => dir.clone(),
        None => {
            let format =
                time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
            let stamp = time::OffsetDateTime::now_utc()
                .format(format)
                .unwrap_or_else(|_| now_ns().to_string());
            options.runs_root.join(format!("{}-{stamp}", plan.meta.name))
        }
    };
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(RunError::RunDirExists { path: dir });
    }
    for sub in [dir.clone(), dir.join("steps")] {
        std::fs::create_dir_all(&sub).map_err(|source| RunError::Io {
            what: format!("creating {}", sub.display()),
            source,
        })?;
    }
    Ok(dir)
}

/// Lowercase hex SHA-256 of `text`.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), RunError> {
    std::fs::write(path, text)
        .map_err(|source| RunError::Io { what: format!("writing {}", path.display()), source })
}

impl Ctx<'_> {
    fn run_step(&mut self, step_id: i64, stage: &Stage, index: usize, step: &Step) -> StepOutcome {
        let kind = step.kind();
        self.observer.event(&Event::StepStarted {
            stage: stage.instance.clone(),
            index,
            of: stage.steps.len(),
            name: step.name.clone(),
            kind,
            summary: step.action.summary(),
            expected: steps::expected_duration(&step.action),
        });
        let started = Instant::now();
        let started_ts_ns = now_ns();
        let scope = self.scope(&stage.instance);
        let record = StepRecord {
            step_id,
            stage: stage.instance.clone(),
            name: step.name.clone(),
            kind: kind.as_str().into(),
            started_ts_ns,
            ended_ts_ns: None,
            duration_us: None,
            status: "running".into(),
            message: None,
            outputs_json: None,
        };
        let journaled = self.journal.append(&Entry::StepStarted {
            step_id,
            stage: stage.instance.clone(),
            name: step.name.clone(),
            kind: kind.as_str().into(),
            ts_ns: started_ts_ns,
        });
        let result = match journaled {
            Err(err) => Err(err.to_string()),
            Ok(()) if self.options.skip.contains(&kind) => {
                Ok(steps::Done::skipped(format!("skipped (--skip {kind})")))
            }
            Ok(()) => {
                let _ = self.store.ingest(&scope, [&record]);
                steps::execute(self, step_id, stage, step)
            }
        };
        let mut done = result.unwrap_or_else(steps::Done::error);
        if done.status == StepStatus::Passed && done.checks.iter().any(|c| !c.passed) {
            done.status = StepStatus::Failed;
        }
        if self.options.cancel.load(Ordering::SeqCst) && done.status != StepStatus::Skipped {
            if done.status == StepStatus::Passed {
                // Finished just as the cancel came: keep it.
            } else {
                done.status = StepStatus::Interrupted;
            }
        }
        if let Some(trip) = &self.guards.tripped {
            if done.status != StepStatus::Passed {
                done.status = StepStatus::Interrupted;
                done.message = format!("{} ({})", done.message, trip.message());
                let guard = serde_json::to_value(trip).unwrap_or_default();
                match &mut done.outputs {
                    serde_json::Value::Object(map) => {
                        map.insert("guard".into(), guard);
                    }
                    other => *other = serde_json::json!({ "guard": guard }),
                }
            }
        }
        let duration = started.elapsed();
        let outcome = StepOutcome {
            step_id,
            stage: stage.instance.clone(),
            name: step.name.clone(),
            kind,
            status: done.status,
            message: done.message,
            duration,
            checks: done.checks,
            outputs: done.outputs,
        };
        let ended_ts_ns = now_ns();
        let finished = StepRecord {
            ended_ts_ns: Some(ended_ts_ns),
            duration_us: Some(duration.as_secs_f64() * 1e6),
            status: outcome.status.as_str().into(),
            message: Some(outcome.message.clone()),
            outputs_json: Some(
                serde_json::json!({"outputs": outcome.outputs, "checks": outcome.checks})
                    .to_string(),
            ),
            ..record
        };
        if outcome.status == StepStatus::Skipped {
            let _ = self.store.ingest(&scope, [&finished]);
        } else {
            let _ = self.store.update_step(&scope, &finished);
        }
        let _ = self.journal.append(&Entry::StepFinished {
            step_id,
            status: outcome.status.as_str().into(),
            message: outcome.message.clone(),
            ts_ns: ended_ts_ns,
        });
        self.observer.event(&Event::StepFinished(outcome.clone()));
        outcome
    }

    fn not_run(&mut self, step_id: i64, stage: &Stage, step: &Step, why: &str) -> StepOutcome {
        let outcome = StepOutcome {
            step_id,
            stage: stage.instance.clone(),
            name: step.name.clone(),
            kind: step.kind(),
            status: StepStatus::Skipped,
            message: why.to_string(),
            duration: Duration::ZERO,
            checks: Vec::new(),
            outputs: serde_json::Value::Null,
        };
        let ts = now_ns();
        let record = StepRecord {
            step_id,
            stage: stage.instance.clone(),
            name: step.name.clone(),
            kind: step.kind().as_str().into(),
            started_ts_ns: ts,
            ended_ts_ns: Some(ts),
            duration_us: Some(0.0),
            status: "skipped".into(),
            message: Some(why.to_string()),
            outputs_json: None,
        };
        let _ = self.store.ingest(&self.scope(&stage.instance), [&record]);
        self.observer.event(&Event::StepFinished(outcome.clone()));
        outcome
    }

    pub(crate) fn scope(&self, stage: &str) -> Scope {
        Scope::new(&self.run_id, &self.host).with_stage(stage)
    }

    pub(crate) fn next_command_id(&mut self) -> i64 {
        let id = self.next_command_id;
        self.next_command_id += 1;
        id
    }

    /// Journals a cleanup before the action that needs it.
    pub(crate) fn register(
        &mut self,
        stage_scoped: bool,
        action: CleanupAction,
    ) -> Result<u64, RunError> {
        let id = self.next_cleanup_id;
        self.next_cleanup_id += 1;
        self.journal
            .append(&Entry::CleanupRegistered { cleanup_id: id, cleanup: action.clone() })?;
        let scope = if stage_scoped { CleanupScope::Stage } else { CleanupScope::Run };
        self.cleanups.push((scope, Pending::Journaled { id, action, child: None }));
        Ok(id)
    }

    /// Hands the child of a registered StopProcess cleanup over, so stopping it also reaps it.
    pub(crate) fn attach_child(&mut self, id: u64, process: std::process::Child) {
        for (_, pending) in self.cleanups.iter_mut().rev() {
            if let Pending::Journaled { id: pid, child, .. } = pending {
                if *pid == id {
                    *child = Some(process);
                    return;
                }
            }
        }
    }

    /// Registers an in-process background task (sampler, capture) stopped at the end of the stage.
    pub(crate) fn register_in_process(&mut self, description: String, stop: StopFn) {
        self.cleanups.push((CleanupScope::Stage, Pending::InProcess { description, stop }));
    }

    fn run_cleanups(&mut self, scope: CleanupScope) -> Vec<CleanupOutcome> {
        let mut outcomes = Vec::new();
        while let Some(position) =
            self.cleanups.iter().rposition(|(s, _)| scope == CleanupScope::Run || *s == scope)
        {
            let (_, pending) = self.cleanups.remove(position);
            let outcome = match pending {
                Pending::Journaled { id, action, child } => {
                    let (ok, message) = recover::perform(&action, child, &self.run_dir, id);
                    let _ = self.journal.append(&Entry::CleanupDone {
                        cleanup_id: id,
                        ok,
                        message: message.clone(),
                    });
                    CleanupOutcome { description: action.describe(), ok, message }
                }
                Pending::InProcess { description, stop } => match stop(self) {
                    Ok(message) => CleanupOutcome { description, ok: true, message },
                    Err(message) => CleanupOutcome { description, ok: false, message },
                },
            };
            self.observer.event(&Event::Cleanup(outcome.clone()));
            outcomes.push(outcome);
        }
        outcomes
    }
}
