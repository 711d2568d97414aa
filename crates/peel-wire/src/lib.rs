//! peel-wire: reads pcap/pcapng captures (files, directories, gzip'd files, or packets pushed by a
//! live capture), decodes them without copying, and splits every TCP connection into phases
//! (handshake, request wait, server, response, idle, close) with HTTP/1.x and PostgreSQL exchanges.
//!
//! It is pure Rust (no libpcap) and never touches a database: it returns plain records
//! ([`records`]) that peel-store ingests and the `peel` binary renders.
//!
//! Entry points: [`Analyzer`] (push packets one by one, e.g. from a live capture) and
//! [`analyze_paths`] (files and directories, merged by timestamp).

pub mod analyzer;
mod conn;
pub mod decode;
pub mod error;
mod exchange;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod pg;
pub mod reader;
pub mod records;
pub mod summary;
pub mod synth;
pub mod warnings;

pub use analyzer::{AnalysisEnd, Analyzer, CaptureStats, Config, Packet, SourceId};
pub use error::WireError;
pub use files::analyze_paths;
