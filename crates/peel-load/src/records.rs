//! Plain records that leave peel-load: one [`RequestRecord`] per request and one [`LoadSummary`] per
//! URL class. peel-store ingests these as they are, so field names and meanings are stable once
//! committed; add fields, never rename them. Nothing here knows how the generator works.
//!
//! Timestamps (`*_ts_ns`) are nanoseconds since the Unix epoch, taken from one wall-clock reading at
//! the start of the run plus a monotonic clock, so they never go backwards within a run and they line
//! up with packet capture timestamps of the same host.

use serde::Serialize;

/// Why a request produced no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connect was refused (RST to our SYN: nothing listens on the port).
    ConnectRefused,
    /// The request did not finish within the timeout, counted from its scheduled time (this
    /// includes waiting for a free connection, connecting, sending and reading the whole body).
    Timeout,
    /// The peer reset or closed the connection before the response was complete.
    Reset,
    /// Anything else (other connect errors, malformed responses).
    Other,
}

impl ErrorKind {
    /// Every kind, in the order tables and summaries show them.
    pub const ALL: [ErrorKind; 4] =
        [ErrorKind::ConnectRefused, ErrorKind::Timeout, ErrorKind::Reset, ErrorKind::Other];

    /// The stable name used in JSON, tables and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request as the generator saw it.
///
/// In the open model (`rate`) `scheduled_ts_ns` is when the arrival schedule said the request should
/// start, which can be well before `start_ts_ns` when every connection is busy; `latency_us` counts
/// from the scheduled time so a stalled server cannot hide behind a generator that waits
/// (coordinated omission). In the closed model (`concurrency`) the scheduled time is the start time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    /// Sequence number of the request within the run, from 0 in scheduling order.
    pub request_id: u64,
    /// The URL class the request counts under (by default the URL's path).
    pub url_class: String,
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// The full URL requested.
    pub url: String,
    /// When the request was due (open model) or started (closed model).
    pub scheduled_ts_ns: u64,
    /// When the generator began working on it: a connection was taken from the pool.
    pub start_ts_ns: u64,
    /// When the first response byte was read from the socket; `None` if none arrived.
    pub first_byte_ts_ns: Option<u64>,
    /// When the response body was read completely or the request failed.
    pub end_ts_ns: u64,
    /// `end_ts_ns - scheduled_ts_ns` in microseconds.
    pub latency_us: u64,
    /// HTTP status code; `None` when no response head arrived.
    pub status: Option<u16>,
    /// Bytes of response body read.
    pub response_body_bytes: u64,
    /// Why the request failed; `None` for a complete response (whatever its status).
    pub error_kind: Option<ErrorKind>,
    /// The run-local id of the TCP connection used, from 0 in the order connections were opened;
    /// `None` when no connection could be opened.
    pub connection_id: Option<u64>,
    /// The local (client) port of that connection, to join with captured TCP connections.
    pub local_port: Option<u16>,
    /// Whether the connection had already carried an earlier request (keep-alive reuse).
    pub reused: bool,
}

/// Totals and latency percentiles for one URL class (or for all classes, `url_class = "total"`).
///
/// Latency percentiles come from an HDR histogram of `latency_us` with 3 significant digits; they
/// cover every request with a response (any status), not failed ones.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSummary {
    /// The URL class, or `"total"` for the row over all classes.
    pub url_class: String,
    /// Requests that finished (with a response or an error).
    pub requests: u64,
    /// Requests with a complete response, whatever the status.
    pub responses: u64,
    /// Completed requests per second over the run's elapsed time.
    pub requests_per_s: f64,
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// Requests that failed, all kinds.
    pub errors: u64,
    pub errors_connect_refused: u64,
    pub errors_timeout: u64,
    pub errors_reset: u64,
    pub errors_other: u64,
    /// TCP connections opened on behalf of requests of this class.
    pub connections_opened: u64,
    /// Response body bytes read.
    pub response_body_bytes: u64,
    pub latency_min_us: u64,
    pub latency_mean_us: f64,
    pub latency_p50_us: u64,
    pub latency_p90_us: u64,
    pub latency_p99_us: u64,
    pub latency_p999_us: u64,
    pub latency_max_us: u64,
}

/// How many responses of one class had one status code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    pub url_class: String,
    pub status: u16,
    pub count: u64,
}

/// The outcome of one load run: the settings it ran with, one summary per URL class (in the order
/// the classes were first configured), a total over all classes, and status-code counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// `"open"` (constant arrival rate) or `"closed"` (fixed concurrency).
    pub model: String,
    /// Scheduled arrivals per second (open model).
    pub rate_per_s: Option<f64>,
    /// Concurrent clients (closed model).
    pub concurrency: Option<u32>,
    /// Connection pool size.
    pub connections: u32,
    pub keepalive: bool,
    pub duration_us: u64,
    pub timeout_us: u64,
    /// When the run started and when its last request finished.
    pub started_ts_ns: u64,
    pub ended_ts_ns: u64,
    /// `ended_ts_ns - started_ts_ns` in microseconds; the denominator of `requests_per_s`.
    pub elapsed_us: u64,
    /// TCP connections opened during the run, all classes.
    pub connections_opened: u64,
    /// The run was stopped before its duration or request count by the stop flag.
    pub stopped_early: bool,
    pub classes: Vec<LoadSummary>,
    pub total: LoadSummary,
    pub statuses: Vec<StatusCount>,
}
