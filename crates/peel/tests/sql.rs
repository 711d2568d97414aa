//! `peel sql` end to end: a database written with --write, queried as table, CSV and JSON, from the
//! argument and from stdin; bad queries exit 2 with DuckDB's message and position; read-only by
//! default.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn peel(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peel"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("peel runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("stdin accepts the script");
    }
    drop(input);
    child.wait_with_output().expect("peel finishes")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const INSERT: &str = "INSERT INTO connections (run_id, host, stage, conn_id, client_ip, client_port, \
    server_ip, server_port, interface_id, syn_ts_ns, handshake_us, syn_retransmits, exchanges, \
    close_us, half_closed, retransmits, out_of_order, dup_acks, zero_windows, window_full, \
    bytes_c2s, bytes_s2c, first_ts_ns, last_ts_ns, lifetime_us, packets, state, protocol, expired) \
    VALUES \
    ('r1', 'host-a', 'reproduce', 1, '10.0.0.1', 40001, '10.0.0.2', 8000, 0, 7855262401, 13.711, 0, 1, \
     826461.507, false, 0, 0, 0, 0, 0, 312, 4096, 7855262401, 8998216582, 1142954.181, 11, 'complete', 'http', false), \
    ('r1', 'host-a', 'reproduce', 2, '10.0.0.3', 40002, '10.0.0.2', 8000, 0, 7900000000, 20.5, 1, 1, \
     1200.25, false, 0, 0, 0, 0, 0, 312, 4096, 7900000000, 8100000000, 200000, 11, 'complete', 'http', false)";

fn database(dir: &Path) -> PathBuf {
    let db = dir.join("peel.duckdb");
    let output = peel(&["sql", db.to_str().unwrap(), "--write", INSERT], None);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(db.is_file());
    db
}

#[test]
fn table_output_is_aligned_with_numbers_right_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let output = peel(
        &[
            "sql",
            db.to_str().unwrap(),
            "SELECT conn_id, client_ip, handshake_us, close_us FROM connections ORDER BY conn_id",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "conn_id  client_ip  handshake_us    close_us\n\
         -------  ---------  ------------  ----------\n      \
         1  10.0.0.1         13.711  826461.507\n      \
         2  10.0.0.3           20.5     1200.25\n\
         (2 rows)\n"
    );
}

#[test]
fn views_are_there_and_csv_and_json_formats_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let db = db.to_str().unwrap();
    let query = "SELECT endpoint, phase, samples, max_us FROM v_endpoint_phases \
                 WHERE phase = 'close'";
    let csv = peel(&["sql", db, "--format", "csv", query], None);
    assert_eq!(stdout(&csv), "endpoint,phase,samples,max_us\n10.0.0.2:8000,close,2,826461.507\n");
    let json = peel(&["sql", db, "--format", "json", query], None);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value[0]["columns"][2], serde_json::json!({"name": "samples", "type": "BIGINT"}));
    assert_eq!(value[0]["rows"][0], serde_json::json!(["10.0.0.2:8000", "close", 2, 826461.507]));
}

#[test]
fn statements_from_stdin_each_print_their_result() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let output = peel(
        &["sql", db.to_str().unwrap()],
        Some("SELECT count(*) AS n FROM connections;\n-- a comment; with a semicolon\nSELECT 'a;b' AS s;"),
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "n\n-\n2\n(1 row)\n\ns\n---\na;b\n(1 row)\n");
}

#[test]
fn a_bad_query_exits_2_with_duckdbs_message_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let output = peel(&["sql", db.to_str().unwrap(), "SELECT 1;\nSELECT * FORM connections"], None);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.starts_with(
            "error: statement 2 of 2: Parser Error: syntax error at or near \"connections\""
        ),
        "{message}"
    );
    assert!(message.contains("LINE 1: SELECT * FORM connections"), "{message}");
    assert!(message.contains('^'), "{message}");
    assert!(stdout(&output).starts_with("1\n"), "the first statement's result is printed");
}

#[test]
fn the_database_is_read_only_unless_write_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let db = db.to_str().unwrap();
    let output = peel(&["sql", db, "DELETE FROM connections"], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("hint: the database is opened read-only; add --write"),
        "{}",
        stderr(&output)
    );
    let count =
        peel(&["sql", db, "--format", "csv", "SELECT count(*) AS n FROM connections"], None);
    assert_eq!(stdout(&count), "n\n2\n");
    let deleted = peel(&["sql", db, "--write", "DELETE FROM connections WHERE conn_id = 2"], None);
    assert_eq!(deleted.status.code(), Some(0), "{}", stderr(&deleted));
    let count =
        peel(&["sql", db, "--format", "csv", "SELECT count(*) AS n FROM connections"], None);
    assert_eq!(stdout(&count), "n\n1\n");
}

#[test]
fn a_missing_database_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.duckdb");
    let output = peel(&["sql", missing.to_str().unwrap(), "SELECT 1"], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("does not exist"), "{}", stderr(&output));
    assert!(!missing.exists(), "a read-only query never creates a database");
}
