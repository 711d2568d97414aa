//! The [`Store`]: one DuckDB file per run (or per merged set of runs), opened read-only by default,
//! with a single writer that owns the connection and its Appenders.
//!
//! A new database is written under a temporary name (`<file>.partial`) and renamed on
//! [`Store::close`], so a crash never leaves a file that looks complete; an existing database is
//! changed in place, where DuckDB's write-ahead log keeps every committed batch and nothing else.
//! Files are created with mode 0600: they hold evidence.

use std::fs;
use std::path::{Path, PathBuf};

use duckdb::{AccessMode, Config, Connection};

use peel_snap::records::SnapshotRecords;

use crate::chunk::RawDatabase;
use crate::error::{Result, StoreError};
use crate::ingest::{ConnectionSink, Record, Scope, Sink};
use crate::query::{self, QueryResult};
use crate::records::StepRecord;
use crate::schema;

/// Whether a store may change the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries only; the schema must already be current.
    ReadOnly,
    /// Creates the file if needed, migrates an older schema, allows ingest and writes.
    ReadWrite,
}

/// An open peel database.
#[derive(Debug)]
pub struct Store {
    /// Declared before `database`: fields drop in order, and the connection must go first.
    connection: Connection,
    /// The raw database handle Appenders connect to (writable stores only).
    database: Option<RawDatabase>,
    /// The name the database has (or will have after [`Store::close`]).
    path: PathBuf,
    /// Set while a new database lives under its temporary name.
    partial: Option<PathBuf>,
    access: Access,
}

/// peel's version as recorded in `schema_version`.
const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Store {
    /// Opens `path`: read-only (the file must exist and be a current peel database) or read-write
    /// (created under a temporary name if missing, migrated if older).
    pub fn open(path: &Path, access: Access) -> Result<Store> {
        match access {
            Access::ReadOnly => Self::open_read_only(path),
            Access::ReadWrite if path.exists() => Self::open_existing_writable(path),
            Access::ReadWrite => Self::create(path),
        }
    }

    /// A private in-memory database with the full schema (tests, scratch work).
    pub fn in_memory() -> Result<Store> {
        let path = PathBuf::from(":memory:");
        let (database, connection) = open_raw(&path)?;
        schema::prepare(&connection, &path, true, TOOL_VERSION)?;
        Ok(Store {
            connection,
            database: Some(database),
            path,
            partial: None,
            access: Access::ReadWrite,
        })
    }

    fn open_read_only(path: &Path) -> Result<Store> {
        if !path.is_file() {
            return Err(StoreError::NotFound { path: path.to_path_buf() });
        }
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        let config = Config::default().access_mode(AccessMode::ReadOnly).map_err(open_err)?;
        let connection = Connection::open_with_flags(path, config).map_err(open_err)?;
        schema::prepare(&connection, path, false, TOOL_VERSION)?;
        Ok(Store {
            connection,
            database: None,
            path: path.to_path_buf(),
            partial: None,
            access: Access::ReadOnly,
        })
    }

    fn open_existing_writable(path: &Path) -> Result<Store> {
        let (database, connection) = open_raw(path)?;
        schema::prepare(&connection, path, true, TOOL_VERSION)?;
        Ok(Store {
            connection,
            database: Some(database),
            path: path.to_path_buf(),
            partial: None,
            access: Access::ReadWrite,
        })
    }

    fn create(path: &Path) -> Result<Store> {
        let partial = partial_path(path);
        // A leftover from a crashed writer is half-written by definition: start over.
        for stale in [partial.clone(), wal_path(&partial)] {
            match fs::remove_file(&stale) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::Io { path: stale, source: err });
                }
                _ => {}
            }
        }
        let (database, connection) = open_raw(&partial)?;
        restrict_mode(&partial)?;
        schema::prepare(&connection, &partial, true, TOOL_VERSION)?;
        Ok(Store {
            connection,
            database: Some(database),
            path: path.to_path_buf(),
            partial: Some(partial),
            access: Access::ReadWrite,
        })
    }

    /// Checkpoints and closes the database; a new database gets its final name only now.
    pub fn close(self) -> Result<PathBuf> {
        let Store { connection, database, path, partial, access } = self;
        let current = partial.clone().unwrap_or_else(|| path.clone());
        if access == Access::ReadWrite && path != Path::new(":memory:") {
            connection
                .execute_batch("CHECKPOINT")
                .map_err(|source| StoreError::Schema { path: current.clone(), source })?;
        }
        connection
            .close()
            .map_err(|(_, source)| StoreError::Open { path: current.clone(), source })?;
        // Closing the database (after its last connection) releases the file before the rename.
        drop(database);
        if let Some(partial) = partial {
            restrict_mode(&partial)?;
            fs::rename(&partial, &path).map_err(StoreError::io(&path))?;
        }
        Ok(path)
    }

    /// The database's final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this store may write.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Appends records to their table in one batch; returns the rows written.
    pub fn ingest<'r, R: Record + 'r>(
        &self,
        scope: &Scope,
        records: impl IntoIterator<Item = &'r R>,
    ) -> Result<u64> {
        let mut sink = self.sink::<R>(scope)?;
        sink.extend(records)?;
        sink.finish()
    }

    /// An open Appender for streaming records of one type (flushed every `BATCH_ROWS` rows).
    pub fn sink<R: Record>(&self, scope: &Scope) -> Result<Sink<'_, R>> {
        Sink::new(self.writable_database(R::TABLE)?, scope.clone())
    }

    fn writable_database(&self, table: &'static str) -> Result<&RawDatabase> {
        self.database.as_ref().ok_or_else(|| StoreError::Ingest {
            table,
            source: duckdb::Error::DuckDBFailure(
                duckdb::ffi::Error::new(duckdb::ffi::DuckDBError),
                Some(format!("{} is open read-only", self.path.display())),
            ),
        })
    }

    /// The sink peel-wire's analyzer pushes finished connections (with their exchanges) into.
    pub fn connection_sink(&self, scope: &Scope) -> Result<ConnectionSink<'_>> {
        ConnectionSink::new(self.writable_database("connections")?, scope)
    }

    /// Ingests every table of one snapshot (`snapshots`, `system`, `cpus`, `sysctl`, `sockets`,
    /// `socket_counts`, `tcp_counters`, `processes`).
    pub fn ingest_snapshot(&self, scope: &Scope, snapshot: &SnapshotRecords) -> Result<()> {
        self.ingest(scope, [&snapshot.snapshot])?;
        self.ingest(scope, snapshot.system.iter())?;
        self.ingest(scope, &snapshot.cpus)?;
        self.ingest(scope, &snapshot.sysctls)?;
        self.ingest(scope, &snapshot.sockets)?;
        self.ingest(scope, &snapshot.socket_counts)?;
        self.ingest(scope, &snapshot.tcp_counters)?;
        self.ingest(scope, &snapshot.processes)?;
        Ok(())
    }

    /// Rewrites the row of a step already appended (same run, host and `step_id`): its end, status,
    /// message and outputs. Returns whether a row matched.
    pub fn update_step(&self, scope: &Scope, step: &StepRecord) -> Result<bool> {
        let changed = self
            .connection
            .execute(
                "UPDATE steps SET ended_ts_ns = ?, duration_us = ?, status = ?, message = ?, \
                 outputs_json = ? WHERE run_id = ? AND host = ? AND step_id = ?",
                duckdb::params![
                    step.ended_ts_ns,
                    step.duration_us,
                    step.status,
                    step.message,
                    step.outputs_json,
                    scope.run_id,
                    scope.host,
                    step.step_id
                ],
            )
            .map_err(|source| StoreError::Ingest { table: "steps", source })?;
        Ok(changed > 0)
    }

    /// Records the end of a run: `ended_ts_ns` and final status. Returns whether a row matched.
    pub fn finish_run(&self, scope: &Scope, ended_ts_ns: i64, status: &str) -> Result<bool> {
        let changed = self
            .connection
            .execute(
                "UPDATE runs SET ended_ts_ns = ?, status = ? WHERE run_id = ? AND host = ?",
                duckdb::params![ended_ts_ns, status, scope.run_id, scope.host],
            )
            .map_err(|source| StoreError::Ingest { table: "runs", source })?;
        Ok(changed > 0)
    }

    /// Runs one SQL statement and returns its columns and rows. (Several statements in one string:
    /// all run, the last one's result is returned; use [`query::split_statements`] to see each.)
    pub fn query(&self, sql: &str) -> Result<QueryResult> {
        query::run_statement(&self.connection, sql, 0)
    }

    /// Runs every statement of a script in order; stops at the first error, which names the
    /// statement (0-based) and carries DuckDB's message with its position.
    pub fn query_script(&self, script: &str) -> Result<Vec<QueryResult>> {
        query::split_statements(script)?
            .iter()
            .enumerate()
            .map(|(index, statement)| query::run_statement(&self.connection, statement.sql, index))
            .collect()
    }

    /// The (run_id, host) pairs present in any table.
    pub fn runs_and_hosts(&self) -> Result<Vec<(String, String)>> {
        let union: Vec<String> = schema::TABLES
            .iter()
            .map(|table| format!("SELECT DISTINCT run_id, host FROM {table}"))
            .collect();
        let sql = format!("SELECT DISTINCT * FROM ({}) ORDER BY ALL", union.join(" UNION "));
        let result = self.query(&sql)?;
        Ok(result
            .rows
            .iter()
            .filter_map(|row| {
                Some((row.first()?.as_str()?.to_string(), row.get(1)?.as_str()?.to_string()))
            })
            .collect())
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }
}

/// Opens a database read-write through the C API (so Appenders can connect to it) and a
/// duckdb-rs connection to it for everything else.
fn open_raw(path: &Path) -> Result<(RawDatabase, Connection)> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let database = RawDatabase::open(path).map_err(open_err)?;
    let connection = database.connect().map_err(open_err)?;
    Ok((database, connection))
}

/// `<file>.partial`: where a new database lives until it is closed.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".wal");
    PathBuf::from(name)
}

/// Sets mode 0600 (owner read/write only): evidence files may hold addresses and payloads.
pub(crate) fn restrict_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(StoreError::io(path))
}
