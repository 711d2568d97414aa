//! The lab end to end on loopback: bounded requests over plain `TcpStream`s, counters per mode, and
//! teardown that leaves no process, no port and no PostgreSQL directory behind.

#![allow(clippy::print_stderr)] // skipped tests say why

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use peel_lab::{Closer, DbChoice, DbKind, DbMode, Lab, LabConfig, LabError, LabHandle, PortRange};

/// One request on its own connection; returns the status code and body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body =
        response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Several requests over one keep-alive client connection.
fn get_keepalive(addr: SocketAddr, path: &str, count: usize) -> std::io::Result<Vec<u16>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut statuses = Vec::new();
    let mut buffer = Vec::new();
    for _ in 0..count {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: lab\r\n\r\n")?;
        buffer.clear();
        // Read until the head is complete, then the Content-Length body.
        let mut byte = [0u8; 1];
        while !buffer.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buffer.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buffer).to_string();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body)?;
        statuses
            .push(head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0));
    }
    Ok(statuses)
}

fn sim_config(db_mode: DbMode) -> LabConfig {
    LabConfig {
        workers: 2,
        db: DbChoice::Sim,
        db_mode,
        sim_connect_cost: Duration::from_millis(2),
        sim_query_cost: Duration::ZERO,
        ..LabConfig::default()
    }
}

fn start(config: LabConfig) -> LabHandle {
    match Lab::start(config) {
        Ok(handle) => handle,
        Err(err) => panic!("lab did not start: {err}"),
    }
}

fn assert_refused(addr: SocketAddr) {
    assert!(TcpStream::connect(addr).is_err(), "{addr} still accepts connections after stop");
}

#[test]
fn per_request_mode_opens_one_db_connection_per_db_request() -> std::io::Result<()> {
    let mut lab = start(sim_config(DbMode::PerRequest));
    assert_eq!(lab.db_kind(), DbKind::Sim);
    for _ in 0..6 {
        assert_eq!(get(lab.frontend_addr(), "/db")?.0, 200);
    }
    for _ in 0..3 {
        let (status, body) = get(lab.frontend_addr(), "/cached")?;
        assert_eq!((status, body.as_str()), (200, "cached item\n"));
    }
    assert_eq!(get(lab.frontend_addr(), "/nope")?.0, 404);
    let counters = lab.counters();
    assert_eq!(counters.frontend_requests, 10);
    assert_eq!(counters.upstream_connections_opened, 10, "a new upstream connection per request");
    assert_eq!(counters.app_requests_db, 6);
    assert_eq!(counters.app_requests_cached, 3);
    assert_eq!(counters.app_requests_other, 1);
    assert_eq!(counters.db_connections_opened, 6);
    assert_eq!(counters.sim_db_connections_accepted, 6);
    assert_eq!(counters.db_queries, 6);
    assert_eq!(counters.db_health_checks, 0);
    assert_eq!(counters.db_errors, 0);
    let addrs = [lab.frontend_addr(), lab.app_addr(), lab.db_addr()];
    assert!(lab.stop().is_ok());
    addrs.into_iter().for_each(assert_refused);
    Ok(())
}

#[test]
fn persistent_mode_keeps_one_connection_per_worker_and_checks_it() -> std::io::Result<()> {
    let lab = start(sim_config(DbMode::Persistent));
    for _ in 0..8 {
        assert_eq!(get(lab.frontend_addr(), "/db")?.0, 200);
    }
    let counters = lab.counters();
    assert_eq!(counters.db_queries, 8);
    assert!(
        (1..=2).contains(&counters.db_connections_opened),
        "at most one connection per worker, got {}",
        counters.db_connections_opened
    );
    assert_eq!(
        counters.db_health_checks,
        8 - counters.db_connections_opened,
        "every reuse is checked first"
    );
    Ok(())
}

#[test]
fn upstream_keepalive_reuses_frontend_to_app_connections() -> std::io::Result<()> {
    let lab = start(LabConfig { upstream_keepalive: true, ..sim_config(DbMode::Persistent) });
    let statuses = get_keepalive(lab.frontend_addr(), "/cached", 10)?;
    assert_eq!(statuses, vec![200; 10]);
    let counters = lab.counters();
    assert_eq!(counters.frontend_connections, 1, "the client kept its connection");
    assert_eq!(counters.frontend_requests, 10);
    assert!(
        counters.upstream_connections_opened <= 2,
        "pooled: {}",
        counters.upstream_connections_opened
    );
    assert_eq!(counters.app_requests_cached, 10);
    Ok(())
}

/// Three ports below the kernel's ephemeral range (which every other test's connections draw from,
/// so a range there can be taken by a parallel test), offset by pid so parallel test processes
/// pick different ones.
fn quiet_port_range() -> PortRange {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|low| low.parse::<u32>().ok()))
        .unwrap_or(32768);
    let base = low.saturating_sub(12_000).max(1024);
    let first = u16::try_from(base + (std::process::id() % 3000) * 3).unwrap_or(20_000);
    PortRange { first, last: first + 2 }
}

#[test]
fn a_frontend_that_closes_first_runs_out_of_a_small_port_range() -> std::io::Result<()> {
    let range = quiet_port_range();
    let lab = start(LabConfig {
        upstream_close: Closer::Frontend,
        ephemeral_ports: Some(range),
        ..sim_config(DbMode::PerRequest)
    });
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(lab.frontend_addr(), "/cached")?.0);
    }
    // Each closed upstream connection leaves its local port in TIME_WAIT on the frontend side.
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(&statuses[3..], &[502, 502, 502]);
    let counters = lab.counters();
    assert_eq!(counters.upstream_ports_exhausted, 3);
    assert_eq!(counters.upstream_errors, 3);
    assert_eq!(counters.upstream_connections_opened, 3);
    Ok(())
}

#[test]
fn pooled_upstream_connections_fit_in_the_same_small_port_range() -> std::io::Result<()> {
    let lab = start(LabConfig {
        upstream_keepalive: true,
        ephemeral_ports: Some(quiet_port_range()),
        ..sim_config(DbMode::PerRequest)
    });
    for _ in 0..6 {
        assert_eq!(
            get(lab.frontend_addr(), "/cached")?.0,
            200,
            "the fix: pooling needs no new ports"
        );
    }
    let counters = lab.counters();
    assert_eq!(counters.upstream_errors, 0);
    assert!(counters.upstream_connections_opened <= 2, "{counters:?}");
    Ok(())
}

#[test]
fn invalid_settings_are_refused_before_anything_starts() {
    let cases = [
        (LabConfig { workers: 0, ..LabConfig::default() }, "workers"),
        (LabConfig { listen_backlog: 0, ..LabConfig::default() }, "listen-backlog"),
        (LabConfig { frontend_port: 9, app_port: 9, ..LabConfig::default() }, "app-port"),
    ];
    for (config, expected_key) in cases {
        match Lab::start(config) {
            Err(LabError::InvalidConfig { key, .. }) => assert_eq!(key, expected_key),
            other => panic!("expected an invalid {expected_key}, got {other:?}"),
        }
    }
}

#[test]
fn a_taken_port_is_a_listen_error_naming_the_tier() -> std::io::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    match Lab::start(LabConfig { frontend_port: port, ..sim_config(DbMode::PerRequest) }) {
        Err(LabError::Listen { tier, port: reported, .. }) => {
            assert_eq!((tier, reported), ("frontend", port))
        }
        other => panic!("expected a listen error, got {other:?}"),
    }
    Ok(())
}

/// Processes whose command line mentions `needle` (our PostgreSQL's data directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

fn postgres_available() -> bool {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false)
    };
    on_path("initdb") && on_path("pg_ctl")
}

#[test]
fn real_postgres_in_both_modes_and_nothing_left_after_stop() -> std::io::Result<()> {
    if !postgres_available() {
        eprintln!("skipped: initdb/pg_ctl are not on PATH (install PostgreSQL to run this test)");
        return Ok(());
    }
    // Per-request through the setup-delay relay, persistent straight to the server.
    let cases = [
        (DbMode::PerRequest, 5u64, Duration::from_millis(5)),
        (DbMode::Persistent, 6u64, Duration::ZERO),
    ];
    for (mode, requests, pg_setup_delay) in cases {
        let mut lab = start(LabConfig {
            db: DbChoice::Real,
            db_mode: mode,
            workers: 2,
            pg_setup_delay,
            ..LabConfig::default()
        });
        assert_eq!(lab.db_kind(), DbKind::Postgres);
        let relayed = lab.postgres_addr() != Some(lab.db_addr());
        assert_eq!(relayed, !pg_setup_delay.is_zero(), "a relay exactly when a delay is set");
        let dir = lab.postgres_dir().map(Path::to_path_buf).unwrap_or_default();
        assert!(dir.join("data").join("PG_VERSION").is_file(), "cluster in {}", dir.display());
        let needle = dir.join("data").display().to_string();
        assert!(!processes_mentioning(&needle).is_empty(), "postgres runs from {needle}");
        for _ in 0..requests {
            let (status, body) = get(lab.frontend_addr(), "/db")?;
            assert_eq!(status, 200, "{body}");
            assert!(body.starts_with("ROW ") && body.contains(" item-"), "{body}");
        }
        let counters = lab.counters();
        assert_eq!(counters.db_queries, requests);
        assert_eq!(counters.sim_db_connections_accepted, 0);
        match mode {
            DbMode::PerRequest => assert_eq!(counters.db_connections_opened, requests),
            DbMode::Persistent => {
                assert!((1..=2).contains(&counters.db_connections_opened), "{counters:?}");
                assert_eq!(counters.db_health_checks, requests - counters.db_connections_opened);
            }
        }
        let db_addr = lab.db_addr();
        if let Err(err) = lab.stop() {
            panic!("stop failed: {err}");
        }
        assert!(!dir.exists(), "{} was not deleted", dir.display());
        assert_eq!(
            processes_mentioning(&needle),
            Vec::<String>::new(),
            "leftover postgres processes"
        );
        assert_refused(db_addr);
    }
    Ok(())
}

#[test]
fn dropping_the_handle_tears_down_postgres() -> std::io::Result<()> {
    if !postgres_available() {
        eprintln!("skipped: initdb/pg_ctl are not on PATH (install PostgreSQL to run this test)");
        return Ok(());
    }
    let lab = start(LabConfig { db: DbChoice::Real, workers: 1, ..LabConfig::default() });
    let dir = lab.postgres_dir().map(Path::to_path_buf).unwrap_or_default();
    assert_eq!(get(lab.frontend_addr(), "/db")?.0, 200);
    drop(lab);
    assert!(!dir.exists(), "{} was not deleted", dir.display());
    assert_eq!(processes_mentioning(&dir.join("data").display().to_string()), Vec::<String>::new());
    Ok(())
}

/// TCP states (/proc/net/tcp's hex codes) of the sockets connected to remote port `port`.
fn tcp_states_towards(port: u16) -> Vec<String> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return Vec::new() };
    let port_of = |address: &str| {
        address.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok()).unwrap_or(0)
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (remote, state) = (fields.get(2)?, fields.get(3)?);
            (port_of(remote) == port).then(|| state.to_string())
        })
        .collect()
}

#[test]
fn slow_close_keeps_the_frontend_side_open_after_the_app_closed() -> std::io::Result<()> {
    // Long enough that the check below always runs inside it; stop() cuts the wait short.
    let mut lab =
        start(LabConfig { slow_close: Duration::from_secs(30), ..sim_config(DbMode::PerRequest) });
    assert_eq!(get(lab.frontend_addr(), "/cached")?.0, 200);
    // The frontend read the app's FIN before answering, and holds its own: CLOSE_WAIT (08).
    assert_eq!(tcp_states_towards(lab.app_addr().port()), vec!["08".to_string()]);
    assert_eq!(lab.counters().upstream_connections_opened, 1);
    assert!(lab.stop().is_ok());
    assert_eq!(tcp_states_towards(lab.app_addr().port()), Vec::<String>::new(), "closed at stop");
    Ok(())
}
