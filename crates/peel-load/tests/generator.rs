//! The generator against a real server on loopback: connection reuse, the open model's honest
//! latency, errors by kind, the URL mix and the record sink. Every run is bounded by a request count
//! (and a duration far above what it needs), and no assertion depends on how fast the machine is:
//! latency bounds below follow from the server's own sleeps.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use peel_load::loopback_server::{LoopbackServer, ServerBehavior};
use peel_load::{
    run_load, targets_from_mix, ErrorKind, LoadConfig, LoadError, LoadReport, Model, RequestRecord,
    SinkError, Target,
};

const GENEROUS: Duration = Duration::from_secs(60);

fn closed(url: &str, concurrency: u32, max_requests: u64) -> LoadConfig {
    let mut config =
        LoadConfig::new(vec![Target::new(url).unwrap()], Model::Closed { concurrency }, GENEROUS);
    config.max_requests = max_requests;
    config
}

fn run(config: &LoadConfig) -> (LoadReport, Vec<RequestRecord>) {
    let mut records = Vec::new();
    let report = run_load(config, &mut |_| {}, &mut records).unwrap();
    (report, records)
}

#[test]
fn keepalive_reuses_exactly_n_connections() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let mut config = closed(&server.url("/cached"), 8, 200);
    config.connections = 4;
    // One thread holds all four connections: with several, a thread that starts late on a busy
    // machine may find the shared request budget spent and open none, which is right but not exact.
    config.threads = 1;
    let (report, records) = run(&config);

    assert_eq!(records.len(), 200);
    assert_eq!(server.requests(), 200);
    assert_eq!(server.connections_accepted(), 4);
    assert_eq!(report.connections_opened, 4);
    assert_eq!(report.total.connections_opened, 4);
    assert_eq!(records.iter().filter(|r| !r.reused).count(), 4);
    let ids: BTreeSet<_> = records.iter().map(|r| r.connection_id.unwrap()).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2, 3]));
    assert_eq!((report.total.status_2xx, report.total.errors), (200, 0));
}

#[test]
fn keepalive_off_opens_one_connection_per_request() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let mut config = closed(&server.url("/cached"), 4, 50);
    config.keepalive = false;
    let (report, records) = run(&config);

    assert_eq!(server.connections_accepted(), 50);
    assert_eq!(report.connections_opened, 50);
    assert!(records.iter().all(|r| !r.reused && r.status == Some(200)), "{records:?}");
    let ids: BTreeSet<_> = records.iter().map(|r| r.connection_id.unwrap()).collect();
    assert_eq!(ids.len(), 50);
}

#[test]
fn records_carry_ordered_timestamps_and_the_response() {
    let behavior = ServerBehavior { body: b"0123456789".to_vec(), ..ServerBehavior::default() };
    let server = LoopbackServer::start(behavior).unwrap();
    let (report, records) = run(&closed(&server.url("/db?id=1"), 2, 20));

    let mut request_ids: Vec<_> = records.iter().map(|r| r.request_id).collect();
    request_ids.sort_unstable();
    assert_eq!(request_ids, (0..20).collect::<Vec<_>>());
    for r in &records {
        let first_byte = r.first_byte_ts_ns.unwrap();
        assert!(r.scheduled_ts_ns <= r.start_ts_ns, "{r:?}");
        assert!(r.start_ts_ns <= first_byte && first_byte <= r.end_ts_ns, "{r:?}");
        assert_eq!(r.latency_us, (r.end_ts_ns - r.scheduled_ts_ns) / 1000, "{r:?}");
        assert_eq!((r.status, r.response_body_bytes, r.error_kind), (Some(200), 10, None));
        assert_eq!((r.url_class.as_str(), r.method.as_str()), ("/db", "GET"));
        assert_eq!(r.url, server.url("/db?id=1"));
        assert!(r.local_port.is_some());
    }
    assert_eq!(server.requests_by_path().get("/db?id=1"), Some(&20));
    assert_eq!(report.classes.len(), 1);
    assert_eq!(report.total.response_body_bytes, 200);
    assert_eq!(report.statuses.len(), 1);
    assert_eq!((report.statuses[0].status, report.statuses[0].count), (200, 20));
}

/// With one connection and a server that takes 50 ms per request, request k cannot start before
/// k * 50 ms although it was scheduled at k * 10 ms. The open model must charge that wait.
#[test]
fn open_model_latency_includes_the_queueing_behind_a_stall() {
    let behavior = ServerBehavior { delay: Duration::from_millis(50), ..ServerBehavior::default() };
    let server = LoopbackServer::start(behavior).unwrap();
    let targets = vec![Target::new(&server.url("/slow")).unwrap()];
    let mut config = LoadConfig::new(targets, Model::Open { rate_per_s: 100.0 }, GENEROUS);
    config.max_requests = 20;
    config.connections = 1;
    let (report, records) = run(&config);

    assert_eq!(records.len(), 20);
    let last = records.iter().find(|r| r.request_id == 19).unwrap();
    // Scheduled at 190 ms, started no earlier than 19 * 50 ms = 950 ms, ended 50 ms later at least.
    assert!(last.start_ts_ns - last.scheduled_ts_ns >= 760_000_000, "{last:?}");
    assert!(last.latency_us >= 810_000, "{last:?}");
    let schedule: Vec<_> = {
        let mut r: Vec<_> = records.iter().map(|r| (r.request_id, r.scheduled_ts_ns)).collect();
        r.sort_unstable();
        r.windows(2).map(|w| w[1].1 - w[0].1).collect()
    };
    assert!(schedule.iter().all(|&gap_ns| gap_ns.abs_diff(10_000_000) <= 1), "{schedule:?}");
    assert!(report.total.latency_max_us >= 810_000, "{:?}", report.total);
    assert_eq!(report.model, "open");
    assert_eq!(report.rate_per_s, Some(100.0));
}

#[test]
fn connect_refused_on_a_closed_port() {
    let port = {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let (report, records) = run(&closed(&format!("http://127.0.0.1:{port}/"), 1, 5));

    assert_eq!(records.len(), 5);
    for r in &records {
        assert_eq!(
            (r.error_kind, r.status, r.connection_id),
            (Some(ErrorKind::ConnectRefused), None, None)
        );
    }
    assert_eq!(
        (report.total.errors, report.total.errors_connect_refused, report.total.responses),
        (5, 5, 0)
    );
    assert_eq!(report.connections_opened, 0);
}

#[test]
fn timeout_when_the_server_does_not_answer_in_time() {
    let behavior = ServerBehavior { delay: Duration::from_secs(2), ..ServerBehavior::default() };
    let server = LoopbackServer::start(behavior).unwrap();
    let mut config = closed(&server.url("/stall"), 1, 2);
    config.timeout = Duration::from_millis(100);
    let (report, records) = run(&config);

    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!((r.error_kind, r.status), (Some(ErrorKind::Timeout), None), "{r:?}");
        assert!(r.connection_id.is_some() && !r.reused, "a timed-out connection is not reused");
    }
    assert_eq!((report.total.errors_timeout, report.total.latency_p99_us), (2, 0));
}

#[test]
fn reset_when_the_server_closes_without_answering() {
    let behavior = ServerBehavior { drop_path: Some("/gone".into()), ..ServerBehavior::default() };
    let server = LoopbackServer::start(behavior).unwrap();
    let (report, records) = run(&closed(&server.url("/gone"), 1, 3));

    assert!(records.iter().all(|r| r.error_kind == Some(ErrorKind::Reset)), "{records:?}");
    assert_eq!(report.total.errors_reset, 3);
}

#[test]
fn mix_splits_requests_by_weight_and_reports_each_class() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let targets = targets_from_mix(&server.url("/"), "/cached=3,/db=1").unwrap();
    let mut config = LoadConfig::new(targets, Model::Closed { concurrency: 2 }, GENEROUS);
    config.max_requests = 40;
    let (report, records) = run(&config);

    let by_path: Vec<_> = server.requests_by_path().into_iter().collect();
    assert_eq!(by_path, vec![("/cached".to_string(), 30), ("/db".to_string(), 10)]);
    // Each record names its own URL and class: the smooth weighted cycle is /cached, /cached,
    // /db, /cached.
    assert_eq!(records.len(), 40);
    for r in &records {
        let class = if r.request_id % 4 == 2 { "/db" } else { "/cached" };
        assert_eq!((r.url_class.as_str(), r.method.as_str()), (class, "GET"), "{r:?}");
        assert_eq!(r.url, server.url(class), "{r:?}");
    }
    let classes: Vec<_> =
        report.classes.iter().map(|c| (c.url_class.as_str(), c.requests)).collect();
    assert_eq!(classes, vec![("/cached", 30), ("/db", 10)]);
    assert_eq!((report.total.url_class.as_str(), report.total.requests), ("total", 40));
}

#[test]
fn a_failing_sink_stops_the_run_with_its_error() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let config = closed(&server.url("/"), 1, 1000);
    let mut seen = 0u64;
    let mut sink = |_record: RequestRecord| -> Result<(), SinkError> {
        seen += 1;
        if seen == 5 {
            return Err("disk full".into());
        }
        Ok(())
    };
    let err = run_load(&config, &mut |_| {}, &mut sink).unwrap_err();
    match err {
        LoadError::Sink { source, .. } => assert_eq!(source.to_string(), "disk full"),
        other => panic!("{other:?}"),
    }
    assert!(server.requests() < 1000, "the run stopped early");
}

#[test]
fn stop_flag_ends_the_run_early() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let mut config = closed(&server.url("/"), 1, 1_000_000);
    let stop = Arc::new(AtomicBool::new(false));
    config.stop = Some(Arc::clone(&stop));
    config.progress_every = Duration::from_millis(10);
    let mut progress_calls = 0;
    let report = run_load(
        &config,
        &mut |_| {
            progress_calls += 1;
            stop.store(true, Ordering::Relaxed);
        },
        &mut peel_load::DiscardRecords,
    )
    .unwrap();
    assert!(report.stopped_early);
    assert!(progress_calls >= 1);
    assert!(report.total.requests < 1_000_000);
}

#[test]
fn run_load_refuses_to_run_inside_a_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let config = closed("http://127.0.0.1:1/", 1, 1);
    let err =
        runtime.block_on(async { run_load(&config, &mut |_| {}, &mut peel_load::DiscardRecords) });
    assert!(matches!(err, Err(LoadError::InsideRuntime)), "{err:?}");
}

/// Several worker threads share one arrival schedule: every request id is started exactly once,
/// at its own slot of the schedule, and the connections are split between the threads.
#[test]
fn open_model_schedule_is_exact_across_threads() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let targets = vec![Target::new(&server.url("/")).unwrap()];
    let mut config = LoadConfig::new(targets, Model::Open { rate_per_s: 1000.0 }, GENEROUS);
    config.max_requests = 60;
    config.connections = 3;
    config.threads = 3;
    let (report, mut records) = run(&config);

    records.sort_by_key(|r| r.request_id);
    assert_eq!(
        records.iter().map(|r| r.request_id).collect::<Vec<_>>(),
        (0..60).collect::<Vec<_>>()
    );
    let first = records[0].scheduled_ts_ns;
    for r in &records {
        let offset_ns = r.scheduled_ts_ns - first;
        assert!(offset_ns.abs_diff(r.request_id * 1_000_000) <= 1, "{r:?}");
    }
    assert_eq!(server.requests(), 60);
    assert_eq!(report.connections_opened, 3, "one kept-alive connection per thread");
    assert_eq!(server.connections_accepted(), 3);
}
