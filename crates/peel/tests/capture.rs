//! `peel capture` end to end: capture on `lo` while the test drives bounded HTTP traffic to its own
//! loopback server, stop with SIGTERM, then check the files connection by connection; also the exit
//! codes for a bad filter and a missing privilege, and ring rotation. Tests that capture need
//! CAP_NET_RAW and CAP_NET_ADMIN (root): without them they print why and skip.

#![allow(clippy::print_stderr)] // skip reasons are printed on purpose

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use peel_wire::records::FinishedConnection;
use peel_wire::summary::{Summary, SummaryBuilder};

fn peel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peel"))
}

fn can_capture(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = peel_capture::effective_capabilities(&status).unwrap_or(0);
    let missing = peel_capture::missing_capabilities(cap_eff);
    if missing.is_empty() {
        return true;
    }
    eprintln!("skipping {test}: capture needs {missing:?}, which this test process lacks");
    false
}

/// An HTTP/1.1 keep-alive server on 127.0.0.1 answering every request with a 5-byte body.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(stream: TcpStream) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // Request line and headers up to the empty line; requests carry no body.
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        let response =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
        if writer.write_all(response).is_err() {
            return;
        }
    }
}

/// One keep-alive connection sending `requests` GETs; returns the client port.
fn http_client(port: u16, requests: usize) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let client_port = stream.local_addr().unwrap().port();
    let expected = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
    let mut response = vec![0u8; expected.len()];
    for n in 0..requests {
        let request = format!(
            "GET /item/{n} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: peel-test\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        stream.read_exact(&mut response).unwrap();
        assert_eq!(response, expected);
    }
    client_port
}

/// Starts `peel capture` and returns once it says it is capturing.
fn start_capture(args: &[&str]) -> Child {
    let mut child = peel()
        .arg("capture")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first_line = String::new();
    stderr.read_line(&mut first_line).unwrap();
    assert!(first_line.starts_with("capturing on "), "{first_line}");
    child
}

/// SIGTERM, then the JSON report from stdout (bounded wait: the child exits on its own).
fn stop_capture(mut child: Child) -> serde_json::Value {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}");
    serde_json::from_str(&stdout).unwrap()
}

/// Per client port: connections and their request counts to `server_port`, as peel-wire's file
/// analysis (the engine of `peel analyze`) finds them in `dir`; plus its summary.
fn connections_in(dir: &Path, server_port: u16) -> (BTreeMap<u16, (u32, u32)>, Summary) {
    let mut seen: BTreeMap<u16, (u32, u32)> = BTreeMap::new();
    let mut builder = SummaryBuilder::new();
    let end = peel_wire::analyze_paths(
        &[dir.to_path_buf()],
        peel_wire::Config::default(),
        &mut |finished: FinishedConnection| {
            builder.add(&finished);
            let c = &finished.connection;
            if c.server_port == server_port {
                let entry = seen.entry(c.client_port).or_default();
                entry.0 += 1;
                entry.1 += c.exchanges;
            }
        },
    )
    .unwrap();
    (seen, builder.finish(&end))
}

/// A summary as JSON without its warnings (they name the file or the interface they came from).
fn without_warnings(summary: &serde_json::Value) -> serde_json::Value {
    let mut summary = summary.clone();
    summary.as_object_mut().unwrap().remove("warnings");
    summary
}

#[test]
fn every_connection_opened_during_capture_is_in_the_files_with_its_requests() {
    if !can_capture("every_connection_opened_during_capture_is_in_the_files_with_its_requests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    let port = http_server();
    let filter = format!("tcp port {port}");
    let child = start_capture(&[
        "-i",
        "lo",
        "-f",
        &filter,
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
        "--summary",
    ]);

    // 12 connections with 1..=12 requests each: 78 requests, bounded.
    let mut expected = BTreeMap::new();
    for requests in 1..=12u32 {
        let client_port = http_client(port, requests as usize);
        expected.insert(client_port, (1, requests));
    }
    // Let the last packets (FINs) reach the capture, and the live analysis run past peel-wire's 2 s
    // close linger on a quiet link (its clock then moves without packets); no timing assertion.
    std::thread::sleep(Duration::from_millis(3_000));
    let report = stop_capture(child);

    assert_eq!(report["stop_reason"], "requested");
    assert_eq!(report["packets_dropped_kernel"], 0);
    let interface = &report["interfaces"][0];
    assert_eq!(interface["interface"], "lo");
    assert_eq!(interface["timestamp_precision"], "ns");
    let (found, summary) = connections_in(&out, port);
    assert_eq!(found, expected);
    assert_eq!(summary.connections, 12);
    assert_eq!(summary.endpoints[0].exchanges, 78);
    // The live analysis saw the same packets as the files, so it says the same.
    assert_eq!(interface["tap_dropped"], 0);
    assert_eq!(
        without_warnings(&report["summary"]),
        // Through text like the report, so both floats went through the same parse.
        without_warnings(&serde_json::from_str(&serde_json::to_string(&summary).unwrap()).unwrap())
    );
}

#[test]
fn bad_filter_exits_2_with_libpcaps_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = peel()
        .args(["capture", "-i", "lo", "-f", "tcp prot 80", "--out"])
        .arg(dir.path().join("cap"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first_line = stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first_line,
        "error: bad BPF filter 'tcp prot 80': can't parse filter expression: syntax error"
    );
    assert!(!dir.path().join("cap").exists(), "nothing is created for a refused capture");
}

#[test]
fn missing_interface_exits_3_and_lists_the_real_ones() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        peel().args(["capture", "-i", "nosuch0", "--out"]).arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: no interface named 'nosuch0' (available: "), "{stderr}");
    assert!(stderr.contains("lo"), "{stderr}");
}

#[test]
fn bad_duration_and_ring_are_usage_errors() {
    for args in [["--duration", "30"], ["--ring", "100"]] {
        let output = peel()
            .args(["capture", "-i", "lo", "--out", "/nonexistent/peel"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn missing_capability_exits_3_with_the_setcap_command() {
    if !can_capture("missing_capability_exits_3_with_the_setcap_command") {
        return;
    }
    // As root, removing the capabilities from the bounding and inheritable sets drops them from
    // what peel gets at exec.
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("setpriv")
        .args(["--bounding-set", "-net_raw,-net_admin", "--inh-caps", "-net_raw,-net_admin", "--"])
        .arg(env!("CARGO_BIN_EXE_peel"))
        .args(["capture", "-i", "lo", "--out"])
        .arg(dir.path())
        .output();
    let Ok(output) = output else {
        eprintln!(
            "skipping missing_capability_exits_3_with_the_setcap_command: setpriv is not installed"
        );
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr.lines().next().unwrap_or_default(),
        format!(
            "error: live capture needs CAP_NET_RAW and CAP_NET_ADMIN, which this process lacks (run as \
             root, or grant it once with: setcap cap_net_raw,cap_net_admin=eip {})",
            env!("CARGO_BIN_EXE_peel")
        )
    );
}

#[test]
fn ring_keeps_at_most_count_files() {
    if !can_capture("ring_keeps_at_most_count_files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ring");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let filter = format!("tcp port {port}");
    let child = start_capture(&[
        "-i",
        "lo",
        "-f",
        &filter,
        "--full",
        "--ring",
        "1:2",
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    // 6 MB through loopback in 64 KiB writes: about 100 full-size packets, so 1 MB files rotate.
    let sink = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut total = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let chunk = vec![7u8; 1 << 16];
    for _ in 0..96 {
        client.write_all(&chunk).unwrap();
    }
    drop(client);
    assert_eq!(sink.join().unwrap(), 96 << 16);
    std::thread::sleep(Duration::from_millis(300));
    let report = stop_capture(child);

    let interface = &report["interfaces"][0];
    let files = interface["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{report}");
    assert!(interface["files_deleted"].as_u64().unwrap() >= 3, "{report}");
    let on_disk: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(on_disk.len(), 2);
    for file in files {
        assert!(file["bytes"].as_u64().unwrap() <= 1_000_000, "{file}");
    }
}

#[test]
fn min_free_out_of_range_is_a_usage_error() {
    let out = tempfile::tempdir().unwrap();
    let output = peel()
        .args(["capture", "-i", "lo", "--duration", "1s", "--min-free", "150", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_free_space_floor_above_what_is_free_stops_before_capturing() {
    if !can_capture("a_free_space_floor_above_what_is_free_stops_before_capturing") {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let output = peel()
        .args(["capture", "-i", "lo", "--duration", "5s", "--min-free", "99.999", "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("free"), "{stderr}");
}
