//! `peel load` end to end against a loopback server the test starts: flags to report, exit codes,
//! and per-request records in a run database. Every run is bounded by --max-requests.

use std::process::{Command, Output};

use peel_load::loopback_server::{LoopbackServer, ServerBehavior};
use serde_json::Value;

fn peel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peel")).args(args).output().expect("running peel")
}

fn stdout_json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("JSON report")
}

#[test]
fn closed_model_json_report_counts_requests_and_reused_connections() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let url = server.url("/cached");
    let output = peel(&[
        "load",
        &url,
        "--concurrency",
        "2",
        "--duration",
        "1m",
        "--max-requests",
        "40",
        "--format",
        "json",
    ]);
    let report = stdout_json(&output);
    assert_eq!(report["model"], "closed");
    assert_eq!(report["concurrency"], 2);
    assert_eq!(report["keepalive"], true);
    assert_eq!(report["total"]["requests"], 40);
    assert_eq!(report["total"]["status_2xx"], 40);
    // One kept-alive connection per client; a client whose thread starts after the other spent the
    // 40-request budget opens none (busy CI machine), so one is as right as two, but never more.
    let opened = report["connections_opened"].as_u64().unwrap_or(0);
    assert!((1..=2).contains(&opened), "{report}");
    assert_eq!(report["classes"][0]["url_class"], "/cached");
    assert_eq!(server.connections_accepted(), opened);
    assert!(output.stderr.is_empty(), "no progress line when stderr is not a terminal");
}

#[test]
fn mix_table_has_a_row_per_class_and_a_total() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let base = server.url("");
    let output = peel(&[
        "load",
        &base,
        "--mix",
        "/cached=3,/db=1",
        "--rate",
        "500",
        "--duration",
        "1m",
        "--max-requests",
        "20",
        "--keepalive",
        "off",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8(output.stdout).unwrap();
    let requests_of = |class: &str| -> Option<String> {
        let line = table.lines().find(|line| line.split_whitespace().next() == Some(class))?;
        line.split_whitespace().nth(1).map(str::to_string)
    };
    assert_eq!(requests_of("/cached").as_deref(), Some("15"), "{table}");
    assert_eq!(requests_of("/db").as_deref(), Some("5"), "{table}");
    assert_eq!(requests_of("total").as_deref(), Some("20"), "{table}");
    assert!(
        table.starts_with("open model, 500 req/s scheduled, 64 connections max (no keep-alive)"),
        "{table}"
    );
    assert!(table.contains(", 20 connections opened"), "{table}");
    assert_eq!(server.connections_accepted(), 20);
}

#[test]
fn failed_requests_are_reported_by_kind_not_as_a_failed_command() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/");
    let output =
        peel(&["load", &url, "--concurrency", "1", "--duration", "1m", "--max-requests", "3"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("errors: connect_refused 3, timeout 0, reset 0, other 0"), "{table}");
}

#[test]
fn usage_errors_exit_2_with_the_reason() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["load", "https://127.0.0.1:1/", "--rate", "1", "--duration", "1s"],
            "scheme 'https' is not supported",
        ),
        (
            &[
                "load",
                "http://127.0.0.1:1/",
                "--rate",
                "1",
                "--concurrency",
                "2",
                "--duration",
                "1s",
            ],
            "cannot be used with",
        ),
        (&["load", "http://127.0.0.1:1/", "--duration", "1s"], "--rate"),
        (&["load", "http://127.0.0.1:1/", "--rate", "1", "--duration", "10"], "missing unit"),
        (
            &["load", "http://127.0.0.1:1/", "--rate", "0", "--duration", "1s"],
            "invalid load setting 'rate'",
        ),
        (
            &[
                "load",
                "http://127.0.0.1:1/",
                "http://127.0.0.1:2/",
                "--rate",
                "1",
                "--duration",
                "1s",
            ],
            "one host:port",
        ),
        (
            &[
                "load",
                "http://a:1/",
                "http://a:1/x",
                "--mix",
                "/x=1",
                "--rate",
                "1",
                "--duration",
                "1s",
            ],
            "exactly one base URL",
        ),
        (
            &["load", "http://127.0.0.1:1/", "--mix", "/x=y", "--rate", "1", "--duration", "1s"],
            "invalid mix entry '/x=y'",
        ),
    ];
    for (args, message) in cases {
        let output = peel(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn db_records_every_request_and_the_summaries() {
    let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.duckdb");
    let db_arg = db.to_str().unwrap();
    let url = server.url("/db");
    let output = peel(&[
        "load",
        &url,
        "--concurrency",
        "2",
        "--duration",
        "1m",
        "--max-requests",
        "25",
        "--db",
        db_arg,
        "--run-id",
        "t1",
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains(&format!("recorded 25 requests in {db_arg} (run t1)")), "{table}");

    let sql = "SELECT count(*) AS n, count(DISTINCT connection_id) AS conns, min(status) AS s \
               FROM load_requests WHERE run_id = 't1'; \
               SELECT url_class, requests FROM load_summaries WHERE run_id = 't1' ORDER BY url_class; \
               SELECT status FROM runs WHERE run_id = 't1'";
    let results = stdout_json(&peel(&["sql", db_arg, "--format", "json", sql]));
    // Two workers share the 25-request budget; on a busy machine the first worker can spend all of
    // it before the second has connected, so one connection is as right as two, but never more.
    let counts = &results[0]["rows"][0];
    assert_eq!(counts[0], 25, "{results}");
    let conns = counts[1].as_i64().unwrap_or(-1);
    assert!((1..=2).contains(&conns), "{results}");
    assert_eq!(counts[2], 200, "{results}");
    assert_eq!(results[1]["rows"], serde_json::json!([["/db", 25], ["total", 25]]), "{results}");
    assert_eq!(results[2]["rows"], serde_json::json!([["passed"]]), "{results}");
}
