//! Sysctl changes that are always undone.
//!
//! [`SysctlGuard::apply`] records every old value in a journal file and fsyncs it *before* the
//! first write, then writes the new values. Dropping the guard (or calling
//! [`SysctlGuard::restore`]) writes the old values back and removes the journal. If the process dies
//! without unwinding (SIGKILL, `panic = "abort"`, power loss of the container), the journal stays
//! behind and [`restore_journal`] undoes it later (`peel sysctl restore`). Signals are the binary's
//! business: it turns SIGINT/SIGTERM into a normal return so the guard drops.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SnapError};
use crate::proc_root::ProcRoot;
use crate::sysctl::{key_path, read};

const FORMAT: &str = "peel-sysctl-journal/1";

/// Where `peel sysctl set` keeps its journal unless told otherwise. /run is cleared at boot, as
/// are the sysctl values it would restore.
pub fn default_journal_path() -> PathBuf {
    PathBuf::from("/run/peel/sysctl-journal.json")
}

/// One changed key: what it was, what peel set it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub key: String,
    pub old_value: String,
    pub new_value: String,
}

/// The journal file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Always `peel-sysctl-journal/1`.
    pub format: String,
    /// Process that made the changes.
    pub pid: u32,
    /// Root the keys were written under (`/proc` on a live host).
    pub proc_root: PathBuf,
    pub entries: Vec<JournalEntry>,
}

/// Changed sysctls that are restored when this value is dropped.
#[derive(Debug)]
pub struct SysctlGuard {
    root: ProcRoot,
    journal_path: PathBuf,
    entries: Vec<JournalEntry>,
    active: bool,
}

impl SysctlGuard {
    /// Records the current values of the keys in `changes` in a journal at `journal_path` (fsynced),
    /// then writes the new values in order.
    ///
    /// Refuses to start when a journal already exists there (its values were never restored), when
    /// a key does not exist, or when the kernel rejects a value; in the last case the values already
    /// written are put back and the journal removed before the error is returned.
    pub fn apply(
        root: &ProcRoot,
        journal_path: &Path,
        changes: &[(String, String)],
    ) -> Result<Self> {
        if journal_path.exists() {
            return Err(SnapError::JournalExists { path: journal_path.to_owned() });
        }
        let mut entries: Vec<JournalEntry> = Vec::with_capacity(changes.len());
        for (key, new_value) in changes {
            let new_value = super::normalize_value(new_value);
            match entries.iter_mut().find(|entry| &entry.key == key) {
                Some(entry) => entry.new_value = new_value,
                None => entries.push(JournalEntry {
                    key: key.clone(),
                    old_value: read(root, key)?,
                    new_value,
                }),
            }
        }
        let journal = Journal {
            format: FORMAT.to_owned(),
            pid: std::process::id(),
            proc_root: root.dir().to_owned(),
            entries: entries.clone(),
        };
        write_journal(journal_path, &journal)?;
        let mut guard = SysctlGuard {
            root: root.clone(),
            journal_path: journal_path.to_owned(),
            entries: Vec::new(),
            active: true,
        };
        for entry in entries {
            if let Err(err) = write_value(root, &entry.key, &entry.new_value) {
                // Drop restores what was written so far and removes the journal.
                drop(guard);
                return Err(err);
            }
            guard.entries.push(entry);
        }
        Ok(guard)
    }

    /// The keys changed, with their old and new values.
    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }

    /// The journal file that exists while the changes are in place.
    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    /// Writes the old values back (last change first) and removes the journal.
    pub fn restore(mut self) -> Result<Vec<JournalEntry>> {
        self.restore_in_place()
    }

    fn restore_in_place(&mut self) -> Result<Vec<JournalEntry>> {
        self.active = false;
        let restored = restore_entries(&self.root, &self.entries)?;
        remove_journal(&self.journal_path)?;
        Ok(restored)
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if self.active {
            // Nothing to report to from drop; a failure leaves the journal for `peel sysctl restore`.
            let _ = self.restore_in_place();
        }
    }
}

/// Reads a journal file.
pub fn read_journal(path: &Path) -> Result<Journal> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SnapError::Journal { path: path.to_owned(), source })?;
    let journal: Journal = serde_json::from_str(&text).map_err(|err| SnapError::JournalFormat {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    if journal.format != FORMAT {
        return Err(SnapError::JournalFormat {
            path: path.to_owned(),
            message: format!("format is '{}', expected '{FORMAT}'", journal.format),
        });
    }
    Ok(journal)
}

/// Undoes a journal left behind by a process that died: writes every old value back (last change
/// first), then removes the journal. Returns the entries restored.
///
/// Keys whose journal entry was written but whose new value never was are simply written with the
/// value they already have, so restoring is always safe to repeat.
pub fn restore_journal(path: &Path) -> Result<Vec<JournalEntry>> {
    let journal = read_journal(path)?;
    let root = ProcRoot::new(&journal.proc_root);
    let restored = restore_entries(&root, &journal.entries)?;
    remove_journal(path)?;
    Ok(restored)
}

fn restore_entries(root: &ProcRoot, entries: &[JournalEntry]) -> Result<Vec<JournalEntry>> {
    let mut first_error = None;
    let mut restored = Vec::with_capacity(entries.len());
    for entry in entries.iter().rev() {
        match write_value(root, &entry.key, &entry.old_value) {
            Ok(()) => restored.push(entry.clone()),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(restored),
    }
}

/// Writes one value; EINVAL (the kernel's "no") becomes [`SnapError::Rejected`].
pub(crate) fn write_value(root: &ProcRoot, key: &str, value: &str) -> Result<()> {
    let path = key_path(root, key)?;
    let mut file = match OpenOptions::new().write(true).truncate(true).open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            return Err(SnapError::UnknownKey { key: key.to_owned(), path })
        }
        Err(source) => return Err(SnapError::Write { key: key.to_owned(), source }),
    };
    let written = file.write_all(format!("{value}\n").as_bytes()).and_then(|()| file.flush());
    match written {
        Ok(()) => Ok(()),
        Err(source) if source.raw_os_error() == Some(libc::EINVAL) => {
            Err(SnapError::Rejected { key: key.to_owned(), value: value.to_owned(), source })
        }
        Err(source) => Err(SnapError::Write { key: key.to_owned(), source }),
    }
}

/// Writes the journal durably: temporary file, fsync, rename, fsync of the directory.
fn write_journal(path: &Path, journal: &Journal) -> Result<()> {
    let io_err = |source| SnapError::Journal { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io_err)?;
    let text = serde_json::to_string_pretty(journal).map_err(|err| SnapError::JournalFormat {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    let temporary = path.with_extension("json.tmp");
    let mut file = File::create(&temporary).map_err(io_err)?;
    file.write_all(text.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    std::fs::rename(&temporary, path).map_err(io_err)?;
    File::open(&dir).and_then(|dir| dir.sync_all()).map_err(io_err)
}

fn remove_journal(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SnapError::Journal { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (tempfile::TempDir, ProcRoot) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let core = dir.path().join("sys/net/core");
        std::fs::create_dir_all(&core).expect("fixture dir");
        std::fs::write(core.join("somaxconn"), "4096\n").expect("fixture file");
        std::fs::write(core.join("netdev_max_backlog"), "1000\n").expect("fixture file");
        let root = ProcRoot::new(dir.path());
        (dir, root)
    }

    fn value(root: &ProcRoot, key: &str) -> String {
        read(root, key).expect("readable fixture key")
    }

    #[test]
    fn guard_writes_journal_first_and_restores_on_drop() {
        let (dir, root) = fixture();
        let journal = dir.path().join("j/journal.json");
        let changes = vec![("net.core.somaxconn".to_owned(), "8192".to_owned())];
        let guard = SysctlGuard::apply(&root, &journal, &changes).expect("apply");
        assert_eq!(value(&root, "net.core.somaxconn"), "8192");
        let written = read_journal(&journal).expect("journal exists while applied");
        assert_eq!(written.entries[0].old_value, "4096");
        drop(guard);
        assert_eq!(value(&root, "net.core.somaxconn"), "4096");
        assert!(!journal.exists());
    }

    #[test]
    fn an_existing_journal_blocks_a_new_set_and_restores_later() {
        let (dir, root) = fixture();
        let journal = dir.path().join("journal.json");
        let changes = vec![("net.core.netdev_max_backlog".to_owned(), "5000".to_owned())];
        let guard = SysctlGuard::apply(&root, &journal, &changes).expect("apply");
        std::mem::forget(guard); // what SIGKILL does
        assert_eq!(value(&root, "net.core.netdev_max_backlog"), "5000");
        assert!(matches!(
            SysctlGuard::apply(&root, &journal, &changes),
            Err(SnapError::JournalExists { .. })
        ));
        let restored = restore_journal(&journal).expect("restore");
        assert_eq!(restored.len(), 1);
        assert_eq!(value(&root, "net.core.netdev_max_backlog"), "1000");
        assert!(!journal.exists());
    }

    #[test]
    fn unknown_keys_are_refused_before_anything_is_written() {
        let (dir, root) = fixture();
        let journal = dir.path().join("journal.json");
        let changes = vec![
            ("net.core.somaxconn".to_owned(), "8192".to_owned()),
            ("net.core.no_such_key".to_owned(), "1".to_owned()),
        ];
        let err = SysctlGuard::apply(&root, &journal, &changes).expect_err("unknown key");
        assert!(
            matches!(err, SnapError::UnknownKey { ref key, .. } if key == "net.core.no_such_key"),
            "{err}"
        );
        assert_eq!(value(&root, "net.core.somaxconn"), "4096");
        assert!(!journal.exists());
    }
}
