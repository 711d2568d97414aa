//! The resolved playbook: every variable substituted, every duration parsed, every matrix expanded.
//!
//! This is what `peel plan` prints and what the runner executes; nothing in it still needs the TOML
//! text except the locations kept for messages.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::diagnostic::Location;
use crate::threshold::{Quantity, Threshold};

/// A playbook ready to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub file: PathBuf,
    pub meta: Meta,
    /// Every variable with its value and where the value came from.
    pub vars: Vec<ResolvedVar>,
    pub targets: Vec<Target>,
    pub stages: Vec<Stage>,
}

/// The `[playbook]` table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Meta {
    pub name: String,
    pub description: String,
    pub owner: Option<String>,
    pub symptoms: Vec<String>,
}

/// A variable after `--set` overrides.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResolvedVar {
    pub name: String,
    pub value: String,
    pub description: Option<String>,
    /// True when `--set` gave the value.
    pub overridden: bool,
}

/// A named service under test (`[targets.app]`); its fields are also variables `targets.app.FIELD`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub name: String,
    pub address: Option<String>,
    pub url: Option<String>,
    pub interface: Option<String>,
    pub processes: Vec<String>,
}

/// The three stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageName {
    Reproduce,
    Analyze,
    VerifyFix,
}

impl StageName {
    pub const ALL: [StageName; 3] =
        [StageName::Reproduce, StageName::Analyze, StageName::VerifyFix];

    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Reproduce => "reproduce",
            StageName::Analyze => "analyze",
            StageName::VerifyFix => "verify-fix",
        }
    }

    pub fn parse(text: &str) -> Option<StageName> {
        StageName::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of a stage; a stage with a matrix becomes one `Stage` per value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    pub name: StageName,
    /// `reproduce`, or `reproduce[workers=4]` for a matrix value: the label records carry.
    pub instance: String,
    pub matrix: Option<MatrixValue>,
    pub guards: Vec<Guard>,
    pub steps: Vec<Step>,
}

/// The variable a matrix stage varies and this instance's value.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MatrixValue {
    pub var: String,
    pub value: String,
}

/// A condition checked while a stage runs; when it fails the stage is aborted and cleaned up.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Guard {
    pub location: Location,
    pub expect: Threshold,
    /// SQL over the run database giving the metric; without it the metric is built in
    /// ([`crate::spec::GUARD_METRICS`]).
    pub sql: Option<String>,
    pub every: Duration,
}

/// One step of a stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// Unique within the stage: `name = ...`, or `<kind>-<n>`.
    pub name: String,
    pub location: Location,
    /// A failed step (or check) does not stop the stage.
    pub continue_on_error: bool,
    pub action: Action,
}

impl Step {
    pub fn kind(&self) -> StepKind {
        self.action.kind()
    }
}

/// Every kind of step, as written in `kind = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Load,
    Exec,
    Snapshot,
    Capture,
    Sysctl,
    Analyze,
    Findings,
    Query,
    Compare,
    Wait,
    Note,
    Confirm,
    Archive,
}

impl StepKind {
    pub const ALL: [StepKind; 13] = [
        StepKind::Load,
        StepKind::Exec,
        StepKind::Snapshot,
        StepKind::Capture,
        StepKind::Sysctl,
        StepKind::Analyze,
        StepKind::Findings,
        StepKind::Query,
        StepKind::Compare,
        StepKind::Wait,
        StepKind::Note,
        StepKind::Confirm,
        StepKind::Archive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Load => "load",
            StepKind::Exec => "exec",
            StepKind::Snapshot => "snapshot",
            StepKind::Capture => "capture",
            StepKind::Sysctl => "sysctl",
            StepKind::Analyze => "analyze",
            StepKind::Findings => "findings",
            StepKind::Query => "query",
            StepKind::Compare => "compare",
            StepKind::Wait => "wait",
            StepKind::Note => "note",
            StepKind::Confirm => "confirm",
            StepKind::Archive => "archive",
        }
    }

    pub fn parse(text: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a step does, with its resolved settings.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    Load(LoadStep),
    Exec(ExecStep),
    Snapshot(SnapshotStep),
    Capture(CaptureStep),
    Sysctl(SysctlStep),
    Analyze(AnalyzeStep),
    Findings,
    Query(QueryStep),
    Compare(CompareStep),
    Wait(WaitStep),
    Note { text: String },
    Confirm { prompt: String },
    Archive { out: Option<PathBuf> },
}

impl Action {
    pub fn kind(&self) -> StepKind {
        match self {
            Action::Load(_) => StepKind::Load,
            Action::Exec(_) => StepKind::Exec,
            Action::Snapshot(_) => StepKind::Snapshot,
            Action::Capture(_) => StepKind::Capture,
            Action::Sysctl(_) => StepKind::Sysctl,
            Action::Analyze(_) => StepKind::Analyze,
            Action::Findings => StepKind::Findings,
            Action::Query(_) => StepKind::Query,
            Action::Compare(_) => StepKind::Compare,
            Action::Wait(_) => StepKind::Wait,
            Action::Note { .. } => StepKind::Note,
            Action::Confirm { .. } => StepKind::Confirm,
            Action::Archive { .. } => StepKind::Archive,
        }
    }
}

/// HTTP load with peel-load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadStep {
    pub url: String,
    /// Path -> weight; each path is its own URL class with its own percentiles.
    pub mix: Vec<(String, u32)>,
    pub model: LoadModel,
    pub duration: Duration,
    pub connections: Option<u32>,
    pub keepalive: bool,
    pub timeout: Option<Duration>,
}

/// Open model (constant arrival rate) or closed model (fixed concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadModel {
    RatePerS(u32),
    Concurrency(u32),
}

/// A program run as an argv list (or through `sh -c` when `shell = true`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecStep {
    pub program: Program,
    pub timeout: Option<Duration>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub expect_exit: Vec<i32>,
    pub background: bool,
    pub undo: Option<Vec<String>>,
}

/// What an exec step starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Program {
    Argv(Vec<String>),
    /// A shell command; variables reach it only as `PEEL_VAR_<NAME>` environment variables.
    Shell(String),
}

/// Socket, counter, sysctl and process snapshots.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotStep {
    /// Sample every this long; none means one snapshot.
    pub every: Option<Duration>,
    /// Sample for this long in the foreground; none with `every` means in the background until the
    /// stage ends.
    pub for_: Option<Duration>,
    pub processes: Vec<String>,
    pub sysctls: Vec<String>,
}

/// Packet capture in the background for the rest of the stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureStep {
    pub interface: String,
    pub filter: Option<String>,
    pub snaplen_bytes: Option<u32>,
    /// Ring buffer: at most `count` files of `size_mb` MB.
    pub ring: Option<(u32, u32)>,
}

/// Sysctl values to set, journaled and restored at cleanup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SysctlStep {
    pub set: Vec<(String, String)>,
}

/// Phase analysis of the stage's captures into the run database.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AnalyzeStep {
    /// Which stage's captures; the current stage when not given.
    pub captures_of: Option<String>,
    pub ports: Vec<u16>,
}

/// SQL over the run database, optionally checked against thresholds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryStep {
    pub sql: String,
    pub expect: Vec<Threshold>,
}

/// One metric measured on two stages (or runs), judged by thresholds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompareStep {
    pub metric: String,
    pub baseline: String,
    pub candidate: String,
    /// The SQL with `${stage}` bound to the baseline stage.
    pub sql_baseline: String,
    /// The SQL with `${stage}` bound to the candidate stage.
    pub sql_candidate: String,
    pub better: Better,
    pub improves_by: Option<Quantity>,
    pub at_most: Option<Quantity>,
    pub at_least: Option<Quantity>,
}

/// Which direction of change is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    Lower,
    Higher,
}

/// Wait for a duration, or until a TCP port accepts connections.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitStep {
    For(Duration),
    Port { address: String, timeout: Duration },
}

impl Action {
    /// One line saying what the step will do, for plans and reports.
    pub fn summary(&self) -> String {
        match self {
            Action::Load(load) => {
                let model = match load.model {
                    LoadModel::RatePerS(rate) => format!("{rate} req/s"),
                    LoadModel::Concurrency(c) => format!("concurrency {c}"),
                };
                let mix = if load.mix.is_empty() {
                    String::new()
                } else {
                    let parts: Vec<String> =
                        load.mix.iter().map(|(p, w)| format!("{p}={w}")).collect();
                    format!(" mix {}", parts.join(","))
                };
                let keepalive = if load.keepalive { "" } else { ", no keep-alive" };
                format!(
                    "{} at {model} for {}{mix}{keepalive}",
                    load.url,
                    humantime::format_duration(load.duration)
                )
            }
            Action::Exec(exec) => {
                let mut line = match &exec.program {
                    Program::Argv(argv) => {
                        argv.iter().map(|a| quote_arg(a)).collect::<Vec<_>>().join(" ")
                    }
                    Program::Shell(command) => format!("sh -c {}", quote_arg(command)),
                };
                if exec.background {
                    line.push_str("  (background until stage end)");
                }
                if let Some(timeout) = exec.timeout {
                    line.push_str(&format!("  (timeout {})", humantime::format_duration(timeout)));
                }
                if let Some(undo) = &exec.undo {
                    line.push_str(&format!("  (undo: {})", undo.join(" ")));
                }
                line
            }
            Action::Snapshot(snap) => match (snap.every, snap.for_) {
                (None, _) => "one snapshot".to_string(),
                (Some(every), Some(for_)) => format!(
                    "sample every {} for {}",
                    humantime::format_duration(every),
                    humantime::format_duration(for_)
                ),
                (Some(every), None) => {
                    format!(
                        "sample every {} until stage end (background)",
                        humantime::format_duration(every)
                    )
                }
            },
            Action::Capture(cap) => {
                let filter =
                    cap.filter.as_deref().map(|f| format!(" filter '{f}'")).unwrap_or_default();
                format!("capture on {}{filter} until stage end (background)", cap.interface)
            }
            Action::Sysctl(sysctl) => {
                let parts: Vec<String> =
                    sysctl.set.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("set {} (restored at cleanup)", parts.join(" "))
            }
            Action::Analyze(analyze) => {
                let of =
                    analyze.captures_of.as_deref().map(|s| format!(" of {s}")).unwrap_or_default();
                format!("phase analysis of the captures{of}")
            }
            Action::Findings => "rank findings over the run database".to_string(),
            Action::Query(query) => {
                let expect: Vec<String> = query.expect.iter().map(|t| t.to_string()).collect();
                if expect.is_empty() {
                    one_line(&query.sql)
                } else {
                    format!("{}  expect {}", one_line(&query.sql), expect.join(" and "))
                }
            }
            Action::Compare(cmp) => {
                let mut checks = Vec::new();
                if let Some(by) = cmp.improves_by {
                    checks.push(format!("improves by {by}"));
                }
                if let Some(q) = cmp.at_most {
                    checks.push(format!("at most {q}"));
                }
                if let Some(q) = cmp.at_least {
                    checks.push(format!("at least {q}"));
                }
                format!(
                    "{}: {} vs {}, {}",
                    cmp.metric,
                    cmp.baseline,
                    cmp.candidate,
                    checks.join(", ")
                )
            }
            Action::Wait(WaitStep::For(d)) => format!("sleep {}", humantime::format_duration(*d)),
            Action::Wait(WaitStep::Port { address, timeout }) => {
                format!(
                    "until {address} accepts (timeout {})",
                    humantime::format_duration(*timeout)
                )
            }
            Action::Note { text } => one_line(text),
            Action::Confirm { prompt } => format!("ask: {}", one_line(prompt)),
            Action::Archive { out } => match out {
                Some(out) => format!("archive the evidence to {}", out.display()),
                None => "archive the evidence".to_string(),
            },
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn quote_arg(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}
