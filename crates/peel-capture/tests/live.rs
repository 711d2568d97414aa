//! Live captures on `lo` with traffic the test itself sends to a loopback listener (bounded).
//! Tests that capture need CAP_NET_RAW and CAP_NET_ADMIN; without them they print why and skip.

#![allow(clippy::print_stderr)] // the skip reason is printed on purpose

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use peel_capture::{
    check_filter, effective_capabilities, missing_capabilities, Capture, CaptureConfig,
    CaptureError, RingSpec, StopReason, TimestampPrecision,
};

fn can_capture(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let missing = missing_capabilities(effective_capabilities(&status).unwrap_or(0));
    if missing.is_empty() {
        return true;
    }
    eprintln!("skipping {test}: capture needs {missing:?}, which this test process lacks");
    false
}

/// A loopback listener that echoes; returns its port.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Opens `connections` connections, each sending `messages` messages and reading the echo.
fn drive(port: u16, connections: usize, messages: usize, message_bytes: usize) {
    let payload = vec![b'x'; message_bytes];
    for _ in 0..connections {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut echo = vec![0u8; message_bytes];
        for _ in 0..messages {
            stream.write_all(&payload).unwrap();
            stream.read_exact(&mut echo).unwrap();
        }
    }
}

/// Packets in a pcap file as libpcap reads it, with their (caplen, len).
fn read_packets(path: &Path) -> Vec<(u32, u32)> {
    let mut cap = pcap::Capture::from_file_with_precision(path, pcap::Precision::Nano).unwrap();
    let mut packets = Vec::new();
    while let Ok(packet) = cap.next_packet() {
        packets.push((packet.header.caplen, packet.header.len));
    }
    packets
}

fn config(dir: &Path, port: u16) -> CaptureConfig {
    let mut config = CaptureConfig::new(vec!["lo".into()], dir);
    config.bpf_filter = Some(format!("tcp port {port}"));
    config
}

/// Waits until the capture has seen `packets` packets or 10 s passed (bounded, not a timing check).
fn wait_for_packets(handle: &peel_capture::CaptureHandle, packets: u64) {
    for _ in 0..100 {
        if handle.stats().iter().map(|s| s.packets_captured).sum::<u64>() >= packets {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn captures_exactly_the_packet_limit_and_files_are_readable() {
    if !can_capture("captures_exactly_the_packet_limit_and_files_are_readable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = echo_server();
    let mut config = config(dir.path(), port);
    config.max_packets = Some(25);
    let handle = Capture::start(config).unwrap();
    // 5 connections x (3 handshake + 10 x 4 data/ack + 4 close) packets: far more than 25.
    drive(port, 5, 10, 600);
    wait_for_packets(&handle, 25);
    let report = handle.stop();
    assert_eq!(report.stop_reason, StopReason::PacketLimit(25));
    assert_eq!(report.packets_captured(), 25);
    let interface = &report.interfaces[0];
    assert_eq!(interface.precision, Some(TimestampPrecision::Nanos));
    assert_eq!(interface.linktype, Some(1), "lo is Ethernet-framed on Linux");
    assert_eq!(interface.files.len(), 1);
    let packets = read_packets(&interface.files[0].path);
    assert_eq!(packets.len(), 25);
    // The default snaplen cuts the 600-byte messages: caplen 256, len the real length.
    assert!(packets.iter().any(|&(caplen, len)| caplen == 256 && len > 600), "{packets:?}");
    assert_eq!(
        std::fs::metadata(&interface.files[0].path).unwrap().len(),
        interface.files[0].bytes
    );
}

#[test]
fn ring_rotation_keeps_at_most_count_files() {
    if !can_capture("ring_rotation_keeps_at_most_count_files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = echo_server();
    let mut config = config(dir.path(), port);
    // Each file holds its 24-byte header and a few 16 + 256 byte records.
    config.ring = Some(RingSpec { file_size_bytes: 2_000, file_count: 3 });
    let handle = Capture::start(config).unwrap();
    drive(port, 4, 20, 600);
    wait_for_packets(&handle, 4 * 20 * 2);
    let report = handle.stop();
    assert_eq!(report.stop_reason, StopReason::Requested);
    let interface = &report.interfaces[0];
    assert_eq!(interface.files.len(), 3);
    assert!(interface.files_deleted > 0, "{interface:?}");
    let on_disk = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(on_disk, 3);
    for file in &interface.files {
        assert!(file.bytes <= 2_000, "{file:?}");
        assert_eq!(read_packets(&file.path).len() as u64, file.packets);
    }
    assert!(
        interface.stats.bytes_written > interface.files.iter().map(|f| f.bytes).sum::<u64>(),
        "bytes written count deleted files too"
    );
}

#[test]
fn duration_stops_the_capture_and_the_tap_sees_every_packet() {
    if !can_capture("duration_stops_the_capture_and_the_tap_sees_every_packet") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = echo_server();
    let mut config = config(dir.path(), port);
    config.duration = Some(Duration::from_millis(1500));
    config.tap_packets = true;
    let mut handle = Capture::start(config).unwrap();
    let packets = handle.take_packets().unwrap();
    assert!(handle.take_packets().is_none());
    drive(port, 2, 3, 100);
    // The supervisor ends the capture by itself; wait for it (bounded: 10 s).
    for _ in 0..100 {
        if handle.stop_reason().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(handle.stop_reason(), Some(StopReason::Duration(Duration::from_millis(1500))));
    let report = handle.stop();
    let tapped: Vec<_> = packets.try_iter().collect();
    assert_eq!(tapped.len() as u64, report.packets_captured());
    assert!(report.packets_captured() >= 2 * (3 + 3 * 2), "{report:?}");
    assert!(tapped.iter().all(|p| p.linktype == 1 && p.interface_index == 0));
    assert!(tapped.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
}

#[test]
fn bad_filter_is_refused_with_libpcaps_message() {
    let err = check_filter("tcp port 99999").unwrap_err();
    assert!(err.is_usage());
    match &err {
        CaptureError::BadFilter { filter, message, interface: None } => {
            assert_eq!(filter, "tcp port 99999");
            assert_eq!(message, "illegal port number 99999 > 65535");
        }
        other => panic!("{other:?}"),
    }
    assert!(check_filter("tcp port 8080 and host 127.0.0.1").is_ok());

    // Capture::start refuses it before opening anything, with or without privilege.
    let dir = tempfile::tempdir().unwrap();
    let mut config = CaptureConfig::new(vec!["lo".into()], dir.path().join("never"));
    config.bpf_filter = Some("tcp prot 80".into());
    match Capture::start(config) {
        Err(CaptureError::BadFilter { message, .. }) => {
            assert!(message.contains("syntax"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("never").exists());
}

#[test]
fn unknown_interface_lists_the_real_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = CaptureConfig::new(vec!["nosuch0".into()], dir.path());
    match Capture::start(config) {
        Err(CaptureError::UnknownInterface { name, available }) => {
            assert_eq!(name, "nosuch0");
            assert!(available.split(", ").any(|n| n == "lo"), "{available}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_to_start_under_the_disk_floor() {
    if !can_capture("refuses_to_start_under_the_disk_floor") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = CaptureConfig::new(vec!["lo".into()], dir.path());
    config.min_free_fraction = 0.999_999;
    match Capture::start(config) {
        Err(CaptureError::LowDiskSpace { free_fraction, min_free_fraction, .. }) => {
            assert!(free_fraction < min_free_fraction)
        }
        other => panic!("{other:?}"),
    }
}
