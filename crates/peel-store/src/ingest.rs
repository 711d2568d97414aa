//! Ingest: producers' plain records go into their tables through DuckDB's Appender, in batches,
//! never as row-by-row INSERT statements.
//!
//! Each record type knows its table and its column list ([`Record`]); the [`Scope`] it is ingested
//! with supplies the key columns every row carries (`run_id`, `host`, and `stage` for measured data).
//! A [`Sink`] keeps one Appender open so a producer can stream rows in as they are made (peel-wire's
//! analyzer pushes each finished connection), flushing every [`BATCH_ROWS`] rows so memory stays
//! bounded. The Appender borrows the single [`crate::Store`] connection: one writer, one thread.

use std::net::IpAddr;

use peel_load::records::{LoadSummary, RequestRecord};
use peel_snap::records::{
    CpuRecord, ProcessRecord, SnapshotRecord, SocketCountRecord, SocketRecord, SysctlRecord,
    SystemRecord, TcpCounterRecord,
};
use peel_wire::records::{CaptureWarning, ConnectionRecord, ExchangeRecord, FinishedConnection};

use crate::chunk::{ChunkAppender, Kind, RawDatabase};
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
    /// Writes this record's values, one [`RowWriter::put`] per column of [`Record::COLUMNS`]. A
    /// value that does not fit its column's type (or a wrong count) fails the push.
    fn append(&self, row: &mut RowWriter<'_, '_>);
}

/// One row being written straight into a DuckDB data chunk, column after column.
#[derive(Debug)]
pub struct RowWriter<'a, 'db> {
    chunk: &'a mut ChunkAppender<'db>,
}

impl RowWriter<'_, '_> {
    /// Writes the next column's value.
    #[inline]
    pub fn put<V: Value + ?Sized>(&mut self, value: &V) {
        value.write(self);
    }

    /// A whole number into an INTEGER, BIGINT or DOUBLE column.
    #[inline]
    fn integer(&mut self, value: i64) {
        match self.chunk.next_kind() {
            Some(Kind::BigInt) => self.chunk.i64(value),
            Some(Kind::Integer) => match i32::try_from(value) {
                Ok(value) => self.chunk.i32(value),
                Err(_) => self.chunk.overflow(value),
            },
            Some(Kind::Double) => self.chunk.f64(value as f64),
            // The chunk reports the mismatch at the end of the row.
            _ => self.chunk.i64(value),
        }
    }
}

/// A value a [`RowWriter`] can write: integers go to INTEGER, BIGINT or DOUBLE columns (a `u64`
/// beyond `i64::MAX` saturates), floats to DOUBLE, `bool` to BOOLEAN, text and IP addresses to
/// VARCHAR, `None` to NULL.
pub trait Value {
    /// Writes `self` into the row's next column.
    fn write(&self, row: &mut RowWriter<'_, '_>);
}

macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            #[inline]
            fn write(&self, row: &mut RowWriter<'_, '_>) {
                row.integer(i64::from(*self));
            }
        }
    )*};
}
integer_value!(i8, i16, i32, i64, u8, u16, u32);

impl Value for u64 {
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        row.integer(big(*self));
    }
}

impl Value for f64 {
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        row.chunk.f64(*self);
    }
}

impl Value for f32 {
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        row.chunk.f64(f64::from(*self));
    }
}

impl Value for bool {
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        row.chunk.bool(*self);
    }
}

impl Value for str {
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        row.chunk.str(self);
    }
}

impl Value for String {
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        row.chunk.str(self);
    }
}

impl Value for IpAddr {
    /// The address's usual text (`10.0.0.1`, `2001:db8::1`), formatted on the stack.
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        let mut buffer = [0u8; 48];
        row.chunk.str(format_ip(*self, &mut buffer));
    }
}

impl<T: Value> Value for Option<T> {
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        match self {
            Some(value) => value.write(row),
            None => row.chunk.null(),
        }
    }
}

impl<T: Value + ?Sized> Value for &T {
    #[inline]
    fn write(&self, row: &mut RowWriter<'_, '_>) {
        (**self).write(row);
    }
}

/// Formats `ip` into `buffer` without allocating: IPv4 by hand (the common case, once or twice per
/// connection row), IPv6 through `Display`.
fn format_ip(ip: IpAddr, buffer: &mut [u8; 48]) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    buffer[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buffer[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buffer[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buffer[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buffer[..]);
            // An IPv6 address's text is at most 45 bytes: it always fits.
            let _ = write!(cursor, "{v6}");
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buffer[..len]).unwrap_or_default()
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
///
/// Rows are written value by value into a DuckDB data chunk (no `ToSql`, no allocation per row)
/// and appended a chunk at a time; see `chunk.rs`.
pub struct Sink<'conn, R: Record> {
    appender: ChunkAppender<'conn>,
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
    pub(crate) fn new(database: &'conn RawDatabase, scope: Scope) -> Result<Self> {
        let columns = column_list::<R>();
        let appender = ChunkAppender::new(database, R::TABLE, &columns)
            .map_err(|source| StoreError::Ingest { table: R::TABLE, source })?;
        Ok(Sink { appender, scope, rows: 0, unflushed: 0, _record: std::marker::PhantomData })
    }

    /// Appends one record; every [`BATCH_ROWS`] rows the batch is flushed into the table.
    pub fn push(&mut self, record: &R) -> Result<()> {
        let chunk = &mut self.appender;
        chunk.str(&self.scope.run_id);
        chunk.str(&self.scope.host);
        if R::STAGED {
            chunk.str(&self.scope.stage);
        }
        record.append(&mut RowWriter { chunk });
        self.appender.end_row().map_err(|source| StoreError::Ingest { table: R::TABLE, source })?;
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
    pub(crate) fn new(database: &'conn RawDatabase, scope: &Scope) -> Result<Self> {
        Ok(ConnectionSink {
            connections: Sink::new(database, scope.clone())?,
            exchanges: Sink::new(database, scope.clone())?,
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.conn_id));
        row.put(&self.client_ip);
        row.put(&self.client_port);
        row.put(&self.server_ip);
        row.put(&self.server_port);
        row.put(&self.vlan);
        row.put(&self.interface_id);
        row.put(&self.syn_ts_ns);
        row.put(&self.handshake_us);
        row.put(&self.synack_to_ack_us);
        row.put(&self.syn_retransmits);
        row.put(&self.first_request_ts_ns);
        row.put(&self.request_wait_us);
        row.put(&self.server_us);
        row.put(&self.response_us);
        row.put(&self.exchanges);
        row.put(&self.db_setup_us);
        row.put(&self.idle_us);
        row.put(&self.close_start_ts_ns);
        row.put(&self.close_us);
        row.put(&self.closed_by.map(|side| side.as_str()));
        row.put(&self.reset_by.map(|side| side.as_str()));
        row.put(&self.reset_phase.map(|phase| phase.as_str()));
        row.put(&self.half_closed);
        row.put(&self.retransmits);
        row.put(&self.out_of_order);
        row.put(&self.dup_acks);
        row.put(&self.zero_windows);
        row.put(&self.window_full);
        row.put(&big(self.bytes_c2s));
        row.put(&big(self.bytes_s2c));
        row.put(&self.first_ts_ns);
        row.put(&self.last_ts_ns);
        row.put(&self.lifetime_us);
        row.put(&big(self.packets));
        row.put(&self.state.as_str());
        row.put(&self.protocol.as_str());
        row.put(&self.http_requests);
        row.put(&self.http_responses);
        row.put(&self.expired);
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.conn_id));
        row.put(&self.seq);
        row.put(&self.request_start_ts_ns);
        row.put(&self.request_end_ts_ns);
        row.put(&self.response_start_ts_ns);
        row.put(&self.response_end_ts_ns);
        row.put(&self.server_us);
        row.put(&self.response_us);
        row.put(&self.method);
        row.put(&self.path);
        row.put(&self.status);
        row.put(&big(self.request_bytes));
        row.put(&big(self.response_bytes));
    }
}

impl Record for CaptureWarning {
    const TABLE: &'static str = "capture_warnings";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] =
        &["file", "packet_index", "reason", "count", "byte_offset", "detail"];

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&self.file);
        row.put(&big_opt(self.packet_index));
        row.put(&self.reason.as_str());
        row.put(&big(self.count));
        row.put(&big_opt(self.byte_offset));
        row.put(&self.detail);
    }
}

impl Record for SnapshotRecord {
    const TABLE: &'static str = "snapshots";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] =
        &["snap_id", "ts_ns", "source_host", "proc_root", "socket_source", "duration_us"];

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.snap_id));
        row.put(&self.ts_ns);
        row.put(&self.host);
        row.put(&self.proc_root);
        row.put(&self.socket_source);
        row.put(&(self.duration_us as f64));
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.snap_id));
        row.put(&self.load1);
        row.put(&self.load5);
        row.put(&self.load15);
        row.put(&self.cpu_count);
        row.put(&self.cpu_usage_pct);
        row.put(&self.cpu_max_pct);
        row.put(&big(self.mem_total_bytes));
        row.put(&big(self.mem_available_bytes));
        row.put(&big(self.mem_used_bytes));
        row.put(&big(self.swap_total_bytes));
        row.put(&big(self.swap_used_bytes));
    }
}

impl Record for CpuRecord {
    const TABLE: &'static str = "cpus";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &["snap_id", "cpu", "usage_pct"];

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.snap_id));
        row.put(&self.cpu);
        row.put(&self.usage_pct);
    }
}

impl Record for SysctlRecord {
    const TABLE: &'static str = "sysctl";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &["snap_id", "key", "value"];

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.snap_id));
        row.put(&self.key);
        row.put(&self.value);
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.snap_id));
        row.put(&self.family);
        row.put(&self.state);
        row.put(&self.local_ip);
        row.put(&self.local_port);
        row.put(&self.remote_ip);
        row.put(&self.remote_port);
        row.put(&self.send_q_bytes);
        row.put(&self.recv_q_bytes);
        row.put(&self.timer);
        row.put(&big(self.timer_expires_ms));
        row.put(&self.retransmits);
        row.put(&self.uid);
        row.put(&big(self.inode));
        row.put(&self.pid);
        row.put(&self.process);
        row.put(&self.listen_backlog);
        row.put(&self.accept_queue);
        row.put(&self.rtt_us.map(f64::from));
        row.put(&self.rttvar_us.map(f64::from));
        row.put(&self.cwnd_segments);
        row.put(&self.retrans_segments);
        row.put(&self.total_retrans_segments);
        row.put(&self.lost_segments);
        row.put(&self.unacked_segments);
        row.put(&big_opt(self.bytes_acked));
        row.put(&big_opt(self.bytes_received));
        row.put(&self.last_send_ms);
        row.put(&self.last_recv_ms);
    }
}

impl Record for SocketCountRecord {
    const TABLE: &'static str = "socket_counts";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &["snap_id", "protocol", "state", "count"];

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.snap_id));
        row.put(&self.protocol);
        row.put(&self.state);
        row.put(&big(self.count));
    }
}

impl Record for TcpCounterRecord {
    const TABLE: &'static str = "tcp_counters";
    const STAGED: bool = true;
    const COLUMNS: &'static [&'static str] = &["snap_id", "name", "value", "rate_per_s"];

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.snap_id));
        row.put(&self.name);
        row.put(&self.value);
        row.put(&self.rate_per_s);
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.snap_id));
        row.put(&self.pid);
        row.put(&self.name);
        row.put(&self.cmdline);
        row.put(&self.cpu_pct);
        row.put(&big(self.rss_bytes));
        row.put(&self.threads);
        row.put(&self.open_fds);
        row.put(&big_opt(self.fd_limit));
        row.put(&self.sockets);
        row.put(&self.children);
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&big(self.request_id));
        row.put(&self.url_class);
        row.put(&self.method);
        row.put(&self.url);
        row.put(&big(self.scheduled_ts_ns));
        row.put(&big(self.start_ts_ns));
        row.put(&big_opt(self.first_byte_ts_ns));
        row.put(&big(self.end_ts_ns));
        row.put(&(self.latency_us as f64));
        row.put(&self.status);
        row.put(&big(self.response_body_bytes));
        row.put(&self.error_kind.map(|kind| kind.as_str()));
        row.put(&big_opt(self.connection_id));
        row.put(&self.local_port);
        row.put(&self.reused);
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&self.url_class);
        row.put(&big(self.requests));
        row.put(&big(self.responses));
        row.put(&self.requests_per_s);
        row.put(&big(self.status_1xx));
        row.put(&big(self.status_2xx));
        row.put(&big(self.status_3xx));
        row.put(&big(self.status_4xx));
        row.put(&big(self.status_5xx));
        row.put(&big(self.errors));
        row.put(&big(self.errors_connect_refused));
        row.put(&big(self.errors_timeout));
        row.put(&big(self.errors_reset));
        row.put(&big(self.errors_other));
        row.put(&big(self.connections_opened));
        row.put(&big(self.response_body_bytes));
        row.put(&(self.latency_min_us as f64));
        row.put(&self.latency_mean_us);
        row.put(&(self.latency_p50_us as f64));
        row.put(&(self.latency_p90_us as f64));
        row.put(&(self.latency_p99_us as f64));
        row.put(&(self.latency_p999_us as f64));
        row.put(&(self.latency_max_us as f64));
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&self.playbook);
        row.put(&self.playbook_path);
        row.put(&self.playbook_sha256);
        row.put(&self.variables_json);
        row.put(&self.started_ts_ns);
        row.put(&self.ended_ts_ns);
        row.put(&self.status);
        row.put(&self.tool_version);
        row.put(&self.kernel);
        row.put(&self.run_dir);
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&self.step_id);
        row.put(&self.stage);
        row.put(&self.name);
        row.put(&self.kind);
        row.put(&self.started_ts_ns);
        row.put(&self.ended_ts_ns);
        row.put(&self.duration_us);
        row.put(&self.status);
        row.put(&self.message);
        row.put(&self.outputs_json);
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&self.command_id);
        row.put(&self.step_id);
        row.put(&self.purpose);
        row.put(&self.argv_json);
        row.put(&self.cwd);
        row.put(&self.started_ts_ns);
        row.put(&self.ended_ts_ns);
        row.put(&self.duration_us);
        row.put(&self.exit_code);
        row.put(&self.signal);
        row.put(&self.timed_out);
        row.put(&self.stdout_path);
        row.put(&self.stderr_path);
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

    fn append(&self, row: &mut RowWriter<'_, '_>) {
        row.put(&self.finding_id);
        row.put(&self.rule);
        row.put(&self.severity);
        row.put(&self.score);
        row.put(&self.stage);
        row.put(&self.endpoint);
        row.put(&self.title);
        row.put(&self.detail);
        row.put(&self.evidence_sql);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::query::Cell;
    use crate::Store;

    /// One row of every column type the chunk writer knows, NULLs included.
    #[derive(Debug, Clone)]
    struct Sample {
        seq: u64,
        flag: Option<bool>,
        small: Option<u16>,
        big: Option<u64>,
        real: Option<f64>,
        text: Option<String>,
        ip: Option<IpAddr>,
    }

    impl Record for Sample {
        const TABLE: &'static str = "sample";
        const STAGED: bool = true;
        const COLUMNS: &'static [&'static str] =
            &["seq", "flag", "small", "big", "real", "text", "ip"];

        fn append(&self, row: &mut RowWriter<'_, '_>) {
            row.put(&self.seq);
            row.put(&self.flag);
            row.put(&self.small);
            row.put(&self.big);
            row.put(&self.real);
            row.put(&self.text);
            row.put(&self.ip);
        }
    }

    const SAMPLE_TABLE: &str = "CREATE TABLE sample (run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, \
        stage VARCHAR NOT NULL, seq BIGINT, flag BOOLEAN, small INTEGER, big BIGINT, real DOUBLE, text VARCHAR, \
        ip VARCHAR)";

    fn sample(index: u64) -> Sample {
        let texts = ["", "short", "Zürich → 東京 🚀, longer than twelve bytes", "ümlaut"];
        let ips: [IpAddr; 3] = [
            IpAddr::V4(Ipv4Addr::new(10, (index >> 8) as u8, index as u8, 255)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, index as u16)),
            IpAddr::V4(Ipv4Addr::new(0, 0, 0, 0)),
        ];
        Sample {
            seq: index,
            flag: (!index.is_multiple_of(5)).then_some(index.is_multiple_of(2)),
            small: (!index.is_multiple_of(7)).then_some(index as u16),
            big: (!index.is_multiple_of(11)).then_some(if index == 1 {
                u64::MAX
            } else {
                index << 33
            }),
            real: (!index.is_multiple_of(13)).then_some(index as f64 / 8.0),
            text: (!index.is_multiple_of(3)).then(|| texts[(index % 4) as usize].to_string()),
            ip: (!index.is_multiple_of(17)).then_some(ips[(index % 3) as usize]),
        }
    }

    fn expected(index: u64) -> Vec<Cell> {
        let s = sample(index);
        vec![
            Cell::Int(index as i64),
            s.flag.map_or(Cell::Null, Cell::Bool),
            s.small.map_or(Cell::Null, |v| Cell::Int(i64::from(v))),
            s.big.map_or(Cell::Null, |v| Cell::Int(big(v))),
            s.real.map_or(Cell::Null, Cell::Float),
            s.text.map_or(Cell::Null, Cell::Text),
            s.ip.map_or(Cell::Null, |ip| Cell::Text(ip.to_string())),
        ]
    }

    #[test]
    fn every_column_type_round_trips_across_chunk_boundaries_with_nulls() {
        let store = Store::in_memory().unwrap();
        store.query(SAMPLE_TABLE).unwrap();
        let scope = Scope::new("run", "hôst").with_stage("reproduce");
        // 2048 rows per chunk: 5000 rows end in a partial third chunk.
        let rows: Vec<Sample> = (0..5000).map(sample).collect();
        let mut sink = store.sink::<Sample>(&scope).unwrap();
        sink.extend(&rows).unwrap();
        assert_eq!(sink.finish().unwrap(), 5000);

        let result = store
            .query(
                "SELECT seq, flag, small, big, real, text, ip FROM sample \
                 WHERE run_id = 'run' AND host = 'hôst' AND stage = 'reproduce' ORDER BY seq",
            )
            .unwrap();
        assert_eq!(result.rows.len(), 5000);
        for (index, row) in result.rows.iter().enumerate() {
            assert_eq!(row, &expected(index as u64), "row {index}");
        }
    }

    #[test]
    fn a_sink_flushes_when_dropped_and_when_asked() {
        let store = Store::in_memory().unwrap();
        store.query(SAMPLE_TABLE).unwrap();
        let scope = Scope::new("run", "host");
        let mut sink = store.sink::<Sample>(&scope).unwrap();
        sink.push(&sample(1)).unwrap();
        sink.flush().unwrap();
        let count = |store: &Store| store.query("SELECT count(*) FROM sample").unwrap().rows;
        assert_eq!(count(&store), vec![vec![Cell::Int(1)]]);
        sink.push(&sample(2)).unwrap();
        drop(sink);
        assert_eq!(count(&store), vec![vec![Cell::Int(2)]]);
    }

    /// Writes whatever columns it is told to, to check the writer refuses bad rows.
    #[derive(Debug)]
    struct Wrong(&'static str);

    impl Record for Wrong {
        const TABLE: &'static str = "sample";
        const STAGED: bool = true;
        const COLUMNS: &'static [&'static str] =
            &["seq", "flag", "small", "big", "real", "text", "ip"];

        fn append(&self, row: &mut RowWriter<'_, '_>) {
            match self.0 {
                "text into BOOLEAN" => {
                    row.put(&1u8);
                    row.put("yes");
                }
                "too few" => row.put(&1u8),
                "too many" => (0..8).for_each(|_| row.put(&None::<bool>)),
                "INTEGER overflow" => {
                    row.put(&1u8);
                    row.put(&true);
                    row.put(&(i64::from(i32::MAX) + 1));
                }
                _ => {}
            }
            while !matches!(self.0, "too few" | "too many") && row.chunk.next_kind().is_some() {
                row.put(&None::<bool>);
            }
        }
    }

    #[test]
    fn mismatched_types_and_counts_fail_the_push_not_the_memory() {
        let store = Store::in_memory().unwrap();
        store.query(SAMPLE_TABLE).unwrap();
        let mut sink = store.sink::<Wrong>(&Scope::new("run", "host")).unwrap();
        for case in ["text into BOOLEAN", "too few", "too many", "INTEGER overflow"] {
            let err = sink.push(&Wrong(case)).unwrap_err();
            assert!(matches!(err, StoreError::Ingest { table: "sample", .. }), "{case}: {err}");
        }
        sink.push(&Wrong("all NULL")).unwrap();
        sink.finish().unwrap();
        // The failed rows left nothing behind, not even NULL marks in the row that followed.
        let mut sink = store.sink::<Sample>(&Scope::new("run", "host")).unwrap();
        for case in ["too many", "too few"] {
            sink.appender.str("run");
            sink.appender.str("host");
            sink.appender.str("");
            Wrong(case).append(&mut RowWriter { chunk: &mut sink.appender });
            assert!(sink.appender.end_row().is_err(), "{case}");
        }
        sink.push(&sample(1)).unwrap();
        sink.finish().unwrap();
        let rows = store.query("SELECT count(*), count(flag) FROM sample").unwrap().rows;
        assert_eq!(rows, vec![vec![Cell::Int(2), Cell::Int(1)]]);
        let row = store
            .query("SELECT seq, flag, small, big, real, text, ip FROM sample WHERE seq = 1")
            .unwrap()
            .rows;
        assert_eq!(row, vec![expected(1)]);
    }

    #[test]
    fn a_read_only_store_has_no_sink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.duckdb");
        Store::open(&path, crate::Access::ReadWrite).unwrap().close().unwrap();
        let store = Store::open(&path, crate::Access::ReadOnly).unwrap();
        let err = store.sink::<RunRecord>(&Scope::new("r", "h")).unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    #[test]
    fn addresses_are_formatted_like_display() {
        let mut buffer = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "192.168.1.20",
            "::",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:192.0.2.128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(format_ip(ip, &mut buffer), ip.to_string());
        }
        for octet in 0..=255u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(octet, 0, octet, 7));
            assert_eq!(format_ip(ip, &mut buffer), ip.to_string());
        }
    }
}
