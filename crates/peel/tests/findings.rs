//! `peel findings` end to end: a run database written through peel-store, diagnosed by the binary.

use std::path::Path;
use std::process::{Command, Output};

use peel_store::{Access, Scope, Store};
use peel_wire::records::{
    ConnState, ConnectionRecord, ExchangeRecord, FinishedConnection, Protocol, Side,
};

const T0_NS: i64 = 1_795_575_600_000_000_000;
const MS: i64 = 1_000_000;

/// 40 PostgreSQL connections, 100 ms apart, each: 4 ms startup then one 1 ms query.
fn write_churn_db(path: &Path) {
    let store = Store::open(path, Access::ReadWrite).expect("create db");
    let mut sink =
        store.connection_sink(&Scope::new("run-1", "lab").with_stage("reproduce")).expect("sink");
    for i in 0..40u64 {
        let syn = T0_NS + i as i64 * 100 * MS;
        let first_request = syn + 200_000;
        let exchange = |seq: u32, start: i64, server_us: f64| ExchangeRecord {
            conn_id: i,
            seq,
            request_start_ts_ns: start,
            request_end_ts_ns: start + 10_000,
            response_start_ts_ns: Some(start + 10_000 + (server_us * 1000.0) as i64),
            response_end_ts_ns: Some(start + 60_000 + (server_us * 1000.0) as i64),
            server_us: Some(server_us),
            response_us: Some(50.0),
            method: None,
            path: None,
            status: None,
            request_bytes: 100,
            response_bytes: 100,
        };
        let connection = ConnectionRecord {
            conn_id: i,
            client_ip: "127.0.0.1".parse().expect("ip"),
            client_port: 40000 + i as u16,
            server_ip: "127.0.0.1".parse().expect("ip"),
            server_port: 5432,
            vlan: None,
            interface_id: 0,
            syn_ts_ns: Some(syn),
            handshake_us: Some(50.0),
            synack_to_ack_us: Some(10.0),
            syn_retransmits: 0,
            first_request_ts_ns: Some(first_request),
            request_wait_us: Some(150.0),
            server_us: Some(3900.0),
            response_us: Some(50.0),
            exchanges: 2,
            db_setup_us: Some(4000.0),
            idle_us: None,
            close_start_ts_ns: Some(first_request + 6 * MS),
            close_us: Some(100.0),
            closed_by: Some(Side::Client),
            reset_by: None,
            reset_phase: None,
            half_closed: false,
            retransmits: 0,
            out_of_order: 0,
            dup_acks: 0,
            zero_windows: 0,
            window_full: 0,
            bytes_c2s: 200,
            bytes_s2c: 200,
            first_ts_ns: syn,
            last_ts_ns: first_request + 6 * MS,
            lifetime_us: 6200.0,
            packets: 16,
            state: ConnState::Complete,
            protocol: Protocol::Postgresql,
            http_requests: 0,
            http_responses: 0,
            expired: false,
        };
        let exchanges = vec![
            exchange(0, first_request, 3900.0),
            exchange(1, first_request + 4_500_000, 1000.0),
        ];
        sink.push(&FinishedConnection { connection, exchanges }).expect("push");
    }
    sink.finish().expect("finish");
    store.close().expect("close db");
}

fn peel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peel")).args(args).output().expect("run peel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn json_lists_the_churn_finding_with_its_evidence_and_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("run.duckdb");
    write_churn_db(&db);
    let output = peel(&["findings", db.to_str().expect("utf-8 path"), "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let diagnosis = &json[0];
    assert_eq!(diagnosis["run_id"], "run-1");
    assert_eq!(diagnosis["stage"], "reproduce");
    let churn = diagnosis["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["rule"] == "churn")
        .expect("a churn finding");
    assert_eq!(churn["id"], "churn:127.0.0.1:5432");
    assert_eq!(churn["severity"], "critical");
    assert_eq!(
        churn["subject"],
        serde_json::json!({"kind": "endpoint", "ip": "127.0.0.1", "port": 5432})
    );
    let requests = churn["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .find(|e| e["name"] == "requests_per_conn")
        .expect("requests_per_conn");
    assert_eq!(requests["value"], 1.0);
    assert_eq!(requests["unit"], "ratio");
    assert!(churn["sql"].as_str().expect("sql").contains("FROM connections"));
    let rules = diagnosis["rules"].as_array().expect("rules");
    let cached = rules.iter().find(|r| r["rule"] == "cached_slow").expect("cached_slow report");
    assert_eq!(cached["verdict"], "cannot_decide");
}

#[test]
fn save_stores_findings_and_markdown_renders_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("run.duckdb");
    write_churn_db(&db);
    let db = db.to_str().expect("utf-8 path");
    let output = peel(&["findings", db, "--save", "--format", "md"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let markdown = text(&output.stdout);
    assert!(markdown.starts_with("## Findings: run run-1, stage reproduce: "), "{markdown}");
    assert!(
        markdown.contains("`churn`: a new DB connection per request on 127.0.0.1:5432"),
        "{markdown}"
    );
    let store = Store::open(Path::new(db), Access::ReadOnly).expect("open db");
    let rows = store.query("SELECT rule, stage FROM findings WHERE rule = 'churn'").expect("query");
    assert_eq!(rows.rows.len(), 1);
}

#[test]
fn an_unknown_run_or_stage_is_a_usage_error_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("run.duckdb");
    write_churn_db(&db);
    let db = db.to_str().expect("utf-8 path");
    let output = peel(&["findings", db, "--run", "nope"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("error: run 'nope' is not in the database (runs there: run-1)"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: pass --run with one of: run-1"), "{stderr}");

    let output = peel(&["findings", db, "--stage", "verify-fix"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("run run-1 has no data for stage 'verify-fix'"), "{stderr}");
    assert!(stderr.contains("hint: stages of this run: reproduce"), "{stderr}");
}

#[test]
fn a_missing_database_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.duckdb");
    let output = peel(&["findings", missing.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("does not exist"), "{}", text(&output.stderr));
}
