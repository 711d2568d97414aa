//! Where kernel files are read from: the live `/proc`, or a copy of another host's `/proc` (and
//! `/proc/sys`) given with `--proc-root`, which is also how tests read fixture trees.
//!
//! Only paths are resolved here; parsing lives with each kind of file.

use std::path::{Path, PathBuf};

use crate::error::{Result, SnapError};

/// A directory laid out like `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcRoot {
    dir: PathBuf,
}

impl Default for ProcRoot {
    fn default() -> Self {
        ProcRoot::live()
    }
}

impl ProcRoot {
    /// The running kernel's `/proc`.
    pub fn live() -> Self {
        ProcRoot { dir: PathBuf::from("/proc") }
    }

    /// A copy of `/proc` (or a fixture tree) rooted at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ProcRoot { dir: dir.into() }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True for the running kernel's `/proc`: only then do netlink, sysinfo and writes make sense.
    pub fn is_live(&self) -> bool {
        self.dir == Path::new("/proc")
    }

    /// `<root>/<relative>`.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// Reads `<root>/<relative>` whole.
    pub(crate) fn read(&self, relative: &str) -> Result<String> {
        read_path(&self.path(relative))
    }

    /// Reads `<root>/<relative>`; a missing file is `None` (optional kernel features, modules).
    pub(crate) fn read_optional(&self, relative: &str) -> Result<Option<String>> {
        let path = self.path(relative);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SnapError::Read { path, source }),
        }
    }
}

pub(crate) fn read_path(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|source| SnapError::Read { path: path.to_owned(), source })
}
