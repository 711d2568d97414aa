//! `capture`: packets lost by `peel capture` next to `tcpdump -w` under the same bounded burst on
//! `lo` (UDP datagrams from this process to its own loopback socket, paced at [`RATE_PPS`] for
//! [`BURST_S`] seconds). Both write pcap files with their defaults for size (peel: 256-byte snaplen,
//! 32 MiB buffer; tcpdump: 262144-byte snaplen, 2 MiB buffer). Target: peel drops no more than tcpdump.
//!
//! Needs CAP_NET_RAW/CAP_NET_ADMIN (root) and tcpdump; without them the rows are skips with reasons.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{median, Ctx, Row};

const BENCH: &str = "capture";
/// Datagrams per second the sender aims for.
const RATE_PPS: u64 = 200_000;
/// Length of the burst.
const BURST_S: u64 = 10;
/// Datagrams sent per pacing slot (every 10 ms at 200k/s).
const SLOT: Duration = Duration::from_millis(10);
const PAYLOAD_BYTES: usize = 64;

/// What one capture run saw.
struct Seen {
    sent: u64,
    captured: u64,
    dropped_kernel: u64,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let drops_metric = format!("kernel drops, {}k pkt/s x {BURST_S} s on lo", RATE_PPS / 1000);
    let share_metric = "captured share of sent".to_string();
    let tcpdump_ok = Command::new("tcpdump")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if tcpdump_ok.is_err() {
        let reason = "tcpdump is not installed (apt install tcpdump)";
        return Ok(vec![
            Row::skipped(BENCH, &drops_metric, reason),
            Row::skipped(BENCH, &share_metric, reason),
        ]);
    }
    let mut peel_drops = Vec::new();
    let mut peel_share = Vec::new();
    let mut tcpdump_drops = Vec::new();
    let mut tcpdump_share = Vec::new();
    for run in 0..ctx.runs {
        let dir = ctx.scratch.join(format!("peel-{run}"));
        let peel = match peel_run(&ctx.peel, &dir)? {
            Ok(seen) => seen,
            Err(reason) => {
                return Ok(vec![
                    Row::skipped(BENCH, &drops_metric, reason.clone()),
                    Row::skipped(BENCH, &share_metric, reason),
                ])
            }
        };
        let tcpdump = tcpdump_run(&ctx.scratch.join(format!("tcpdump-{run}.pcap")))?;
        eprintln!(
            "bench: capture run {run}: sent {} / {}, captured {} / {}, kernel drops {} / {} (peel / tcpdump)",
            peel.sent, tcpdump.sent, peel.captured, tcpdump.captured, peel.dropped_kernel, tcpdump.dropped_kernel
        );
        peel_drops.push(peel.dropped_kernel as f64);
        tcpdump_drops.push(tcpdump.dropped_kernel as f64);
        peel_share.push(100.0 * peel.captured as f64 / peel.sent.max(1) as f64);
        tcpdump_share.push(100.0 * tcpdump.captured as f64 / tcpdump.sent.max(1) as f64);
    }
    Ok(vec![
        Row {
            bench: BENCH.into(),
            metric: drops_metric,
            unit: "pkt".into(),
            peel: median(&mut peel_drops),
            peer_name: "tcpdump -w".into(),
            peer: median(&mut tcpdump_drops),
            higher_is_better: false,
            skipped: None,
        },
        Row {
            bench: BENCH.into(),
            metric: share_metric,
            unit: "%".into(),
            peel: median(&mut peel_share),
            peer_name: "tcpdump -w".into(),
            peer: median(&mut tcpdump_share),
            higher_is_better: true,
            skipped: None,
        },
    ])
}

/// A receiving socket (never read: the kernel drops what overflows it, no ICMP is sent).
fn sink() -> anyhow::Result<(UdpSocket, u16)> {
    let socket = UdpSocket::bind("127.0.0.1:0").context("binding the loopback sink")?;
    let port = socket.local_addr()?.port();
    Ok((socket, port))
}

/// Sends the paced burst to `port`; returns datagrams sent.
fn burst(port: u16) -> anyhow::Result<u64> {
    let sender = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;
    sender.connect(("127.0.0.1", port))?;
    let payload = [0x5au8; PAYLOAD_BYTES];
    let per_slot = RATE_PPS * SLOT.as_millis() as u64 / 1000;
    let slots = BURST_S * 1000 / SLOT.as_millis() as u64;
    let started = Instant::now();
    let mut sent = 0u64;
    for slot in 0..slots {
        for _ in 0..per_slot {
            // A full socket buffer on the sending side is not a capture loss: count only sends.
            if sender.send(&payload).is_ok() {
                sent += 1;
            }
        }
        let due = SLOT * (slot as u32 + 1);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(sent)
}

fn terminate(child: &Child) -> anyhow::Result<()> {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    if !status.success() {
        bail!("kill -TERM {} failed", child.id());
    }
    Ok(())
}

/// One peel run; `Ok(Err(reason))` when peel cannot capture here (privilege).
fn peel_run(peel: &Path, dir: &Path) -> anyhow::Result<Result<Seen, String>> {
    let (_sink, port) = sink()?;
    let filter = format!("udp port {port}");
    let mut child = Command::new(peel)
        .args(["capture", "-i", "lo", "-f", &filter, "--format", "json", "--out"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting peel capture")?;
    let mut stderr = BufReader::new(child.stderr.take().context("peel's stderr")?);
    let mut first = String::new();
    stderr.read_line(&mut first)?;
    if !first.starts_with("capturing on ") {
        let _ = child.wait();
        return Ok(Err(format!("peel capture cannot run here: {}", first.trim())));
    }
    let sent = burst(port)?;
    std::thread::sleep(Duration::from_secs(1));
    terminate(&child)?;
    let mut stdout = String::new();
    child.stdout.take().context("peel's stdout")?.read_to_string(&mut stdout)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("peel capture failed ({status})");
    }
    let report: serde_json::Value =
        serde_json::from_str(&stdout).context("reading peel's JSON report")?;
    let number =
        |field: &str| report[field].as_u64().with_context(|| format!("{field} in peel's report"));
    Ok(Ok(Seen {
        sent,
        captured: number("packets_captured")?,
        dropped_kernel: number("packets_dropped_kernel")?,
    }))
}

fn tcpdump_run(file: &Path) -> anyhow::Result<Seen> {
    let (_sink, port) = sink()?;
    let filter = format!("udp port {port}");
    let mut child = Command::new("tcpdump")
        .args(["-i", "lo", "-n", "-w"])
        .arg(file)
        .arg(&filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tcpdump")?;
    let mut stderr = BufReader::new(child.stderr.take().context("tcpdump's stderr")?);
    // "tcpdump: listening on lo, link-type EN10MB ..." once the capture is open.
    let mut first = String::new();
    stderr.read_line(&mut first)?;
    if !first.contains("listening on") {
        let _ = child.wait();
        bail!("tcpdump did not start: {}", first.trim());
    }
    let sent = burst(port)?;
    std::thread::sleep(Duration::from_secs(1));
    terminate(&child)?;
    let mut rest = String::new();
    stderr.read_to_string(&mut rest)?;
    child.wait()?;
    // "N packets captured", "N packets received by filter", "N packets dropped by kernel".
    let count = |suffix: &str| {
        rest.lines()
            .find_map(|line| line.strip_suffix(suffix).and_then(|n| n.trim().parse::<u64>().ok()))
            .with_context(|| format!("'{suffix}' in tcpdump's output: {rest}"))
    };
    Ok(Seen {
        sent,
        captured: count("packets captured")?,
        dropped_kernel: count("packets dropped by kernel")?,
    })
}
