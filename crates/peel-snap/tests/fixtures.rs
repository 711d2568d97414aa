//! Snapshots of a fixture /proc tree (tests/data/proc-incident): an app server on :8000 with a full
//! accept queue and a CLOSE_WAIT pile-up, connections to PostgreSQL in ESTABLISHED and TIME_WAIT,
//! an IPv6 listener, and two malformed lines in net/tcp; its processes (a gunicorn master and
//! worker, nginx) and the host's load, memory and CPU lines as a copied /proc has them.

use std::path::{Path, PathBuf};

use peel_snap::aggregate::summarize;
use peel_snap::records::{ProcessRecord, SnapshotRecords};
use peel_snap::{sysctl, take, ProcRoot, ProcessMatch, Sampler, SnapOptions};

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

fn with_processes(root: ProcRoot, names: &[&str]) -> Sampler {
    Sampler::new(SnapOptions {
        proc_root: root,
        processes: names.iter().map(|name| ProcessMatch::parse(name)).collect(),
        ..SnapOptions::default()
    })
}

#[test]
fn processes_and_system_from_a_copied_proc() {
    let snap = with_processes(fixture_root(), &["gunicorn", "4244"]).snapshot().expect("snapshot");
    assert!(snap.warnings.iter().all(|w| w.starts_with("net/tcp:")), "{:?}", snap.warnings);
    let process = |pid: u32, name: &str, cmdline: &str, threads: u32, rss_kib: u64| ProcessRecord {
        snap_id: 0,
        pid,
        name: name.to_owned(),
        cmdline: cmdline.to_owned(),
        cpu_pct: None, // one copy has no CPU deltas
        rss_bytes: rss_kib * 1024,
        threads,
        open_fds: None,
        fd_limit: None,
        sockets: None,
        children: 0,
    };
    let expected = vec![
        ProcessRecord {
            open_fds: Some(7),
            fd_limit: Some(1024),
            sockets: Some(6),
            children: 1,
            ..process(
                4242,
                "gunicorn",
                "/usr/bin/python3 /usr/bin/gunicorn app:wsgi -w 2",
                1,
                51_200,
            )
        },
        ProcessRecord {
            open_fds: Some(5),
            fd_limit: Some(1024),
            sockets: Some(4),
            ..process(4243, "python3", "gunicorn: worker [app]", 4, 204_800)
        },
        ProcessRecord {
            open_fds: Some(3),
            fd_limit: Some(65536),
            sockets: Some(2),
            ..process(4244, "nginx", "nginx: master process /usr/sbin/nginx", 1, 10_240)
        },
    ];
    assert_eq!(snap.processes, expected);

    let system = snap.system.expect("system from loadavg, meminfo and stat");
    assert_eq!((system.load1, system.load5, system.load15), (12.4, 9.8, 5.1));
    assert_eq!(system.cpu_count, 2);
    assert_eq!(snap.cpus.len(), 2);
    assert_eq!(
        (system.mem_total_bytes, system.mem_available_bytes, system.mem_used_bytes),
        (8_048_576 * 1024, 2_013_144 * 1024, (8_048_576 - 2_013_144) * 1024)
    );
    assert_eq!((system.swap_total_bytes, system.swap_used_bytes), (0, 0));
    assert_eq!((system.cpu_usage_pct, system.cpu_max_pct), (None, None));
}

/// Copies a tree, keeping symbolic links as links (as `tar` does with /proc/<pid>/fd).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).expect("read link");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A copy whose files move between two snapshots (ten seconds of uptime): CPU use becomes the
/// difference, per CPU, overall and per process.
#[test]
fn a_series_over_a_changing_copy_measures_cpu() {
    let dir = tempfile::tempdir().expect("temporary directory");
    copy_tree(fixture_root().dir(), dir.path());
    let mut sampler = with_processes(ProcRoot::new(dir.path()), &["nginx"]);
    let first = sampler.snapshot().expect("first snapshot");
    assert_eq!(first.processes[0].cpu_pct, None);

    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("uptime", "86410.00 160010.00\n");
    // 2000 ticks on 2 CPUs in 10 s: cpu0 busy 800 of 1000, cpu1 busy 200 of 1000.
    write(
        "stat",
        "cpu  1000800 2000 400200 15000980 80020 0 18000 0 0 0\n\
         cpu0 520600 1000 210200 7400180 40020 0 9000 0 0 0\n\
         cpu1 480200 1000 190000 7600800 40000 0 9000 0 0 0\n",
    );
    let stat = std::fs::read_to_string(dir.path().join("4244/stat")).expect("stat");
    // utime 900 -> 1300, stime 600 -> 700: 500 ticks in 10 s is half a CPU.
    write("4244/stat", &stat.replacen(" 900 600 ", " 1300 700 ", 1));
    let second = sampler.snapshot().expect("second snapshot");
    let system = second.system.expect("system");
    let usage: Vec<Option<f64>> = second.cpus.iter().map(|c| c.usage_pct).collect();
    assert_eq!(usage, vec![Some(80.0), Some(20.0)]);
    assert_eq!((system.cpu_usage_pct, system.cpu_max_pct), (Some(50.0), Some(80.0)));
    assert_eq!(second.processes[0].pid, 4244);
    let cpu_pct = second.processes[0].cpu_pct.expect("cpu use over the interval");
    assert!((cpu_pct - 50.0).abs() < 1e-9, "{cpu_pct}");
}

#[test]
fn a_copy_without_system_files_warns() {
    let dir = tempfile::tempdir().expect("temporary directory");
    copy_tree(fixture_root().dir(), dir.path());
    std::fs::remove_file(dir.path().join("meminfo")).expect("remove meminfo");
    let snap = take(SnapOptions { proc_root: ProcRoot::new(dir.path()), ..SnapOptions::default() })
        .expect("snapshot");
    assert!(snap.system.is_none() && snap.cpus.is_empty());
    assert!(snap.warnings.iter().any(|w| w.starts_with("no loadavg, meminfo or stat in")));
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
