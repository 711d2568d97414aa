//! Doing cleanups: during a run, and afterwards from the journal (`peel recover RUN_DIR`) when the
//! run was killed before it could clean up (SIGKILL, power loss, OOM killer).

use std::path::Path;
use std::process::Child;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::journal::{self, CleanupAction, Entry, Journal};
use super::process;
use super::{CleanupOutcome, RunError};

/// How long an `undo` command may run.
const UNDO_TIMEOUT: Duration = Duration::from_secs(120);

/// What `recover` found and did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecoverReport {
    /// The run finished normally (its journal says so); nothing was pending.
    pub run_finished: bool,
    pub cleanup: Vec<CleanupOutcome>,
}

/// Finishes the cleanups a run registered and never did, last registered first, and journals each.
pub fn recover(run_dir: &Path) -> Result<RecoverReport, RunError> {
    if !run_dir.join(journal::JOURNAL_FILE).is_file() {
        return Err(RunError::NotARunDir { path: run_dir.to_path_buf() });
    }
    let entries = journal::read(run_dir)?;
    let run_finished = entries.iter().any(|e| matches!(e, Entry::RunFinished { .. }));
    if let Some(Entry::RunStarted { pid, .. }) = entries.first() {
        // A live run does its own cleanup; recovering under it would race it.
        if !run_finished && *pid != std::process::id() && pid_is_peel(*pid) {
            return Err(RunError::Io {
                what: format!("the run is still in progress (peel pid {pid}); stop it with Ctrl-C or kill -TERM {pid}"),
                source: std::io::Error::other("run in progress"),
            });
        }
    }
    let mut journal = Journal::open(run_dir)?;
    let mut cleanup = Vec::new();
    for (id, action) in journal::pending_cleanups(&entries) {
        let (ok, message) = perform(&action, None, run_dir, id);
        journal.append(&Entry::CleanupDone { cleanup_id: id, ok, message: message.clone() })?;
        cleanup.push(CleanupOutcome { description: action.describe(), ok, message });
    }
    if !run_finished {
        seal_database(run_dir, &mut cleanup);
    }
    Ok(RecoverReport { run_finished, cleanup })
}

/// A killed run leaves its database under the temporary name; what DuckDB committed (every step
/// record, every ingested batch) is in it and its write-ahead log, so recover gives it its name.
fn seal_database(run_dir: &Path, cleanup: &mut Vec<CleanupOutcome>) {
    let db = run_dir.join(super::DB_FILE);
    let partial = peel_store::partial_path(&db);
    if db.exists() || !partial.exists() {
        return;
    }
    let wal = |p: &Path| {
        let mut name = p.as_os_str().to_os_string();
        name.push(".wal");
        std::path::PathBuf::from(name)
    };
    let renamed = std::fs::rename(&partial, &db).and_then(|()| {
        match std::fs::rename(wal(&partial), wal(&db)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    });
    let (ok, message) = match renamed {
        Ok(()) => (true, format!("kept what was committed as {}", db.display())),
        Err(err) => (false, err.to_string()),
    };
    cleanup.push(CleanupOutcome { description: "seal the run database".into(), ok, message });
}

fn pid_is_peel(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "peel")
}

/// Does one cleanup; returns whether it succeeded and a line saying what happened.
pub(crate) fn perform(
    action: &CleanupAction,
    child: Option<Child>,
    run_dir: &Path,
    id: u64,
) -> (bool, String) {
    match action {
        CleanupAction::StopProcess { pid, start_ticks, .. } => {
            if let Some(mut child) = child {
                if let Ok(Some(status)) = child.try_wait() {
                    // The leader exited on its own; its group may still hold children.
                    process::stop_group(*pid, None);
                    return (true, format!("had already ended ({})", process::describe(&status)));
                }
                let graceful = process::stop_group(*pid, Some(&mut child));
                return (
                    true,
                    if graceful {
                        "stopped (SIGTERM)".into()
                    } else {
                        "killed (SIGKILL after grace)".into()
                    },
                );
            }
            match process::start_ticks(*pid) {
                Some(ticks) if ticks == *start_ticks => {
                    let graceful = process::stop_group(*pid, None);
                    (
                        true,
                        if graceful {
                            "stopped (SIGTERM)".into()
                        } else {
                            "killed (SIGKILL after grace)".into()
                        },
                    )
                }
                _ if process::group_alive(*pid) => {
                    // The leader is gone (or its pid reused by another program), but its group lives on:
                    // a group id is only reused once the whole group is gone, so this is still ours.
                    if process::start_ticks(*pid).is_some() {
                        return (true, "pid now belongs to another process; left alone".into());
                    }
                    process::stop_group(*pid, None);
                    (true, "leader gone; stopped the rest of its group".into())
                }
                _ => (true, "already gone".into()),
            }
        }
        CleanupAction::Undo { argv, env, cwd, .. } => {
            let base = run_dir.join("steps").join(format!("cleanup-{id}"));
            let stdout = base.with_extension("stdout");
            let stderr = base.with_extension("stderr");
            let mut child = match process::spawn_argv(argv, env, cwd.as_deref(), &stdout, &stderr) {
                Ok(child) => child,
                Err(err) => return (false, err.to_string()),
            };
            // A second Ctrl-C must not abort the undo: it gets its own, never-set cancel flag.
            let never = AtomicBool::new(false);
            match process::wait(&mut child, Some(UNDO_TIMEOUT), &never, &mut || false) {
                Ok(process::Waited::Exited(status)) if status.success() => (true, "exit 0".into()),
                Ok(process::Waited::Exited(status)) => (false, process::describe(&status)),
                Ok(process::Waited::TimedOut) => {
                    (false, format!("timed out after {}s", UNDO_TIMEOUT.as_secs()))
                }
                Ok(process::Waited::Interrupted) => (false, "interrupted".into()),
                Err(err) => (false, err.to_string()),
            }
        }
        CleanupAction::RestoreSysctls { journal } => {
            if !journal.exists() {
                return (true, "nothing to restore (journal already removed)".into());
            }
            match peel_snap::sysctl::journal::restore_journal(journal) {
                Ok(entries) => {
                    let restored: Vec<String> =
                        entries.iter().map(|e| format!("{}={}", e.key, e.old_value)).collect();
                    (true, format!("restored {}", restored.join(" ")))
                }
                Err(err) => (false, err.to_string()),
            }
        }
    }
}
