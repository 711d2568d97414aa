//! `peel sysctl`: read the incident set of kernel parameters, diff two snapshots, and change values
//! under a journal so that every change is undone: on exit, on Ctrl-C/SIGTERM, and after a crash
//! with `peel sysctl restore`. The journal and the writes are peel-snap's; this module holds the
//! values for as long as asked and turns signals into a normal return so the guard restores.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use peel_snap::sysctl::journal::{default_journal_path, restore_journal, SysctlGuard};
use peel_snap::sysctl::{self, SysctlChange};
use peel_snap::ProcRoot;
use serde::Serialize;

use crate::cmd::snap::{snap_error, Table};
use crate::exit::{Fail, Outcome};

const EXAMPLES: &str = "\
Examples:
  # the incident set, and every keepalive setting
  peel sysctl get
  peel sysctl get 'net.ipv4.tcp_keepalive_*' --format json > before.json

  # what changed since then
  peel sysctl diff before.json

  # try a value for 5 minutes, or while a load test runs; the old value always comes back
  sudo peel sysctl set net.core.somaxconn=4096 --for 5m
  sudo peel sysctl set net.ipv4.tcp_tw_reuse=1 -- peel load http://127.0.0.1:8000/ --duration 60s

  # after a crash (the journal stayed behind)
  sudo peel sysctl restore";

/// Read, diff, and safely change kernel parameters.
#[derive(Debug, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: SysctlCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SysctlCommand {
    /// Print the incident set of sysctls, or the keys and globs given.
    Get(GetArgs),
    /// Set values until --for elapses, COMMAND exits, or Ctrl-C/SIGTERM; then restore them.
    ///
    /// The old values are written to a journal (fsynced) before anything changes. If peel is
    /// killed (SIGKILL) the values stay set and the journal stays: `peel sysctl restore` undoes it.
    /// Unknown keys and values the kernel rejects are refused, and nothing stays changed.
    Set(SetArgs),
    /// Undo the changes recorded in a journal left by a `set` that did not finish.
    Restore(RestoreArgs),
    /// Compare the sysctls of two snapshot files, or of one file and the running kernel.
    Diff(DiffArgs),
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    /// Keys (net.core.somaxconn) or globs (net.ipv4.tcp_*); none: the incident set.
    #[arg(value_name = "KEY|GLOB")]
    keys: Vec<String>,
    /// Read a copy of /proc at DIR instead of the live kernel.
    #[arg(long, value_name = "DIR")]
    proc_root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    /// key=value pairs (quote values with spaces: 'net.ipv4.ip_local_port_range=1024 65000').
    #[arg(value_name = "KEY=VALUE", required = true)]
    assignments: Vec<String>,
    /// Restore after this long (e.g. 30s, 5m). Without it (and without COMMAND): until Ctrl-C.
    #[arg(long = "for", value_name = "D", value_parser = peel_capture::parse_duration)]
    hold: Option<Duration>,
    /// Journal file recording the old values.
    #[arg(long, value_name = "PATH", default_value_os_t = default_journal_path())]
    journal: PathBuf,
    /// Write under a copy of /proc at DIR (for tests and rehearsals) instead of the live kernel.
    #[arg(long, value_name = "DIR")]
    proc_root: Option<PathBuf>,
    /// Run COMMAND with the values set, restore when it exits.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// Journal to undo.
    #[arg(value_name = "JOURNAL", default_value_os_t = default_journal_path())]
    journal: PathBuf,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// Snapshot JSON (`peel snap --format json` or `peel sysctl get --format json`).
    #[arg(value_name = "A")]
    before: PathBuf,
    /// Second snapshot; without it, the running kernel (the keys of A plus the incident set).
    #[arg(value_name = "B")]
    after: Option<PathBuf>,
    /// With one file: compare with a copy of /proc at DIR instead of the live kernel.
    #[arg(long, value_name = "DIR")]
    proc_root: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: &'a str,
}

/// JSON of `get`: the same `sysctls` array a snapshot has, so `diff` reads both.
#[derive(Debug, Serialize)]
struct GetOutput<'a> {
    sysctls: Vec<KeyValue<'a>>,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        SysctlCommand::Get(args) => get(args),
        SysctlCommand::Set(args) => set(args),
        SysctlCommand::Restore(args) => restore(args),
        SysctlCommand::Diff(args) => diff(args),
    }
}

fn root(dir: Option<PathBuf>) -> ProcRoot {
    dir.map_or_else(ProcRoot::live, ProcRoot::new)
}

fn get(args: GetArgs) -> anyhow::Result<Outcome> {
    let root = root(args.proc_root);
    let values = if args.keys.is_empty() {
        sysctl::read_incident_set(&root, &[])
    } else {
        sysctl::read_patterns(&root, &args.keys)
    }
    .map_err(snap_error)?;
    if values.is_empty() {
        return Err(Fail::usage(format!("no sysctl matches {}", args.keys.join(" ")))
            .hint("globs use * and ?, e.g. 'net.ipv4.tcp_*'")
            .into());
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let sysctls = values.iter().map(|(key, value)| KeyValue { key, value }).collect();
            serde_json::to_writer_pretty(&mut out, &GetOutput { sysctls })?;
            writeln!(out)?;
        }
        Format::Table => {
            let width = values.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
            for (key, value) in &values {
                writeln!(out, "{key:<width$}  {value}")?;
            }
        }
    }
    Ok(Outcome::Success)
}

fn set(args: SetArgs) -> anyhow::Result<Outcome> {
    let root = root(args.proc_root);
    let changes: Vec<(String, String)> = args
        .assignments
        .iter()
        .map(|a| sysctl::parse_assignment(a))
        .collect::<Result<_, _>>()
        .map_err(snap_error)?;
    // Installed before the first write: from here on SIGINT/SIGTERM only ask us to restore and leave.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handlers")?;
    }
    let guard = SysctlGuard::apply(&root, &args.journal, &changes).map_err(snap_error)?;
    let mut err = std::io::stderr().lock();
    for entry in guard.entries() {
        writeln!(err, "set {} = {} (was {})", entry.key, entry.new_value, entry.old_value)?;
    }
    writeln!(err, "journal {}", guard.journal_path().display())?;

    let held = hold(&args.command, args.hold, &stop);
    let restored = guard.restore().map_err(snap_error).context("restoring the old values")?;
    for entry in &restored {
        writeln!(err, "restored {} = {}", entry.key, entry.old_value)?;
    }
    match held? {
        Some(status) if !status.success() => {
            Err(Fail::runtime(format!("{} exited with {status}", args.command.join(" "))).into())
        }
        _ => Ok(Outcome::Success),
    }
}

/// Waits for COMMAND to exit, for `hold` to pass, or for a signal, whichever comes first.
fn hold(
    command: &[String],
    hold: Option<Duration>,
    stop: &AtomicBool,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    const STEP: Duration = Duration::from_millis(50);
    let deadline = hold.map(|hold| Instant::now() + hold);
    let mut child = match command.split_first() {
        Some((program, arguments)) => Some(
            Command::new(program)
                .args(arguments)
                .spawn()
                .map_err(|err| Fail::usage(format!("cannot run {program}: {err}")))?,
        ),
        None => None,
    };
    loop {
        if let Some(child) = child.as_mut() {
            if let Some(status) = child.try_wait().context("waiting for the command")? {
                return Ok(Some(status));
            }
        }
        let expired = deadline.is_some_and(|deadline| Instant::now() >= deadline);
        if stop.load(Ordering::Relaxed) || expired {
            if let Some(child) = child.as_mut() {
                // The command outlived the hold: it must not keep running on restored values.
                let _ = child.kill();
                let _ = child.wait();
            }
            return Ok(None);
        }
        std::thread::sleep(STEP);
    }
}

fn restore(args: RestoreArgs) -> anyhow::Result<Outcome> {
    if !args.journal.exists() {
        return Err(Fail::usage(format!("no journal at {}", args.journal.display()))
            .hint("nothing to restore, or give the path that `peel sysctl set --journal` used")
            .into());
    }
    let restored = restore_journal(&args.journal).map_err(snap_error)?;
    let mut out = std::io::stdout().lock();
    for entry in &restored {
        writeln!(
            out,
            "restored {} = {} (was set to {})",
            entry.key, entry.old_value, entry.new_value
        )?;
    }
    Ok(Outcome::Success)
}

fn diff(args: DiffArgs) -> anyhow::Result<Outcome> {
    let before = sysctl::load_snapshot_file(&args.before).map_err(snap_error)?;
    let after = match &args.after {
        Some(path) => sysctl::load_snapshot_file(path).map_err(snap_error)?,
        None => {
            let keys: Vec<String> = before.iter().map(|(key, _)| key.clone()).collect();
            let root = root(args.proc_root);
            // Keys of A that no longer exist simply show up as removed.
            let mut now = sysctl::read_incident_set(&root, &[]).map_err(snap_error)?;
            for key in keys {
                if now.iter().all(|(k, _)| *k != key) {
                    if let Ok(value) = sysctl::read(&root, &key) {
                        now.push((key, value));
                    }
                }
            }
            now
        }
    };
    let changes = sysctl::diff(&before, &after);
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &changes)?;
            writeln!(out)?;
        }
        Format::Table => write_changes(&mut out, &changes)?,
    }
    Ok(Outcome::Success)
}

fn write_changes(out: &mut impl Write, changes: &[SysctlChange]) -> std::io::Result<()> {
    if changes.is_empty() {
        return writeln!(out, "no differences");
    }
    let mut table = Table::new(&[("KEY", false), ("BEFORE", false), ("AFTER", false)]);
    let shown = |value: &Option<String>| value.clone().unwrap_or_else(|| "(absent)".to_owned());
    for change in changes {
        table.row(vec![change.key.clone(), shown(&change.before), shown(&change.after)]);
    }
    table.write(out)
}
