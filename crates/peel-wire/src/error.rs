//! The one error type of peel-wire. Every variant names the file (and, where it matters, the byte
//! offset) so the binary can print one line the user can act on. Problems that do not stop the
//! analysis (a truncated tail, a malformed packet) are not errors but [`crate::records::CaptureWarning`]s.

use std::path::PathBuf;

/// Why a capture could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The file could not be opened or read from its start.
    #[error("cannot read {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    /// A directory was given that holds no capture files.
    #[error("{path}: directory holds no capture files (*.pcap, *.pcapng, *.cap, *.gz, or ring-buffer names)")]
    EmptyDirectory { path: PathBuf },
    /// The file does not start like a pcap or pcapng file.
    #[error("{path}: not a pcap or pcapng file ({reason})")]
    NotACapture { path: PathBuf, reason: String },
    /// The file header is recognized but invalid or unsupported.
    #[error("{path}: invalid capture header at byte offset {offset}: {reason}")]
    BadHeader { path: PathBuf, offset: u64, reason: String },
    /// The file's structure broke before any packet could be read.
    #[error("{path}: invalid capture structure at byte offset {offset}: {reason}")]
    BadStructure { path: PathBuf, offset: u64, reason: String },
    /// Reading failed in the middle of the file for a reason other than its end.
    #[error("{path}: read error at byte offset {offset}: {source}")]
    Read { path: PathBuf, offset: u64, source: std::io::Error },
    /// Writing a synthetic capture failed.
    #[error("writing capture: {0}")]
    Write(#[from] std::io::Error),
    /// A synthetic packet could not be built.
    #[error("building synthetic packet: {0}")]
    Build(String),
}
