//! The one schema every peel database has, its version, and how an existing file is checked or
//! migrated when it is opened. docs/schema.md documents every table and column; keep the two in
//! the same commit.
//!
//! Tables are versioned: a change to a table bumps [`SCHEMA_VERSION`] and adds a migration from
//! the previous version. Views and macros are not versioned: every writable open re-creates them
//! (`CREATE OR REPLACE`), so a fixed view reaches old files without a migration.

use std::path::Path;

use duckdb::Connection;

use crate::error::{Result, StoreError};
use crate::views;

/// The schema version this peel writes.
pub const SCHEMA_VERSION: i64 = 1;

/// The oldest version this peel can migrate from.
pub const OLDEST_MIGRATABLE: i64 = 1;

/// Migrations: the SQL that takes version `from` to `from + 1`. Empty while version 1 is the only
/// version that ever shipped.
const MIGRATIONS: &[(i64, &str)] = &[];

/// Every data table, in the order exports and imports walk them.
pub const TABLES: &[&str] = &[
    "runs",
    "steps",
    "commands",
    "connections",
    "exchanges",
    "capture_warnings",
    "snapshots",
    "system",
    "cpus",
    "sysctl",
    "sockets",
    "socket_counts",
    "tcp_counters",
    "processes",
    "load_requests",
    "load_summaries",
    "findings",
];

/// DDL of the version-1 tables. Instants are BIGINT epoch nanoseconds (`*_ts_ns`), durations
/// DOUBLE microseconds (`*_us`).
const CREATE_TABLES: &str = r#"
CREATE TABLE schema_version (
    version INTEGER NOT NULL,
    applied_ts_ns BIGINT NOT NULL,
    tool_version VARCHAR NOT NULL
);
CREATE TABLE runs (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL,
    playbook VARCHAR NOT NULL, playbook_path VARCHAR, playbook_sha256 VARCHAR, variables_json VARCHAR,
    started_ts_ns BIGINT NOT NULL, ended_ts_ns BIGINT, status VARCHAR NOT NULL,
    tool_version VARCHAR NOT NULL, kernel VARCHAR, run_dir VARCHAR
);
CREATE TABLE steps (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL,
    step_id BIGINT NOT NULL, stage VARCHAR NOT NULL, name VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    started_ts_ns BIGINT NOT NULL, ended_ts_ns BIGINT, duration_us DOUBLE, status VARCHAR NOT NULL,
    message VARCHAR, outputs_json VARCHAR
);
CREATE TABLE commands (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL,
    command_id BIGINT NOT NULL, step_id BIGINT, purpose VARCHAR NOT NULL, argv_json VARCHAR NOT NULL,
    cwd VARCHAR, started_ts_ns BIGINT NOT NULL, ended_ts_ns BIGINT, duration_us DOUBLE,
    exit_code INTEGER, signal INTEGER, timed_out BOOLEAN NOT NULL,
    stdout_path VARCHAR, stderr_path VARCHAR
);
CREATE TABLE connections (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    conn_id BIGINT NOT NULL,
    client_ip VARCHAR NOT NULL, client_port INTEGER NOT NULL,
    server_ip VARCHAR NOT NULL, server_port INTEGER NOT NULL,
    vlan INTEGER, interface_id BIGINT NOT NULL,
    syn_ts_ns BIGINT, handshake_us DOUBLE, synack_to_ack_us DOUBLE, syn_retransmits BIGINT NOT NULL,
    first_request_ts_ns BIGINT, request_wait_us DOUBLE, server_us DOUBLE, response_us DOUBLE,
    exchanges BIGINT NOT NULL, db_setup_us DOUBLE, idle_us DOUBLE,
    close_start_ts_ns BIGINT, close_us DOUBLE, closed_by VARCHAR, reset_by VARCHAR,
    reset_phase VARCHAR, half_closed BOOLEAN NOT NULL,
    retransmits BIGINT NOT NULL, out_of_order BIGINT NOT NULL, dup_acks BIGINT NOT NULL,
    zero_windows BIGINT NOT NULL, window_full BIGINT NOT NULL,
    bytes_c2s BIGINT NOT NULL, bytes_s2c BIGINT NOT NULL,
    first_ts_ns BIGINT NOT NULL, last_ts_ns BIGINT NOT NULL, lifetime_us DOUBLE NOT NULL,
    packets BIGINT NOT NULL, state VARCHAR NOT NULL, protocol VARCHAR NOT NULL,
    http_requests BIGINT NOT NULL DEFAULT 0, http_responses BIGINT NOT NULL DEFAULT 0,
    expired BOOLEAN NOT NULL
);
CREATE TABLE exchanges (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    conn_id BIGINT NOT NULL, seq BIGINT NOT NULL,
    request_start_ts_ns BIGINT NOT NULL, request_end_ts_ns BIGINT NOT NULL,
    response_start_ts_ns BIGINT, response_end_ts_ns BIGINT,
    server_us DOUBLE, response_us DOUBLE,
    method VARCHAR, path VARCHAR, status INTEGER,
    request_bytes BIGINT NOT NULL, response_bytes BIGINT NOT NULL
);
CREATE TABLE capture_warnings (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    file VARCHAR NOT NULL, packet_index BIGINT, reason VARCHAR NOT NULL, count BIGINT NOT NULL,
    byte_offset BIGINT, detail VARCHAR
);
CREATE TABLE snapshots (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    snap_id BIGINT NOT NULL, ts_ns BIGINT NOT NULL, source_host VARCHAR NOT NULL,
    proc_root VARCHAR NOT NULL, socket_source VARCHAR NOT NULL, duration_us DOUBLE NOT NULL
);
CREATE TABLE system (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    snap_id BIGINT NOT NULL, load1 DOUBLE NOT NULL, load5 DOUBLE NOT NULL, load15 DOUBLE NOT NULL,
    cpu_count BIGINT NOT NULL, cpu_usage_pct DOUBLE, cpu_max_pct DOUBLE,
    mem_total_bytes BIGINT NOT NULL, mem_available_bytes BIGINT NOT NULL,
    mem_used_bytes BIGINT NOT NULL, swap_total_bytes BIGINT NOT NULL, swap_used_bytes BIGINT NOT NULL
);
CREATE TABLE cpus (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    snap_id BIGINT NOT NULL, cpu BIGINT NOT NULL, usage_pct DOUBLE
);
CREATE TABLE sysctl (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    snap_id BIGINT NOT NULL, key VARCHAR NOT NULL, value VARCHAR NOT NULL
);
CREATE TABLE sockets (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    snap_id BIGINT NOT NULL, family VARCHAR NOT NULL, state VARCHAR NOT NULL,
    local_ip VARCHAR NOT NULL, local_port INTEGER NOT NULL,
    remote_ip VARCHAR NOT NULL, remote_port INTEGER NOT NULL,
    send_q_bytes BIGINT NOT NULL, recv_q_bytes BIGINT NOT NULL,
    timer VARCHAR NOT NULL, timer_expires_ms BIGINT NOT NULL, retransmits BIGINT NOT NULL,
    uid BIGINT NOT NULL, inode BIGINT NOT NULL, pid BIGINT, process VARCHAR,
    listen_backlog BIGINT, accept_queue BIGINT,
    rtt_us DOUBLE, rttvar_us DOUBLE, cwnd_segments BIGINT, retrans_segments BIGINT,
    total_retrans_segments BIGINT, lost_segments BIGINT, unacked_segments BIGINT,
    bytes_acked BIGINT, bytes_received BIGINT, last_send_ms BIGINT, last_recv_ms BIGINT
);
CREATE TABLE socket_counts (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    snap_id BIGINT NOT NULL, protocol VARCHAR NOT NULL, state VARCHAR NOT NULL, count BIGINT NOT NULL
);
CREATE TABLE tcp_counters (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    snap_id BIGINT NOT NULL, name VARCHAR NOT NULL, value BIGINT NOT NULL, rate_per_s DOUBLE
);
CREATE TABLE processes (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    snap_id BIGINT NOT NULL, pid BIGINT NOT NULL, name VARCHAR NOT NULL, cmdline VARCHAR NOT NULL,
    cpu_pct DOUBLE, rss_bytes BIGINT NOT NULL, threads BIGINT NOT NULL, open_fds BIGINT,
    fd_limit BIGINT, sockets BIGINT, children BIGINT NOT NULL
);
CREATE TABLE load_requests (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    request_id BIGINT NOT NULL, url_class VARCHAR NOT NULL, method VARCHAR NOT NULL,
    url VARCHAR NOT NULL, scheduled_ts_ns BIGINT NOT NULL, start_ts_ns BIGINT NOT NULL,
    first_byte_ts_ns BIGINT, end_ts_ns BIGINT NOT NULL, latency_us DOUBLE NOT NULL,
    status INTEGER, response_body_bytes BIGINT NOT NULL, error_kind VARCHAR,
    connection_id BIGINT, local_port INTEGER, reused BOOLEAN NOT NULL
);
CREATE TABLE load_summaries (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL, stage VARCHAR NOT NULL,
    url_class VARCHAR NOT NULL, requests BIGINT NOT NULL, responses BIGINT NOT NULL,
    requests_per_s DOUBLE NOT NULL,
    status_1xx BIGINT NOT NULL, status_2xx BIGINT NOT NULL, status_3xx BIGINT NOT NULL,
    status_4xx BIGINT NOT NULL, status_5xx BIGINT NOT NULL,
    errors BIGINT NOT NULL, errors_connect_refused BIGINT NOT NULL, errors_timeout BIGINT NOT NULL,
    errors_reset BIGINT NOT NULL, errors_other BIGINT NOT NULL,
    connections_opened BIGINT NOT NULL, response_body_bytes BIGINT NOT NULL,
    latency_min_us DOUBLE NOT NULL, latency_mean_us DOUBLE NOT NULL,
    latency_p50_us DOUBLE NOT NULL, latency_p90_us DOUBLE NOT NULL, latency_p99_us DOUBLE NOT NULL,
    latency_p999_us DOUBLE NOT NULL, latency_max_us DOUBLE NOT NULL
);
CREATE TABLE findings (
    run_id VARCHAR NOT NULL, host VARCHAR NOT NULL,
    finding_id BIGINT NOT NULL, rule VARCHAR NOT NULL, severity VARCHAR NOT NULL,
    score DOUBLE NOT NULL, stage VARCHAR, endpoint VARCHAR, title VARCHAR NOT NULL,
    detail VARCHAR NOT NULL, evidence_sql VARCHAR
);
"#;

/// What an opened file's schema turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaState {
    /// No tables at all: a new file.
    Empty,
    /// A peel database at this version.
    Version(i64),
    /// Tables, but no `schema_version`.
    Foreign,
}

pub(crate) fn inspect(connection: &Connection, path: &Path) -> Result<SchemaState> {
    let schema_err = |source| StoreError::Schema { path: path.to_path_buf(), source };
    let (tables, has_version): (i64, bool) = connection
        .query_row(
            "SELECT count(*), bool_or(table_name = 'schema_version') FROM duckdb_tables() \
             WHERE database_name = current_database() AND schema_name = 'main'",
            [],
            |row| Ok((row.get(0)?, row.get::<_, Option<bool>>(1)?.unwrap_or(false))),
        )
        .map_err(schema_err)?;
    if tables == 0 {
        return Ok(SchemaState::Empty);
    }
    if !has_version {
        return Ok(SchemaState::Foreign);
    }
    let version: Option<i64> = connection
        .query_row("SELECT max(version) FROM schema_version", [], |row| row.get(0))
        .map_err(schema_err)?;
    Ok(SchemaState::Version(version.unwrap_or(0)))
}

/// Checks (and, if `writable`, creates or migrates) the schema of an opened database.
pub(crate) fn prepare(
    connection: &Connection,
    path: &Path,
    writable: bool,
    tool_version: &str,
) -> Result<()> {
    let path_buf = || path.to_path_buf();
    let schema_err = |source| StoreError::Schema { path: path.to_path_buf(), source };
    match inspect(connection, path)? {
        SchemaState::Foreign => Err(StoreError::NotPeel { path: path_buf() }),
        SchemaState::Empty if !writable => Err(StoreError::NotPeel { path: path_buf() }),
        SchemaState::Empty => {
            let now_ns = now_ns();
            connection
                .execute_batch(&format!(
                    "BEGIN; {CREATE_TABLES} INSERT INTO schema_version VALUES \
                     ({SCHEMA_VERSION}, {now_ns}, '{}'); COMMIT;",
                    tool_version.replace('\'', "''")
                ))
                .map_err(schema_err)?;
            views::create(connection).map_err(schema_err)
        }
        SchemaState::Version(found) if found > SCHEMA_VERSION => {
            Err(StoreError::SchemaTooNew { path: path_buf(), found, supported: SCHEMA_VERSION })
        }
        SchemaState::Version(found) if found < OLDEST_MIGRATABLE => Err(StoreError::SchemaTooOld {
            path: path_buf(),
            found,
            oldest: OLDEST_MIGRATABLE,
            current: SCHEMA_VERSION,
        }),
        SchemaState::Version(found) if found < SCHEMA_VERSION && !writable => {
            Err(StoreError::NeedsMigration { path: path_buf(), found, current: SCHEMA_VERSION })
        }
        SchemaState::Version(found) => {
            if !writable {
                return Ok(());
            }
            migrate(connection, path, found, tool_version)?;
            views::create(connection).map_err(schema_err)
        }
    }
}

fn migrate(connection: &Connection, path: &Path, from: i64, tool_version: &str) -> Result<()> {
    for version in from..SCHEMA_VERSION {
        let Some((_, sql)) = MIGRATIONS.iter().find(|(step_from, _)| *step_from == version) else {
            return Err(StoreError::SchemaTooOld {
                path: path.to_path_buf(),
                found: from,
                oldest: OLDEST_MIGRATABLE,
                current: SCHEMA_VERSION,
            });
        };
        let next = version + 1;
        connection
            .execute_batch(&format!(
                "BEGIN; {sql}; INSERT INTO schema_version VALUES ({next}, {}, '{}'); COMMIT;",
                now_ns(),
                tool_version.replace('\'', "''")
            ))
            .map_err(|source| StoreError::Schema { path: path.to_path_buf(), source })?;
    }
    Ok(())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
