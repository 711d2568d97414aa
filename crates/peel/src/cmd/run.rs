//! `peel run`: executes a playbook into a run folder and prints the verdict.
//!
//! The library does the work and reports events; this module renders them: a live progress bar
//! on a terminal (elapsed, ETA, rps, p99, errors, and the packets and drops of running captures),
//! one line per finished step on stderr, and a summary table on stdout. Ctrl-C and SIGTERM set the run's cancel flag: the current step stops,
//! cleanup runs, and peel exits 3.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use peel_playbook::run::{Event, Observer, RunOptions, RunStatus, RunSummary, StepStatus};
use peel_playbook::{StageName, StepKind};

use crate::exit::{Fail, Outcome};

/// Run a playbook: reproduce, analyze, verify the fix; keep the evidence in a run folder.
///
/// Creates the run folder (DuckDB database, captures, step logs, journal, report.md), records
/// every step as it goes, and always cleans up (background steps stopped, undo commands run,
/// sysctls restored), also on failure, Ctrl-C and SIGTERM. After a SIGKILL, `peel recover RUN_DIR`
/// finishes the cleanup.
///
/// Exit codes: 0 every check passed, 1 a check failed, 2 invalid playbook, 3 runtime error or
/// interrupted.
///
/// Example: `peel run playbooks/lab-db-churn.toml --yes --set duration=5s --skip capture`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The playbook.
    file: PathBuf,
    /// Override a variable (repeatable): --set name=value.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = super::validate::parse_set)]
    set: Vec<(String, String)>,
    /// Run folder (default: runs/<name>-<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Answer every confirm step with yes (unattended runs).
    #[arg(long)]
    yes: bool,
    /// Run only this stage (reproduce, analyze, verify-fix).
    #[arg(long, value_parser = parse_stage)]
    stage: Option<StageName>,
    /// Do not run steps of this kind (repeatable), e.g. --skip capture without capture privilege.
    #[arg(long, value_parser = parse_kind)]
    skip: Vec<StepKind>,
}

fn parse_stage(text: &str) -> Result<StageName, String> {
    StageName::parse(text)
        .ok_or_else(|| format!("'{text}' is not a stage (reproduce, analyze, verify-fix)"))
}

fn parse_kind(text: &str) -> Result<StepKind, String> {
    StepKind::parse(text).ok_or_else(|| {
        let kinds: Vec<&str> = StepKind::ALL.iter().map(|k| k.as_str()).collect();
        format!("'{text}' is not a step kind ({})", kinds.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let plan = super::plan::load_plan(&args.file, &args.set)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let cancel = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&cancel))
            .context("installing the Ctrl-C handler")?;
    }
    let mut options = RunOptions::new(crate::VERSION);
    options.out_dir = args.out;
    options.yes = args.yes;
    options.only_stage = args.stage;
    options.skip = args.skip.into_iter().collect::<BTreeSet<_>>();
    options.cancel = cancel;
    options.playbook_text = Some(text);
    let mut renderer = Renderer::new();
    let summary = peel_playbook::run::run(&plan, &options, &mut renderer).map_err(Fail::runtime)?;
    renderer.finish();
    print!("{}", render_summary(&summary));
    match summary.status {
        RunStatus::Passed => Ok(Outcome::Success),
        RunStatus::Failed => Ok(Outcome::VerificationFailed),
        RunStatus::Error => Err(Fail::runtime(format!(
            "the run stopped on an error; see {}",
            summary.run_dir.display()
        ))
        .hint("the failed step's message is above; its output is in the run folder's steps/")
        .into()),
        RunStatus::Interrupted => Err(Fail::runtime("interrupted; cleanup done")
            .hint(format!("finished steps are kept in {}", summary.run_dir.display()))
            .into()),
    }
}

/// Renders events: a progress bar on a terminal, plain lines otherwise.
struct Renderer {
    tty: bool,
    bar: Option<ProgressBar>,
}

impl Renderer {
    fn new() -> Renderer {
        Renderer {
            tty: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            bar: None,
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Observer for Renderer {
    fn event(&mut self, event: &Event) {
        match event {
            Event::RunStarted { run_dir, .. } => {
                self.line(&format!("run folder {}", run_dir.display()))
            }
            Event::StageStarted { instance, steps } => {
                self.line(&format!("== stage {instance} ({steps} steps)"))
            }
            Event::StepStarted { index, of, name, kind, summary, expected, .. } => {
                self.finish();
                if self.tty {
                    let bar = match expected {
                        Some(expected) => {
                            let bar = ProgressBar::new(expected.as_millis() as u64);
                            bar.set_style(
                                ProgressStyle::with_template(
                                    "{prefix} [{bar:30}] {elapsed}/{duration} eta {eta} {msg}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                            );
                            bar
                        }
                        None => {
                            let bar = ProgressBar::new_spinner();
                            bar.enable_steady_tick(Duration::from_millis(200));
                            bar
                        }
                    };
                    bar.set_prefix(format!("{}/{} {kind} {name}", index + 1, of));
                    bar.set_message(summary.clone());
                    self.bar = Some(bar);
                }
            }
            Event::StepProgress { elapsed, detail, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(elapsed.as_millis() as u64);
                    bar.set_message(detail.clone());
                }
            }
            Event::StepFinished(outcome) => {
                self.finish();
                let mark = match outcome.status {
                    StepStatus::Passed => "ok  ",
                    StepStatus::Failed => "FAIL",
                    StepStatus::Error => "ERR ",
                    StepStatus::Skipped => "skip",
                    StepStatus::Interrupted => "INT ",
                };
                self.line(&format!(
                    "  {mark} {:<8} {:<26} {:>6.1}s  {}",
                    outcome.kind.as_str(),
                    outcome.name,
                    outcome.duration.as_secs_f64(),
                    outcome.message
                ));
                for check in &outcome.checks {
                    let mark = if check.passed { "pass" } else { "FAIL" };
                    self.line(&format!("         {mark}: {}: {}", check.name, check.detail));
                }
            }
            Event::GuardTripped { stage, message, .. } => {
                self.line(&format!("!! {stage}: {message}; stopping the stage"))
            }
            Event::Cleanup(c) => {
                let mark = if c.ok { "ok  " } else { "FAIL" };
                self.line(&format!("  cleanup {mark} {}: {}", c.description, c.message));
            }
            Event::RunFinished { .. } => self.finish(),
        }
    }

    fn confirm(&mut self, prompt: &str) -> bool {
        self.finish();
        if !std::io::stdin().is_terminal() {
            eprintln!("confirm: {prompt}\nno terminal to ask on; pass --yes to answer yes");
            return false;
        }
        eprint!("{prompt} [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes")
    }
}

/// The summary table printed at the end of a run.
pub fn render_summary(summary: &RunSummary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n{:<22} {:<26} {:<8} {:<11} {:>7}  result\n",
        "stage", "step", "kind", "status", "time"
    ));
    for step in &summary.steps {
        out.push_str(&format!(
            "{:<22} {:<26} {:<8} {:<11} {:>6.1}s  {}\n",
            step.stage,
            step.name,
            step.kind.as_str(),
            step.status.as_str(),
            step.duration.as_secs_f64(),
            step.message.lines().next().unwrap_or("")
        ));
    }
    let checks: Vec<_> = summary.steps.iter().flat_map(|s| &s.checks).collect();
    if !checks.is_empty() {
        out.push_str("\nchecks\n");
        for check in checks {
            out.push_str(&format!(
                "  {}  {}: {}\n",
                if check.passed { "PASS" } else { "FAIL" },
                check.name,
                check.detail
            ));
        }
    }
    out.push_str(&format!("\nverdict: {}\n", summary.status.as_str()));
    if let Some(report) = &summary.report {
        out.push_str(&format!("report:  {}\n", report.display()));
    }
    if let Some(err) = &summary.report_error {
        out.push_str(&format!("report not written: {err}\n"));
    }
    out.push_str(&format!("db:      {}\n", summary.db.display()));
    if let (Some(archive), Some(sha256)) = (&summary.archive, &summary.archive_sha256) {
        out.push_str(&format!("archive: {} (sha256 {sha256})\n", archive.display()));
    }
    if let Some(err) = &summary.archive_error {
        out.push_str(&format!("archive not written: {err}\n"));
    }
    out
}
