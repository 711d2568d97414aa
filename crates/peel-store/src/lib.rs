//! peel-store: everything peel measures lands in one DuckDB file per incident run, so the on-call
//! engineer can ask any question in SQL and the postmortem gets a sealed archive.
//!
//! - [`schema`]: one versioned schema for every record kind; older files are migrated or refused.
//! - [`ingest`]: producers' plain records go in through DuckDB's Appender, in batches, or streamed
//!   through a [`Sink`] (peel-wire's analyzer pushes finished connections as they come).
//! - [`views`]: `v_endpoint_phases`, `v_slowest_connections`, `v_socket_states`, `v_counter_rates`,
//!   `v_churn`, `v_run_metrics`, `v_run_compare`.
//! - [`query`]: results as column names and typed cells, for `peel sql`, reports and findings.
//! - Parquet export/import hive-partitioned `run_id=/host=/table=` ([`Store::export_parquet`]).
//! - [`archive`]: sealed, verifiable evidence archives with a manifest; [`redact`] for captures.
//!
//! It knows the producers' record structs (peel-wire, peel-snap, peel-load), never their internals,
//! and it never prints: it returns data and typed errors ([`StoreError`]).

pub mod archive;
// The only module with unsafe code: DuckDB's C API for data-chunk ingest (see its SAFETY notes).
#[allow(unsafe_code)]
mod chunk;
pub mod error;
pub mod ingest;
mod parquet;
pub mod query;
pub mod records;
pub mod redact;
pub mod schema;
pub mod scrub;
mod store;
pub mod views;

pub use archive::{
    create_archive, import_archives, verify_archive, CreateOptions, Manifest, Problem, Verification,
};
pub use error::{Result, StoreError};
pub use ingest::{
    ConnectionCounts, ConnectionSink, Record, RowWriter, Scope, Sink, Value, BATCH_ROWS,
};
pub use parquet::ExportedTable;
pub use query::{split_statements, Cell, Column, QueryResult, StatementText};
pub use records::{CommandRecord, FindingRecord, RunRecord, StepRecord};
pub use schema::{SCHEMA_VERSION, TABLES};
pub use store::{partial_path, Access, Store};
