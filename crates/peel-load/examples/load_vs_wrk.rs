//! peel-load's generator alone (no database) next to wrk against the same loopback server: the
//! generator's share of `cargo xtask bench load`, without the cost of recording.
//!
//! `cargo run --example load_vs_wrk -p peel-load [runs] [seconds] [wrk|no-wrk] [threads]` prints
//! each run and the medians; `... serve` only runs the server and prints its URL, until stdin
//! closes.

#![allow(clippy::print_stdout)] // an example that reports what it measured

use std::process::Command;
use std::time::Duration;

use peel_load::loopback_server::{LoopbackServer, ServerBehavior};
use peel_load::{run_load, LoadConfig, Model, RequestRecord, SinkError, Target};

const CONNECTIONS: u32 = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("serve") {
        // Only the server, for comparing other clients (say two builds of `peel load`) on it:
        // prints its URL and serves until stdin closes.
        let server = LoopbackServer::start(ServerBehavior::default())?;
        println!("{}", server.url("/"));
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())?;
        return Ok(());
    }
    let runs: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let with_wrk = args.next().as_deref() != Some("no-wrk");
    let threads: Option<u32> = args.next().map(|a| a.parse()).transpose()?;
    let server = LoopbackServer::start(ServerBehavior::default())?;
    let url = server.url("/");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let (mut peel, mut wrk) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut config = LoadConfig::new(
            vec![Target::new(&url)?],
            Model::Closed { concurrency: CONNECTIONS },
            Duration::from_secs(seconds),
        );
        config.connections = CONNECTIONS;
        if let Some(threads) = threads {
            config.threads = threads;
        }
        // Every record crosses to the collector and is looked at, as a database sink would.
        let mut bytes = 0u64;
        let mut sink = |r: RequestRecord| -> Result<(), SinkError> {
            bytes += r.response_body_bytes;
            Ok(())
        };
        let cpu = ThreadCpu::watch("peel-load-");
        let report = run_load(&config, &mut |_| {}, &mut sink)?;
        let cpu_us_per_request = cpu.total_us() / report.total.requests.max(1) as f64;
        if !with_wrk {
            println!(
                "run {run}: peel-load {:.0} req/s, {cpu_us_per_request:.2} us CPU/request in its threads",
                report.total.requests_per_s
            );
            peel.push(report.total.requests_per_s);
            continue;
        }
        let output = Command::new("wrk")
            .args(["-t", &cpus.min(CONNECTIONS).to_string(), "-c", &CONNECTIONS.to_string()])
            .args(["-d", &format!("{seconds}s"), &url])
            .output()?;
        let wrk_rps: f64 = String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:").map(|v| v.trim().to_string()))
            .ok_or("no Requests/sec in wrk's output")?
            .parse()?;
        println!(
            "run {run}: peel-load {:.0} req/s ({cpu_us_per_request:.2} us CPU/request), wrk {wrk_rps:.0} req/s, ratio {:.3}",
            report.total.requests_per_s,
            report.total.requests_per_s / wrk_rps
        );
        peel.push(report.total.requests_per_s);
        wrk.push(wrk_rps);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let p = median(&mut peel);
    if wrk.is_empty() {
        println!("median: peel-load {p:.0} req/s");
        return Ok(());
    }
    let w = median(&mut wrk);
    println!("median: peel-load {p:.0} req/s, wrk {w:.0} req/s, ratio {:.3}", p / w);
    Ok(())
}

/// CPU time (user + system) of this process's threads whose name starts with a prefix, read from
/// /proc every 50 ms while they live: the last reading of each thread before it ended.
struct ThreadCpu {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ThreadCpu {
    fn watch(prefix: &'static str) -> ThreadCpu {
        let seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
            std::sync::Arc::default();
        let stop = std::sync::Arc::<std::sync::atomic::AtomicBool>::default();
        let (seen_w, stop_w) = (std::sync::Arc::clone(&seen), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop_w.load(std::sync::atomic::Ordering::Relaxed) {
                for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
                    let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                        continue;
                    };
                    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                        continue;
                    };
                    if !stat[open + 1..close].starts_with(prefix) {
                        continue;
                    }
                    // Fields after `) `: state is 3rd overall; utime and stime are 14th and 15th.
                    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
                    let ticks: u64 = fields[11].parse::<u64>().unwrap_or(0)
                        + fields[12].parse::<u64>().unwrap_or(0);
                    let id = task.file_name().to_string_lossy().to_string();
                    seen_w.lock().unwrap().insert(id, ticks);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        ThreadCpu { seen, stop }
    }

    /// Microseconds of CPU so far (clock ticks of 10 ms).
    fn total_us(&self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.seen.lock().unwrap().values().sum::<u64>() as f64 * 10_000.0
    }
}
