//! Live snapshots on loopback: the test opens its own connections and must find exactly them, in
//! the right states, owned by this process, through netlink and through /proc/net/tcp; and its
//! per-state counts must agree with `ss -tan` filtered to the same port.
//!
//! Only loopback traffic, a bounded number of connections, all closed when the test ends.

#![allow(clippy::print_stderr)] // a skipped check says why

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use peel_snap::aggregate::summarize;
use peel_snap::records::{SnapshotRecords, SocketRecord};
use peel_snap::{take, ProcessMatch, Sampler, SnapOptions, SocketSource};

const CONNECTIONS: usize = 16;

fn snapshot(source: SocketSource) -> SnapshotRecords {
    take(SnapOptions { socket_source: source, ..SnapOptions::default() }).expect("live snapshot")
}

fn own_comm() -> String {
    std::fs::read_to_string("/proc/self/comm").expect("own comm").trim_end().to_owned()
}

/// A listener with `CONNECTIONS` accepted connections.
struct Pairs {
    listener: TcpListener,
    clients: Vec<TcpStream>,
    servers: Vec<TcpStream>,
}

fn open_pairs(ip: IpAddr) -> Pairs {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind loopback");
    let addr = listener.local_addr().expect("listener address");
    let clients: Vec<TcpStream> =
        (0..CONNECTIONS).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let servers: Vec<TcpStream> =
        (0..CONNECTIONS).map(|_| listener.accept().expect("accept").0).collect();
    Pairs { listener, clients, servers }
}

fn port(pairs: &Pairs) -> u16 {
    pairs.listener.local_addr().expect("listener address").port()
}

/// Sockets of the test's loopback address and port: the listener and the server side have the port
/// locally, the client side remotely. (The address matters: another test's client may have this
/// port number as its ephemeral port on the other loopback family.)
fn of_port(snap: &SnapshotRecords, ip: IpAddr, port: u16) -> Vec<&SocketRecord> {
    let ip = ip.to_string();
    snap.sockets
        .iter()
        .filter(|s| s.local_ip == ip && (s.local_port == port || s.remote_port == port))
        .collect()
}

fn check_finds_exactly_its_connections(ip: IpAddr, source: SocketSource) {
    let pairs = open_pairs(ip);
    let port = port(&pairs);
    let snap = snapshot(source);
    let expected_source = if source == SocketSource::Proc { "proc" } else { "netlink" };
    assert_eq!(snap.snapshot.socket_source, expected_source);
    let mine = of_port(&snap, ip, port);
    assert_eq!(mine.len(), 1 + 2 * CONNECTIONS, "{mine:#?}");

    let pid = std::process::id();
    let comm = own_comm();
    let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    for socket in &mine {
        assert_eq!(socket.pid, Some(pid), "{socket:?}");
        assert_eq!(socket.process.as_deref(), Some(comm.as_str()));
        assert_eq!(socket.family, family);
        assert_eq!(socket.local_ip, ip.to_string());
    }
    let listen: Vec<_> = mine.iter().filter(|s| s.state == "LISTEN").collect();
    assert_eq!(listen.len(), 1);
    assert_eq!(listen[0].accept_queue, Some(0));

    let client_ports: Vec<u16> = {
        let mut ports: Vec<u16> =
            pairs.clients.iter().map(|c| c.local_addr().expect("client address").port()).collect();
        ports.sort_unstable();
        ports
    };
    let mut found_client_ports: Vec<u16> = mine
        .iter()
        .filter(|s| s.remote_port == port && s.state == "ESTABLISHED")
        .map(|s| s.local_port)
        .collect();
    found_client_ports.sort_unstable();
    assert_eq!(found_client_ports, client_ports);
    let mut found_server_peers: Vec<u16> = mine
        .iter()
        .filter(|s| s.local_port == port && s.state == "ESTABLISHED")
        .map(|s| s.remote_port)
        .collect();
    found_server_peers.sort_unstable();
    assert_eq!(found_server_peers, client_ports);

    if source != SocketSource::Proc {
        assert!(listen[0].listen_backlog.is_some_and(|backlog| backlog > 0));
        let established: Vec<_> = mine.iter().filter(|s| s.state == "ESTABLISHED").collect();
        assert!(established
            .iter()
            .all(|s| s.rtt_us.is_some() && s.cwnd_segments.is_some_and(|c| c > 0)));
    }
    drop(pairs.servers);
}

#[test]
fn netlink_finds_exactly_its_ipv4_connections() {
    check_finds_exactly_its_connections(IpAddr::V4(Ipv4Addr::LOCALHOST), SocketSource::Netlink);
}

#[test]
fn netlink_finds_exactly_its_ipv6_connections() {
    if TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    check_finds_exactly_its_connections(IpAddr::V6(Ipv6Addr::LOCALHOST), SocketSource::Netlink);
}

#[test]
fn proc_fallback_finds_exactly_its_ipv4_connections() {
    check_finds_exactly_its_connections(IpAddr::V4(Ipv4Addr::LOCALHOST), SocketSource::Proc);
}

#[test]
fn proc_fallback_finds_exactly_its_ipv6_connections() {
    if TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    check_finds_exactly_its_connections(IpAddr::V6(Ipv6Addr::LOCALHOST), SocketSource::Proc);
}

/// Per-state counts of this port's sockets, `ss` state names.
fn our_counts(snap: &SnapshotRecords, port: u16) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for socket in of_port(snap, IpAddr::V4(Ipv4Addr::LOCALHOST), port) {
        let name = match socket.state.as_str() {
            "ESTABLISHED" => "ESTAB".to_owned(),
            "FIN_WAIT1" => "FIN-WAIT-1".to_owned(),
            "FIN_WAIT2" => "FIN-WAIT-2".to_owned(),
            other => other.replace('_', "-"),
        };
        *counts.entry(name).or_default() += 1;
    }
    counts
}

/// `ss -Htan 'src 127.0.0.1 and ( sport = :P or dport = :P )'`, counted by its first column (the
/// state).
fn ss_counts(port: u16) -> Option<BTreeMap<String, usize>> {
    let filter = format!("src 127.0.0.1 and ( sport = :{port} or dport = :{port} )");
    let output = std::process::Command::new("ss").args(["-Htan", &filter]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(state) = line.split_whitespace().next() {
            *counts.entry(state.to_owned()).or_default() += 1;
        }
    }
    Some(counts)
}

/// Clients close, servers do not: the servers' side piles up in CLOSE_WAIT, the clients' side waits
/// in FIN_WAIT2. The FIN crosses loopback asynchronously, so the test waits (bounded) for the
/// states to settle before comparing with `ss`; it asserts outcomes, not timings.
#[test]
fn close_wait_pile_up_matches_ss() {
    let mut pairs = open_pairs(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = port(&pairs);
    pairs.clients.clear();
    let expected: BTreeMap<String, usize> = [
        ("CLOSE-WAIT".to_owned(), CONNECTIONS),
        ("FIN-WAIT-2".to_owned(), CONNECTIONS),
        ("LISTEN".to_owned(), 1),
    ]
    .into();
    // Both sides must settle: the server side reaches CLOSE_WAIT when the FIN arrives, the client
    // side leaves FIN_WAIT1 only when the ACK of its FIN is processed, a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (snap, ours) = loop {
        let snap = snapshot(SocketSource::Netlink);
        let ours = our_counts(&snap, port);
        if ours == expected || Instant::now() > deadline {
            break (snap, ours);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ours, expected);
    let summary = summarize(&snap);
    let pile = summary
        .by_local_port
        .iter()
        .find(|c| c.local_port == port && c.state == "CLOSE_WAIT")
        .expect("pile-up");
    assert_eq!(pile.count as usize, CONNECTIONS);

    let Some(ss) = ss_counts(port) else {
        eprintln!("skipped the ss comparison: `ss` is not available");
        return;
    };
    assert_eq!(ss, ours, "ss -tan and peel disagree for port {port}");
    drop(pairs.servers);
}

/// A listener with backlog 2 and three connections nobody accepts: the kernel queues backlog + 1.
#[test]
fn full_accept_queue_against_its_backlog() {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    let listener = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
            socket.listen(2)?.into_std()
        })
        .expect("listener with backlog 2");
    let addr = listener.local_addr().expect("listener address");
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect"))
        .collect();

    let snap = snapshot(SocketSource::Netlink);
    let listen = snap
        .sockets
        .iter()
        .find(|s| s.state == "LISTEN" && s.local_port == addr.port())
        .expect("listener");
    assert_eq!((listen.accept_queue, listen.listen_backlog), (Some(3), Some(2)));
    let summary = summarize(&snap);
    let near: Vec<_> =
        summary.accept_queues_near_backlog.iter().filter(|q| q.local_port == addr.port()).collect();
    assert_eq!(near.len(), 1);
    assert_eq!(near[0].pid, Some(std::process::id()));
    drop(clients);
}

#[test]
fn a_series_has_rates_cpu_and_the_matched_process() {
    let pairs = open_pairs(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let pid = std::process::id();
    let mut sampler = Sampler::new(SnapOptions {
        processes: vec![ProcessMatch::Pid(pid)],
        ..SnapOptions::default()
    });
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut series = Vec::new();
    let taken = sampler
        .run(Duration::from_millis(300), Duration::from_millis(300), &stop, |snap| {
            series.push(snap);
            Ok::<(), peel_snap::SnapError>(())
        })
        .expect("series");
    assert_eq!(taken, 2);
    assert_eq!(series.iter().map(|s| s.snapshot.snap_id).collect::<Vec<_>>(), [0, 1]);
    let active_opens = |snap: &SnapshotRecords| {
        snap.tcp_counters
            .iter()
            .find(|c| c.name == "Tcp.ActiveOpens")
            .expect("Tcp.ActiveOpens")
            .rate_per_s
    };
    assert_eq!(active_opens(&series[0]), None);
    assert!(active_opens(&series[1]).is_some_and(|rate| rate >= 0.0));
    let curr_estab =
        series[1].tcp_counters.iter().find(|c| c.name == "Tcp.CurrEstab").expect("Tcp.CurrEstab");
    assert_eq!(curr_estab.rate_per_s, None, "gauges get no rate");

    for snap in &series {
        let system = snap.system.as_ref().expect("live system record");
        assert!(
            system.cpu_usage_pct.is_some()
                && system.mem_total_bytes > 0
                && system.cpu_count as usize == snap.cpus.len()
        );
        let me: Vec<_> = snap.processes.iter().collect();
        assert_eq!(me.len(), 1, "{me:?}");
        assert_eq!(me[0].pid, pid);
        // The listener and both ends of every connection are this process's sockets.
        assert!(me[0].sockets.is_some_and(|n| n as usize > 2 * CONNECTIONS), "{:?}", me[0]);
        assert!(me[0].open_fds.is_some_and(|n| n as usize > 2 * CONNECTIONS));
        assert!(me[0].threads >= 1 && me[0].rss_bytes > 0);
    }
    drop(pairs);
}

/// A child process holding one socket as its stdin; killed when dropped.
struct Holder(std::process::Child);

impl Holder {
    fn spawn(socket: TcpStream) -> Holder {
        let stdin = std::process::Stdio::from(std::os::fd::OwnedFd::from(socket));
        let child = std::process::Command::new("sleep")
            .arg("60")
            .stdin(stdin)
            .spawn()
            .expect("spawn sleep");
        Holder(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Owner of every socket of the test's port that has an inode, by (local port, remote port).
/// The sockets of `port` that have an owner. A socket closed just before a snapshot can still show
/// its inode without an owner in one dump and be an orphan (inode 0) in the next, so comparisons of
/// two dumps taken moments apart look at owned sockets only.
fn owned(snap: &SnapshotRecords, port: u16) -> BTreeMap<(u16, u16), Option<u32>> {
    owners_of_port(snap, port).into_iter().filter(|(_, owner)| owner.is_some()).collect()
}

fn owners_of_port(snap: &SnapshotRecords, port: u16) -> BTreeMap<(u16, u16), Option<u32>> {
    of_port(snap, IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        .into_iter()
        .filter(|s| s.inode != 0)
        .map(|s| ((s.local_port, s.remote_port), s.pid))
        .collect()
}

fn owner_of(snap: &SnapshotRecords, local_port: u16, remote_port: u16) -> Option<u32> {
    let socket = snap
        .sockets
        .iter()
        .find(|s| {
            s.local_ip == "127.0.0.1" && s.local_port == local_port && s.remote_port == remote_port
        })
        .expect("socket in the snapshot");
    socket.pid
}

/// A series keeps the descriptor walk of earlier snapshots and reads only what may have changed;
/// its owners must stay those of a full walk while sockets open, close, reuse descriptor numbers,
/// move to another process and are shared with one, and while that process exits.
#[test]
fn a_series_follows_sockets_that_open_close_and_move() {
    let pid = std::process::id();
    let mut pairs = open_pairs(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let port = port(&pairs);
    let mut sampler = Sampler::new(SnapOptions {
        socket_source: SocketSource::Netlink,
        ..SnapOptions::default()
    });
    let first = sampler.snapshot().expect("first snapshot");
    let owners = owners_of_port(&first, port);
    assert_eq!(owners.len(), 1 + 2 * CONNECTIONS);
    assert!(owners.values().all(|owner| *owner == Some(pid)), "{owners:?}");

    // Between two samples: four clients close, one client moves to a child process, one is shared
    // with another child, and new connections take the freed descriptor numbers.
    let port_of = |stream: &TcpStream| stream.local_addr().expect("address").port();
    let moved = pairs.clients.remove(4);
    let moved_port = port_of(&moved);
    let shared_port = port_of(&pairs.clients[4]);
    let alone = Holder::spawn(moved);
    let with_us = Holder::spawn(pairs.clients[4].try_clone().expect("clone"));
    let closed: Vec<u16> = pairs.clients.drain(..4).map(|c| port_of(&c)).collect();
    let addr = pairs.listener.local_addr().expect("listener address");
    for _ in 0..4 {
        pairs.clients.push(TcpStream::connect(addr).expect("connect"));
        pairs.servers.push(pairs.listener.accept().expect("accept").0);
    }
    let new_ports: Vec<u16> =
        pairs.clients[pairs.clients.len() - 4..].iter().map(port_of).collect();

    let second = sampler.snapshot().expect("second snapshot");
    let full = take(SnapOptions { socket_source: SocketSource::Netlink, ..SnapOptions::default() })
        .expect("full walk");
    assert_eq!(owned(&second, port), owned(&full, port));
    assert_eq!(owner_of(&second, moved_port, port), Some(alone.pid()));
    assert_eq!(owner_of(&second, shared_port, port), Some(pid.min(with_us.pid())));
    for new_port in &new_ports {
        assert_eq!(owner_of(&second, *new_port, port), Some(pid));
        assert_eq!(owner_of(&second, port, *new_port), Some(pid));
    }
    for closed_port in &closed {
        // The client end is closed (orphaned, no inode); the server end waits in CLOSE_WAIT.
        assert_eq!(owner_of(&second, port, *closed_port), Some(pid));
    }

    // Both children exit: the moved socket closes with its only holder, the shared one is ours.
    drop(alone);
    drop(with_us);
    let third = sampler.snapshot().expect("third snapshot");
    let full = take(SnapOptions { socket_source: SocketSource::Netlink, ..SnapOptions::default() })
        .expect("full walk");
    assert_eq!(owned(&third, port), owned(&full, port));
    assert_eq!(owner_of(&third, shared_port, port), Some(pid));
    assert!(owners_of_port(&third, port).values().all(|owner| *owner == Some(pid)));
    assert!(!owners_of_port(&third, port).contains_key(&(moved_port, port)));
    drop(pairs);
}
