//! The run journal: one JSON line per event, written and fsynced *before* the action it announces.
//!
//! An interrupted run (SIGKILL, power loss) keeps every finished step, and every cleanup that was
//! registered but not done can be finished later by `peel recover RUN_DIR` (chaostoolkit#151: a
//! journal written only at the end loses everything when the end never comes).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::RunError;

/// The journal's file name inside a run folder.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// Something the run must undo, recorded before it is needed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum CleanupAction {
    /// Stop a background process group (SIGTERM, then SIGKILL). `start_ticks` is the process start
    /// time from /proc/PID/stat, so a recycled pid is never signalled.
    StopProcess { pid: i32, start_ticks: u64, label: String },
    /// Run an `undo` argv.
    Undo { argv: Vec<String>, env: Vec<(String, String)>, cwd: Option<PathBuf>, label: String },
    /// Write back the old values recorded in a peel-snap sysctl journal.
    RestoreSysctls { journal: PathBuf },
}

impl CleanupAction {
    /// One line for progress output and reports.
    pub fn describe(&self) -> String {
        match self {
            CleanupAction::StopProcess { pid, label, .. } => {
                format!("stop {label} (process group {pid})")
            }
            CleanupAction::Undo { argv, label, .. } => format!("undo {label}: {}", argv.join(" ")),
            CleanupAction::RestoreSysctls { journal } => {
                format!("restore sysctls from {}", journal.display())
            }
        }
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Entry {
    RunStarted { run_id: String, playbook: String, ts_ns: i64, pid: u32 },
    StepStarted { step_id: i64, stage: String, name: String, kind: String, ts_ns: i64 },
    StepFinished { step_id: i64, status: String, message: String, ts_ns: i64 },
    CleanupRegistered { cleanup_id: u64, cleanup: CleanupAction },
    CleanupDone { cleanup_id: u64, ok: bool, message: String },
    RunFinished { status: String, ts_ns: i64 },
}

/// An open journal, appended to with fsync after every line.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (or creates) the journal of `run_dir` for appending.
    pub fn open(run_dir: &Path) -> Result<Journal, RunError> {
        let path = run_dir.join(JOURNAL_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|source| {
            RunError::Io { what: format!("opening {}", path.display()), source }
        })?;
        Ok(Journal { path, file })
    }

    /// Appends one entry and waits until it is on disk.
    pub fn append(&mut self, entry: &Entry) -> Result<(), RunError> {
        let mut line = serde_json::to_string(entry).map_err(|e| RunError::Journal {
            path: self.path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        line.push('\n');
        let io = |source| RunError::Io { what: format!("writing {}", self.path.display()), source };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(|source| RunError::Io {
            what: format!("syncing {}", self.path.display()),
            source,
        })
    }
}

/// Reads every entry of a journal. A torn last line (the crash happened mid-write) is ignored;
/// a damaged line elsewhere is an error naming its line number.
pub fn read(run_dir: &Path) -> Result<Vec<Entry>, RunError> {
    let path = run_dir.join(JOURNAL_FILE);
    let file = File::open(&path)
        .map_err(|source| RunError::Io { what: format!("opening {}", path.display()), source })?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| RunError::Io { what: format!("reading {}", path.display()), source })?;
    let mut entries = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(entry) => entries.push(entry),
            Err(_) if index + 1 == lines.len() => break,
            Err(err) => {
                return Err(RunError::Journal {
                    path: path.clone(),
                    line: index + 1,
                    message: err.to_string(),
                });
            }
        }
    }
    Ok(entries)
}

/// Cleanups registered and not yet done, in the order they must run (last registered first).
pub fn pending_cleanups(entries: &[Entry]) -> Vec<(u64, CleanupAction)> {
    let mut pending: Vec<(u64, CleanupAction)> = Vec::new();
    for entry in entries {
        match entry {
            Entry::CleanupRegistered { cleanup_id, cleanup } => {
                pending.push((*cleanup_id, cleanup.clone()))
            }
            Entry::CleanupDone { cleanup_id, .. } => pending.retain(|(id, _)| id != cleanup_id),
            _ => {}
        }
    }
    pending.reverse();
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_cleanups_are_the_undone_ones_in_reverse() {
        let stop = |pid| CleanupAction::StopProcess { pid, start_ticks: 1, label: "x".into() };
        let entries = vec![
            Entry::CleanupRegistered { cleanup_id: 0, cleanup: stop(10) },
            Entry::CleanupRegistered { cleanup_id: 1, cleanup: stop(11) },
            Entry::CleanupRegistered { cleanup_id: 2, cleanup: stop(12) },
            Entry::CleanupDone { cleanup_id: 1, ok: true, message: String::new() },
        ];
        let pending: Vec<u64> = pending_cleanups(&entries).into_iter().map(|(id, _)| id).collect();
        assert_eq!(pending, vec![2, 0]);
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.append(&Entry::RunFinished { status: "passed".into(), ts_ns: 5 }).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap()
            .write_all(b"{\"event\":\"step-sta")
            .unwrap();
        assert_eq!(
            read(dir.path()).unwrap(),
            vec![Entry::RunFinished { status: "passed".into(), ts_ns: 5 }]
        );
    }
}
