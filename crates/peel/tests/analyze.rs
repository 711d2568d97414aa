//! `peel analyze` end to end: synthetic captures with known phases through the binary, in every
//! output format, plus the exit code and message for a file that is not a capture, and `--db`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use peel_store::Cell;
use peel_wire::records::Side;
use peel_wire::synth::{PcapWriter, TcpFlow};

const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;

fn peel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peel")).args(args).output().expect("peel runs")
}

/// Three HTTP connections to 10.0.0.2:8000 whose close takes 800 ms (the outage's signature), and
/// one to :5432 without HTTP.
fn write_capture(dir: &Path) -> PathBuf {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    for i in 0..3i64 {
        let start = T0 + i * 1000 * MS;
        let mut f = TcpFlow::new(([10, 0, 0, 1], 40_000 + i as u16), ([10, 0, 0, 2], 8000), 100, 0);
        f.syn(&mut w, start).unwrap();
        f.syn_ack(&mut w, start + 10_000, 5000).unwrap();
        f.ack(&mut w, start + 20_000, Side::Client).unwrap();
        f.data(&mut w, start + MS, Side::Client, b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
            .unwrap();
        f.data(
            &mut w,
            start + 3 * MS,
            Side::Server,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        )
        .unwrap();
        f.fin(&mut w, start + 4 * MS, Side::Client).unwrap();
        f.ack(&mut w, start + 5 * MS, Side::Server).unwrap();
        f.fin(&mut w, start + 803 * MS, Side::Server).unwrap();
        f.ack(&mut w, start + 804 * MS, Side::Client).unwrap();
    }
    let mut db = TcpFlow::new(([10, 0, 0, 1], 50_000), ([10, 0, 0, 3], 5432), 1, 0);
    db.syn(&mut w, T0 + 3500 * MS).unwrap();
    db.syn_ack(&mut w, T0 + 3501 * MS, 7).unwrap();
    db.ack(&mut w, T0 + 3502 * MS, Side::Client).unwrap();
    let path = dir.join("app.pcap");
    std::fs::write(&path, w.into_inner().unwrap()).unwrap();
    path
}

#[test]
fn table_shows_endpoints_phases_and_the_dominant_close() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let out = peel(&["analyze", capture.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("4 connections"), "{text}");
    let endpoint = text.lines().find(|l| l.trim_start().starts_with("10.0.0.2:8000")).unwrap();
    let cells: Vec<&str> = endpoint.split_whitespace().collect();
    assert_eq!(cells[1], "3", "{endpoint}");
    assert_eq!(cells.last(), Some(&"close"), "{endpoint}");
    let close = text.lines().find(|l| l.trim_start().starts_with("close ")).unwrap();
    assert!(close.contains("800.000 ms"), "{close}");
    let handshake = text.lines().find(|l| l.trim_start().starts_with("handshake ")).unwrap();
    assert!(handshake.contains("20.000 µs"), "{handshake}");
    assert!(text.contains("warnings: none"), "{text}");
}

#[test]
fn json_and_ndjson_carry_every_connection_and_port_filters() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let path = capture.to_str().unwrap();
    let out = peel(&["analyze", path, "--format", "json", "--port", "8000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let connections = json["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 3);
    assert_eq!(connections[0]["connection"]["close_us"], 800_000.0);
    assert_eq!(connections[0]["connection"]["closed_by"], "client");
    assert_eq!(connections[0]["exchanges"][0]["path"], "/slow");
    assert_eq!(connections[0]["exchanges"][0]["server_us"], 2000.0);
    let endpoints = json["summary"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["dominant_phase"], "close");
    assert_eq!(endpoints[0]["requests_per_connection"], 1.0);

    let out = peel(&["analyze", path, "--format", "ndjson"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["connection"]["server_port"], 5432);
    assert_eq!(lines[3]["connection"]["state"], "open");
}

#[test]
fn a_file_that_is_not_a_capture_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.pcap");
    std::fs::write(&bad, "hello").unwrap();
    let out = peel(&["analyze", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("notes.pcap") && stderr.contains("not a pcap or pcapng file"),
        "{stderr}"
    );
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn truncated_capture_is_analyzed_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let bytes = std::fs::read(&capture).unwrap();
    std::fs::write(&capture, &bytes[..bytes.len() - 10]).unwrap();
    let out = peel(&["analyze", capture.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let warning = text.lines().find(|l| l.contains("truncated_file")).unwrap();
    assert!(warning.contains("app.pcap"), "{warning}");
}

#[test]
fn db_gets_connections_exchanges_and_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let db = dir.path().join("run.duckdb");
    let out = peel(&[
        "analyze",
        capture.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--run-id",
        "t1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = peel_store::Store::open(&db, peel_store::Access::ReadOnly).unwrap();
    let counts = store
        .query("SELECT count(*), sum(exchanges) FROM connections WHERE run_id = 't1'")
        .unwrap();
    assert_eq!(counts.rows[0], vec![Cell::Int(4), Cell::Int(3)]);
    let paths = store.query("SELECT path, status FROM exchanges WHERE run_id = 't1'").unwrap();
    assert_eq!(paths.rows.len(), 3);
    assert_eq!(paths.rows[0], vec![Cell::Text("/slow".into()), Cell::Int(200)]);
    let warnings =
        store.query("SELECT count(*) FROM capture_warnings WHERE run_id = 't1'").unwrap();
    assert_eq!(warnings.rows[0], vec![Cell::Int(0)]);
}

#[test]
fn table_layout_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let capture = write_capture(dir.path());
    let out = peel(&["analyze", capture.to_str().unwrap(), "--port", "8000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    insta::assert_snapshot!("analyze_table", String::from_utf8(out.stdout).unwrap());
}
