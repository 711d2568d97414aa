//! `peel snap` against the real binary: a fixture /proc tree (table pinned, JSON checked), usage
//! errors, and a short live series on this host.

use std::path::PathBuf;
use std::process::{Command, Output};

fn peel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peel")).args(args).output().expect("the peel binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peel-snap/tests/data/proc-incident");
    path.to_str().expect("utf-8 path").to_owned()
}

#[test]
fn table_of_a_fixture_proc_tree() {
    let output = peel(&["snap", "--proc-root", &fixture(), "--limit", "3"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let (first, rest) = stdout.split_once('\n').expect("lines");
    assert!(first.starts_with("snapshot 0  host app-1  sockets via proc  took "), "{first}");
    assert_eq!(
        rest,
        "\
load 12.40 9.80 5.10  2 cpus  memory 5.8 GiB used of 7.7 GiB, 1.9 GiB available
tcp sockets 14: CLOSE_WAIT 5, ESTABLISHED 4, LISTEN 2, TIME_WAIT 2, SYN_RECV 1
TIME_WAIT 2  CLOSE_WAIT 5  SYN_RECV 1
other sockets: udp ESTABLISHED 1, udp UNCONN 1, unix_dgram UNCONN 1, unix_stream ESTABLISHED 2, unix_stream LISTEN 1

by local port and state
  PORT  STATE       SOCKETS  PROCESS
  8000  CLOSE_WAIT        5  gunicorn
  8000  LISTEN            1  gunicorn
  8000  SYN_RECV          1

by remote endpoint and state
  REMOTE           STATE        SOCKETS
  10.0.0.9:5432    ESTABLISHED        3
  10.0.0.9:5432    TIME_WAIT          2
  127.0.0.1:20000  CLOSE_WAIT         1

ephemeral ports per destination (ip_local_port_range 32768-60999)
  DESTINATION    IN USE  OF RANGE
  10.0.0.9:5432       5      0.0%

accept queues at 80% of their backlog or more
  LISTEN          QUEUE  BACKLOG  PROCESS
  127.0.0.1:8000    129        ?  gunicorn (4242)

kernel counters (nonzero; rates need --every)
  COUNTER                                 VALUE  PER SECOND
  TcpExt.SyncookiesSent                       3
  TcpExt.ListenOverflows                     57
  TcpExt.ListenDrops                         57
  TcpExt.TCPAbortOnClose                     12
  TcpExt.TCPAbortOnTimeout                    1
  Tcp.ActiveOpens                          5000
  Tcp.PassiveOpens                         4800
  Tcp.AttemptFails                           12
  Tcp.EstabResets                            30
  Tcp.CurrEstab                               9
  Tcp.RetransSegs                            77
  Tcp.OutRsts                                40
  sockstat.TCP.inuse                         12
  sockstat.TCP.tw                             2
  sockstat.TCP.alloc                         14
  sockstat.TCP.mem                            3
  sockstat6.TCP6.inuse                        2
  file-nr.allocated                        2048
  file-nr.max               9223372036854775807
warning: net/tcp:14: expected at least 10 fields, found 3
warning: net/tcp:15: tx_queue: '0000000G' is not a hex number in range
"
    );
}

#[test]
fn json_of_a_fixture_proc_tree() {
    let output = peel(&["snap", "--proc-root", &fixture(), "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(json["snapshot"]["socket_source"], "proc");
    assert_eq!(json["sockets"].as_array().map(Vec::len), Some(14));
    assert_eq!(json["summary"]["close_wait"], 5);
    assert_eq!(json["summary"]["accept_queues_near_backlog"][0]["local_port"], 8000);
    assert_eq!(json["system"]["load1"], 12.4);
    assert_eq!(json["system"]["cpu_count"], 2);
}

#[test]
fn usage_errors_exit_2() {
    let output = peel(&["snap", "--proc-root", "/nonexistent/peel-proc"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("has no net/tcp"), "{}", text(&output.stderr));
    let output = peel(&["snap", "--every", "1s"]);
    assert_eq!(output.status.code(), Some(2), "--every needs --for");
    let output = peel(&["snap", "--every", "1s", "--for", "soon"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_short_live_series_in_json() {
    let pid = std::process::id().to_string();
    let output = peel(&[
        "snap",
        "--every",
        "200ms",
        "--for",
        "400ms",
        "--format",
        "json",
        "--process",
        &pid,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let snapshots = json["snapshots"].as_array().expect("snapshots");
    assert_eq!(snapshots.len(), 3);
    assert_eq!(snapshots[2]["snapshot"]["snap_id"], 2);
    assert_eq!(snapshots[0]["snapshot"]["socket_source"], "netlink");
    assert_eq!(snapshots[0]["processes"][0]["pid"].as_u64(), Some(u64::from(std::process::id())));
    assert!(json["series"]["cpu_peak_pct"].is_number());
    assert!(json["series"]["load1_max"].is_number());
    assert_eq!(json["series"]["snapshots"], 3);
}

#[test]
fn db_receives_every_table_of_a_snapshot() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("snap.duckdb");
    let db_arg = db.to_str().expect("utf-8");
    let output = peel(&[
        "snap",
        "--proc-root",
        &fixture(),
        "--db",
        db_arg,
        "--run-id",
        "fixture",
        "--format",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("stored 1 snapshot(s) in"), "{}", text(&output.stderr));
    let query = "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM sockets WHERE state = 'CLOSE_WAIT'), \
                 (SELECT value FROM tcp_counters WHERE name = 'TcpExt.ListenOverflows'), \
                 (SELECT value FROM sysctl WHERE key = 'net.core.somaxconn')";
    let output = peel(&["sql", db_arg, "--format", "json", query]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(json[0]["rows"][0], serde_json::json!([1, 5, 57, "4096"]));
}
