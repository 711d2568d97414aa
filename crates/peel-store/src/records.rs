//! Records of the tables whose producers sit above peel-store (peel-playbook, peel-findings): runs,
//! steps, the commands a run executed, and findings. Plain data, like the producers' records of
//! peel-wire, peel-snap and peel-load; `run_id` and `host` come from the [`crate::Scope`] they are
//! ingested with.
//!
//! Units: instants are epoch nanoseconds (`*_ts_ns`), durations microseconds (`*_us`).

use serde::{Deserialize, Serialize};

/// One run of a playbook (or of a single command such as `peel analyze --db`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// What was run: the playbook name, or the command (`analyze`, `snap`, `load`).
    pub playbook: String,
    /// Path of the playbook file as given, if any.
    pub playbook_path: Option<String>,
    /// SHA-256 of the playbook file as run, hex.
    pub playbook_sha256: Option<String>,
    /// `--set` variables and resolved defaults, as a JSON object.
    pub variables_json: Option<String>,
    pub started_ts_ns: i64,
    /// `None` while the run is in progress (or if it never finished).
    pub ended_ts_ns: Option<i64>,
    /// `running`, `passed`, `failed`, `error`, `interrupted`.
    pub status: String,
    /// peel's version (`0.1.0 (abc1234)`).
    pub tool_version: String,
    /// Kernel release of the host (`uname -r`).
    pub kernel: Option<String>,
    /// The run folder.
    pub run_dir: Option<String>,
}

/// One step of a run (a row of `steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Position of the step in the run, from 0, unique within the run (matrix repeats get their own).
    pub step_id: i64,
    /// `reproduce`, `analyze` or `verify-fix` (with the matrix value, e.g. `reproduce[workers=4]`).
    pub stage: String,
    /// The step's name in the playbook.
    pub name: String,
    /// Step kind: `load`, `exec`, `snapshot`, `capture`, `sysctl`, `analyze`, `query`, `compare`, ...
    pub kind: String,
    pub started_ts_ns: i64,
    pub ended_ts_ns: Option<i64>,
    pub duration_us: Option<f64>,
    /// `running`, `passed`, `failed`, `skipped`, `error`, `interrupted`.
    pub status: String,
    /// One human line: the check's numbers, the error.
    pub message: Option<String>,
    /// Step outputs (files written, measured values) as a JSON object.
    pub outputs_json: Option<String>,
}

/// One program a run executed, with its real exit status (a row of `commands`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// Position of the command in the run, from 0.
    pub command_id: i64,
    /// The step that ran it; `None` for cleanup outside a step.
    pub step_id: Option<i64>,
    /// `step`, `background`, `undo`, `cleanup`.
    pub purpose: String,
    /// The argv as a JSON array of strings (never a shell string; `shell = true` gives `["sh","-c",..]`).
    pub argv_json: String,
    pub cwd: Option<String>,
    pub started_ts_ns: i64,
    pub ended_ts_ns: Option<i64>,
    pub duration_us: Option<f64>,
    /// Exit code; `None` when killed by a signal or still running.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Captured output files, relative to the run folder.
    pub stdout_path: Option<String>,
    pub stderr_path: Option<String>,
}

/// One finding of the rules engine (a row of `findings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    /// Rank within the run, from 0 (most important first).
    pub finding_id: i64,
    /// Rule identifier (`slow-close`, `db-connection-churn`, `not-cpu-bound`, ...).
    pub rule: String,
    /// `critical`, `warning`, `info`.
    pub severity: String,
    /// Ranking score (higher is more important).
    pub score: f64,
    /// Stage the finding is about, if one.
    pub stage: Option<String>,
    /// Endpoint (`ip:port` or URL class) the finding is about, if one.
    pub endpoint: Option<String>,
    pub title: String,
    /// The explanation with its numbers.
    pub detail: String,
    /// The SQL that produced the evidence, so a report can link every number to it.
    pub evidence_sql: Option<String>,
}
