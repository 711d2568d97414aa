//! The one error type of peel-store. Every variant names what the user needs to act: the database
//! file, the table, the archive member, the schema versions involved.

use std::path::PathBuf;

/// Everything that can go wrong in peel-store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// DuckDB could not open (or create) the database file.
    #[error("cannot open database {path}: {source}")]
    Open { path: PathBuf, source: duckdb::Error },

    /// A read-only open of a file that does not exist.
    #[error("database {path} does not exist")]
    NotFound { path: PathBuf },

    /// The file has tables but no `schema_version`: some other DuckDB file.
    #[error("{path} is not a peel database (it has no schema_version table)")]
    NotPeel { path: PathBuf },

    /// Written by a newer peel whose schema this peel does not know.
    #[error(
        "{path} has schema version {found}, newer than this peel understands (up to {supported}); \
         use a newer peel"
    )]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },

    /// Written by an older peel whose schema cannot be migrated.
    #[error(
        "{path} has schema version {found}, which this peel cannot migrate (it migrates versions \
         {oldest} to {current}); re-create the database from the run's captures and records"
    )]
    SchemaTooOld { path: PathBuf, found: i64, oldest: i64, current: i64 },

    /// An older schema that needs a migration, but the file was opened read-only.
    #[error(
        "{path} has schema version {found} and needs migrating to {current}, but it is open \
         read-only; open it once for writing to migrate"
    )]
    NeedsMigration { path: PathBuf, found: i64, current: i64 },

    /// Creating or migrating the schema failed.
    #[error("schema of {path}: {source}")]
    Schema { path: PathBuf, source: duckdb::Error },

    /// Appending records to a table failed.
    #[error("ingest into table {table}: {source}")]
    Ingest { table: &'static str, source: duckdb::Error },

    /// A SQL statement failed; `message` is DuckDB's, including its LINE/caret position lines.
    #[error("{message}")]
    Query { statement: usize, sql: String, message: String },

    /// A SQL script whose quotes or comments are not closed.
    #[error("SQL text ends inside {what} opened at byte {offset}")]
    UnterminatedSql { what: &'static str, offset: usize },

    /// A file-system operation on a named path failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// Exporting or importing Parquet failed.
    #[error("parquet {path}: {source}")]
    Parquet { path: PathBuf, source: duckdb::Error },

    /// An archive is unreadable (not zstd, not tar, cut short).
    #[error("archive {path}: {reason}")]
    ArchiveFormat { path: PathBuf, reason: String },

    /// An archive member could not be read.
    #[error("archive {path}, member {member}: {source}")]
    ArchiveMember { path: PathBuf, member: String, source: std::io::Error },

    /// An archive's manifest.json is missing or invalid.
    #[error("archive {path}: manifest.json {reason}")]
    Manifest { path: PathBuf, reason: String },

    /// An archive failed verification and cannot be imported.
    #[error("archive {path} failed verification ({problems}); refusing to import it")]
    ArchiveTampered { path: PathBuf, problems: String },

    /// Importing would duplicate rows of a run that the target database already holds.
    #[error("{target} already holds run {run_id} from host {host}; importing {source_path} again would duplicate its rows")]
    AlreadyImported { target: PathBuf, source_path: PathBuf, run_id: String, host: String },

    /// Nothing to put in an archive.
    #[error("{path}: {reason}")]
    ArchiveInput { path: PathBuf, reason: String },

    /// A capture file could not be redacted.
    #[error("redacting {path}: {reason} (at byte {offset})")]
    Redact { path: PathBuf, offset: u64, reason: String },

    /// An IP pseudonym map file is unreadable.
    #[error("IP map {path}: {reason}")]
    IpMap { path: PathBuf, reason: String },
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
