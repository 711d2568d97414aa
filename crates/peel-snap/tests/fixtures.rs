//! Snapshots of a fixture /proc tree (tests/data/proc-incident): an app server on :8000 with a full
//! accept queue and a CLOSE_WAIT pile-up, connections to PostgreSQL in ESTABLISHED and TIME_WAIT,
//! an IPv6 listener, and two malformed lines in net/tcp.

use std::path::PathBuf;

use peel_snap::aggregate::summarize;
use peel_snap::records::SnapshotRecords;
use peel_snap::{sysctl, take, ProcRoot, ProcessMatch, SnapOptions};

fn fixture_root() -> ProcRoot {
    ProcRoot::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/proc-incident"))
}

fn snapshot() -> SnapshotRecords {
    take(SnapOptions { proc_root: fixture_root(), ..SnapOptions::default() })
        .expect("fixture snapshot")
}

#[test]
fn socket_table_from_proc_files() {
    let snap = snapshot();
    assert_eq!(snap.snapshot.socket_source, "proc");
    assert_eq!(snap.snapshot.host, "app-1");
    assert_eq!(snap.sockets.len(), 14);
    let listen = snap
        .sockets
        .iter()
        .find(|s| s.state == "LISTEN" && s.local_port == 8000)
        .expect("listener on 8000");
    assert_eq!(listen.accept_queue, Some(129));
    assert_eq!(listen.listen_backlog, None, "/proc/net/tcp does not show the backlog");
    assert_eq!(
        (listen.pid, listen.process.as_deref()),
        (Some(4242), Some("gunicorn")),
        "lowest pid of a shared socket"
    );

    let postgres: Vec<_> =
        snap.sockets.iter().filter(|s| s.remote_port == 5432 && s.state == "ESTABLISHED").collect();
    assert_eq!(postgres.len(), 3);
    assert!(postgres
        .iter()
        .all(|s| s.pid == Some(4243) && s.send_q_bytes == 32 && s.retransmits == 2));
    assert!(postgres.iter().all(|s| s.timer == "on" && s.timer_expires_ms == 200));

    let time_wait: Vec<_> = snap.sockets.iter().filter(|s| s.state == "TIME_WAIT").collect();
    assert_eq!(time_wait.len(), 2);
    assert!(time_wait.iter().all(|s| s.pid.is_none()
        && s.inode == 0
        && s.timer == "timewait"
        && s.timer_expires_ms == 60_000));
}

#[test]
fn ipv6_sockets() {
    let snap = snapshot();
    let v6: Vec<_> = snap.sockets.iter().filter(|s| s.family == "ipv6").collect();
    let got: Vec<(&str, &str, u16, &str, u16)> = v6
        .iter()
        .map(|s| {
            (
                s.state.as_str(),
                s.local_ip.as_str(),
                s.local_port,
                s.remote_ip.as_str(),
                s.remote_port,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("LISTEN", "::", 8443, "::", 0), ("ESTABLISHED", "::1", 8443, "::1", 40000)]
    );
    assert!(v6.iter().all(|s| s.process.as_deref() == Some("nginx")));
}

#[test]
fn malformed_lines_become_warnings() {
    let snap = snapshot();
    assert_eq!(
        snap.warnings,
        vec![
            "net/tcp:14: expected at least 10 fields, found 3".to_owned(),
            "net/tcp:15: tx_queue: '0000000G' is not a hex number in range".to_owned(),
        ]
    );
}

#[test]
fn aggregates_answer_the_first_questions() {
    let summary = summarize(&snapshot());
    assert_eq!((summary.close_wait, summary.time_wait, summary.syn_recv), (5, 2, 1));
    let top = &summary.by_local_port[0];
    assert_eq!(
        (top.local_port, top.state.as_str(), top.count, top.process.as_deref()),
        (8000, "CLOSE_WAIT", 5, Some("gunicorn"))
    );
    let postgres = &summary.by_remote[0];
    assert_eq!(
        (
            postgres.remote_ip.as_str(),
            postgres.remote_port,
            postgres.state.as_str(),
            postgres.count
        ),
        ("10.0.0.9", 5432, "ESTABLISHED", 3)
    );
    assert_eq!(summary.ephemeral_range, Some((32768, 60999)));
    let ephemeral = &summary.ephemeral_by_destination[0];
    assert_eq!(
        (
            ephemeral.remote_ip.as_str(),
            ephemeral.remote_port,
            ephemeral.ports_in_use,
            ephemeral.range_size
        ),
        ("10.0.0.9", 5432, 5, 28232)
    );
    let queues: Vec<(u16, u32)> =
        summary.accept_queues_near_backlog.iter().map(|q| (q.local_port, q.accept_queue)).collect();
    assert_eq!(queues, vec![(8000, 129)]);
}

#[test]
fn counters_and_socket_counts() {
    let snap = snapshot();
    let value = |name: &str| snap.tcp_counters.iter().find(|c| c.name == name).map(|c| c.value);
    assert_eq!(value("TcpExt.ListenOverflows"), Some(57));
    assert_eq!(value("Tcp.CurrEstab"), Some(9));
    assert_eq!(value("Tcp.MaxConn"), Some(-1));
    assert_eq!(value("sockstat.TCP.tw"), Some(2));
    assert_eq!(value("sockstat6.TCP6.inuse"), Some(2));
    assert_eq!(value("file-nr.allocated"), Some(2048));
    assert_eq!(value("conntrack.count"), None, "no conntrack in the fixture");
    assert_eq!(value("IpExt.InNoRoutes"), None, "only TCP groups are kept");
    assert!(
        snap.tcp_counters.iter().all(|c| c.rate_per_s.is_none()),
        "a single snapshot has no rates"
    );

    let counts: Vec<(&str, &str, u64)> = snap
        .socket_counts
        .iter()
        .map(|c| (c.protocol.as_str(), c.state.as_str(), c.count))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("udp", "ESTABLISHED", 1),
            ("udp", "UNCONN", 1),
            ("unix_dgram", "UNCONN", 1),
            ("unix_stream", "ESTABLISHED", 2),
            ("unix_stream", "LISTEN", 1),
        ]
    );
}

#[test]
fn sysctls_curated_and_globbed() {
    let snap = snapshot();
    let value = |key: &str| snap.sysctls.iter().find(|s| s.key == key).map(|s| s.value.as_str());
    assert_eq!(value("net.core.somaxconn"), Some("4096"));
    assert_eq!(value("net.ipv4.ip_local_port_range"), Some("32768 60999"));
    assert_eq!(value("net.ipv4.tcp_rmem"), Some("4096 131072 6291456"));
    assert_eq!(value("net.netfilter.nf_conntrack_max"), None, "missing curated keys are skipped");

    let keepalive =
        sysctl::read_patterns(&fixture_root(), &["net.ipv4.tcp_keepalive_*".to_owned()])
            .expect("glob");
    let keys: Vec<&str> = keepalive.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
            "net.ipv4.tcp_keepalive_time"
        ]
    );
    let all = sysctl::read_patterns(&fixture_root(), &["net.ipv4.*".to_owned()]).expect("glob");
    assert!(all.iter().any(|(k, v)| k == "net.ipv4.conf.all.forwarding" && v == "0"));

    let err = sysctl::read_patterns(&fixture_root(), &["net.core.no_such_key".to_owned()])
        .expect_err("unknown key");
    assert!(err.to_string().starts_with("unknown sysctl key 'net.core.no_such_key'"), "{err}");
}

#[test]
fn processes_are_not_invented_for_a_copied_proc() {
    let snap = take(SnapOptions {
        proc_root: fixture_root(),
        processes: vec![ProcessMatch::parse("gunicorn")],
        ..SnapOptions::default()
    })
    .expect("fixture snapshot");
    assert!(snap.processes.is_empty() && snap.system.is_none());
    assert!(snap
        .warnings
        .iter()
        .any(|w| w.starts_with("processes are read only on the live host")));
}

#[test]
fn sysctl_diff_against_a_snapshot_file() {
    let snap = snapshot();
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("before.json");
    std::fs::write(&path, serde_json::to_string(&snap).expect("serializable")).expect("write");
    let before = sysctl::load_snapshot_file(&path).expect("snapshot file");
    let mut after = before.clone();
    after.retain(|(key, _)| key != "fs.nr_open");
    for (key, value) in &mut after {
        if key == "net.core.somaxconn" {
            *value = "65535".to_owned();
        }
    }
    let changes = sysctl::diff(&before, &after);
    let got: Vec<(&str, Option<&str>, Option<&str>)> =
        changes.iter().map(|c| (c.key.as_str(), c.before.as_deref(), c.after.as_deref())).collect();
    assert_eq!(
        got,
        vec![
            ("fs.nr_open", Some("1048576"), None),
            ("net.core.somaxconn", Some("4096"), Some("65535"))
        ]
    );
}
