//! peel-load: an HTTP/1.1 load generator that measures honestly.
//!
//! It reproduces an outage's traffic on purpose: an open model (a constant arrival rate, latency
//! counted from each request's scheduled time so a stall cannot hide behind a waiting generator) and a
//! closed model (a fixed number of concurrent clients), with exact control over connection reuse
//! (a pool of N keep-alive connections, or one new TCP connection per request). It returns plain
//! records ([`records`]) and progress figures; it never prints and never touches a database.
//!
//! ```no_run
//! use std::time::Duration;
//! use peel_load::{run_load, LoadConfig, Model, Target, DiscardRecords};
//!
//! let targets = vec![Target::new("http://127.0.0.1:8080/db")?];
//! let config = LoadConfig::new(targets, Model::Open { rate_per_s: 200.0 }, Duration::from_secs(10));
//! let report = run_load(&config, &mut |_progress| {}, &mut DiscardRecords)?;
//! assert_eq!(report.classes[0].url_class, "/db");
//! # Ok::<(), peel_load::LoadError>(())
//! ```

mod config;
mod connection;
mod error;
pub mod loopback_server;
pub mod records;
mod run;
mod tally;

pub use config::{
    targets_from_mix, LoadConfig, Model, Target, DEFAULT_MAX_REQUESTS, DEFAULT_OPEN_CONNECTIONS,
};
pub use error::LoadError;
pub use records::{ErrorKind, LoadReport, LoadSummary, RequestRecord, StatusCount};
pub use run::{run_load, DiscardRecords, Progress, RecordSink, SinkError};
