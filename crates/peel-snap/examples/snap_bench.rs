//! Bench worker for peel-snap alone (no DuckDB, no binary): how long a first snapshot and the
//! following snapshots of a series take on this host, wall and CPU (this thread's on-CPU time from
//! /proc/thread-self/schedstat). `cargo xtask bench snap` measures the `peel` binary against `ss`;
//! this worker shows where a sampled series stands between builds of the binary.
//!
//! `snap_bench [SAMPLES] [--proc-root DIR] [--process NAME|PID]...`: prints one line per snapshot (and what its
//! aggregates cost: `peel snap` prints them for every snapshot of a series) and the medians of the
//! sampled ones (every snapshot after the first).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line worker reports on stdout

use std::time::Instant;

use peel_snap::aggregate::summarize;
use peel_snap::{ProcRoot, ProcessMatch, Sampler, SnapOptions};

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let mut samples = 5usize;
    let mut processes = Vec::new();
    let mut proc_root = ProcRoot::live();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--process" {
            processes.extend(args.next().map(|p| ProcessMatch::parse(&p)));
        } else if arg == "--proc-root" {
            proc_root = args.next().map_or_else(ProcRoot::live, ProcRoot::new);
        } else if let Ok(n) = arg.parse() {
            samples = n;
        } else {
            eprintln!("usage: snap_bench [SAMPLES] [--proc-root DIR] [--process NAME|PID]...");
            std::process::exit(2);
        }
    }
    let started = Instant::now();
    let cpu_started = thread_cpu_ns();
    let mut sampler = Sampler::new(SnapOptions { proc_root, processes, ..SnapOptions::default() });
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for index in 0..samples {
        let (wall_start, cpu_start) =
            if index == 0 { (started, cpu_started) } else { (Instant::now(), thread_cpu_ns()) };
        let snapshot = match sampler.snapshot() {
            Ok(snapshot) => snapshot,
            Err(err) => {
                eprintln!("snapshot failed: {err}");
                std::process::exit(3);
            }
        };
        let wall_s = wall_start.elapsed().as_secs_f64();
        let cpu_s = (thread_cpu_ns() - cpu_start) as f64 / 1e9;
        let summary_started = thread_cpu_ns();
        let summary = summarize(&snapshot);
        let summary_cpu_s = (thread_cpu_ns() - summary_started) as f64 / 1e9;
        let owned = snapshot.sockets.iter().filter(|s| s.pid.is_some()).count();
        println!(
            "snapshot {index}: {} tcp sockets ({owned} with an owner), wall {wall_s:.3} s, cpu \
             {cpu_s:.3} s; summary of {} ports: cpu {summary_cpu_s:.3} s",
            snapshot.sockets.len(),
            summary.by_local_port.len()
        );
        for process in &snapshot.processes {
            println!(
                "  process {} {}: cpu {:?}%, rss {} B, {} threads, fds {:?} of {:?}, {:?} sockets, {} children",
                process.pid,
                process.name,
                process.cpu_pct,
                process.rss_bytes,
                process.threads,
                process.open_fds,
                process.fd_limit,
                process.sockets,
                process.children
            );
        }
        if index > 0 {
            walls.push(wall_s);
            cpus.push(cpu_s);
        }
    }
    if !walls.is_empty() {
        println!(
            "sampled median of {}: wall {:.3} s, cpu {:.3} s",
            walls.len(),
            median(&mut walls),
            median(&mut cpus)
        );
    }
}
