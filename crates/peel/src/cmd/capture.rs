//! `peel capture`: live capture into pcap files with rotation and a disk floor, ended by a duration,
//! a packet count, Ctrl-C or SIGTERM, with libpcap's drop counters in the final report. The capture
//! itself is peel-capture's; this module maps flags to its config, waits, and renders.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use peel_capture::{
    linktype_name, parse_duration, Capture, CaptureConfig, CaptureError, CaptureHandle,
    CaptureReport, LiveAnalysis, LiveWindow, RingSpec, TimestampPrecision, DEFAULT_BUFFER_BYTES,
    DEFAULT_SNAPLEN_BYTES, FULL_SNAPLEN_BYTES,
};
use peel_wire::summary::Summary;
use serde_json::json;

use crate::exit::{Fail, Outcome};

const LONG_ABOUT: &str = "\
Capture packets live into pcap files (nanosecond timestamps), for `peel analyze` or a postmortem.

The BPF filter is compiled before anything is captured (a bad filter exits 2 with libpcap's
message). Each interface is captured by its own thread in immediate mode with a kernel buffer of
--buffer-mb, into files named DIR/<iface>-<start>-<seq>.pcap. With --ring SIZE_MB:COUNT at most
COUNT files of SIZE_MB megabytes (1 MB = 1,000,000 bytes) are kept per interface, the oldest
deleted first. Whatever the settings, the capture stops early when free space on DIR's filesystem
falls under 5%, so a forgotten capture cannot fill the disk. Ctrl-C or SIGTERM stops cleanly: every
file is flushed and readable, and the report (packets captured, dropped by the kernel, dropped by
the interface, files, bytes) is printed. A second Ctrl-C exits at once.

What the default snaplen (256 bytes) keeps: the link, IP and TCP headers of every packet (all of
TCP's timing, sequence numbers, flags, windows and the length on the wire), and the first 100 to
190 payload bytes of each packet, which hold an HTTP request line (method and path, unless the
path is very long), a status line and the first headers. What it does not keep: request and
response bodies, later headers (cookies, authorization), uploaded files. Phases and byte counts
stay exact, because peel-wire reads lengths from the headers; only HTTP details past the cut are
lost. --full keeps whole packets: use it only when the payload itself is evidence.

Needs root or CAP_NET_RAW and CAP_NET_ADMIN; without them peel exits 3 and prints the setcap
command that grants them.";

const EXAMPLES: &str = "\
Examples:
  # 30 s of the app's port on loopback
  peel capture -i lo -f 'tcp port 8000' --duration 30s --out /var/tmp/peel-cap

  # until Ctrl-C, at most 10 files of 100 MB, with a live per-endpoint view
  peel capture -i any -f 'tcp port 8000 or tcp port 5432' --ring 100:10 --summary --out cap/

  # then split every connection into phases
  peel analyze cap/";

/// Capture packets live into rotating pcap files.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_long_help = EXAMPLES)]
pub struct Args {
    /// Interface to capture on (repeat for several; `any` and `lo` work).
    #[arg(short = 'i', long = "interface", value_name = "IFACE", required = true)]
    interfaces: Vec<String>,

    /// BPF filter (tcpdump syntax), for example 'tcp port 8000'.
    #[arg(short = 'f', long = "filter", value_name = "BPF")]
    filter: Option<String>,

    /// Bytes kept of each packet [default: 256: headers plus HTTP request/status lines].
    #[arg(long, value_name = "BYTES", conflicts_with = "full")]
    snaplen: Option<u32>,

    /// Keep whole packets (snaplen 262144), bodies included.
    #[arg(long)]
    full: bool,

    /// Kernel capture buffer per interface, in MiB [default: 32].
    #[arg(long = "buffer-mb", value_name = "MB")]
    buffer_mb: Option<u32>,

    /// Stop after this long (30s, 5m, 1h).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Stop after this many packets (over all interfaces).
    #[arg(long, value_name = "N")]
    packets: Option<u64>,

    /// Directory for the pcap files (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Stop early when free space on the --out filesystem falls under this percentage.
    #[arg(long = "min-free", value_name = "PCT", default_value_t = 5.0)]
    min_free_pct: f64,

    /// Keep at most COUNT files of SIZE_MB megabytes per interface, deleting the oldest.
    #[arg(long, value_name = "SIZE_MB:COUNT", value_parser = parse_ring)]
    ring: Option<RingSpec>,

    /// Analyze packets as they arrive (peel-wire, the engine of `peel analyze`): a per-endpoint view
    /// refreshed every second on a terminal, and the final summary after the report.
    #[arg(long)]
    summary: bool,

    /// Format of the final report.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

fn parse_ring(spec: &str) -> Result<RingSpec, CaptureError> {
    spec.parse()
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = config_from(&args)?;
    // Registered before the capture starts, so an early Ctrl-C still ends in a clean stop.
    let stop_requested = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once (status 130), as tcpdump users expect.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop_requested))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop_requested))
            .context("installing the signal handler")?;
    }
    let mut handle = Capture::start(config.clone()).map_err(start_error)?;
    let live = match handle.take_packets() {
        Some(packets) => {
            Some(LiveAnalysis::spawn(packets, &config.interfaces).map_err(start_error)?)
        }
        None => None,
    };
    let mut progress = Progress::new(&config);
    progress.started();
    wait(&handle, live.as_ref(), &stop_requested, &mut progress);
    let report = handle.stop();
    progress.finished();
    // The tap's senders are gone once the capture stopped, so the analyzer drains and finishes.
    let summary = live.map(LiveAnalysis::finish).transpose()?;
    render(&report, summary.as_ref(), args.format)?;
    if report.stop_reason.is_early() {
        return Err(Fail::runtime(&report.stop_reason)
            .hint("the files written so far are complete and readable")
            .into());
    }
    Ok(Outcome::Success)
}

fn config_from(args: &Args) -> anyhow::Result<CaptureConfig> {
    let mut config = CaptureConfig::new(args.interfaces.clone(), args.out.clone());
    config.bpf_filter = args.filter.clone();
    config.snaplen_bytes = match (args.full, args.snaplen) {
        (true, _) => FULL_SNAPLEN_BYTES,
        (false, Some(bytes)) => bytes,
        (false, None) => DEFAULT_SNAPLEN_BYTES,
    };
    config.buffer_bytes = match args.buffer_mb {
        None => DEFAULT_BUFFER_BYTES.max(config.snaplen_bytes),
        Some(mb) => mb
            .checked_mul(1024 * 1024)
            .ok_or_else(|| Fail::usage(format!("--buffer-mb {mb} is too large")))?,
    };
    config.duration = args.duration;
    config.max_packets = args.packets;
    config.ring = args.ring;
    config.min_free_fraction = args.min_free_pct / 100.0;
    config.tap_packets = args.summary;
    config.validate().map_err(start_error)?;
    Ok(config)
}

/// Usage errors (filter, values) exit 2; missing interface, privilege and system errors exit 3.
fn start_error(err: CaptureError) -> anyhow::Error {
    let hint = match &err {
        CaptureError::BadFilter { .. } => Some("the filter uses tcpdump syntax: man pcap-filter"),
        CaptureError::UnknownInterface { .. } => {
            Some("`ip link` lists interfaces; `any` captures all")
        }
        _ => None,
    };
    let fail = if err.is_usage() { Fail::usage(&err) } else { Fail::runtime(&err) };
    match hint {
        Some(hint) => fail.hint(hint).into(),
        None => fail.into(),
    }
}

/// Returns when a signal arrived or the capture ended by itself.
fn wait(
    handle: &CaptureHandle,
    live: Option<&LiveAnalysis>,
    stop_requested: &AtomicBool,
    progress: &mut Progress,
) {
    const POLL: Duration = Duration::from_millis(100);
    let mut since_refresh = Duration::ZERO;
    while !stop_requested.load(Ordering::Relaxed) && handle.stop_reason().is_none() {
        std::thread::sleep(POLL);
        since_refresh += POLL;
        if since_refresh >= Duration::from_secs(1) {
            since_refresh = Duration::ZERO;
            progress.tick(handle, live);
        }
    }
}

/// The one status line on stderr while capturing (only on a terminal).
struct Progress {
    on_terminal: bool,
    /// Lines drawn by the last tick (redrawn in place by the next).
    drawn_lines: usize,
    header: String,
}

impl Progress {
    fn new(config: &CaptureConfig) -> Self {
        let filter =
            config.bpf_filter.as_deref().map(|f| format!(", filter '{f}'")).unwrap_or_default();
        let header = format!(
            "capturing on {}{filter}, snaplen {} B, into {} (Ctrl-C to stop)",
            config.interfaces.join(", "),
            config.snaplen_bytes,
            config.out_dir.display()
        );
        Progress { on_terminal: std::io::stderr().is_terminal(), drawn_lines: 0, header }
    }

    fn started(&self) {
        let _ = writeln!(std::io::stderr(), "{}", self.header);
    }

    fn tick(&mut self, handle: &CaptureHandle, live: Option<&LiveAnalysis>) {
        if !self.on_terminal {
            return;
        }
        let stats = handle.stats();
        let packets: u64 = stats.iter().map(|s| s.packets_captured).sum();
        let dropped: u64 =
            stats.iter().map(|s| s.packets_dropped_kernel + s.packets_dropped_interface).sum();
        let bytes: u64 = stats.iter().map(|s| s.bytes_written).sum();
        let mut lines = vec![format!(
            "{:>6.0} s  {packets} packets  {dropped} dropped  {}",
            handle.elapsed().as_secs_f64(),
            human_bytes(bytes)
        )];
        if let Some(window) = live.and_then(LiveAnalysis::window) {
            lines.extend(window_lines(&window));
        }
        let mut text = String::new();
        if self.drawn_lines > 0 {
            // Back to the first line drawn last time, then clear to the end of the screen.
            text.push_str(&format!("\x1b[{}F\x1b[J", self.drawn_lines));
        }
        for line in &lines {
            text.push_str(line);
            text.push('\n');
        }
        let _ = std::io::stderr().write_all(text.as_bytes());
        self.drawn_lines = lines.len();
    }

    fn finished(&self) {}
}

/// The live view: per endpoint, the connections that finished in the last seconds.
fn window_lines(window: &LiveWindow) -> Vec<String> {
    let mut lines = vec![format!(
        "connections finished in the last {:.0} s ({} open):",
        window.window_ns as f64 / 1e9,
        window.open_connections
    )];
    lines.extend(endpoint_lines(&window.summary));
    lines
}

/// The phases shown per endpoint, by their p99.
const SHOWN_PHASES: [&str; 5] = ["handshake", "request_wait", "server", "response", "close"];

/// An aligned table: endpoint, connections, conn/s, requests per connection, p99 of each phase.
fn endpoint_lines(summary: &Summary) -> Vec<String> {
    let mut header =
        vec!["  endpoint".to_string(), "conns".into(), "conn/s".into(), "req/conn".into()];
    header.extend(SHOWN_PHASES.iter().map(|phase| format!("p99 {phase}")));
    let mut rows = vec![header];
    for endpoint in &summary.endpoints {
        let mut row = vec![
            format!("  {}", SocketAddr::new(endpoint.server_ip, endpoint.server_port)),
            endpoint.connections.to_string(),
            endpoint.connections_per_sec.map_or_else(|| "-".into(), |rate| format!("{rate:.1}")),
            format!("{:.2}", endpoint.requests_per_connection),
        ];
        for phase in SHOWN_PHASES {
            let p99 = endpoint.phases.iter().find(|p| p.phase == phase).map(|p| p.p99_us);
            row.push(p99.map_or_else(|| "-".into(), micros_text));
        }
        rows.push(row);
    }
    if summary.endpoints.is_empty() {
        return vec!["  (no connection finished)".into()];
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(
                    |(c, (cell, &w))| {
                        if c == 0 {
                            format!("{cell:<w$}")
                        } else {
                            format!("{cell:>w$}")
                        }
                    },
                )
                .collect();
            cells.join("  ")
        })
        .collect()
}

/// Microseconds as `850us`, `12.3ms` or `1.20s`.
fn micros_text(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1_000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn render(report: &CaptureReport, summary: Option<&Summary>, format: Format) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => {
            let mut text = report_table(report);
            if let Some(summary) = summary {
                text.push_str(&summary_table(report, summary));
            }
            text
        }
        Format::Json => {
            let mut json = report_json(report);
            if let Some(summary) = summary {
                json["summary"] = serde_json::to_value(summary)?;
            }
            serde_json::to_string_pretty(&json)? + "\n"
        }
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing the report")
}

fn precision_name(precision: Option<TimestampPrecision>) -> &'static str {
    match precision {
        Some(TimestampPrecision::Nanos) => "ns",
        Some(TimestampPrecision::Micros) => "us",
        None => "unknown",
    }
}

/// The human report: why it stopped, one aligned row per interface, then the files.
fn report_table(report: &CaptureReport) -> String {
    let mut rows = vec![[
        "interface",
        "link",
        "captured",
        "received",
        "dropped_kernel",
        "dropped_iface",
        "files",
        "deleted",
        "bytes",
    ]
    .map(String::from)];
    for interface in &report.interfaces {
        let stats = &interface.stats;
        rows.push([
            stats.interface.clone(),
            interface.linktype.map(linktype_name).unwrap_or_else(|| "?".into()),
            stats.packets_captured.to_string(),
            stats.packets_received.to_string(),
            stats.packets_dropped_kernel.to_string(),
            stats.packets_dropped_interface.to_string(),
            interface.files.len().to_string(),
            interface.files_deleted.to_string(),
            human_bytes(stats.bytes_written),
        ]);
    }
    let mut out = format!(
        "capture ended after {:.1} s: {}\n\n",
        report.elapsed.as_secs_f64(),
        report.stop_reason
    );
    out.push_str(&aligned(&rows, 2));
    out.push_str("\nfiles (oldest first):\n");
    let files: Vec<[String; 3]> = report
        .files()
        .map(|f| {
            [
                f.path.display().to_string(),
                format!("{} bytes", f.bytes),
                format!("{} packets", f.packets),
            ]
        })
        .collect();
    out.push_str(&indented(&aligned(&files, 1), "  "));
    for interface in &report.interfaces {
        if let Some(error) = &interface.error {
            out.push_str(&format!("warning: {}: {error}\n", interface.stats.interface));
        }
    }
    out
}

/// The final `--summary`: the whole capture per endpoint, and why it might differ from the files.
fn summary_table(report: &CaptureReport, summary: &Summary) -> String {
    let mut out = format!(
        "\nsummary: {} packets ({} TCP), {} connections (`peel analyze` on the files for every phase and warning)\n",
        summary.packets, summary.tcp_packets, summary.connections
    );
    for line in endpoint_lines(summary) {
        out.push_str(&line);
        out.push('\n');
    }
    let tap_dropped: u64 = report.interfaces.iter().map(|i| i.stats.tap_dropped).sum();
    if tap_dropped > 0 {
        out.push_str(&format!(
            "warning: the live analysis fell behind and skipped {tap_dropped} packets; the files have them\n"
        ));
    }
    let deleted: u64 = report.interfaces.iter().map(|i| i.files_deleted).sum();
    if deleted > 0 {
        out.push_str(&format!(
            "note: {deleted} ring files were deleted; the summary covers them, the kept files do not\n"
        ));
    }
    out
}

/// Columns padded to their widest cell: the first `left_columns` left-aligned, the rest right.
fn aligned<const N: usize>(rows: &[[String; N]], left_columns: usize) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| {
                let width = widths[column];
                if column < left_columns {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn indented(text: &str, prefix: &str) -> String {
    text.lines().map(|line| format!("{prefix}{line}\n")).collect()
}

/// Stable JSON field names (documented in docs/capture.md).
fn report_json(report: &CaptureReport) -> serde_json::Value {
    let interfaces: Vec<_> = report
        .interfaces
        .iter()
        .map(|interface| {
            let stats = &interface.stats;
            json!({
                "interface": stats.interface,
                "linktype": interface.linktype,
                "linktype_name": interface.linktype.map(linktype_name),
                "timestamp_precision": precision_name(interface.precision),
                "packets_captured": stats.packets_captured,
                "packets_received": stats.packets_received,
                "packets_dropped_kernel": stats.packets_dropped_kernel,
                "packets_dropped_interface": stats.packets_dropped_interface,
                "tap_dropped": stats.tap_dropped,
                "bytes_written": stats.bytes_written,
                "files_deleted": interface.files_deleted,
                "files": interface.files.iter().map(|f| json!({
                    "path": f.path.display().to_string(),
                    "bytes": f.bytes,
                    "packets": f.packets,
                })).collect::<Vec<_>>(),
                "error": interface.error,
            })
        })
        .collect();
    json!({
        "stop_reason": report.stop_reason.kind(),
        "stop_message": report.stop_reason.to_string(),
        "elapsed_s": report.elapsed.as_secs_f64(),
        "packets_captured": report.packets_captured(),
        "packets_dropped_kernel": report.packets_dropped_kernel(),
        "packets_dropped_interface": report.packets_dropped_interface(),
        "bytes_written": report.interfaces.iter().map(|i| i.stats.bytes_written).sum::<u64>(),
        "interfaces": interfaces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use peel_capture::StopReason;

    #[test]
    fn human_bytes_units() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (999, "999 B"),
            (1_000, "1.0 kB"),
            (3_201_234, "3.2 MB"),
            (5_000_000_000, "5.0 GB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(human_bytes(*bytes), *text);
        }
    }

    #[test]
    fn report_table_is_aligned() {
        let report = CaptureReport {
            stop_reason: StopReason::Duration(Duration::from_secs(30)),
            elapsed: Duration::from_millis(30_012),
            interfaces: vec![peel_capture::InterfaceReport {
                stats: peel_capture::InterfaceStats {
                    interface: "lo".into(),
                    packets_captured: 12_345,
                    bytes_written: 3_201_234,
                    packets_received: 12_400,
                    packets_dropped_kernel: 55,
                    packets_dropped_interface: 0,
                    tap_dropped: 0,
                },
                linktype: Some(1),
                precision: Some(TimestampPrecision::Nanos),
                files: vec![peel_capture::WrittenFile {
                    path: "/cap/lo-1700000000-00001.pcap".into(),
                    bytes: 3_201_234,
                    packets: 12_345,
                }],
                files_deleted: 0,
                error: None,
            }],
        };
        assert_eq!(
            report_table(&report),
            "capture ended after 30.0 s: duration of 30s reached\n\
             \n\
             interface  link    captured  received  dropped_kernel  dropped_iface  files  deleted   bytes\n\
             lo         EN10MB     12345     12400              55              0      1        0  3.2 MB\n\
             \n\
             files (oldest first):\n  /cap/lo-1700000000-00001.pcap  3201234 bytes  12345 packets\n"
        );
        let json = report_json(&report);
        assert_eq!(json["stop_reason"], "duration");
        assert_eq!(json["interfaces"][0]["linktype_name"], "EN10MB");
        assert_eq!(json["interfaces"][0]["timestamp_precision"], "ns");
        assert_eq!(json["packets_dropped_kernel"], 55);
    }
}
