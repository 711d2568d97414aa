//! Ingest: producers' plain records go into their tables through DuckDB's Appender, in batches,
//! never as row-by-row INSERT statements.
//!
//! Each record type knows its table and its column list ([`Record`]); the [`Scope`] it is ingested
//! with supplies the key columns every row carries (`run_id`, `host`, and `stage` for measured data).
//! A [`Sink`] keeps one Appender open so a producer can stream rows in as they are made (peel-wire's
//! analyzer pushes each finished connection), flushing every [`BATCH_ROWS`] rows so memory stays
//! bounded. The Appender borrows the single [`crate::Store`] connection: one writer, one thread.

use duckdb::{Appender, ToSql};

use peel_load::records::{LoadSummary, RequestRecord};
use peel_snap::records::{
    CpuRecord, ProcessRecord, SnapshotRecord, SocketCountRecord, SocketRecord, SysctlRecord,
    SystemRecord, TcpCounterRecord,
};
use peel_wire::records::{CaptureWarning, ConnectionRecord, ExchangeRecord, FinishedConnection};

use crate::error::{Result, StoreError};
use crate::records::{CommandRecord, FindingRecord, RunRecord, StepRecord};

/// Rows appended before a sink flushes: one DuckDB row group, so each flush writes whole groups.
pub const BATCH_ROWS: u64 = 122_880;

/// The key columns of every row: which run, which host, and (for measured data) which stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The run's identifier (the run folder's name for playbook runs).
    pub run_id: String,
    /// The host the data was measured on.
    pub host: String,
    /// The stage that produced the data (`reproduce`, `verify-fix`, `reproduce[workers=4]`); empty
    /// when the data did not come from a playbook stage (`peel analyze --db`). Together with
    /// `run_id` and `host` it keys per-analysis ids such as `conn_id` and `snap_id`.
    pub stage: String,
}

impl Scope {
    /// A scope for data measured outside a playbook stage.
    pub fn new(run_id: impl Into<String>, host: impl Into<String>) -> Self {
        Scope { run_id: run_id.into(), host: host.into(), stage: String::new() }
    }

    /// The same run and host, another stage.
    pub fn with_stage(&self, stage: impl Into<String>) -> Self {
        Scope { run_id: self.run_id.clone(), host: self.host.clone(), stage: stage.into() }
    }
}

/// A record type peel-store can ingest: its table and the columns it fills after the key columns.
pub trait Record {
    /// The table the rows go to.
    const TABLE: &'static str;
    /// Whether rows carry the scope's `stage` column after `run_id` and `host`.
    const STAGED: bool;
    /// Columns after the key columns, in the order [`Record::append`] gives values.
    const COLUMNS: &'static [&'static str];
    /// Appends this record as one row.
    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()>;
}

/// One row being appended: prepends the scope's key columns to the record's values.
#[derive(Debug)]
pub struct RowWriter<'a, 'conn> {
    appender: &'a mut Appender<'conn>,
    scope: &'a Scope,
    staged: bool,
}

impl RowWriter<'_, '_> {
    fn values(&mut self, values: &[&dyn ToSql]) -> duckdb::Result<()> {
        let mut row: Vec<&dyn ToSql> = Vec::with_capacity(values.len() + 3);
        row.push(&self.scope.run_id);
        row.push(&self.scope.host);
        if self.staged {
            row.push(&self.scope.stage);
        }
        row.extend_from_slice(values);
        self.appender.append_row(row.as_slice())
    }
}

/// The full column list of a record type's table, key columns first.
pub(crate) fn column_list<R: Record>() -> Vec<&'static str> {
    let mut columns = vec!["run_id", "host"];
    if R::STAGED {
        columns.push("stage");
    }
    columns.extend_from_slice(R::COLUMNS);
    columns
}

/// An open Appender for one table: push records as they come, [`Sink::finish`] at the end.
pub struct Sink<'conn, R: Record> {
    appender: Appender<'conn>,
    scope: Scope,
    rows: u64,
    unflushed: u64,
    _record: std::marker::PhantomData<fn(&R)>,
}

impl<R: Record> std::fmt::Debug for Sink<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("table", &R::TABLE).field("rows", &self.rows).finish()
    }
}

impl<'conn, R: Record> Sink<'conn, R> {
    pub(crate) fn new(connection: &'conn duckdb::Connection, scope: Scope) -> Result<Self> {
        let columns = column_list::<R>();
        let appender = connection
            .appender_with_columns(R::TABLE, &columns)
            .map_err(|source| StoreError::Ingest { table: R::TABLE, source })?;
        Ok(Sink { appender, scope, rows: 0, unflushed: 0, _record: std::marker::PhantomData })
    }

    /// Appends one record; every [`BATCH_ROWS`] rows the batch is flushed into the table.
    pub fn push(&mut self, record: &R) -> Result<()> {
        let mut row =
            RowWriter { appender: &mut self.appender, scope: &self.scope, staged: R::STAGED };
        record.append(&mut row).map_err(|source| StoreError::Ingest { table: R::TABLE, source })?;
        self.rows += 1;
        self.unflushed += 1;
        if self.unflushed >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends every record of a slice.
    pub fn extend<'r>(&mut self, records: impl IntoIterator<Item = &'r R>) -> Result<()>
    where
        R: 'r,
    {
        records.into_iter().try_for_each(|record| self.push(record))
    }

    /// Writes the rows appended so far into the table (they become visible to queries).
    pub fn flush(&mut self) -> Result<()> {
        self.unflushed = 0;
        self.appender.flush().map_err(|source| StoreError::Ingest { table: R::TABLE, source })
    }

    /// Flushes the last batch and returns how many rows this sink appended.
    pub fn finish(mut self) -> Result<u64> {
        self.flush()?;
        Ok(self.rows)
    }

    /// Rows appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

/// The sink peel-wire's analyzer feeds: each finished connection with its exchanges.
#[derive(Debug)]
pub struct ConnectionSink<'conn> {
    connections: Sink<'conn, ConnectionRecord>,
    exchanges: Sink<'conn, ExchangeRecord>,
}

/// Rows a [`ConnectionSink`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionCounts {
    pub connections: u64,
    pub exchanges: u64,
}

impl<'conn> ConnectionSink<'conn> {
    pub(crate) fn new(connection: &'conn duckdb::Connection, scope: &Scope) -> Result<Self> {
        Ok(ConnectionSink {
            connections: Sink::new(connection, scope.clone())?,
            exchanges: Sink::new(connection, scope.clone())?,
        })
    }

    /// Appends one finished connection and its exchanges.
    pub fn push(&mut self, finished: &FinishedConnection) -> Result<()> {
        self.connections.push(&finished.connection)?;
        self.exchanges.extend(&finished.exchanges)
    }

    /// Flushes both tables and returns the row counts.
    pub fn finish(self) -> Result<ConnectionCounts> {
        Ok(ConnectionCounts {
            connections: self.connections.finish()?,
            exchanges: self.exchanges.finish()?,
        })
    }
}

/// A `u64` count as BIGINT; counts beyond `i64::MAX` do not occur in practice and saturate.
fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn big_opt(value: Option<u64>) -> Option<i64> {
    value.map(big)
}

impl Record for ConnectionRecord {
    const TABLE: &'static str = "connections";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "conn_id",
        "client_ip",
        "client_port",
        "server_ip",
        "server_port",
        "vlan",
        "interface_id",
        "syn_ts_ns",
        "handshake_us",
        "synack_to_ack_us",
        "syn_retransmits",
        "first_request_ts_ns",
        "request_wait_us",
        "server_us",
        "response_us",
        "exchanges",
        "db_setup_us",
        "idle_us",
        "close_start_ts_ns",
        "close_us",
        "closed_by",
        "reset_by",
        "reset_phase",
        "half_closed",
        "retransmits",
        "out_of_order",
        "dup_acks",
        "zero_windows",
        "window_full",
        "bytes_c2s",
        "bytes_s2c",
        "first_ts_ns",
        "last_ts_ns",
        "lifetime_us",
        "packets",
        "state",
        "protocol",
        "http_requests",
        "http_responses",
        "expired",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        let client_ip = self.client_ip.to_string();
        let server_ip = self.server_ip.to_string();
        row.values(&[
            &big(self.conn_id),
            &client_ip,
            &self.client_port,
            &server_ip,
            &self.server_port,
            &self.vlan,
            &self.interface_id,
            &self.syn_ts_ns,
            &self.handshake_us,
            &self.synack_to_ack_us,
            &self.syn_retransmits,
            &self.first_request_ts_ns,
            &self.request_wait_us,
            &self.server_us,
            &self.response_us,
            &self.exchanges,
            &self.db_setup_us,
            &self.idle_us,
            &self.close_start_ts_ns,
            &self.close_us,
            &self.closed_by.map(|side| side.as_str()),
            &self.reset_by.map(|side| side.as_str()),
            &self.reset_phase.map(|phase| phase.as_str()),
            &self.half_closed,
            &self.retransmits,
            &self.out_of_order,
            &self.dup_acks,
            &self.zero_windows,
            &self.window_full,
            &big(self.bytes_c2s),
            &big(self.bytes_s2c),
            &self.first_ts_ns,
            &self.last_ts_ns,
            &self.lifetime_us,
            &big(self.packets),
            &self.state.as_str(),
            &self.protocol.as_str(),
            &self.http_requests,
            &self.http_responses,
            &self.expired,
        ])
    }
}

impl Record for ExchangeRecord {
    const TABLE: &'static str = "exchanges";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "conn_id",
        "seq",
        "request_start_ts_ns",
        "request_end_ts_ns",
        "response_start_ts_ns",
        "response_end_ts_ns",
        "server_us",
        "response_us",
        "method",
        "path",
        "status",
        "request_bytes",
        "response_bytes",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &big(self.conn_id),
            &self.seq,
            &self.request_start_ts_ns,
            &self.request_end_ts_ns,
            &self.response_start_ts_ns,
            &self.response_end_ts_ns,
            &self.server_us,
            &self.response_us,
            &self.method,
            &self.path,
            &self.status,
            &big(self.request_bytes),
            &big(self.response_bytes),
        ])
    }
}

impl Record for CaptureWarning {
    const TABLE: &'static str = "capture_warnings";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] =
        &["file", "packet_index", "reason", "count", "byte_offset", "detail"];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &self.file,
            &big_opt(self.packet_index),
            &self.reason.as_str(),
            &big(self.count),
            &big_opt(self.byte_offset),
            &self.detail,
        ])
    }
}

impl Record for SnapshotRecord {
    const TABLE: &'static str = "snapshots";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] =
        &["snap_id", "ts_ns", "source_host", "proc_root", "socket_source", "duration_us"];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &big(self.snap_id),
            &self.ts_ns,
            &self.host,
            &self.proc_root,
            &self.socket_source,
            &(self.duration_us as f64),
        ])
    }
}

impl Record for SystemRecord {
    const TABLE: &'static str = "system";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "snap_id",
        "load1",
        "load5",
        "load15",
        "cpu_count",
        "cpu_usage_pct",
        "cpu_max_pct",
        "mem_total_bytes",
        "mem_available_bytes",
        "mem_used_bytes",
        "swap_total_bytes",
        "swap_used_bytes",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &big(self.snap_id),
            &self.load1,
            &self.load5,
            &self.load15,
            &self.cpu_count,
            &self.cpu_usage_pct,
            &self.cpu_max_pct,
            &big(self.mem_total_bytes),
            &big(self.mem_available_bytes),
            &big(self.mem_used_bytes),
            &big(self.swap_total_bytes),
            &big(self.swap_used_bytes),
        ])
    }
}

impl Record for CpuRecord {
    const TABLE: &'static str = "cpus";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &["snap_id", "cpu", "usage_pct"];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[&big(self.snap_id), &self.cpu, &self.usage_pct])
    }
}

impl Record for SysctlRecord {
    const TABLE: &'static str = "sysctl";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &["snap_id", "key", "value"];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[&big(self.snap_id), &self.key, &self.value])
    }
}

impl Record for SocketRecord {
    const TABLE: &'static str = "sockets";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "snap_id",
        "family",
        "state",
        "local_ip",
        "local_port",
        "remote_ip",
        "remote_port",
        "send_q_bytes",
        "recv_q_bytes",
        "timer",
        "timer_expires_ms",
        "retransmits",
        "uid",
        "inode",
        "pid",
        "process",
        "listen_backlog",
        "accept_queue",
        "rtt_us",
        "rttvar_us",
        "cwnd_segments",
        "retrans_segments",
        "total_retrans_segments",
        "lost_segments",
        "unacked_segments",
        "bytes_acked",
        "bytes_received",
        "last_send_ms",
        "last_recv_ms",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &big(self.snap_id),
            &self.family,
            &self.state,
            &self.local_ip,
            &self.local_port,
            &self.remote_ip,
            &self.remote_port,
            &self.send_q_bytes,
            &self.recv_q_bytes,
            &self.timer,
            &big(self.timer_expires_ms),
            &self.retransmits,
            &self.uid,
            &big(self.inode),
            &self.pid,
            &self.process,
            &self.listen_backlog,
            &self.accept_queue,
            &self.rtt_us.map(f64::from),
            &self.rttvar_us.map(f64::from),
            &self.cwnd_segments,
            &self.retrans_segments,
            &self.total_retrans_segments,
            &self.lost_segments,
            &self.unacked_segments,
            &big_opt(self.bytes_acked),
            &big_opt(self.bytes_received),
            &self.last_send_ms,
            &self.last_recv_ms,
        ])
    }
}

impl Record for SocketCountRecord {
    const TABLE: &'static str = "socket_counts";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &["snap_id", "protocol", "state", "count"];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[&big(self.snap_id), &self.protocol, &self.state, &big(self.count)])
    }
}

impl Record for TcpCounterRecord {
    const TABLE: &'static str = "tcp_counters";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &["snap_id", "name", "value", "rate_per_s"];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[&big(self.snap_id), &self.name, &self.value, &self.rate_per_s])
    }
}

impl Record for ProcessRecord {
    const TABLE: &'static str = "processes";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "snap_id",
        "pid",
        "name",
        "cmdline",
        "cpu_pct",
        "rss_bytes",
        "threads",
        "open_fds",
        "fd_limit",
        "sockets",
        "children",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &big(self.snap_id),
            &self.pid,
            &self.name,
            &self.cmdline,
            &self.cpu_pct,
            &big(self.rss_bytes),
            &self.threads,
            &self.open_fds,
            &big_opt(self.fd_limit),
            &self.sockets,
            &self.children,
        ])
    }
}

impl Record for RequestRecord {
    const TABLE: &'static str = "load_requests";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "request_id",
        "url_class",
        "method",
        "url",
        "scheduled_ts_ns",
        "start_ts_ns",
        "first_byte_ts_ns",
        "end_ts_ns",
        "latency_us",
        "status",
        "response_body_bytes",
        "error_kind",
        "connection_id",
        "local_port",
        "reused",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &big(self.request_id),
            &self.url_class,
            &self.method,
            &self.url,
            &big(self.scheduled_ts_ns),
            &big(self.start_ts_ns),
            &big_opt(self.first_byte_ts_ns),
            &big(self.end_ts_ns),
            &(self.latency_us as f64),
            &self.status,
            &big(self.response_body_bytes),
            &self.error_kind.map(|kind| kind.as_str()),
            &big_opt(self.connection_id),
            &self.local_port,
            &self.reused,
        ])
    }
}

impl Record for LoadSummary {
    const TABLE: &'static str = "load_summaries";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &[
        "url_class",
        "requests",
        "responses",
        "requests_per_s",
        "status_1xx",
        "status_2xx",
        "status_3xx",
        "status_4xx",
        "status_5xx",
        "errors",
        "errors_connect_refused",
        "errors_timeout",
        "errors_reset",
        "errors_other",
        "connections_opened",
        "response_body_bytes",
        "latency_min_us",
        "latency_mean_us",
        "latency_p50_us",
        "latency_p90_us",
        "latency_p99_us",
        "latency_p999_us",
        "latency_max_us",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &self.url_class,
            &big(self.requests),
            &big(self.responses),
            &self.requests_per_s,
            &big(self.status_1xx),
            &big(self.status_2xx),
            &big(self.status_3xx),
            &big(self.status_4xx),
            &big(self.status_5xx),
            &big(self.errors),
            &big(self.errors_connect_refused),
            &big(self.errors_timeout),
            &big(self.errors_reset),
            &big(self.errors_other),
            &big(self.connections_opened),
            &big(self.response_body_bytes),
            &(self.latency_min_us as f64),
            &self.latency_mean_us,
            &(self.latency_p50_us as f64),
            &(self.latency_p90_us as f64),
            &(self.latency_p99_us as f64),
            &(self.latency_p999_us as f64),
            &(self.latency_max_us as f64),
        ])
    }
}

impl Record for RunRecord {
    const TABLE: &'static str = "runs";
    const STAGED: bool = false;
    const COLUMNS: &'static [&'static str] = &[
        "playbook",
        "playbook_path",
        "playbook_sha256",
        "variables_json",
        "started_ts_ns",
        "ended_ts_ns",
        "status",
        "tool_version",
        "kernel",
        "run_dir",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &self.playbook,
            &self.playbook_path,
            &self.playbook_sha256,
            &self.variables_json,
            &self.started_ts_ns,
            &self.ended_ts_ns,
            &self.status,
            &self.tool_version,
            &self.kernel,
            &self.run_dir,
        ])
    }
}

impl Record for StepRecord {
    const TABLE: &'static str = "steps";
    const STAGED: bool = false;
    const COLUMNS: &'static [&'static str] = &[
        "step_id",
        "stage",
        "name",
        "kind",
        "started_ts_ns",
        "ended_ts_ns",
        "duration_us",
        "status",
        "message",
        "outputs_json",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &self.step_id,
            &self.stage,
            &self.name,
            &self.kind,
            &self.started_ts_ns,
            &self.ended_ts_ns,
            &self.duration_us,
            &self.status,
            &self.message,
            &self.outputs_json,
        ])
    }
}

impl Record for CommandRecord {
    const TABLE: &'static str = "commands";
    const STAGED: bool = false;
    const COLUMNS: &'static [&'static str] = &[
        "command_id",
        "step_id",
        "purpose",
        "argv_json",
        "cwd",
        "started_ts_ns",
        "ended_ts_ns",
        "duration_us",
        "exit_code",
        "signal",
        "timed_out",
        "stdout_path",
        "stderr_path",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &self.command_id,
            &self.step_id,
            &self.purpose,
            &self.argv_json,
            &self.cwd,
            &self.started_ts_ns,
            &self.ended_ts_ns,
            &self.duration_us,
            &self.exit_code,
            &self.signal,
            &self.timed_out,
            &self.stdout_path,
            &self.stderr_path,
        ])
    }
}

impl Record for FindingRecord {
    const TABLE: &'static str = "findings";
    const STAGED: bool = false;
    const COLUMNS: &'static [&'static str] = &[
        "finding_id",
        "rule",
        "severity",
        "score",
        "stage",
        "endpoint",
        "title",
        "detail",
        "evidence_sql",
    ];

    fn append(&self, row: &mut RowWriter<'_, '_>) -> duckdb::Result<()> {
        row.values(&[
            &self.finding_id,
            &self.rule,
            &self.severity,
            &self.score,
            &self.stage,
            &self.endpoint,
            &self.title,
            &self.detail,
            &self.evidence_sql,
        ])
    }
}
