//! Every rule over a run database built from producers' records: for each, a fixture where it must
//! fire, one where it must not, and (where a rule depends on one source) one where it cannot decide.

mod fixture;

use fixture::*;
use peel_findings::{Diagnosis, Finding, Severity, Verdict};
use peel_store::Store;
use peel_wire::records::{ConnState, FinishedConnection, Phase, Side};

fn diagnose(store: &Store) -> Diagnosis {
    peel_findings::diagnose(store, RUN, STAGE).expect("diagnose")
}

fn findings<'a>(diagnosis: &'a Diagnosis, rule: &'a str) -> Vec<&'a Finding> {
    diagnosis.findings_of(rule).collect()
}

fn verdict(diagnosis: &Diagnosis, rule: &str) -> Verdict {
    diagnosis.rule(rule).expect("rule report").verdict
}

fn evidence(finding: &Finding, name: &str) -> f64 {
    finding
        .evidence_value(name)
        .unwrap_or_else(|| panic!("{} has no evidence {name}: {:?}", finding.id, finding.evidence))
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-6 * expected.abs().max(1.0), "{actual} != {expected}");
}

// ---------------------------------------------------------------------------------------------
// churn

/// `count` PostgreSQL connections 100 ms apart: 3 ms startup, then `queries` queries of 1 ms.
fn pg_connections(count: u64, queries: u32) -> Vec<FinishedConnection> {
    (0..count)
        .map(|i| pg_connection(i, T0_NS + i as i64 * 100 * MS, 3000.0, queries, |_| 1000.0))
        .collect()
}

#[test]
fn churn_fires_on_a_new_db_connection_per_request() {
    let store = store();
    ingest_connections(&store, &pg_connections(50, 1));
    let diagnosis = diagnose(&store);
    let churn = findings(&diagnosis, "churn");
    assert_eq!(churn.len(), 1, "{diagnosis:#?}");
    let finding = churn[0];
    assert_eq!(finding.id, "churn:127.0.0.1:5432");
    assert_eq!(finding.severity, Severity::Critical);
    assert_close(evidence(finding, "requests_per_conn"), 1.0);
    assert_close(evidence(finding, "db_setup_p50"), 3.0);
    // Setup: 100 us handshake + 3000 us startup; work: 1000 us server + 50 us response.
    assert_close(evidence(finding, "setup_share"), 3100.0 / 4150.0 * 100.0);
    assert!(evidence(finding, "new_conns_per_s") > 9.0, "{:?}", finding.evidence);
    assert!(finding.title.contains("a new DB connection per request"), "{}", finding.title);
    assert!(finding.sql.contains("server_port = 5432"), "{}", finding.sql);
    // The finding's SQL runs and reproduces its numbers.
    let result = store.query(&finding.sql).expect("finding SQL runs");
    assert_eq!(result.rows.len(), 1);
    assert_eq!(result.get(0, "connections").and_then(|c| c.as_i64()), Some(50));
}

#[test]
fn churn_counts_the_startup_as_setup_when_the_capture_gave_no_db_setup() {
    // What the lab's PostgreSQL looked like: startup, one query, an unanswered Terminate, and no
    // db_setup_us from the analysis.
    let store = store();
    let finished: Vec<FinishedConnection> = (0..30)
        .map(|i| {
            let mut finished = pg_connection(i, T0_NS + i as i64 * 100 * MS, 3000.0, 1, |_| 1000.0);
            finished.connection.db_setup_us = None;
            finished.connection.exchanges = 3;
            let mut terminate = exchange(i, 2, finished.connection.last_ts_ns - MS / 2, 0.0);
            terminate.response_start_ts_ns = None;
            terminate.response_end_ts_ns = None;
            terminate.server_us = None;
            terminate.response_us = None;
            finished.exchanges.push(terminate);
            finished
        })
        .collect();
    ingest_connections(&store, &finished);
    let diagnosis = diagnose(&store);
    let churn = findings(&diagnosis, "churn");
    assert_eq!(churn.len(), 1, "{diagnosis:#?}");
    assert_close(evidence(churn[0], "requests_per_conn"), 1.0);
    // The startup turn: 10 us request, 2900 us server, 50 us response.
    assert_close(evidence(churn[0], "db_setup_p50"), 2.96);
}

#[test]
fn churn_stays_quiet_with_pooled_connections() {
    let store = store();
    ingest_connections(&store, &pg_connections(30, 40));
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "churn").is_empty(), "{diagnosis:#?}");
    assert_eq!(verdict(&diagnosis, "churn"), Verdict::Clear);
}

#[test]
fn rules_without_their_data_cannot_decide_and_say_what_is_missing() {
    let store = store();
    let diagnosis = diagnose(&store);
    assert!(diagnosis.findings.is_empty());
    for report in &diagnosis.rules {
        assert_eq!(report.verdict, Verdict::CannotDecide, "{report:?}");
        assert!(!report.missing.is_empty(), "{report:?}");
    }
    let churn = diagnosis.rule("churn").expect("churn report");
    assert!(
        churn.missing[0].contains("no connections rows for run run-1, stage reproduce"),
        "{churn:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// dominant_phase

/// The outage story's connection: handshake 13.711 us, request sent 107.958716 ms later, response
/// 208.214137 ms after the request, close 826.461507 ms (server's FIN first).
fn story_connection(close_us: f64, request_wait_us: f64) -> FinishedConnection {
    let syn = T0_NS;
    let mut connection = connection(0, 51000, 8000, syn);
    connection.handshake_us = Some(13.711);
    connection.synack_to_ack_us = Some(5.0);
    connection.request_wait_us = Some(request_wait_us);
    let request_start = syn + 13_711 + (request_wait_us * 1000.0) as i64;
    connection.first_request_ts_ns = Some(request_start);
    connection.exchanges = 1;
    connection.close_us = Some(close_us);
    connection.closed_by = Some(Side::Server);
    let exchange = exchange(0, 0, request_start, 208_154.137);
    FinishedConnection { connection, exchanges: vec![exchange] }
}

#[test]
fn dominant_phase_fires_on_the_story_close_and_names_the_slow_side() {
    let store = store();
    ingest_connections(&store, &[story_connection(826_461.507, 107_958.716)]);
    let diagnosis = diagnose(&store);
    let phase = findings(&diagnosis, "dominant_phase");
    assert_eq!(phase.len(), 1, "{diagnosis:#?}");
    let finding = phase[0];
    assert_eq!(finding.severity, Severity::Critical);
    let total = 13.711 + 107_958.716 + 10.0 + 208_154.137 + 50.0 + 826_461.507;
    assert_close(evidence(finding, "close_share"), 826_461.507 / total * 100.0);
    assert_close(evidence(finding, "close_p50"), 826.461507);
    assert_eq!(
        finding.title,
        "close is 72% of connection time on 127.0.0.1:8000; closed by server; the client takes 826.5 ms (p50) to send its FIN"
    );
}

#[test]
fn dominant_phase_stays_quiet_when_the_server_works() {
    let store = store();
    ingest_connections(&store, &[story_connection(100.0, 50.0)]);
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "dominant_phase").is_empty(), "{diagnosis:#?}");
    let report = diagnosis.rule("dominant_phase").expect("report");
    assert_eq!(report.verdict, Verdict::Clear);
    assert!(report.checked.contains("127.0.0.1:8000 server"), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// not_cpu_bound

/// 30 connections to :8000 whose single request took 1, 11, 21, ... ms of server time.
fn rising_latency() -> Vec<FinishedConnection> {
    (0..30)
        .map(|i| {
            let syn = T0_NS + i as i64 * 500 * MS;
            let mut connection = connection(i, 42000 + i as u16, 8000, syn);
            connection.exchanges = 1;
            connection.first_request_ts_ns = Some(syn + 200_000);
            let exchange = exchange(i, 0, syn + 200_000, 1000.0 + i as f64 * 10_000.0);
            FinishedConnection { connection, exchanges: vec![exchange] }
        })
        .collect()
}

fn cpu_snapshots(store: &Store, cpu_usage_pct: f64, cpu_max_pct: f64) {
    let mut first = snapshot(0);
    first.system = Some(system(0, cpu_usage_pct, cpu_max_pct));
    let mut second = snapshot(1);
    second.system = Some(system(1, cpu_usage_pct / 2.0, cpu_max_pct / 2.0));
    ingest_snapshots(store, &[first, second]);
}

#[test]
fn not_cpu_bound_fires_when_latency_rises_with_a_low_cpu_peak() {
    let store = store();
    ingest_connections(&store, &rising_latency());
    cpu_snapshots(&store, 20.0, 35.0);
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "not_cpu_bound");
    assert_eq!(found.len(), 1, "{diagnosis:#?}");
    let finding = found[0];
    assert_eq!(finding.id, "not_cpu_bound:127.0.0.1:8000");
    assert_eq!(finding.severity, Severity::Critical);
    assert_close(evidence(finding, "cpu_peak"), 20.0);
    assert_close(evidence(finding, "single_cpu_peak"), 35.0);
    assert!(evidence(finding, "rise") >= 3.0);
}

#[test]
fn not_cpu_bound_stays_quiet_when_the_cpu_was_busy() {
    let store = store();
    ingest_connections(&store, &rising_latency());
    cpu_snapshots(&store, 95.0, 100.0);
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "not_cpu_bound").is_empty(), "{diagnosis:#?}");
    let report = diagnosis.rule("not_cpu_bound").expect("report");
    assert_eq!(report.verdict, Verdict::Clear);
    assert!(report.checked.contains("1 with rising latency; CPU peak 95%"), "{report:?}");
}

#[test]
fn not_cpu_bound_cannot_decide_when_other_work_kept_the_host_busy() {
    let store = store();
    ingest_connections(&store, &rising_latency());
    let snapshots: Vec<_> = (0..2)
        .map(|snap_id| {
            let mut snapshot = snapshot(snap_id);
            snapshot.system = Some(system(snap_id, 100.0, 100.0));
            snapshot.processes = vec![process(snap_id, 4242, "gunicorn", 10, 1024)];
            snapshot
        })
        .collect();
    ingest_snapshots(&store, &snapshots);
    let diagnosis = diagnose(&store);
    let report = diagnosis.rule("not_cpu_bound").expect("report");
    assert_eq!(report.verdict, Verdict::CannotDecide, "{report:?}");
    assert!(
        report.missing.iter().any(|m| m.contains(
            "the host's CPU peaked at 100% while the recorded processes used at most 2% of it"
        )),
        "{report:?}"
    );
}

#[test]
fn not_cpu_bound_cannot_decide_without_cpu_samples() {
    let store = store();
    ingest_connections(&store, &rising_latency());
    let diagnosis = diagnose(&store);
    let report = diagnosis.rule("not_cpu_bound").expect("report");
    assert_eq!(report.verdict, Verdict::CannotDecide);
    assert!(report.missing.iter().any(|m| m.contains("no system rows")), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// accept_queue

fn listen_snapshots(store: &Store, overflows: (i64, i64), accept_queue: u32) {
    let mut snapshots = Vec::new();
    for (snap_id, value) in [(0, overflows.0), (1, overflows.1)] {
        let mut snapshot = snapshot(snap_id);
        snapshot.tcp_counters = vec![
            counter(snap_id, "TcpExt.ListenOverflows", value),
            counter(snap_id, "TcpExt.ListenDrops", value),
            counter(snap_id, "Tcp.PassiveOpens", 1000 + snap_id as i64 * 500),
        ];
        snapshot.sockets =
            vec![listener(snap_id, 8000, if snap_id == 1 { accept_queue } else { 0 }, 128)];
        snapshots.push(snapshot);
    }
    ingest_snapshots(store, &snapshots);
}

#[test]
fn accept_queue_fires_on_rising_overflows_and_a_full_queue() {
    let store = store();
    listen_snapshots(&store, (10, 130), 129);
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "accept_queue");
    assert_eq!(found.len(), 2, "{diagnosis:#?}");
    let host = found.iter().find(|f| f.id == "accept_queue:host:lab").expect("host finding");
    assert_eq!(host.severity, Severity::Critical);
    assert_close(evidence(host, "listen_overflows_rise"), 120.0);
    let port = found.iter().find(|f| f.id == "accept_queue:0.0.0.0:8000").expect("port finding");
    assert_eq!(port.severity, Severity::Critical);
    assert_close(evidence(port, "accept_queue_peak"), 129.0);
    assert_close(evidence(port, "listen_backlog"), 128.0);
}

#[test]
fn accept_queue_fires_on_syn_retransmits_alone() {
    let store = store();
    let connections: Vec<FinishedConnection> = (0..20)
        .map(|i| {
            let mut connection = connection(i, 43000 + i as u16, 8000, T0_NS + i as i64 * MS);
            connection.syn_retransmits = u32::from(i % 4 == 0);
            FinishedConnection { connection, exchanges: Vec::new() }
        })
        .collect();
    ingest_connections(&store, &connections);
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "accept_queue");
    assert_eq!(found.len(), 1, "{diagnosis:#?}");
    assert_eq!(found[0].severity, Severity::Warning);
    assert_close(evidence(found[0], "conns_with_syn_retransmits_share"), 25.0);
}

#[test]
fn accept_queue_stays_quiet_with_flat_counters_and_an_empty_queue() {
    let store = store();
    listen_snapshots(&store, (10, 10), 0);
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "accept_queue").is_empty(), "{diagnosis:#?}");
    let report = diagnosis.rule("accept_queue").expect("report");
    assert_eq!(report.verdict, Verdict::Clear);
    assert!(report.missing.iter().any(|m| m.contains("no connections rows")), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// cached_slow

fn class_requests(cached_latency_us: u64) -> Vec<peel_load::records::RequestRecord> {
    let mut requests = Vec::new();
    for i in 0..20 {
        requests.push(request(i, "cached", cached_latency_us));
        requests.push(request(100 + i, "uncached", 400_000));
    }
    requests
}

#[test]
fn cached_slow_fires_when_cached_requests_are_as_slow_as_uncached() {
    let store = store();
    ingest_requests(&store, &class_requests(300_000));
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "cached_slow");
    assert_eq!(found.len(), 1, "{diagnosis:#?}");
    assert_eq!(found[0].id, "cached_slow:cached");
    assert_close(evidence(found[0], "cached_p50"), 300.0);
    assert_close(evidence(found[0], "uncached_p50"), 400.0);
}

#[test]
fn cached_slow_stays_quiet_when_the_cache_is_fast() {
    let store = store();
    ingest_requests(&store, &class_requests(2_000));
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "cached_slow").is_empty(), "{diagnosis:#?}");
    assert_eq!(verdict(&diagnosis, "cached_slow"), Verdict::Clear);
}

#[test]
fn cached_slow_cannot_decide_without_a_cached_class() {
    let store = store();
    let requests: Vec<_> = (0..20).map(|i| request(i, "api", 300_000)).collect();
    ingest_requests(&store, &requests);
    let diagnosis = diagnose(&store);
    let report = diagnosis.rule("cached_slow").expect("report");
    assert_eq!(report.verdict, Verdict::CannotDecide);
    assert!(report.missing[0].contains("classes: [api]"), "{report:?}");
}

// ---------------------------------------------------------------------------------------------
// port_pressure

fn time_wait_snapshot(store: &Store, sockets: u16) {
    let mut snapshot = snapshot(0);
    snapshot.sysctls = vec![sysctl(0, "net.ipv4.ip_local_port_range", "40000 40999")];
    snapshot.sockets = (0..sockets)
        .map(|i| socket(0, "TIME_WAIT", ("127.0.0.1", 40000 + i), ("127.0.0.1", 5432)))
        .collect();
    snapshot.sockets.push(listener(0, 5432, 0, 128));
    ingest_snapshots(store, &[snapshot]);
}

#[test]
fn port_pressure_fires_when_time_wait_holds_most_ephemeral_ports() {
    let store = store();
    time_wait_snapshot(&store, 900);
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "port_pressure");
    assert_eq!(found.len(), 1, "{diagnosis:#?}");
    assert_eq!(found[0].id, "port_pressure:127.0.0.1:5432");
    assert_eq!(found[0].severity, Severity::Critical);
    assert_close(evidence(found[0], "range_used"), 90.0);
    assert_close(evidence(found[0], "time_wait_peak"), 900.0);
}

#[test]
fn port_pressure_stays_quiet_with_few_ports_in_use() {
    let store = store();
    time_wait_snapshot(&store, 10);
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "port_pressure").is_empty(), "{diagnosis:#?}");
    assert_eq!(verdict(&diagnosis, "port_pressure"), Verdict::Clear);
}

// ---------------------------------------------------------------------------------------------
// close_wait

fn close_wait_snapshots(store: &Store, first: u16, last: u16) {
    close_wait_sockets(store, first, last, "gunicorn", |i| {
        (("127.0.0.1", 8000), ("127.0.0.1", 50000 + i))
    });
}

/// Two snapshots with `first` and then `last` CLOSE_WAIT sockets owned by `process`; socket `i`
/// goes from and to `ends(i)`.
fn close_wait_sockets(
    store: &Store,
    first: u16,
    last: u16,
    process: &str,
    ends: impl Fn(u16) -> ((&'static str, u16), (&'static str, u16)),
) {
    close_wait_sockets_with(store, first, last, process, ends, |_| Vec::new());
}

/// As [`close_wait_sockets`], plus the sockets `more(snap_id)` in each snapshot.
fn close_wait_sockets_with(
    store: &Store,
    first: u16,
    last: u16,
    process: &str,
    ends: impl Fn(u16) -> ((&'static str, u16), (&'static str, u16)),
    more: impl Fn(u64) -> Vec<peel_snap::records::SocketRecord>,
) {
    let snapshots: Vec<_> = [(0, first), (1, last)]
        .into_iter()
        .map(|(snap_id, count)| {
            let mut snapshot = snapshot(snap_id);
            snapshot.sockets = (0..count)
                .map(|i| {
                    let (local, remote) = ends(i);
                    let mut socket = socket(snap_id, "CLOSE_WAIT", local, remote);
                    socket.process = Some(process.to_string());
                    socket
                })
                .chain(more(snap_id))
                .collect();
            snapshot
        })
        .collect();
    ingest_snapshots(store, &snapshots);
}

#[test]
fn close_wait_fires_when_it_grows() {
    let store = store();
    close_wait_snapshots(&store, 2, 30);
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "close_wait");
    assert_eq!(found.len(), 1, "{diagnosis:#?}");
    assert_eq!(found[0].title, "CLOSE_WAIT grows on 127.0.0.1:8000 (gunicorn): 2 -> 30 (peak 30)");
}

#[test]
fn close_wait_stays_quiet_when_it_is_flat() {
    let store = store();
    close_wait_snapshots(&store, 2, 2);
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "close_wait").is_empty(), "{diagnosis:#?}");
    assert_eq!(verdict(&diagnosis, "close_wait"), Verdict::Clear);
}

/// The application as a client: connections to PostgreSQL the server closed and the app did not,
/// each on an ephemeral port of its own.
fn client_close_wait(store: &Store, first: u16, last: u16) {
    close_wait_sockets(store, first, last, "app", |i| {
        (("127.0.0.1", 40000 + i), ("127.0.0.1", 5432))
    });
}

#[test]
fn close_wait_groups_client_sockets_by_the_server_they_point_at() {
    let store = store();
    client_close_wait(&store, 2, 30);
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "close_wait");
    assert_eq!(found.len(), 1, "{diagnosis:#?}");
    assert_eq!(found[0].id, "close_wait:client:127.0.0.1:5432");
    assert_eq!(
        found[0].title,
        "CLOSE_WAIT grows on client sockets towards 127.0.0.1:5432 (app): 2 -> 30 (peak 30)"
    );
    assert_close(evidence(found[0], "close_wait_last"), 30.0);
    assert!(found[0].sql.contains("side = 'client'"), "{}", found[0].sql);
}

#[test]
fn close_wait_stays_quiet_when_client_sockets_do_not_grow() {
    let store = store();
    client_close_wait(&store, 5, 5);
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "close_wait").is_empty(), "{diagnosis:#?}");
    assert_eq!(verdict(&diagnosis, "close_wait"), Verdict::Clear);
}

#[test]
fn close_wait_on_a_listening_port_in_the_ephemeral_range_is_server_side() {
    let store = store();
    close_wait_sockets_with(
        &store,
        2,
        30,
        "gunicorn",
        |i| (("127.0.0.1", 45000), ("127.0.0.1", 50000 + i)),
        |snap_id| vec![listener(snap_id, 45000, 0, 128)],
    );
    let diagnosis = diagnose(&store);
    let ids: Vec<_> = findings(&diagnosis, "close_wait").iter().map(|f| f.id.clone()).collect();
    assert_eq!(ids, vec!["close_wait:127.0.0.1:45000"], "{diagnosis:#?}");
}

// ---------------------------------------------------------------------------------------------
// anomalies

fn reset_connections(resets: u64) -> Vec<FinishedConnection> {
    (0..100)
        .map(|i| {
            let mut connection = connection(i, 44000 + i as u16, 8000, T0_NS + i as i64 * MS);
            if i < resets {
                connection.state = ConnState::Reset;
                connection.reset_by = Some(Side::Server);
                connection.reset_phase = Some(Phase::Server);
            }
            FinishedConnection { connection, exchanges: Vec::new() }
        })
        .collect()
}

#[test]
fn anomalies_fire_on_resets_with_side_and_phase() {
    let store = store();
    ingest_connections(&store, &reset_connections(20));
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "anomalies");
    assert_eq!(found.len(), 1, "{diagnosis:#?}");
    assert_eq!(found[0].id, "anomalies:resets:127.0.0.1:8000");
    assert_eq!(found[0].severity, Severity::Critical);
    assert_close(evidence(found[0], "resets_by_server_in_server"), 20.0);
    assert!(
        found[0].title.ends_with("were reset, mostly by the server during server"),
        "{}",
        found[0].title
    );
}

#[test]
fn anomalies_stay_quiet_on_clean_connections() {
    let store = store();
    ingest_connections(&store, &reset_connections(0));
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "anomalies").is_empty(), "{diagnosis:#?}");
    assert_eq!(verdict(&diagnosis, "anomalies"), Verdict::Clear);
}

// ---------------------------------------------------------------------------------------------
// limits

fn limits_snapshot(store: &Store, conntrack: i64, open_fds: u32) {
    let mut snapshot = snapshot(0);
    snapshot.tcp_counters = vec![
        counter(0, "conntrack.count", conntrack),
        counter(0, "conntrack.max", 65536),
        counter(0, "file-nr.allocated", 5000),
        counter(0, "file-nr.unused", 0),
        counter(0, "file-nr.max", 1_000_000),
    ];
    snapshot.processes = vec![process(0, 4242, "gunicorn", open_fds, 1024)];
    ingest_snapshots(store, &[snapshot]);
}

#[test]
fn limits_fire_near_conntrack_max_and_the_fd_limit() {
    let store = store();
    limits_snapshot(&store, 63_000, 900);
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "limits");
    assert_eq!(found.len(), 2, "{diagnosis:#?}");
    let conntrack = found.iter().find(|f| f.id == "limits:conntrack:lab").expect("conntrack");
    assert_eq!(conntrack.severity, Severity::Critical);
    let fds = found.iter().find(|f| f.id == "limits:fds:4242").expect("fds");
    assert_eq!(fds.severity, Severity::Warning);
    assert_close(evidence(fds, "peak"), 900.0);
}

#[test]
fn limits_stay_quiet_far_from_the_maximums() {
    let store = store();
    limits_snapshot(&store, 100, 10);
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "limits").is_empty(), "{diagnosis:#?}");
    assert_eq!(verdict(&diagnosis, "limits"), Verdict::Clear);
}

// ---------------------------------------------------------------------------------------------
// sysctl_ranges

fn sysctl_fixture(store: &Store, small: bool, new_conns: u64) {
    let mut snapshot = snapshot(0);
    let (somaxconn, syn_backlog, range) =
        if small { ("128", "128", "60000 60999") } else { ("4096", "4096", "1024 65535") };
    snapshot.sysctls = vec![
        sysctl(0, "net.core.somaxconn", somaxconn),
        sysctl(0, "net.ipv4.tcp_max_syn_backlog", syn_backlog),
        sysctl(0, "net.ipv4.ip_local_port_range", range),
    ];
    let backlog = somaxconn.parse().expect("number");
    snapshot.sockets = vec![listener(0, 8000, if small { 100 } else { 0 }, backlog)];
    ingest_snapshots(store, &[snapshot]);
    // All new connections inside one second.
    let connections: Vec<_> = (0..new_conns)
        .map(|i| FinishedConnection {
            connection: connection(i, 20000 + i as u16, 8000, T0_NS + i as i64 * 3 * MS / 2),
            exchanges: Vec::new(),
        })
        .collect();
    ingest_connections(store, &connections);
}

#[test]
fn sysctl_ranges_fire_when_the_load_outgrows_them() {
    let store = store();
    sysctl_fixture(&store, true, 300);
    let diagnosis = diagnose(&store);
    let found = findings(&diagnosis, "sysctl_ranges");
    let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sysctl_ranges:net.ipv4.ip_local_port_range",
            "sysctl_ranges:net.core.somaxconn",
            "sysctl_ranges:net.ipv4.tcp_max_syn_backlog",
        ],
        "{diagnosis:#?}"
    );
    let ports = found[0];
    assert_eq!(ports.severity, Severity::Critical);
    assert_close(evidence(ports, "ports_needed"), 300.0 * 60.0);
    assert_close(evidence(ports, "range_ports"), 1000.0);
}

#[test]
fn sysctl_ranges_stay_quiet_with_room_to_spare() {
    let store = store();
    sysctl_fixture(&store, false, 20);
    let diagnosis = diagnose(&store);
    assert!(findings(&diagnosis, "sysctl_ranges").is_empty(), "{diagnosis:#?}");
    assert_eq!(verdict(&diagnosis, "sysctl_ranges"), Verdict::Clear);
}
