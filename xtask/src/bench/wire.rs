//! `wire`: `peel analyze` on a deterministic capture of 5 million packets (454,546 short HTTP
//! connections, peel-wire's `synth::write_http_load`), next to `tshark -q -z conv,tcp`,
//! `tcptrace -n -l` and a raw libpcap read (`tcpdump -r FILE -w /dev/null`) of the same file:
//! wall time, CPU time and peak memory, medians of rounds that run peel and the peers back to
//! back. Targets (issue 3): 40x faster than tshark, 25x faster than tcptrace, within 2.5x of the
//! raw read, peak memory under 64 MB.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use peel_wire::synth::{write_http_load, LoadSpec, PcapWriter};

use super::{measure, median, secs, Ctx, Measured, Row};

const BENCH: &str = "wire";
const CONNECTIONS: u64 = 454_546;
const MIB: f64 = 1024.0 * 1024.0;

/// A peer tool: its name in the table and its command line for `file`.
struct Peer {
    name: &'static str,
    program: &'static str,
    args: fn(&Path) -> Vec<String>,
    /// Whether its peak memory is worth a row (a raw read's is not).
    memory_row: bool,
}

const PEERS: &[Peer] = &[
    Peer {
        name: "tshark -z conv,tcp",
        program: "tshark",
        args: |file| vec!["-q".into(), "-z".into(), "conv,tcp".into(), "-r".into(), display(file)],
        memory_row: true,
    },
    Peer {
        name: "tcptrace -n -l",
        program: "tcptrace",
        args: |file| vec!["-n".into(), "-l".into(), display(file)],
        memory_row: true,
    },
    Peer {
        name: "tcpdump -r (raw read)",
        program: "tcpdump",
        args: |file| vec!["-r".into(), display(file), "-w".into(), "/dev/null".into()],
        memory_row: false,
    },
];

fn display(path: &Path) -> String {
    path.display().to_string()
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let capture = write_capture(&ctx.scratch)?;
    let installed: Vec<&Peer> = PEERS.iter().filter(|p| crate::run::on_path(p.program)).collect();
    // Round by round, peel and then each peer on the same file, back to back: the VM's load moves
    // between rounds, and a ratio is fairest between runs that saw the same load.
    let mut peel_runs = Vec::new();
    let mut peer_runs: Vec<Vec<Measured>> = installed.iter().map(|_| Vec::new()).collect();
    for _ in 0..ctx.runs {
        let mut command = Command::new(&ctx.peel);
        command.arg("analyze").arg(&capture).stdout(Stdio::null());
        peel_runs.push(measure(&mut command).context("running peel analyze")?);
        for (peer, runs) in installed.iter().zip(peer_runs.iter_mut()) {
            let mut command = Command::new(peer.program);
            command.args((peer.args)(&capture)).stdout(Stdio::null()).stderr(Stdio::null());
            runs.push(measure(&mut command).with_context(|| format!("running {}", peer.name))?);
        }
    }
    let peel = medians(&mut peel_runs);
    let mut rows = Vec::new();
    let wall_metric = "5M packets: wall time";
    let cpu_metric = "5M packets: CPU time (user + sys)";
    let memory_metric = "5M packets: peak memory";
    for peer in PEERS {
        let Some(at) = installed.iter().position(|p| p.name == peer.name) else {
            let reason = format!("{} is not installed", peer.program);
            rows.push(Row::skipped(BENCH, wall_metric, reason.clone()));
            rows.push(Row::skipped(BENCH, cpu_metric, reason.clone()));
            if peer.memory_row {
                rows.push(Row::skipped(BENCH, memory_metric, reason));
            }
            continue;
        };
        let theirs = medians(&mut peer_runs[at]);
        rows.push(row(wall_metric, "s", peel.wall_s, peer.name, theirs.wall_s));
        rows.push(row(cpu_metric, "s", peel.cpu_s, peer.name, theirs.cpu_s));
        if peer.memory_row {
            rows.push(row(memory_metric, "MB", peel.rss_mb, peer.name, theirs.rss_mb));
        }
    }
    Ok(rows)
}

fn row(metric: &str, unit: &str, peel: f64, peer_name: &str, peer: f64) -> Row {
    Row {
        bench: BENCH.into(),
        metric: metric.into(),
        unit: unit.into(),
        peel,
        peer_name: peer_name.into(),
        peer,
        higher_is_better: false,
        skipped: None,
    }
}

/// Medians of a tool's runs.
struct Medians {
    wall_s: f64,
    cpu_s: f64,
    rss_mb: f64,
}

fn medians(runs: &mut [Measured]) -> Medians {
    let mut wall: Vec<f64> = runs.iter().map(|m| secs(m.wall)).collect();
    let mut cpu: Vec<f64> = runs.iter().map(|m| secs(m.cpu)).collect();
    let mut rss: Vec<f64> = runs.iter().map(|m| m.max_rss_bytes as f64 / MIB).collect();
    Medians { wall_s: median(&mut wall), cpu_s: median(&mut cpu), rss_mb: median(&mut rss) }
}

fn write_capture(scratch: &Path) -> anyhow::Result<PathBuf> {
    let path = scratch.join("http-5m.pcap");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let spec = LoadSpec {
        connections: CONNECTIONS,
        concurrency: 64,
        start_ts_ns: 1_700_000_000_000_000_000,
    };
    let packets = write_http_load(&mut writer, &spec)?;
    writer.into_inner()?;
    eprintln!("bench: wire: {packets} packets in {}", path.display());
    Ok(path)
}
