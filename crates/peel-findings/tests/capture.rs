//! Rules over captures: packets written with peel-wire's synthetic capture writer at known
//! timestamps, analyzed by peel-wire, ingested by peel-store, judged by the rules. This is the
//! whole path a real run takes, with the outage story's connection and a PostgreSQL
//! connection-per-request pattern.

use std::path::Path;

use peel_findings::{Severity, Verdict};
use peel_store::{Scope, Store};
use peel_wire::records::Side;
use peel_wire::synth::{PcapWriter, TcpFlow};
use peel_wire::{analyze_paths, Config};

const T0: i64 = 1_795_575_600_000_000_000;
const US: i64 = 1_000;
const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;
const RUN: &str = "capture-run";

/// Writes the capture, analyzes it and ingests the connections into a fresh in-memory store.
fn store_from_capture(dir: &Path, build: impl FnOnce(&mut PcapWriter<Vec<u8>>)) -> Store {
    let mut writer = PcapWriter::new(Vec::new()).expect("pcap writer");
    build(&mut writer);
    let path = dir.join("synth.pcap");
    std::fs::write(&path, writer.into_inner().expect("pcap bytes")).expect("write pcap");
    let store = Store::in_memory().expect("store");
    let mut sink = store.connection_sink(&Scope::new(RUN, "lab")).expect("sink");
    let mut failed = None;
    analyze_paths(&[path], Config::default(), &mut |finished| {
        if let Err(err) = sink.push(&finished) {
            failed.get_or_insert(err.to_string());
        }
    })
    .expect("analyze");
    assert_eq!(failed, None);
    sink.finish().expect("finish");
    store
}

const REQUEST: &[u8] = b"GET /api/items HTTP/1.1\r\nHost: app\r\n\r\n";
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";

/// The outage story's Next.js -> gunicorn connection: close takes 826.461507 ms.
fn story(w: &mut PcapWriter<Vec<u8>>, fin_gap_ns: i64) {
    let at = |s: i64, ns: i64| T0 + s * S + ns;
    let mut f = TcpFlow::new(([10, 0, 0, 1], 40_000), ([10, 0, 0, 2], 8000), 100, 0);
    f.syn(w, at(7, 855_262_401)).expect("syn");
    f.syn_ack(w, at(7, 855_270_000), 5000).expect("syn/ack");
    f.ack(w, at(7, 855_276_112), Side::Client).expect("ack");
    f.data(w, at(7, 963_234_828), Side::Client, REQUEST).expect("request");
    f.ack(w, at(7, 963_300_000), Side::Server).expect("ack");
    f.data(w, at(8, 171_000_000), Side::Server, RESPONSE_HEAD).expect("response head");
    f.data(w, at(8, 171_448_965), Side::Server, b"0123456789").expect("response body");
    f.ack(w, at(8, 171_500_000), Side::Client).expect("ack");
    f.fin(w, at(8, 171_755_075), Side::Client).expect("client fin");
    f.ack(w, at(8, 172_000_000), Side::Server).expect("ack");
    f.fin(w, at(8, 171_755_075) + fin_gap_ns, Side::Server).expect("server fin");
    f.ack(w, at(8, 171_755_075) + fin_gap_ns + 16_582, Side::Client).expect("last ack");
}

#[test]
fn the_story_capture_yields_the_slow_close_finding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_from_capture(dir.path(), |w| story(w, 826_444_925));
    let diagnosis = peel_findings::diagnose(&store, RUN, "").expect("diagnose");
    let phase: Vec<_> = diagnosis.findings_of("dominant_phase").collect();
    assert_eq!(phase.len(), 1, "{diagnosis:#?}");
    assert_eq!(phase[0].severity, Severity::Critical);
    let close_p50_ms = phase[0].evidence_value("close_p50").expect("close_p50");
    assert!((close_p50_ms - 826.461507).abs() < 1e-9, "{close_p50_ms}");
    assert_eq!(
        phase[0].title,
        "close is 72% of connection time on 10.0.0.2:8000; closed by client; the server takes 826.5 ms (p50) to send its FIN"
    );
}

#[test]
fn the_story_capture_with_a_prompt_fin_has_no_slow_phase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_from_capture(dir.path(), |w| story(w, 300 * US));
    let diagnosis = peel_findings::diagnose(&store, RUN, "").expect("diagnose");
    assert_eq!(diagnosis.findings_of("dominant_phase").count(), 0, "{diagnosis:#?}");
    assert_eq!(diagnosis.rule("dominant_phase").map(|r| r.verdict), Some(Verdict::Clear));
}

/// A PostgreSQL backend message: type byte, length, body.
fn pg_message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(body);
    message
}

fn startup_message() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0app\0database\0app\0\0");
    let mut message = (body.len() as u32 + 4).to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    message
}

/// `connections` PostgreSQL connections 40 ms apart, each: handshake, startup (3 ms to
/// ReadyForQuery), `queries` queries of 1 ms, Terminate, close.
fn pg_capture(w: &mut PcapWriter<Vec<u8>>, connections: u16, queries: u32) {
    let auth_ok_ready = [pg_message(b'R', &0u32.to_be_bytes()), pg_message(b'Z', b"I")].concat();
    let query = pg_message(b'Q', b"SELECT 1\0");
    let result = [pg_message(b'C', b"SELECT 1\0"), pg_message(b'Z', b"I")].concat();
    let terminate = pg_message(b'X', b"");
    for i in 0..connections {
        let base = T0 + i64::from(i) * 40 * MS;
        let mut f = TcpFlow::new(([127, 0, 0, 1], 41_000 + i), ([127, 0, 0, 1], 5432), 1000, 0);
        f.syn(w, base).expect("syn");
        f.syn_ack(w, base + 20 * US, 9000).expect("syn/ack");
        f.ack(w, base + 40 * US, Side::Client).expect("ack");
        f.data(w, base + 100 * US, Side::Client, &startup_message()).expect("startup");
        f.data(w, base + 3100 * US, Side::Server, &auth_ok_ready).expect("auth ok");
        let mut t = base + 3300 * US;
        for _ in 0..queries {
            f.data(w, t, Side::Client, &query).expect("query");
            f.data(w, t + MS, Side::Server, &result).expect("result");
            t += 1200 * US;
        }
        f.data(w, t, Side::Client, &terminate).expect("terminate");
        f.fin(w, t + 10 * US, Side::Client).expect("client fin");
        f.fin(w, t + 50 * US, Side::Server).expect("server fin");
        f.ack(w, t + 60 * US, Side::Client).expect("last ack");
    }
}

#[test]
fn a_db_connection_per_request_capture_yields_churn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_from_capture(dir.path(), |w| pg_capture(w, 25, 1));
    let diagnosis = peel_findings::diagnose(&store, RUN, "").expect("diagnose");
    let churn: Vec<_> = diagnosis.findings_of("churn").collect();
    assert_eq!(churn.len(), 1, "{diagnosis:#?}");
    assert_eq!(churn[0].id, "churn:127.0.0.1:5432");
    assert_eq!(churn[0].severity, Severity::Critical);
    assert_eq!(churn[0].evidence_value("requests_per_conn"), Some(1.0));
    assert_eq!(churn[0].evidence_value("db_setup_p50"), Some(3.0));
}

#[test]
fn a_pooled_db_connection_capture_has_no_churn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_from_capture(dir.path(), |w| pg_capture(w, 25, 8));
    let diagnosis = peel_findings::diagnose(&store, RUN, "").expect("diagnose");
    assert_eq!(diagnosis.findings_of("churn").count(), 0, "{diagnosis:#?}");
    assert_eq!(diagnosis.rule("churn").map(|r| r.verdict), Some(Verdict::Clear));
}
