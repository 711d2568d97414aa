//! Accuracy: captures written by `peel_wire::synth` at exactly known timestamps must give exactly
//! those phases, to the nanosecond. Includes the outage story's connection and Zeek's tracker
//! lessons (zeek#863, #862, #3313, #1196, #175), each as its own test.

use std::io::Write;
use std::path::PathBuf;

use peel_wire::records::{ConnState, FinishedConnection, Phase, Protocol, Side, WarningReason};
use peel_wire::synth::{PcapWriter, TcpFlow};
use peel_wire::{analyze_paths, AnalysisEnd, Config};

const CLIENT: ([u8; 4], u16) = ([10, 0, 0, 1], 40_000);
const SERVER: ([u8; 4], u16) = ([10, 0, 0, 2], 8000);
/// An epoch base so timestamps look like a real capture's.
const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;

fn analyze_with(
    build: impl FnOnce(&mut PcapWriter<Vec<u8>>),
    config: Config,
) -> (Vec<FinishedConnection>, AnalysisEnd) {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    build(&mut w);
    let bytes = w.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synth.pcap");
    std::fs::write(&path, bytes).unwrap();
    let mut conns = Vec::new();
    let end = analyze_paths(&[path], config, &mut |c| conns.push(c)).unwrap();
    (conns, end)
}

fn analyze(build: impl FnOnce(&mut PcapWriter<Vec<u8>>)) -> (Vec<FinishedConnection>, AnalysisEnd) {
    analyze_with(build, Config::default())
}

fn handshake(flow: &mut TcpFlow, w: &mut PcapWriter<Vec<u8>>, syn: i64, synack: i64, ack: i64) {
    flow.syn(w, syn).unwrap();
    flow.syn_ack(w, synack, 5000).unwrap();
    flow.ack(w, ack, Side::Client).unwrap();
}

const REQUEST: &[u8] = b"GET /api/items HTTP/1.1\r\nHost: app\r\n\r\n";
const RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";

#[test]
fn outage_story_connection_to_the_nanosecond() {
    // The Next.js -> gunicorn connection from docs/STORY: times in seconds since capture start.
    let at = |s: i64, ns: i64| T0 + s * S + ns;
    let (conns, _) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
        f.syn(w, at(7, 855_262_401)).unwrap();
        f.syn_ack(w, at(7, 855_270_000), 5000).unwrap();
        f.ack(w, at(7, 855_276_112), Side::Client).unwrap();
        f.data(w, at(7, 963_234_828), Side::Client, REQUEST).unwrap();
        f.ack(w, at(7, 963_300_000), Side::Server).unwrap();
        f.data(w, at(8, 171_000_000), Side::Server, RESPONSE_HEAD).unwrap();
        f.data(w, at(8, 171_448_965), Side::Server, b"0123456789").unwrap();
        f.ack(w, at(8, 171_500_000), Side::Client).unwrap();
        f.fin(w, at(8, 171_755_075), Side::Client).unwrap();
        f.ack(w, at(8, 172_000_000), Side::Server).unwrap();
        f.fin(w, at(8, 998_200_000), Side::Server).unwrap();
        f.ack(w, at(8, 998_216_582), Side::Client).unwrap();
    });
    assert_eq!(conns.len(), 1);
    let c = &conns[0].connection;
    let x = &conns[0].exchanges;
    assert_eq!(c.handshake_us, Some(13.711));
    assert_eq!(c.request_wait_us, Some(107_958.716));
    assert_eq!(x.len(), 1);
    let request_to_response_end = x[0].response_end_ts_ns.unwrap() - x[0].request_start_ts_ns;
    assert_eq!(request_to_response_end, 208_214_137);
    assert_eq!(c.close_us, Some(826_461.507));
    assert_eq!(c.closed_by, Some(Side::Client));
    assert_eq!(c.state, ConnState::Complete);
    assert_eq!(c.protocol, Protocol::Http);
    assert_eq!(c.server_us, Some(micros(at(8, 171_000_000) - at(7, 963_234_828))));
    assert_eq!(c.response_us, Some(448.965));
    assert_eq!(
        (x[0].method.as_deref(), x[0].path.as_deref(), x[0].status),
        (Some("GET"), Some("/api/items"), Some(200))
    );
    assert_eq!((c.bytes_c2s, c.bytes_s2c), (REQUEST.len() as u64, RESPONSE_HEAD.len() as u64 + 10));
    assert_eq!((c.retransmits, c.syn_retransmits, c.packets), (0, 0, 12));
    assert_eq!(c.synack_to_ack_us, Some(6.112));
}

fn micros(ns: i64) -> f64 {
    ns as f64 / 1000.0
}

#[test]
fn zeek_863_retransmitted_syns_are_one_connection() {
    let (conns, _) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
        f.syn(w, T0).unwrap();
        f.syn(w, T0 + S).unwrap();
        f.syn(w, T0 + 3 * S).unwrap();
        f.syn_ack(w, T0 + 3 * S + 50_000, 5000).unwrap();
        f.ack(w, T0 + 3 * S + 100_000, Side::Client).unwrap();
    });
    assert_eq!(conns.len(), 1);
    let c = &conns[0].connection;
    assert_eq!(c.syn_retransmits, 2);
    assert_eq!(c.syn_ts_ns, Some(T0));
    assert_eq!(c.handshake_us, Some(3_000_100.0));
    assert_eq!(c.synack_to_ack_us, Some(50.0));
    assert_eq!(c.state, ConnState::Open);
}

#[test]
fn zeek_862_retransmitted_fin_and_rst_after_close_are_not_new_connections() {
    let (conns, end) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
        handshake(&mut f, w, T0, T0 + 10_000, T0 + 20_000);
        f.fin(w, T0 + MS, Side::Server).unwrap();
        f.ack(w, T0 + 2 * MS, Side::Client).unwrap();
        f.fin(w, T0 + 3 * MS, Side::Client).unwrap();
        f.ack(w, T0 + 4 * MS, Side::Server).unwrap();
        // The last ACK got lost on the way: the client retransmits its FIN, then gives up.
        f.fin(w, T0 + 300 * MS, Side::Client).unwrap();
        f.rst(w, T0 + 900 * MS, Side::Client).unwrap();
        f.rst(w, T0 + 901 * MS, Side::Client).unwrap();
    });
    assert_eq!(conns.len(), 1);
    let c = &conns[0].connection;
    assert_eq!(
        (c.state, c.closed_by, c.close_us),
        (ConnState::Complete, Some(Side::Server), Some(3000.0))
    );
    let after_close = end.warnings.iter().find(|w| w.reason == WarningReason::AfterClose).unwrap();
    assert_eq!(after_close.count, 3);
}

#[test]
fn zeek_3313_synack_with_another_isn_does_not_corrupt_byte_counts() {
    let (conns, _) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
        f.syn(w, T0).unwrap();
        f.syn_ack(w, T0 + 10_000, 5000).unwrap();
        // A second SYN/ACK with another ISN (a middlebox or a server restart); the client ACKs it.
        f.syn_ack(w, T0 + 20_000, 3_000_000_000).unwrap();
        f.ack(w, T0 + 30_000, Side::Client).unwrap();
        f.data(w, T0 + MS, Side::Client, REQUEST).unwrap();
        f.data(w, T0 + 2 * MS, Side::Server, RESPONSE_HEAD).unwrap();
        f.data(w, T0 + 3 * MS, Side::Server, b"0123456789").unwrap();
    });
    assert_eq!(conns.len(), 1);
    let c = &conns[0].connection;
    assert_eq!((c.bytes_c2s, c.bytes_s2c), (REQUEST.len() as u64, RESPONSE_HEAD.len() as u64 + 10));
    assert_eq!(c.handshake_us, Some(30.0));
    assert_eq!(c.synack_to_ack_us, Some(10.0));
    assert_eq!(c.exchanges, 1);
}

fn keep_alive_requests(w: &mut PcapWriter<Vec<u8>>, gaps_ns: &[i64]) {
    let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
    handshake(&mut f, w, T0, T0 + 10_000, T0 + 20_000);
    let mut t = T0 + MS;
    for (i, gap) in gaps_ns.iter().enumerate() {
        t += gap;
        f.data(w, t, Side::Client, REQUEST).unwrap();
        // Server time grows with the request number: 1, 2, 3 ms.
        f.data(w, t + (i as i64 + 1) * MS, Side::Server, RESPONSE_HEAD).unwrap();
        f.data(w, t + (i as i64 + 1) * MS + 500_000, Side::Server, b"0123456789").unwrap();
        f.ack(w, t + (i as i64 + 1) * MS + 600_000, Side::Client).unwrap();
    }
}

#[test]
fn zeek_1196_long_idle_keep_alive_is_one_connection() {
    let (conns, end) = analyze(|w| keep_alive_requests(w, &[0, 1800 * S, 3000 * S]));
    assert_eq!(conns.len(), 1);
    let c = &conns[0].connection;
    assert_eq!((c.exchanges, c.expired), (3, false));
    assert!(end.warnings.iter().all(|w| w.reason != WarningReason::IdleExpired));
    // idle: response end -> next request start, summed.
    let want_idle = (1800 * S - 1_500_000) + (3000 * S - 2_500_000);
    assert_eq!(c.idle_us, Some(micros(want_idle)));
}

#[test]
fn idle_expiry_only_bounds_memory_and_is_counted() {
    let config = Config { idle_timeout_ns: 600 * S, ..Config::default() };
    let (conns, end) = analyze_with(|w| keep_alive_requests(w, &[0, 1800 * S]), config);
    assert_eq!(conns.len(), 2);
    assert!(conns[0].connection.expired);
    assert_eq!(conns[1].connection.state, ConnState::Partial);
    let expired = end.warnings.iter().find(|w| w.reason == WarningReason::IdleExpired).unwrap();
    assert_eq!(expired.count, 1);
}

#[test]
fn zeek_175_server_time_per_exchange() {
    let (conns, _) = analyze(|w| keep_alive_requests(w, &[0, 10 * MS, 10 * MS]));
    let servers: Vec<Option<f64>> = conns[0].exchanges.iter().map(|e| e.server_us).collect();
    assert_eq!(servers, vec![Some(1000.0), Some(2000.0), Some(3000.0)]);
    let responses: Vec<Option<f64>> = conns[0].exchanges.iter().map(|e| e.response_us).collect();
    assert_eq!(responses, vec![Some(500.0); 3]);
    assert_eq!(conns[0].exchanges.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn pipelined_requests_pair_with_responses_in_order() {
    let (conns, _) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
        handshake(&mut f, w, T0, T0 + 10_000, T0 + 20_000);
        let two = [b"GET /a HTTP/1.1\r\n\r\n".as_slice(), b"HEAD /b HTTP/1.1\r\n\r\n"].concat();
        f.data(w, T0 + MS, Side::Client, &two).unwrap();
        let answers = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n".as_slice(),
            b"0\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\n",
        ];
        f.data(w, T0 + 2 * MS, Side::Server, answers[0]).unwrap();
        f.data(w, T0 + 3 * MS, Side::Server, answers[1]).unwrap();
    });
    let x = &conns[0].exchanges;
    assert_eq!(x.len(), 2);
    assert_eq!((x[0].status, x[0].response_end_ts_ns), (Some(200), Some(T0 + 3 * MS)));
    // HEAD: the 404's Content-Length describes a body that is not sent.
    assert_eq!((x[1].method.as_deref(), x[1].status), (Some("HEAD"), Some(404)));
    assert_eq!(
        (x[1].response_start_ts_ns, x[1].response_end_ts_ns),
        (Some(T0 + 3 * MS), Some(T0 + 3 * MS))
    );
    assert_eq!(conns[0].connection.http_requests, 2);
    assert_eq!(conns[0].connection.http_responses, 2);
}

#[test]
fn port_reuse_after_close_is_a_new_connection_and_vlans_are_kept_apart() {
    let (conns, _) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
        handshake(&mut f, w, T0, T0 + 10_000, T0 + 20_000);
        f.fin(w, T0 + MS, Side::Client).unwrap();
        f.fin(w, T0 + 2 * MS, Side::Server).unwrap();
        f.ack(w, T0 + 3 * MS, Side::Client).unwrap();
        // Same 4-tuple, new ISN, 100 ms later: a new connection (tombstone must not swallow it).
        let mut g = TcpFlow::new(CLIENT, SERVER, 777_777, 0);
        handshake(&mut g, w, T0 + 100 * MS, T0 + 101 * MS, T0 + 102 * MS);
        // Same 4-tuple on two VLANs at the same time.
        let mut v1 = TcpFlow::new(CLIENT, SERVER, 1, 0).with_vlan(10);
        let mut v2 = TcpFlow::new(CLIENT, SERVER, 1, 0).with_vlan(20);
        handshake(&mut v1, w, T0 + 200 * MS, T0 + 201 * MS, T0 + 202 * MS);
        handshake(&mut v2, w, T0 + 203 * MS, T0 + 204 * MS, T0 + 205 * MS);
    });
    assert_eq!(conns.len(), 4);
    let vlans: Vec<Option<u16>> = conns.iter().map(|c| c.connection.vlan).collect();
    assert_eq!(vlans, vec![None, None, Some(10), Some(20)]);
    assert!(conns
        .iter()
        .all(|c| c.connection.retransmits == 0 && c.connection.syn_retransmits == 0));
    assert_eq!(conns[0].connection.state, ConnState::Complete);
    assert_eq!(conns[1].connection.handshake_us, Some(2000.0));
}

#[test]
fn no_syn_seen_uses_the_port_heuristic_and_is_partial() {
    let (conns, _) = analyze(|w| {
        let mut f = TcpFlow::new(([10, 0, 0, 9], 51_000), ([10, 0, 0, 2], 443), 100, 0);
        // The first packet seen goes server -> client.
        f.data(w, T0, Side::Server, b"xyz").unwrap();
        f.data(w, T0 + MS, Side::Client, b"abc").unwrap();
    });
    let c = &conns[0].connection;
    assert_eq!((c.state, c.server_port, c.client_port), (ConnState::Partial, 443, 51_000));
    assert_eq!(c.handshake_us, None);
}

#[test]
fn retransmission_out_of_order_and_reset_phase() {
    let (conns, _) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
        handshake(&mut f, w, T0, T0 + 10_000, T0 + 20_000);
        f.data(w, T0 + MS, Side::Client, b"AAAA").unwrap();
        f.resend(w, T0 + 300 * MS, Side::Client, 4, b"AAAA").unwrap(); // same bytes again
        f.skip(Side::Client, 4); // "BBBB" overtaken on the way
        f.data(w, T0 + 301 * MS, Side::Client, b"CCCC").unwrap();
        f.resend(w, T0 + 301 * MS + 100_000, Side::Client, 8, b"BBBB").unwrap(); // arrives late, 0.1 ms
        f.data(w, T0 + 400 * MS, Side::Server, b"reply").unwrap();
        f.rst(w, T0 + 500 * MS, Side::Server).unwrap();
    });
    let c = &conns[0].connection;
    assert_eq!((c.retransmits, c.out_of_order), (1, 1));
    assert_eq!(c.bytes_c2s, 12);
    assert_eq!(
        (c.state, c.reset_by, c.reset_phase),
        (ConnState::Reset, Some(Side::Server), Some(Phase::Response))
    );
    assert_eq!(c.protocol, Protocol::Other);
    assert_eq!(c.exchanges, 1);
    assert_eq!(c.close_start_ts_ns, Some(T0 + 500 * MS));
}

#[test]
fn postgresql_startup_gives_db_setup() {
    let msg = |kind: u8, body: &[u8]| {
        let mut out = vec![kind];
        out.extend((body.len() as u32 + 4).to_be_bytes());
        out.extend(body);
        out
    };
    let (conns, _) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, ([10, 0, 0, 3], 5432), 100, 0);
        handshake(&mut f, w, T0, T0 + 10_000, T0 + 20_000);
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend(80_877_103u32.to_be_bytes());
        f.data(w, T0 + MS, Side::Client, &ssl).unwrap();
        f.data(w, T0 + 2 * MS, Side::Server, b"N").unwrap();
        let mut startup = 23u32.to_be_bytes().to_vec();
        startup.extend(196_608u32.to_be_bytes());
        startup.extend(b"user\0app\0\0");
        startup.push(0);
        f.data(w, T0 + 3 * MS, Side::Client, &startup).unwrap();
        f.data(w, T0 + 4 * MS, Side::Server, &msg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4])).unwrap();
        f.data(w, T0 + 5 * MS, Side::Client, &msg(b'p', b"md5secret\0")).unwrap();
        let mut ok = msg(b'R', &[0, 0, 0, 0]);
        ok.extend(msg(b'S', b"server_version\x0016\0"));
        ok.extend(msg(b'Z', b"I"));
        f.data(w, T0 + 9 * MS, Side::Server, &ok).unwrap();
        f.data(w, T0 + 10 * MS, Side::Client, &msg(b'Q', b"select 1\0")).unwrap();
        f.data(w, T0 + 11 * MS, Side::Server, &msg(b'Z', b"I")).unwrap();
    });
    let c = &conns[0].connection;
    assert_eq!(c.protocol, Protocol::Postgresql);
    assert_eq!(c.db_setup_us, Some(8000.0));
    assert_eq!(c.exchanges, 4);
}

#[test]
fn truncated_and_gzipped_files_and_a_directory_merge() {
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
    handshake(&mut f, &mut w, T0, T0 + 10_000, T0 + 20_000);
    let first = w.into_inner().unwrap();
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    f.data(&mut w, T0 + 30_000, Side::Client, REQUEST).unwrap();
    f.data(&mut w, T0 + 40_000, Side::Server, RESPONSE_HEAD).unwrap();
    let second = w.into_inner().unwrap();

    let dir = tempfile::tempdir().unwrap();
    // Ring files, named so that name order is NOT time order; the second one gzip'd and cut.
    std::fs::write(dir.path().join("b.pcap"), &first).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&second[..second.len() - 5]).unwrap();
    std::fs::write(dir.path().join("a.pcap.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a capture").unwrap();

    let mut conns = Vec::new();
    let end =
        analyze_paths(&[PathBuf::from(dir.path())], Config::default(), &mut |c| conns.push(c))
            .unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].connection.handshake_us, Some(20.0));
    assert_eq!(conns[0].connection.request_wait_us, Some(10.0));
    assert_eq!(end.stats.packets, 4);
    let cut = end.warnings.iter().find(|w| w.reason == WarningReason::TruncatedFile).unwrap();
    assert!(cut.file.ends_with("a.pcap.gz"), "{cut:?}");
    assert_eq!(cut.byte_offset, Some(24 + 16 + 54 + REQUEST.len() as u64));
}

#[test]
fn unreadable_file_is_one_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pcap");
    std::fs::write(&path, b"this is not a capture").unwrap();
    let err = analyze_paths(std::slice::from_ref(&path), Config::default(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.pcap") && err.contains("not a pcap or pcapng file"), "{err}");
    let missing = dir.path().join("missing.pcap");
    let err = analyze_paths(&[missing], Config::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("missing.pcap") && err.contains("No such file"), "{err}");
}

#[test]
fn live_feeding_packet_by_packet_and_advancing_the_clock() {
    use peel_wire::reader::CaptureReader;
    use peel_wire::{Analyzer, Packet};

    let mut w = PcapWriter::new(Vec::new()).unwrap();
    let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
    handshake(&mut f, &mut w, T0, T0 + 10_000, T0 + 20_000);
    f.data(&mut w, T0 + MS, Side::Client, REQUEST).unwrap();
    let bytes = w.into_inner().unwrap();
    let mut reader = CaptureReader::from_reader(
        std::path::Path::new("live"),
        Box::new(std::io::Cursor::new(bytes)),
    )
    .unwrap();
    let config = Config { idle_timeout_ns: 60 * S, ..Config::default() };
    let mut analyzer = Analyzer::new(config);
    let source = analyzer.add_source("eth0");
    let mut done = Vec::new();
    while let Some(meta) = reader.next_packet().unwrap() {
        let packet = Packet {
            ts_ns: meta.ts_ns,
            linktype: meta.linktype,
            interface_id: 0,
            data: reader.data(),
            orig_len: meta.orig_len,
            source,
            index: meta.index,
        };
        analyzer.push(&packet, &mut |c| done.push(c));
    }
    assert!(done.is_empty());
    assert_eq!(analyzer.open_connections(), 1);
    analyzer.advance_to(T0 + 30 * S, &mut |c| done.push(c));
    assert!(done.is_empty(), "30 s of silence is not idle yet");
    analyzer.advance_to(T0 + 61 * S + MS, &mut |c| done.push(c));
    assert_eq!(done.len(), 1);
    assert!(done[0].connection.expired);
    assert_eq!(done[0].exchanges.len(), 1);
    let end = analyzer.finish(&mut |c| done.push(c));
    assert_eq!(end.warnings[0].file, "eth0");
    assert_eq!(end.warnings[0].reason, WarningReason::IdleExpired);
}

#[test]
fn summary_per_endpoint_names_the_dominant_phase() {
    use peel_wire::summary::SummaryBuilder;

    let (conns, end) = analyze(|w| {
        for i in 0..4u16 {
            let start = T0 + i64::from(i) * 10 * MS;
            let mut f = TcpFlow::new(([10, 0, 0, 1], 40_000 + i), SERVER, 100, 0);
            handshake(&mut f, w, start, start + 10_000, start + 20_000);
            f.data(w, start + MS, Side::Client, REQUEST).unwrap();
            f.data(w, start + 2 * MS, Side::Server, RESPONSE_HEAD).unwrap();
            f.data(w, start + 2 * MS, Side::Server, b"0123456789").unwrap();
            // Three of four closes are started by the server and take 500 ms to finish.
            let (first, second) =
                if i < 3 { (Side::Server, Side::Client) } else { (Side::Client, Side::Server) };
            f.fin(w, start + 3 * MS, first).unwrap();
            f.ack(w, start + 4 * MS, second).unwrap();
            f.fin(w, start + 503 * MS, second).unwrap();
            f.ack(w, start + 504 * MS, first).unwrap();
        }
        let mut refused = TcpFlow::new(([10, 0, 0, 1], 50_000), SERVER, 1, 0);
        refused.syn(w, T0 + 600 * MS).unwrap();
        refused.rst(w, T0 + 600 * MS + 5_000, Side::Server).unwrap();
    });
    let mut builder = SummaryBuilder::new();
    for c in &conns {
        builder.add(c);
    }
    let summary = builder.finish(&end);
    assert_eq!(summary.endpoints.len(), 1);
    let e = &summary.endpoints[0];
    assert_eq!((e.connections, e.exchanges, e.resets, e.resets_by_server), (5, 4, 1, 1));
    assert_eq!((e.closed_by_server_share, e.closed_by_client_share), (0.6, 0.2));
    assert_eq!(e.dominant_phase, Some("close"));
    let close = e.phases.iter().find(|p| p.phase == "close").unwrap();
    assert_eq!((close.count, close.p50_us, close.max_us), (4, 501_000.0, 501_000.0));
    let server = e.phases.iter().find(|p| p.phase == "server").unwrap();
    assert_eq!((server.count, server.p99_us), (4, 1000.0));
    assert_eq!(e.requests_per_connection, 0.8);
    assert_eq!(e.slowest.len(), 5);
    assert_eq!(e.slowest[0].lifetime_us, 504_000.0);
}

#[test]
fn a_connection_with_more_exchanges_than_kept_counts_them_all_and_warns() {
    const REQUESTS: usize = 100_003;
    let (conns, end) = analyze(|w| {
        let mut f = TcpFlow::new(CLIENT, SERVER, 100, 0);
        handshake(&mut f, w, T0, T0 + 10_000, T0 + 20_000);
        let mut t = T0 + MS;
        for _ in 0..REQUESTS {
            f.data(w, t, Side::Client, b"GET / HTTP/1.1\r\n\r\n").unwrap();
            f.data(w, t + 1_000, Side::Server, b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            t += 10_000;
        }
    });
    let c = &conns[0];
    assert_eq!(
        (c.connection.exchanges as usize, c.connection.http_requests as usize),
        (REQUESTS, REQUESTS)
    );
    assert_eq!(c.exchanges.len(), 100_000);
    let warning =
        end.warnings.iter().find(|w| w.reason == WarningReason::ExchangesNotKept).unwrap();
    assert_eq!(warning.count, 3);
}

#[test]
fn a_full_flow_table_emits_the_longest_silent_and_says_so() {
    let config = Config { max_flows: 8, ..Config::default() };
    let (conns, end) = analyze_with(
        |w| {
            for i in 0..20u16 {
                let mut f = TcpFlow::new(([10, 0, 1, 1], 30_000 + i), SERVER, 1, 0);
                f.syn(w, T0 + i64::from(i) * MS).unwrap();
            }
        },
        config,
    );
    assert_eq!(conns.len(), 20, "every SYN is still reported, once");
    let full = end.warnings.iter().find(|w| w.reason == WarningReason::FlowTableFull).unwrap();
    assert!(full.count >= 12, "{full:?}");
    let expired = conns.iter().filter(|c| c.connection.expired).count() as u64;
    assert_eq!(expired, full.count);
}
