//! peel-load: an HTTP/1.1 load generator that measures honestly.
//!
//! It reproduces an outage's traffic on purpose: an open model (a constant arrival rate, latency
//! counted from each request's scheduled time so a stall cannot hide behind a waiting generator) and a
//! closed model (a fixed number of concurrent clients), with exact control over connection reuse
//! (a pool of N keep-alive connections, or one new TCP connection per request). It returns plain
//! records ([`records`]); it never prints and never touches a database.

pub mod records;

pub use records::{ErrorKind, LoadSummary, RequestRecord, StatusCount};
