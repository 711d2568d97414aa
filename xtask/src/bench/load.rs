//! `load`: peel load's keep-alive throughput next to wrk's, against the same loopback server, with
//! the same number of connections and the same duration. peel records every request into a run
//! database while it runs (`--db`), wrk records nothing: the target is a ratio of at least 0.8.
//!
//! A second row runs peel load without `--db`: the generator alone, so that the cost of recording
//! shows as the difference between the two rows.
//!
//! Both use one thread per CPU (at most one per connection). The server is peel-load's
//! `LoopbackServer` (one thread per connection, fixed 3-byte body), started here and shared by both
//! tools, so both measure the same server on the same machine.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use peel_load::loopback_server::{LoopbackServer, ServerBehavior};

use super::{median, Ctx, Row};

const BENCH: &str = "load";
/// Connections for both tools.
const CONNECTIONS: u32 = 4;
const DURATION_S: u32 = 5;

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let metric = format!("req/s keep-alive, {CONNECTIONS} conns, {DURATION_S} s");
    let metric_no_db = format!("{metric}, no --db");
    if Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        let reason = "wrk is not installed (apt install wrk)";
        return Ok(vec![
            Row::skipped(BENCH, &metric, reason),
            Row::skipped(BENCH, &metric_no_db, reason),
        ]);
    }
    let server =
        LoopbackServer::start(ServerBehavior::default()).context("starting the loopback server")?;
    let url = server.url("/");
    let mut peel_rps = Vec::new();
    let mut peel_no_db_rps = Vec::new();
    let mut wrk_rps = Vec::new();
    for run in 0..ctx.runs {
        let db = ctx.scratch.join(format!("load-{run}.duckdb"));
        peel_rps.push(peel_requests_per_s(&ctx.peel, &url, Some(&db))?);
        peel_no_db_rps.push(peel_requests_per_s(&ctx.peel, &url, None)?);
        wrk_rps.push(wrk_requests_per_s(&url)?);
    }
    let wrk = median(&mut wrk_rps);
    let row = |metric: String, peel: f64| Row {
        bench: BENCH.into(),
        metric,
        unit: "req/s".into(),
        peel,
        peer_name: "wrk 4.1".into(),
        peer: wrk,
        higher_is_better: true,
        skipped: None,
    };
    Ok(vec![row(metric, median(&mut peel_rps)), row(metric_no_db, median(&mut peel_no_db_rps))])
}

/// `peel load`'s total requests/s, recording every request into `db` if given.
fn peel_requests_per_s(peel: &Path, url: &str, db: Option<&Path>) -> anyhow::Result<f64> {
    let connections = CONNECTIONS.to_string();
    let duration = format!("{DURATION_S}s");
    let mut command = Command::new(peel);
    command
        .args(["load", url, "--concurrency", &connections, "--connections", &connections])
        .args(["--duration", &duration, "--format", "json"]);
    if let Some(db) = db {
        command.arg("--db").arg(db);
    }
    let output = command.stderr(Stdio::inherit()).output().context("running peel load")?;
    if !output.status.success() {
        bail!("peel load failed ({})", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    json_number_after(&stdout, "\"total\"", "\"requests_per_s\"")
        .with_context(|| format!("no total.requests_per_s in peel's report:\n{stdout}"))
}

fn wrk_requests_per_s(url: &str) -> anyhow::Result<f64> {
    // The same thread count as peel load's default: one per CPU, at most one per connection.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.min(CONNECTIONS as usize).to_string();
    let connections = CONNECTIONS.to_string();
    let output = Command::new("wrk")
        .args(["-t", &threads, "-c", &connections, "-d", &format!("{DURATION_S}s"), url])
        .output()
        .context("running wrk")?;
    if !output.status.success() {
        bail!("wrk failed ({})", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    wrk_rate(&stdout).with_context(|| format!("no Requests/sec in wrk's output:\n{stdout}"))
}

/// wrk's summary line `Requests/sec:  12345.67`.
fn wrk_rate(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The number after `key` that follows `section` in pretty-printed JSON (xtask stays free of serde).
fn json_number_after(json: &str, section: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(section)?..];
    let rest = &rest[rest.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end =
        rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_summary() {
        let out = "Running 5s test @ http://127.0.0.1:1/\n  4 threads and 4 connections\n\
                   Requests/sec:  41234.56\nTransfer/sec:      3.50MB\n";
        assert_eq!(wrk_rate(out), Some(41234.56));
        assert_eq!(wrk_rate("nothing"), None);
    }

    #[test]
    fn reads_total_requests_per_s_not_a_class_one() {
        let json = "{\n  \"classes\": [{\"requests_per_s\": 1.5}],\n  \"total\": {\n    \"url_class\": \"total\",\n    \"requests_per_s\": 30123.25,\n    \"x\": 1\n  }\n}";
        assert_eq!(json_number_after(json, "\"total\"", "\"requests_per_s\""), Some(30123.25));
    }
}
