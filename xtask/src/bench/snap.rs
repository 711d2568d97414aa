//! `snap`: one full `peel snap` (netlink sock_diag with tcp_info, every socket's owning process,
//! counters, sysctls) with 54,000 open loopback TCP connections, next to `ss -tanpi` (sockets,
//! processes, tcp_info) and `ss -tanp`, and next to `cat /proc/net/tcp{,6}` (the raw table, no
//! owners). The target is a snapshot faster than `ss -tanp`, cheap enough to take every second.
//!
//! "Cheap enough to take every second" is measured as the CPU one more snapshot of a series costs:
//! `peel snap --every 1s --for 4s` (5 snapshots) minus a single `peel snap`, divided by 4. A series
//! keeps the socket-owner walk of earlier snapshots (peel-snap's `OwnerCache`), so later snapshots
//! cost less than the first. Its peer is one `ss -tanp` (what sampling with `ss` costs per second).
//!
//! The connections (108,000 sockets) are held by helper processes, each with its own loopback
//! listener and both ends of 9,000 connections, so that no process needs more than 20,000 file
//! descriptors (containers often cap RLIMIT_NOFILE and forbid raising it). The helpers are small
//! Python scripts (bounded: a fixed count, then they wait for stdin to close) and are ended when the
//! benchmark returns.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

use super::{measure, median, secs, Ctx, Row};

const BENCH: &str = "snap";
const HELPERS: usize = 6;
/// Snapshots of the sampled series (one per second): the first and `SERIES_SNAPSHOTS - 1` more.
const SERIES_SNAPSHOTS: u32 = 5;
const CONNECTIONS_PER_HELPER: usize = 9_000;

/// Opens a listener and `argv[1]` connections to it, holds both ends, says `ready`, waits for stdin.
const HELPER: &str = r#"
import socket, sys
count = int(sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
port = listener.getsockname()[1]
held = []
for _ in range(count):
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    server, _ = listener.accept()
    held += [client, server]
print("ready", flush=True)
sys.stdin.read()
"#;

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let connections = HELPERS * CONNECTIONS_PER_HELPER;
    let wall_metric = format!("snapshot wall, {}k loopback conns", connections / 1000);
    let cpu_metric = format!("snapshot cpu, {}k loopback conns", connections / 1000);
    if Command::new("python3").arg("--version").stdout(Stdio::null()).status().is_err() {
        return Ok(vec![Row::skipped(
            BENCH,
            &wall_metric,
            "python3 is needed for the connection helpers",
        )]);
    }
    let started = Instant::now();
    let helpers = Helpers::start().context("starting the connection helpers")?;
    eprintln!(
        "bench: snap: {connections} loopback connections open after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let quiet = |command: &mut Command| {
        command.stdout(Stdio::null());
    };
    let mut peel = Command::new(&ctx.peel);
    peel.args(["snap", "--format", "table"]);
    let peel = sample(ctx, &mut peel, quiet)?;
    let mut series = Command::new(&ctx.peel);
    let series_for = format!("{}s", SERIES_SNAPSHOTS - 1);
    series.args(["snap", "--format", "table", "--every", "1s", "--for", &series_for]);
    let series = sample(ctx, &mut series, |command| {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    })?;
    let per_sample_cpu = (series.1 - peel.1).max(0.0) / f64::from(SERIES_SNAPSHOTS - 1);
    eprintln!(
        "bench: snap: series of {SERIES_SNAPSHOTS}: {:.3} s cpu, one snapshot {:.3} s cpu, \
         each further snapshot {per_sample_cpu:.3} s cpu",
        series.1, peel.1
    );
    let sampled_metric = format!("sampled snapshot cpu, {}k conns", connections / 1000);
    let mut rows = Vec::new();
    for (name, args) in [("ss -tanpi", vec!["-tanpi"]), ("ss -tanp", vec!["-tanp"])] {
        let mut ss = Command::new("ss");
        ss.args(&args);
        let peer = sample(ctx, &mut ss, quiet)?;
        rows.push(row(&wall_metric, peel.0, name, peer.0));
        rows.push(row(&cpu_metric, peel.1, name, peer.1));
        if name == "ss -tanp" {
            rows.push(row(&sampled_metric, per_sample_cpu, name, peer.1));
        }
    }
    let mut cat = Command::new("cat");
    cat.args(["/proc/net/tcp", "/proc/net/tcp6"]);
    let cat = sample(ctx, &mut cat, quiet)?;
    rows.push(row(&wall_metric, peel.0, "cat /proc/net/tcp*", cat.0));
    rows.push(row(&cpu_metric, peel.1, "cat /proc/net/tcp*", cat.1));
    rows.push(row(&sampled_metric, per_sample_cpu, "cat /proc/net/tcp*", cat.1));
    drop(helpers);
    Ok(rows)
}

fn row(metric: &str, peel: f64, peer_name: &str, peer: f64) -> Row {
    Row {
        bench: BENCH.into(),
        metric: metric.into(),
        unit: "s".into(),
        peel,
        peer_name: peer_name.into(),
        peer,
        higher_is_better: false,
        skipped: None,
    }
}

/// Median wall and CPU seconds of `ctx.runs` runs.
fn sample(
    ctx: &Ctx,
    command: &mut Command,
    prepare: impl Fn(&mut Command),
) -> anyhow::Result<(f64, f64)> {
    prepare(command);
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..ctx.runs.max(1) {
        let measured = measure(command)?;
        wall.push(secs(measured.wall));
        cpu.push(secs(measured.cpu));
    }
    Ok((median(&mut wall), median(&mut cpu)))
}

/// The helper processes; closing their stdin (on drop) ends them and closes every connection.
struct Helpers {
    children: Vec<Child>,
}

impl Helpers {
    fn start() -> anyhow::Result<Helpers> {
        let mut helpers = Helpers { children: Vec::new() };
        for _ in 0..HELPERS {
            let child = Command::new("python3")
                .args(["-c", HELPER, &CONNECTIONS_PER_HELPER.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("starting python3")?;
            helpers.children.push(child);
        }
        for child in &mut helpers.children {
            let stdout = child.stdout.take().context("helper stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).context("reading from a helper")?;
            if line.trim() != "ready" {
                bail!("a connection helper failed (said {line:?})");
            }
        }
        Ok(helpers)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}
