//! A small but complete run, as producers would hand it to peel-store: the outage story's
//! connection (to the nanosecond), a PostgreSQL connection, an IPv6 one, snapshots, load requests,
//! steps, commands and a finding. Shared by the integration tests of this crate.

#![allow(dead_code)]

use std::net::IpAddr;

use peel_load::records::{ErrorKind, LoadSummary, RequestRecord};
use peel_snap::records::{
    CpuRecord, ProcessRecord, SnapshotRecord, SnapshotRecords, SocketCountRecord, SocketRecord,
    SysctlRecord, SystemRecord, TcpCounterRecord,
};
use peel_store::{CommandRecord, FindingRecord, RunRecord, Scope, StepRecord, Store};
use peel_wire::records::{
    CaptureWarning, ConnState, ConnectionRecord, ExchangeRecord, FinishedConnection, Phase,
    Protocol, Side, WarningReason,
};

/// 2026-11-25T03:00:00Z in epoch nanoseconds.
pub const T0_NS: i64 = 1_795_575_600_000_000_000;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test addresses are valid")
}

/// The story's Next.js -> gunicorn connection: handshake 13.711 us, request sent 107.958716 ms
/// after the handshake, response 208.214137 ms, close 826.461507 ms.
pub fn story_connection(conn_id: u64, client_ip: &str, server_ip: &str) -> FinishedConnection {
    let syn = T0_NS + 7_855_262_401;
    let handshake_end = T0_NS + 7_855_276_112;
    let request_start = handshake_end + 1_000;
    let request_end = T0_NS + 7_963_234_828;
    let response_start = request_end + 100_000_000;
    let response_end = T0_NS + 8_171_448_965;
    let close_start = T0_NS + 8_171_755_075;
    let close_end = T0_NS + 8_998_216_582;
    let connection = ConnectionRecord {
        conn_id,
        client_ip: ip(client_ip),
        client_port: 40_000 + conn_id as u16,
        server_ip: ip(server_ip),
        server_port: 8000,
        vlan: None,
        interface_id: 0,
        syn_ts_ns: Some(syn),
        handshake_us: Some(13.711),
        synack_to_ack_us: Some(4.2),
        syn_retransmits: 0,
        first_request_ts_ns: Some(request_start),
        request_wait_us: Some(1.0),
        server_us: Some(100_000.0),
        response_us: Some((response_end - response_start) as f64 / 1_000.0),
        exchanges: 1,
        db_setup_us: None,
        idle_us: None,
        close_start_ts_ns: Some(close_start),
        close_us: Some(826_461.507),
        closed_by: Some(Side::Server),
        reset_by: None,
        reset_phase: None,
        half_closed: false,
        retransmits: 0,
        out_of_order: 0,
        dup_acks: 0,
        zero_windows: 0,
        window_full: 0,
        bytes_c2s: 312,
        bytes_s2c: 4_096,
        first_ts_ns: syn,
        last_ts_ns: close_end,
        lifetime_us: (close_end - syn) as f64 / 1_000.0,
        packets: 11,
        state: ConnState::Complete,
        protocol: Protocol::Http,
        http_requests: 1,
        http_responses: 1,
        expired: false,
    };
    let exchange = ExchangeRecord {
        conn_id,
        seq: 0,
        request_start_ts_ns: request_start,
        request_end_ts_ns: request_end,
        response_start_ts_ns: Some(response_start),
        response_end_ts_ns: Some(response_end),
        server_us: Some(100_000.0),
        response_us: Some((response_end - response_start) as f64 / 1_000.0),
        method: Some("GET".to_string()),
        path: Some("/db".to_string()),
        status: Some(200),
        request_bytes: 312,
        response_bytes: 4_096,
    };
    FinishedConnection { connection, exchanges: vec![exchange] }
}

/// A reset PostgreSQL connection without exchanges, and an IPv6 one.
pub fn other_connections() -> Vec<FinishedConnection> {
    let mut postgres = story_connection(2, "10.1.0.5", "10.1.0.9");
    let record = &mut postgres.connection;
    record.server_port = 5432;
    record.protocol = Protocol::Postgresql;
    record.db_setup_us = Some(3_250.5);
    record.state = ConnState::Reset;
    record.reset_by = Some(Side::Client);
    record.reset_phase = Some(Phase::Idle);
    record.closed_by = None;
    record.close_us = None;
    record.exchanges = 0;
    postgres.exchanges.clear();
    let mut v6 = story_connection(3, "2001:db8::1", "2001:db8::2");
    v6.connection.vlan = Some(42);
    v6.connection.syn_ts_ns = None;
    v6.connection.handshake_us = None;
    v6.connection.state = ConnState::Partial;
    vec![postgres, v6]
}

pub fn warnings() -> Vec<CaptureWarning> {
    vec![CaptureWarning {
        file: "capture/lo-0.pcap".to_string(),
        packet_index: Some(17),
        reason: WarningReason::TruncatedFile,
        count: 1,
        byte_offset: Some(4_242),
        detail: Some("record header needs 16 bytes, 7 left".to_string()),
    }]
}

pub fn snapshot(snap_id: u64, ts_ns: i64, time_wait: usize, overflows: i64) -> SnapshotRecords {
    let mut sockets = vec![SocketRecord {
        snap_id,
        family: "ipv4".to_string(),
        state: "LISTEN".to_string(),
        local_ip: "127.0.0.1".to_string(),
        local_port: 8000,
        remote_ip: "0.0.0.0".to_string(),
        remote_port: 0,
        send_q_bytes: 0,
        recv_q_bytes: 0,
        timer: "off".to_string(),
        timer_expires_ms: 0,
        retransmits: 0,
        uid: 0,
        inode: 1234,
        pid: Some(77),
        process: Some("gunicorn".to_string()),
        listen_backlog: Some(128),
        accept_queue: Some(128),
        rtt_us: None,
        rttvar_us: None,
        cwnd_segments: None,
        retrans_segments: None,
        total_retrans_segments: None,
        lost_segments: None,
        unacked_segments: None,
        bytes_acked: None,
        bytes_received: None,
        last_send_ms: None,
        last_recv_ms: None,
    }];
    for index in 0..time_wait {
        let mut socket = sockets[0].clone();
        socket.state = "TIME_WAIT".to_string();
        socket.remote_ip = "127.0.0.1".to_string();
        socket.remote_port = 50_000 + index as u16;
        socket.listen_backlog = None;
        socket.accept_queue = None;
        socket.rtt_us = Some(35);
        sockets.push(socket);
    }
    SnapshotRecords {
        snapshot: SnapshotRecord {
            snap_id,
            ts_ns,
            host: "host-a".to_string(),
            proc_root: "/proc".to_string(),
            socket_source: "netlink".to_string(),
            duration_us: 1_500,
        },
        system: Some(SystemRecord {
            snap_id,
            load1: 0.5,
            load5: 0.4,
            load15: 0.3,
            cpu_count: 2,
            cpu_usage_pct: Some(21.0),
            cpu_max_pct: Some(35.5 + snap_id as f64),
            mem_total_bytes: 8 << 30,
            mem_available_bytes: 6 << 30,
            mem_used_bytes: 2 << 30,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
        }),
        cpus: vec![CpuRecord { snap_id, cpu: 0, usage_pct: Some(35.5) }],
        sysctls: vec![SysctlRecord {
            snap_id,
            key: "net.core.somaxconn".to_string(),
            value: "4096".to_string(),
        }],
        sockets,
        socket_counts: vec![SocketCountRecord {
            snap_id,
            protocol: "unix_stream".to_string(),
            state: "LISTEN".to_string(),
            count: 3,
        }],
        tcp_counters: vec![TcpCounterRecord {
            snap_id,
            name: "TcpExt.ListenOverflows".to_string(),
            value: overflows,
            rate_per_s: (snap_id > 0).then_some(5.0),
        }],
        processes: vec![ProcessRecord {
            snap_id,
            pid: 77,
            name: "gunicorn".to_string(),
            cmdline: "gunicorn app:wsgi -w 2".to_string(),
            cpu_pct: Some(12.5),
            rss_bytes: 50 << 20,
            threads: 1,
            open_fds: Some(12),
            fd_limit: Some(1024),
            sockets: Some(4),
            children: 2,
        }],
        warnings: Vec::new(),
    }
}

pub fn requests() -> Vec<RequestRecord> {
    (0..4)
        .map(|index| RequestRecord {
            request_id: index,
            url_class: if index % 2 == 0 { "/db" } else { "/cached" }.to_string(),
            method: "GET".to_string(),
            url: "http://127.0.0.1:8000/db".to_string(),
            scheduled_ts_ns: (T0_NS + index as i64 * 1_000_000) as u64,
            start_ts_ns: (T0_NS + index as i64 * 1_000_000 + 500) as u64,
            first_byte_ts_ns: (index != 3).then_some((T0_NS + 9_000_000) as u64),
            end_ts_ns: (T0_NS + 10_000_000) as u64,
            latency_us: 10_000 - index * 1_000,
            status: (index != 3).then_some(200),
            response_body_bytes: 2_048,
            error_kind: (index == 3).then_some(ErrorKind::Timeout),
            connection_id: Some(index),
            local_port: Some(40_000 + index as u16),
            reused: false,
        })
        .collect()
}

pub fn summary() -> LoadSummary {
    LoadSummary {
        url_class: "total".to_string(),
        requests: 4,
        responses: 3,
        requests_per_s: 400.0,
        status_1xx: 0,
        status_2xx: 3,
        status_3xx: 0,
        status_4xx: 0,
        status_5xx: 0,
        errors: 1,
        errors_connect_refused: 0,
        errors_timeout: 1,
        errors_reset: 0,
        errors_other: 0,
        connections_opened: 4,
        response_body_bytes: 6_144,
        latency_min_us: 8_000,
        latency_mean_us: 9_000.0,
        latency_p50_us: 9_000,
        latency_p90_us: 10_000,
        latency_p99_us: 10_000,
        latency_p999_us: 10_000,
        latency_max_us: 10_000,
    }
}

pub fn run_record() -> RunRecord {
    RunRecord {
        playbook: "lab-db-churn".to_string(),
        playbook_path: Some("playbooks/lab-db-churn.toml".to_string()),
        playbook_sha256: Some("ab".repeat(32)),
        variables_json: Some(r#"{"workers":"2"}"#.to_string()),
        started_ts_ns: T0_NS,
        ended_ts_ns: None,
        status: "running".to_string(),
        tool_version: "0.1.0 (test)".to_string(),
        kernel: Some("6.1.0-test".to_string()),
        run_dir: Some("runs/r1".to_string()),
    }
}

pub fn step(step_id: i64, stage: &str) -> StepRecord {
    StepRecord {
        step_id,
        stage: stage.to_string(),
        name: format!("step {step_id}"),
        kind: "exec".to_string(),
        started_ts_ns: T0_NS + step_id * 1_000_000_000,
        ended_ts_ns: None,
        duration_us: None,
        status: "running".to_string(),
        message: None,
        outputs_json: None,
    }
}

pub fn command(command_id: i64, exit_code: Option<i32>) -> CommandRecord {
    CommandRecord {
        command_id,
        step_id: Some(0),
        purpose: "step".to_string(),
        argv_json: r#"["systemctl","restart","app"]"#.to_string(),
        cwd: None,
        started_ts_ns: T0_NS,
        ended_ts_ns: Some(T0_NS + 2_500_000),
        duration_us: Some(2_500.0),
        exit_code,
        signal: None,
        timed_out: false,
        stdout_path: Some("steps/0.stdout".to_string()),
        stderr_path: None,
    }
}

pub fn finding() -> FindingRecord {
    FindingRecord {
        finding_id: 0,
        rule: "slow-close".to_string(),
        severity: "critical".to_string(),
        score: 0.9,
        stage: Some("reproduce".to_string()),
        endpoint: Some("10.0.0.2:8000".to_string()),
        title: "TCP close takes 826 ms".to_string(),
        detail: "p50 close 826461.507 us".to_string(),
        evidence_sql: Some("SELECT * FROM v_endpoint_phases WHERE phase = 'close'".to_string()),
    }
}

/// Ingests the whole sample run for `host` into `store` (stages `reproduce` and `verify-fix`).
pub fn ingest_sample(store: &Store, run_id: &str, host: &str) {
    let scope = Scope::new(run_id, host);
    let reproduce = scope.with_stage("reproduce");
    let fixed = scope.with_stage("verify-fix");
    store.ingest(&scope, [&run_record()]).unwrap();
    store.ingest(&scope, &[step(0, "reproduce"), step(1, "verify-fix")]).unwrap();
    store.ingest(&scope, &[command(0, Some(0)), command(1, Some(3))]).unwrap();
    store.ingest(&scope, [&finding()]).unwrap();

    let mut sink = store.connection_sink(&reproduce).unwrap();
    sink.push(&story_connection(1, "10.0.0.1", "10.0.0.2")).unwrap();
    for connection in other_connections() {
        sink.push(&connection).unwrap();
    }
    let counts = sink.finish().unwrap();
    assert_eq!((counts.connections, counts.exchanges), (3, 2));
    let mut fast = story_connection(1, "10.0.0.1", "10.0.0.2");
    fast.connection.close_us = Some(210.0);
    let mut sink = store.connection_sink(&fixed).unwrap();
    sink.push(&fast).unwrap();
    sink.finish().unwrap();
    store.ingest(&reproduce, &warnings()).unwrap();

    store.ingest_snapshot(&reproduce, &snapshot(0, T0_NS, 2, 100)).unwrap();
    store.ingest_snapshot(&reproduce, &snapshot(1, T0_NS + 1_000_000_000, 5, 105)).unwrap();
    store.ingest(&reproduce, &requests()).unwrap();
    store.ingest(&reproduce, [&summary()]).unwrap();
}
