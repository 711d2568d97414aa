//! The one error type of peel-snap. Each variant names what a user needs to fix or look at: the
//! file, the line, the sysctl key, the journal.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while reading or changing kernel state.
#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    /// A kernel file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    /// A kernel file had a shape we do not understand (not a single bad line: those are warnings).
    #[error("{path}:{line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },

    /// A sysctl key that does not exist under `<proc-root>/sys`.
    #[error("unknown sysctl key '{key}' (no file {path})")]
    UnknownKey { key: String, path: PathBuf },

    /// A key that is not a plain dotted name (`..`, empty parts, characters a key never has).
    #[error("invalid sysctl key '{key}': {reason}")]
    InvalidKey { key: String, reason: &'static str },

    /// A `key=value` argument without `=`.
    #[error("expected key=value, got '{arg}'")]
    InvalidAssignment { arg: String },

    /// The kernel refused a value (usually EINVAL: out of range or malformed).
    #[error("the kernel rejected {key}={value}: {source}")]
    Rejected { key: String, value: String, source: io::Error },

    /// Writing a sysctl failed for another reason (permission, read-only key).
    #[error("cannot write {key}: {source}")]
    Write { key: String, source: io::Error },

    /// A journal from an earlier `set` still exists: its old values have not been restored.
    #[error("a sysctl journal from an earlier run exists at {path}")]
    JournalExists { path: PathBuf },

    /// The journal file could not be written, read or removed.
    #[error("sysctl journal {path}: {source}")]
    Journal { path: PathBuf, source: io::Error },

    /// The journal file is not one peel wrote.
    #[error("sysctl journal {path} is not valid: {message}")]
    JournalFormat { path: PathBuf, message: String },

    /// A snapshot file given to `diff` could not be understood.
    #[error("snapshot {path}: {message}")]
    SnapshotFile { path: PathBuf, message: String },

    /// The background sampling thread panicked (a bug; the snapshots it took are lost).
    #[error("the background sampling thread panicked")]
    SamplerPanicked,

    /// Opening or using the netlink sock_diag socket failed (the caller may fall back to /proc).
    #[error("netlink sock_diag: {0}")]
    Netlink(io::Error),
}

/// Result alias for peel-snap.
pub type Result<T, E = SnapError> = std::result::Result<T, E>;
