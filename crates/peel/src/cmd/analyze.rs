//! `peel analyze`: every TCP connection of one or more captures split into phases, aggregated per
//! server endpoint. The analysis is peel-wire's; this module maps flags to its config, streams the
//! finished connections into the summary (and the database with `--db`), and renders.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use peel_store::{Access, RunRecord, Scope, Store};
use peel_wire::records::{CaptureWarning, FinishedConnection};
use peel_wire::summary::{EndpointSummary, Summary, SummaryBuilder};
use peel_wire::{analyze_paths, Config, WireError};

use crate::exit::{Fail, Outcome};

const LONG_ABOUT: &str = "\
Split every TCP connection of a capture into phases and say which phase dominates on which endpoint.

Reads pcap (micro- or nanosecond, either byte order) and pcapng files, gzip'd or not; a directory
or several files (ring-buffer output) are merged by timestamp into one capture. For each connection:
handshake (SYN -> final ACK), request wait (handshake end -> first request byte), server (request
end -> response start), response (first -> last response byte), idle between exchanges, close
(first FIN -> ACK of the last FIN), who closed, resets, retransmissions; HTTP/1.x requests are
recognized (method, path, status), other protocols get exchanges by turn-taking, and PostgreSQL
start-up gives db_setup. Truncated or damaged files are analyzed as far as they go; what was
skipped is listed under warnings. --port names the server ports you care about: only their
endpoints are shown, and it decides the server of connections whose SYN is not in the capture.

Formats: table (endpoints, phase percentiles, slowest connections, warnings), json (the summary
and every connection with its exchanges: {\"summary\": ..., \"connections\": [...]}), ndjson (one
connection with its exchanges per line, streamed). Field names are those of docs/schema.md.";

const EXAMPLES: &str = "\
Examples:
  # which phase dominates on the app port?
  peel analyze cap/ --port 8000

  # one JSON line per connection, for jq
  peel analyze app.pcapng.gz --format ndjson | jq 'select(.connection.close_us > 100000)'

  # keep everything for SQL (tables connections, exchanges, capture_warnings)
  peel analyze cap/ --db run.duckdb && peel sql run.duckdb 'SELECT * FROM v_endpoint_phases'";

/// Split every TCP connection of captures into phases, per server endpoint.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_long_help = EXAMPLES)]
pub struct Args {
    /// Capture files or directories (pcap, pcapng, optionally .gz).
    #[arg(value_name = "FILE", required = true)]
    paths: Vec<PathBuf>,

    /// Server port to report (repeat for several); also decides the server when no SYN was captured.
    #[arg(long = "port", value_name = "N")]
    ports: Vec<u16>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Also write connections, exchanges and warnings into this DuckDB file (created if missing).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,

    /// Run id for --db rows [default: analyze-<start time in ns>].
    #[arg(long, value_name = "ID", requires = "db")]
    run_id: Option<String>,
}

/// How the result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
    Ndjson,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = Config { server_ports: args.ports.clone(), ..Config::default() };
    let mut builder = SummaryBuilder::with_ports(args.ports.clone());
    let mut kept: Vec<FinishedConnection> = Vec::new();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut write_error: Option<io::Error> = None;
    let store = match &args.db {
        Some(path) => Some(open_store(path)?),
        None => None,
    };
    let started_ts_ns = now_ns();
    let run_id = args.run_id.clone().unwrap_or_else(|| format!("analyze-{started_ts_ns}"));
    let scope = Scope::new(run_id.clone(), hostname());
    if let Some(store) = &store {
        store.ingest(&scope, [&run_record(&args, started_ts_ns)]).context("recording the run")?;
    }
    let mut db_sink = match &store {
        Some(store) => {
            Some(store.connection_sink(&scope).context("opening the connections table")?)
        }
        None => None,
    };
    let mut db_error: Option<peel_store::StoreError> = None;
    let end = {
        let mut sink = |finished: FinishedConnection| {
            if let (Some(sink), None) = (db_sink.as_mut(), db_error.as_ref()) {
                if let Err(err) = sink.push(&finished) {
                    db_error = Some(err);
                }
            }
            if !builder.wants(finished.connection.server_port) {
                return;
            }
            builder.add(&finished);
            match args.format {
                Format::Table => {}
                Format::Json => kept.push(finished),
                Format::Ndjson => {
                    if write_error.is_none() {
                        let line = serde_json::to_string(&finished).unwrap_or_default();
                        if let Err(err) = writeln!(out, "{line}") {
                            write_error = Some(err);
                        }
                    }
                }
            }
        };
        analyze_paths(&args.paths, config, &mut sink).map_err(input_error)?
    };
    if let Some(err) = db_error {
        return Err(anyhow::Error::new(err).context("writing connections to the database"));
    }
    if let (Some(store), Some(sink)) = (&store, db_sink) {
        sink.finish().context("writing connections to the database")?;
        store.ingest(&scope, end.warnings.iter()).context("writing capture_warnings")?;
        store.finish_run(&scope, now_ns(), "passed").context("finishing the run")?;
    }
    if let Some(store) = store {
        store.close().context("closing the database")?;
    }
    let summary = builder.finish(&end);
    match args.format {
        Format::Table => render_table(&mut out, &summary, args.paths.len())?,
        Format::Json => {
            let whole = Whole { summary: &summary, connections: &kept };
            serde_json::to_writer_pretty(&mut out, &whole)?;
            writeln!(out)?;
        }
        Format::Ndjson => {
            if let Some(err) = write_error {
                return Err(err).context("writing to standard output");
            }
            render_warnings_to_stderr(&summary.warnings);
        }
    }
    out.flush().context("writing to standard output")?;
    if let Some(path) = &args.db {
        eprintln!("wrote {} (run_id {run_id})", path.display());
    }
    Ok(Outcome::Success)
}

/// `--format json`: the summary and every connection, fields in record order.
#[derive(serde::Serialize)]
struct Whole<'a> {
    summary: &'a Summary,
    connections: &'a [FinishedConnection],
}

fn open_store(path: &Path) -> anyhow::Result<Store> {
    Store::open(path, Access::ReadWrite).map_err(|err| {
        Fail::runtime(&err).hint("--db needs a writable path for a DuckDB file").into()
    })
}

fn run_record(args: &Args, started_ts_ns: i64) -> RunRecord {
    let paths: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
    RunRecord {
        playbook: "analyze".into(),
        playbook_path: None,
        playbook_sha256: None,
        variables_json: Some(
            serde_json::json!({ "paths": paths, "ports": args.ports }).to_string(),
        ),
        started_ts_ns,
        ended_ts_ns: None,
        status: "running".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string()),
        run_dir: None,
    }
}

/// Files the user named that cannot be read are theirs to fix (exit 2).
fn input_error(err: WireError) -> anyhow::Error {
    let hint = match &err {
        WireError::Open { .. } => "check the path and its permissions",
        WireError::EmptyDirectory { .. } => {
            "point at the capture files or the directory that holds them"
        }
        WireError::NotACapture { .. }
        | WireError::BadHeader { .. }
        | WireError::BadStructure { .. } => "peel reads pcap and pcapng files, optionally gzip'd",
        WireError::Read { .. } => "the file could not be read to its end",
        WireError::Write(_) | WireError::Build(_) => return anyhow::Error::new(err),
    };
    Fail::usage(&err).hint(hint).into()
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A duration in µs with a unit that keeps 4 to 6 significant digits: `13.711 µs`, `107.959 ms`.
fn human_us(us: f64) -> String {
    let magnitude = us.abs();
    if magnitude < 1_000.0 {
        format!("{us:.3} µs")
    } else if magnitude < 1_000_000.0 {
        format!("{:.3} ms", us / 1_000.0)
    } else {
        format!("{:.3} s", us / 1_000_000.0)
    }
}

fn human_opt(us: Option<f64>) -> String {
    us.map_or_else(|| "-".to_string(), human_us)
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// Columns in `left` (text) left-aligned, the others (numbers) right-aligned, two spaces apart.
fn aligned(rows: &[Vec<String>], left: &[usize]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    if left.contains(&c) {
                        format!("{cell}{}", " ".repeat(pad))
                    } else {
                        format!("{}{cell}", " ".repeat(pad))
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

fn endpoint_name(e: &EndpointSummary) -> String {
    std::net::SocketAddr::new(e.server_ip, e.server_port).to_string()
}

fn render_table(out: &mut impl Write, summary: &Summary, files: usize) -> anyhow::Result<()> {
    let span = match (summary.first_ts_ns, summary.last_ts_ns) {
        (Some(first), Some(last)) => human_us(last.saturating_sub(first) as f64 / 1000.0),
        _ => "-".into(),
    };
    writeln!(
        out,
        "capture: {} path(s), {} packets ({} TCP), {} connections over {span}",
        files, summary.packets, summary.tcp_packets, summary.connections
    )?;
    writeln!(out)?;
    writeln!(out, "endpoints")?;
    let mut rows = vec![vec![
        "server".to_string(),
        "conns".into(),
        "conn/s".into(),
        "req/conn".into(),
        "closed by client".into(),
        "by server".into(),
        "resets".into(),
        "syn rtx".into(),
        "rtx rate".into(),
        "dominant".into(),
    ]];
    for e in &summary.endpoints {
        rows.push(vec![
            endpoint_name(e),
            e.connections.to_string(),
            e.connections_per_sec.map_or_else(|| "-".into(), |r| format!("{r:.1}")),
            format!("{:.2}", e.requests_per_connection),
            percent(e.closed_by_client_share),
            percent(e.closed_by_server_share),
            e.resets.to_string(),
            e.syn_retransmits.to_string(),
            format!("{:.2}%", e.retransmission_rate * 100.0),
            e.dominant_phase.unwrap_or("-").to_string(),
        ]);
    }
    if summary.endpoints.is_empty() {
        writeln!(out, "  (no TCP connections)")?;
    } else {
        for line in aligned(&rows, &[0, 9]) {
            writeln!(out, "  {line}")?;
        }
    }
    for e in &summary.endpoints {
        writeln!(out)?;
        writeln!(out, "phases of {} ({} connections)", endpoint_name(e), e.connections)?;
        let mut rows = vec![vec![
            "phase".to_string(),
            "count".into(),
            "p50".into(),
            "p90".into(),
            "p99".into(),
            "max".into(),
        ]];
        for p in &e.phases {
            rows.push(vec![
                p.phase.to_string(),
                p.count.to_string(),
                human_us(p.p50_us),
                human_us(p.p90_us),
                human_us(p.p99_us),
                human_us(p.max_us),
            ]);
        }
        for line in aligned(&rows, &[0]) {
            writeln!(out, "  {line}")?;
        }
        if e.slowest.is_empty() {
            continue;
        }
        writeln!(out, "  slowest connections")?;
        let mut rows = vec![vec![
            "conn".to_string(),
            "client".into(),
            "lifetime".into(),
            "handshake".into(),
            "req wait".into(),
            "server".into(),
            "response".into(),
            "close".into(),
            "state".into(),
        ]];
        for s in &e.slowest {
            rows.push(vec![
                s.conn_id.to_string(),
                std::net::SocketAddr::new(s.client_ip, s.client_port).to_string(),
                human_us(s.lifetime_us),
                human_opt(s.handshake_us),
                human_opt(s.request_wait_us),
                human_opt(s.server_us),
                human_opt(s.response_us),
                human_opt(s.close_us),
                s.state.as_str().to_string(),
            ]);
        }
        for line in aligned(&rows, &[1, 8]) {
            writeln!(out, "    {line}")?;
        }
    }
    writeln!(out)?;
    if summary.warnings.is_empty() {
        writeln!(out, "warnings: none")?;
        return Ok(());
    }
    writeln!(out, "warnings")?;
    let mut rows = vec![vec![
        "file".to_string(),
        "reason".into(),
        "count".into(),
        "first packet".into(),
        "byte offset".into(),
        "detail".into(),
    ]];
    for w in &summary.warnings {
        rows.push(warning_row(w));
    }
    for line in aligned(&rows, &[0, 1, 5]) {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

fn warning_row(w: &CaptureWarning) -> Vec<String> {
    vec![
        w.file.clone(),
        w.reason.as_str().to_string(),
        w.count.to_string(),
        w.packet_index.map_or_else(|| "-".into(), |i| i.to_string()),
        w.byte_offset.map_or_else(|| "-".into(), |o| o.to_string()),
        w.detail.clone().unwrap_or_default(),
    ]
}

fn render_warnings_to_stderr(warnings: &[CaptureWarning]) {
    for w in warnings {
        let row = warning_row(w);
        eprintln!(
            "warning: {}: {} x{} (first packet {}, byte offset {}): {}",
            row[0], row[1], row[2], row[3], row[4], row[5]
        );
    }
}
