//! peel-capture: live packet capture with libpcap for `peel capture` and playbook stages.
//!
//! It opens one libpcap handle per interface (immediate mode, a configurable kernel buffer, the BPF
//! filter compiled and checked before anything is captured), writes nanosecond pcap files with ring
//! rotation, stops on a duration, a packet count, a low-disk floor or a request, and reports
//! libpcap's drop counters. Capture lives in its own crate so that peel-wire, which reads and
//! analyzes captures, stays pure Rust and fuzzable; this crate never decodes packets itself: the live
//! analysis ([`LiveAnalysis`]) feeds the copies [`CaptureHandle::take_packets`] hands out to
//! peel-wire's streaming analyzer.
//!
//! The library never prints and never exits: it returns [`CaptureError`] and [`CaptureReport`].

mod config;
mod disk;
mod duration;
mod live;
mod live_analysis;
mod pcap_file;
mod precision;
mod privilege;

use std::path::PathBuf;

pub use config::{
    CaptureConfig, RingSpec, DEFAULT_BUFFER_BYTES, DEFAULT_MIN_FREE_FRACTION,
    DEFAULT_SNAPLEN_BYTES, FULL_SNAPLEN_BYTES, RING_MB_BYTES,
};
pub use duration::{parse_duration, DurationError};
pub use live::{
    check_filter, linktype_name, Capture, CaptureHandle, CaptureReport, InterfaceReport,
    InterfaceStats, StopReason, TappedPacket,
};
pub use live_analysis::{LiveAnalysis, LiveWindow, LIVE_WINDOW_NS};
pub use pcap_file::{TimestampPrecision, WrittenFile};
pub use privilege::{
    check_capture_privilege, effective_capabilities, missing_capabilities, Capability,
};

/// Everything that can keep a capture from starting.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A configuration value is out of range (the message says which and why).
    #[error("invalid capture setting {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// A `--ring SIZE_MB:COUNT` value could not be read.
    #[error("invalid ring '{spec}': {reason} (for example 100:10 keeps 10 files of 100 MB)")]
    InvalidRing { spec: String, reason: String },

    /// libpcap refused the BPF filter; `message` is libpcap's own.
    #[error("bad BPF filter '{filter}'{}: {message}", on_interface(.interface))]
    BadFilter { filter: String, interface: Option<String>, message: String },

    /// No interface of that name exists.
    #[error("no interface named '{name}' (available: {available})")]
    UnknownInterface { name: String, available: String },

    /// The process lacks a capability that capture needs.
    #[error(
        "live capture needs {}, which this process lacks (run as root, or grant it once with: \
         {setcap_command})",
        join_capabilities(.missing)
    )]
    MissingPrivilege { missing: Vec<Capability>, setcap_command: String },

    /// The capability set could not be read.
    #[error("cannot read capabilities from {}: {source}", .path.display())]
    ReadCapabilities { path: PathBuf, source: std::io::Error },

    /// The output directory could not be created or used.
    #[error("cannot use output directory {}: {source}", .path.display())]
    OutDir { path: PathBuf, source: std::io::Error },

    /// Free space on the output filesystem is already under the floor.
    #[error(
        "only {:.1}% of the filesystem holding {} is free, under the {:.1}% floor",
        .free_fraction * 100.0, .path.display(), .min_free_fraction * 100.0
    )]
    LowDiskSpace { path: PathBuf, free_fraction: f64, min_free_fraction: f64 },

    /// statvfs failed on the output directory.
    #[error("cannot read free space of {}: {source}", .path.display())]
    DiskSpace { path: PathBuf, source: nix::Error },

    /// libpcap could not open or configure an interface; `message` is libpcap's own.
    #[error("cannot capture on '{interface}': {message}")]
    Open { interface: String, message: String },

    /// A capture file could not be created.
    #[error("cannot create capture file {}: {source}", .path.display())]
    CreateFile { path: PathBuf, source: std::io::Error },

    /// The live analysis thread ended without a result (it panicked).
    #[error(
        "the live analysis stopped unexpectedly; `peel analyze` on the files gives the summary"
    )]
    AnalysisThread,

    /// A capture thread could not be started.
    #[error("cannot start a capture thread: {source}")]
    Spawn { source: std::io::Error },
}

impl CaptureError {
    /// True when what was asked for is malformed (peel maps these to exit 2); a missing interface,
    /// like a missing privilege, is the environment's (exit 3, docs/exit-codes.md).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CaptureError::InvalidConfig { .. }
                | CaptureError::InvalidRing { .. }
                | CaptureError::BadFilter { .. }
        )
    }
}

fn on_interface(interface: &Option<String>) -> String {
    interface.as_ref().map(|name| format!(" on '{name}'")).unwrap_or_default()
}

fn join_capabilities(missing: &[Capability]) -> String {
    missing.iter().map(|cap| cap.name()).collect::<Vec<_>>().join(" and ")
}

/// Text of a pcap crate error: libpcap's own message when there is one.
pub(crate) fn pcap_message(err: &pcap::Error) -> String {
    match err {
        pcap::Error::PcapError(message) => message.clone(),
        other => other.to_string(),
    }
}
