//! Round trip over real files: records -> Appender -> DuckDB file -> queries and views -> Parquet
//! (hive-partitioned) -> read back -> the same rows. Plus the schema-version refusals.

mod sample_run;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use peel_store::{Access, Cell, QueryResult, Scope, Store, StoreError, TABLES};

fn rows(store: &Store, sql: &str) -> Vec<Vec<Cell>> {
    store.query(sql).unwrap_or_else(|err| panic!("{sql}: {err}")).rows
}

fn one(store: &Store, sql: &str) -> Cell {
    rows(store, sql).remove(0).remove(0)
}

fn sample_db(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("peel.duckdb");
    let store = Store::open(&path, Access::ReadWrite).unwrap();
    assert!(peel_store::partial_path(&path).exists(), "a new database lives under .partial");
    assert!(!path.exists(), "and gets its name only when closed");
    sample_run::ingest_sample(&store, "r1", "host-a");
    store.close().unwrap();
    path
}

#[test]
fn a_new_database_appears_only_when_closed_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_db(dir.path());
    assert!(!peel_store::partial_path(&path).exists());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn ingested_records_come_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sample_db(dir.path()), Access::ReadOnly).unwrap();
    assert_eq!(
        rows(
            &store,
            "SELECT conn_id, client_ip, server_port, handshake_us, close_us, closed_by, state, \
             protocol, syn_ts_ns FROM connections WHERE stage = 'reproduce' ORDER BY conn_id"
        ),
        vec![
            vec![
                Cell::Int(1),
                Cell::Text("10.0.0.1".into()),
                Cell::Int(8000),
                Cell::Float(13.711),
                Cell::Float(826_461.507),
                Cell::Text("server".into()),
                Cell::Text("complete".into()),
                Cell::Text("http".into()),
                Cell::Int(sample_run::T0_NS + 7_855_262_401),
            ],
            vec![
                Cell::Int(2),
                Cell::Text("10.1.0.5".into()),
                Cell::Int(5432),
                Cell::Float(13.711),
                Cell::Null,
                Cell::Null,
                Cell::Text("reset".into()),
                Cell::Text("postgresql".into()),
                Cell::Int(sample_run::T0_NS + 7_855_262_401),
            ],
            vec![
                Cell::Int(3),
                Cell::Text("2001:db8::1".into()),
                Cell::Int(8000),
                Cell::Null,
                Cell::Float(826_461.507),
                Cell::Text("server".into()),
                Cell::Text("partial".into()),
                Cell::Text("http".into()),
                Cell::Null,
            ],
        ]
    );
    assert_eq!(one(&store, "SELECT count(*) FROM exchanges"), Cell::Int(3));
    assert_eq!(one(&store, "SELECT count(*) FROM sockets"), Cell::Int(9));
    assert_eq!(
        one(&store, "SELECT string_agg(exit_code::VARCHAR, ',' ORDER BY command_id) FROM commands"),
        Cell::Text("0,3".into())
    );
    assert_eq!(
        one(&store, "SELECT error_kind FROM load_requests WHERE request_id = 3"),
        Cell::Text("timeout".into())
    );
    let result = store
        .query("SELECT make_timestamp_ns(ts_ns) AS ts FROM snapshots ORDER BY ts LIMIT 1")
        .unwrap();
    assert_eq!(result.columns[0].type_name, "TIMESTAMP_NS");
    assert_eq!(result.rows[0][0].to_string(), "2026-11-25T03:00:00.000000000Z");
}

#[test]
fn views_answer_the_first_questions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sample_db(dir.path()), Access::ReadOnly).unwrap();
    assert_eq!(
        rows(
            &store,
            "SELECT endpoint, samples, p50_us FROM v_endpoint_phases \
             WHERE stage = 'reproduce' AND phase = 'close' ORDER BY endpoint"
        ),
        vec![
            vec![Cell::Text("10.0.0.2:8000".into()), Cell::Int(1), Cell::Float(826_461.507)],
            vec![Cell::Text("[2001:db8::2]:8000".into()), Cell::Int(1), Cell::Float(826_461.507)],
        ]
    );
    assert_eq!(
        one(&store, "SELECT p50_us FROM v_endpoint_phases WHERE phase = 'db_setup'"),
        Cell::Float(3_250.5)
    );
    assert_eq!(
        rows(&store, "SELECT snap_id, sockets FROM v_socket_states WHERE state = 'TIME_WAIT' ORDER BY snap_id"),
        vec![vec![Cell::Int(0), Cell::Int(2)], vec![Cell::Int(1), Cell::Int(5)]]
    );
    assert_eq!(
        rows(&store, "SELECT snap_id, delta, interval_s FROM v_counter_rates ORDER BY snap_id"),
        vec![
            vec![Cell::Int(0), Cell::Null, Cell::Null],
            vec![Cell::Int(1), Cell::Int(5), Cell::Float(1.0)]
        ]
    );
    assert_eq!(
        rows(
            &store,
            "SELECT endpoint, connections, requests_per_conn FROM v_churn \
             WHERE stage = 'reproduce' ORDER BY endpoint"
        ),
        vec![
            vec![Cell::Text("10.0.0.2:8000".into()), Cell::Int(1), Cell::Float(1.0)],
            vec![Cell::Text("10.1.0.9:5432".into()), Cell::Int(1), Cell::Float(0.0)],
            vec![Cell::Text("[2001:db8::2]:8000".into()), Cell::Int(1), Cell::Float(1.0)],
        ]
    );
    assert_eq!(
        rows(
            &store,
            "SELECT baseline, after, change_pct FROM v_run_compare \
             WHERE baseline_stage = 'reproduce' AND after_stage = 'verify-fix' \
               AND endpoint = '10.0.0.2:8000' AND metric = 'p99_close_us'"
        ),
        vec![vec![
            Cell::Float(826_461.507),
            Cell::Float(210.0),
            Cell::Float(100.0 * (210.0 - 826_461.507) / 826_461.507)
        ]]
    );
    assert_eq!(
        one(&store, "SELECT count(*) FROM v_slowest_connections WHERE rank = 1"),
        Cell::Int(4)
    );
}

#[test]
fn parquet_export_is_hive_partitioned_and_reads_back_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sample_db(dir.path()), Access::ReadOnly).unwrap();
    let export = dir.path().join("export");
    let exported = store.export_parquet(&export).unwrap();
    assert!(exported.iter().any(|table| table.table == "connections" && table.rows == 4));
    assert!(export.join("run_id=r1/host=host-a/table=connections/data_0.parquet").is_file());

    // DuckDB reads the layout in place, partition columns from the path.
    let scratch = Store::in_memory().unwrap();
    let glob = export.join("*/*/table=connections/*.parquet");
    let in_place = scratch
        .query(&format!(
            "SELECT run_id, host, count(*) AS n FROM read_parquet('{}', hive_partitioning = true) \
             GROUP BY ALL",
            glob.display()
        ))
        .unwrap();
    assert_eq!(
        in_place.rows,
        vec![vec![Cell::Text("r1".into()), Cell::Text("host-a".into()), Cell::Int(4)]]
    );

    let imported = Store::in_memory().unwrap();
    imported.import_parquet(&export).unwrap();
    for table in TABLES {
        let sql = format!("SELECT * FROM {table} ORDER BY ALL");
        let original: QueryResult = store.query(&sql).unwrap();
        let round_trip: QueryResult = imported.query(&sql).unwrap();
        assert_eq!(original, round_trip, "table {table}");
    }
}

#[test]
fn streaming_sink_flushes_batches_and_counts_rows() {
    let store = Store::in_memory().unwrap();
    let scope = Scope::new("r1", "h");
    let mut sink = store.connection_sink(&scope).unwrap();
    let connection = sample_run::story_connection(1, "10.0.0.1", "10.0.0.2");
    let total = peel_store::BATCH_ROWS + 5;
    for conn_id in 0..total {
        let mut next = connection.clone();
        next.connection.conn_id = conn_id;
        next.exchanges[0].conn_id = conn_id;
        sink.push(&next).unwrap();
    }
    let counts = sink.finish().unwrap();
    assert_eq!((counts.connections, counts.exchanges), (total, total));
    assert_eq!(
        one(&store, "SELECT count(DISTINCT conn_id) FROM connections"),
        Cell::Int(total as i64)
    );
}

#[test]
fn steps_and_runs_are_updated_when_they_end() {
    let store = Store::in_memory().unwrap();
    sample_run::ingest_sample(&store, "r1", "h");
    let scope = Scope::new("r1", "h");
    let mut step = sample_run::step(1, "verify-fix");
    step.ended_ts_ns = Some(sample_run::T0_NS + 5_000_000_000);
    step.duration_us = Some(4_000_000.0);
    step.status = "passed".into();
    step.message = Some("p99 improved by 99.97%".into());
    assert!(store.update_step(&scope, &step).unwrap());
    assert!(store.finish_run(&scope, sample_run::T0_NS + 9, "passed").unwrap());
    assert!(!store.finish_run(&Scope::new("r2", "h"), 1, "passed").unwrap());
    assert_eq!(
        rows(&store, "SELECT status, message FROM steps WHERE step_id = 1"),
        vec![vec![Cell::Text("passed".into()), Cell::Text("p99 improved by 99.97%".into())]]
    );
    assert_eq!(one(&store, "SELECT status FROM runs"), Cell::Text("passed".into()));
}

#[test]
fn read_only_stores_refuse_writes_with_duckdbs_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sample_db(dir.path()), Access::ReadOnly).unwrap();
    match store.query("DELETE FROM connections") {
        Err(StoreError::Query { message, .. }) => {
            assert!(message.contains("read-only"), "{message}")
        }
        other => panic!("expected a read-only refusal, got {other:?}"),
    }
}

#[test]
fn query_errors_carry_duckdbs_position() {
    let store = Store::in_memory().unwrap();
    match store.query_script("SELECT 1;\nSELECT * FORM connections") {
        Err(StoreError::Query { statement, message, .. }) => {
            assert_eq!(statement, 1);
            assert!(
                message.contains("Parser Error: syntax error at or near \"connections\""),
                "{message}"
            );
            assert!(message.contains("LINE 1:"), "{message}");
        }
        other => panic!("expected a query error, got {other:?}"),
    }
}

/// Writes a DuckDB file with the given schema_version rows (or a foreign table).
fn fake_db(dir: &Path, name: &str, sql: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let connection = duckdb::Connection::open(&path).unwrap();
    connection.execute_batch(sql).unwrap();
    drop(connection);
    path
}

#[test]
fn other_schema_versions_are_refused_naming_file_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let newer = fake_db(
        dir.path(),
        "newer.duckdb",
        "CREATE TABLE schema_version (version INTEGER, applied_ts_ns BIGINT, tool_version VARCHAR);
         INSERT INTO schema_version VALUES (99, 0, 'future');",
    );
    let older = fake_db(
        dir.path(),
        "older.duckdb",
        "CREATE TABLE schema_version (version INTEGER, applied_ts_ns BIGINT, tool_version VARCHAR);
         INSERT INTO schema_version VALUES (0, 0, 'prototype');",
    );
    let foreign = fake_db(dir.path(), "foreign.duckdb", "CREATE TABLE t (x INTEGER);");
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let err = Store::open(&newer, access).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { found: 99, supported: 1, .. }), "{err}");
        assert!(err.to_string().contains("newer.duckdb has schema version 99"), "{err}");
        let err = Store::open(&older, access).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooOld { found: 0, .. }), "{err}");
        assert!(err.to_string().contains("older.duckdb has schema version 0"), "{err}");
        let err = Store::open(&foreign, access).unwrap_err();
        assert!(matches!(err, StoreError::NotPeel { .. }), "{err}");
    }
    let missing = Store::open(&dir.path().join("missing.duckdb"), Access::ReadOnly).unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
}

#[test]
fn reopening_for_writing_keeps_rows_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_db(dir.path());
    let store = Store::open(&path, Access::ReadWrite).unwrap();
    sample_run::ingest_sample(&store, "r2", "host-b");
    store.close().unwrap();
    let store = Store::open(&path, Access::ReadOnly).unwrap();
    assert_eq!(
        store.runs_and_hosts().unwrap(),
        vec![("r1".to_string(), "host-a".to_string()), ("r2".to_string(), "host-b".to_string())]
    );
}
