//! `peel snap`: what the dashboards did not show, in one screen: sockets by state, port and peer,
//! accept queues against their backlog, ephemeral ports per destination, the processes behind the
//! ports, and (sampled with `--every`/`--for`) kernel TCP counters as rates and the CPU peak next
//! to the load. Reading is peel-snap's; this module maps flags and renders.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use peel_snap::aggregate::{by_state, summarize, SeriesSummary, SeriesTally, SnapshotSummary};
use peel_snap::records::SnapshotRecords;
use peel_snap::{ProcRoot, ProcessMatch, Sampler, SnapError, SnapOptions, SocketSource};
use peel_store::{Access, RunRecord, Scope, Store};
use serde::Serialize;

use crate::exit::{Fail, Outcome};

const LONG_ABOUT: &str = "\
Snapshot the TCP socket table, kernel TCP counters, sysctls, CPU, load, memory and chosen
processes, and print the aggregates that answer an incident's first questions.

Sockets come from netlink sock_diag (what `ss` uses), with tcp_info (rtt, cwnd, retransmits,
bytes) and, for listeners, the accept queue against the backlog; each socket's owning process is
found through /proc/<pid>/fd (as `ss -p` does; run as root to see every process). If netlink is
unavailable, or with --proc-root, /proc/net/tcp{,6} is read instead (no tcp_info, no backlog).

With --every and --for a series is taken: counters become per-second rates, and the CPU peak over
the window is shown next to the load average. A high load with a low CPU peak means the time goes
to waiting (connections, queues, locks), not to computing. Ctrl-C ends a series early and still
prints it.

--proc-root reads a copy of another host's /proc, so a snapshot can be analyzed offline: net/
and sys/ for sockets, counters and sysctls; loadavg, meminfo, stat and uptime for load, memory and
CPU; and per process stat, status, limits, cmdline, comm and fd/ (kept as symlinks) for --process
and socket owners. CPU use is a difference between two readings, so a single copy has none. /proc
files report a size of 0, so tar and cp store them empty; copy them with cat:
  dest=$PWD/copy; cd /proc
  for f in loadavg meminfo stat uptime net/tcp net/tcp6 net/udp net/udp6 net/unix net/netstat \\
      net/snmp net/sockstat net/sockstat6 [0-9]*/stat [0-9]*/status [0-9]*/limits \\
      [0-9]*/cmdline [0-9]*/comm; do mkdir -p \"$(dirname $dest/$f)\"; cat $f > $dest/$f; done 2>/dev/null
  for d in [0-9]*/fd; do mkdir -p $dest/$d; cp -P $d/* $dest/$d/; done 2>/dev/null
  find sys/net sys/fs sys/kernel/hostname -type f -readable | while read f; do
      mkdir -p $dest/${f%/*}; cat $f > $dest/$f; done 2>/dev/null

--db PATH writes every snapshot into a run database (tables snapshots, system, cpus, sysctl,
sockets, socket_counts, tcp_counters, processes; docs/schema.md), as it is taken.";

const EXAMPLES: &str = "\
Examples:
  # one snapshot with the app's processes
  peel snap --process gunicorn --process postgres

  # a minute, every second: rates and the CPU peak during the window
  peel snap --every 1s --for 60s --format json > snap.json

  # the same into a run database, for SQL next to the load test and the capture
  peel snap --every 1s --for 5m --db run.duckdb --run-id incident-42

  # a copy of another host's /proc
  peel snap --proc-root ./host-a/proc";

/// Snapshot sockets, TCP counters, sysctls and processes.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_long_help = EXAMPLES)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Read a copy of /proc at DIR instead of the live kernel.
    #[arg(long, value_name = "DIR")]
    proc_root: Option<PathBuf>,

    /// Take a snapshot every D (e.g. 1s, 500ms); needs --for.
    #[arg(long, value_name = "D", value_parser = peel_capture::parse_duration, requires = "total")]
    every: Option<Duration>,

    /// Length of the series (e.g. 60s, 5m); needs --every.
    #[arg(long = "for", id = "total", value_name = "D", value_parser = peel_capture::parse_duration, requires = "every")]
    total: Option<Duration>,

    /// Report a process by name (comm or program) or pid; repeat for several.
    #[arg(long = "process", value_name = "NAME|PID")]
    processes: Vec<String>,

    /// Also read these sysctl keys or globs (net.ipv4.tcp_*); repeat for several.
    #[arg(long = "sysctl", value_name = "KEY|GLOB")]
    sysctls: Vec<String>,

    /// How to read TCP sockets.
    #[arg(long, value_enum, default_value_t = Source::Auto)]
    source: Source,

    /// Also write the snapshots into this run database (DuckDB; created if missing).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,

    /// Run id for the rows written with --db [default: snap-<start time in ns>].
    #[arg(long, value_name = "ID", requires = "db")]
    run_id: Option<String>,

    /// Rows per table in table output.
    #[arg(long, value_name = "N", default_value_t = 10)]
    limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// netlink on the live host, /proc/net/tcp if that fails or with --proc-root
    Auto,
    /// netlink sock_diag only
    Netlink,
    /// /proc/net/tcp{,6} only
    Proc,
}

/// `peel snap --format json` for one snapshot: the records, then the aggregates.
#[derive(Debug, Serialize)]
struct SnapshotOutput<'a> {
    #[serde(flatten)]
    records: &'a SnapshotRecords,
    summary: SnapshotSummary,
}

/// `peel snap --format json` for a series.
#[derive(Debug, Serialize)]
struct SeriesOutput<'a> {
    snapshots: &'a [SnapshotRecords],
    /// Aggregates of the last snapshot.
    summary: Option<SnapshotSummary>,
    series: SeriesSummary,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let proc_root = args.proc_root.clone().map_or_else(ProcRoot::live, ProcRoot::new);
    if !proc_root.is_live() && !proc_root.path("net/tcp").exists() {
        return Err(Fail::usage(format!("{} has no net/tcp", proc_root.dir().display()))
            .hint("--proc-root takes a copy of /proc (with net/ and sys/)")
            .into());
    }
    let options = SnapOptions {
        proc_root,
        sysctl_patterns: args.sysctls.clone(),
        processes: args.processes.iter().map(|p| ProcessMatch::parse(p)).collect(),
        socket_source: match args.source {
            Source::Auto => SocketSource::Auto,
            Source::Netlink => SocketSource::Netlink,
            Source::Proc => SocketSource::Proc,
        },
    };
    let recorder = match &args.db {
        Some(path) => Some(DbRecorder::open(path, &args, &options.proc_root)?),
        None => None,
    };
    let mut sampler = Sampler::new(options);
    let mut stdout = std::io::stdout().lock();
    match (args.every, args.total) {
        (Some(every), Some(total)) => {
            if every.is_zero() {
                return Err(Fail::usage("--every must be more than 0")
                    .hint("e.g. --every 1s")
                    .into());
            }
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(signal, Arc::clone(&stop))
                    .context("installing the Ctrl-C handler")?;
            }
            // JSON prints every snapshot; a table needs only the last one and the running tally,
            // so a long series of a large socket table is not kept in memory.
            let keep_all = args.format == Format::Json;
            let mut series = Vec::new();
            let mut tally = SeriesTally::default();
            let interactive = args.format == Format::Table;
            let mut stderr = std::io::stderr().lock();
            sampler.run(every, total, &stop, |snapshot| {
                if interactive {
                    let _ = writeln!(stderr, "{}", progress_line(&snapshot));
                }
                if let Some(recorder) = &recorder {
                    recorder.record(&snapshot)?;
                }
                tally.add(&snapshot);
                if !keep_all {
                    series.clear();
                }
                series.push(snapshot);
                Ok::<(), anyhow::Error>(())
            })?;
            drop(stderr);
            let series_summary = tally.summary();
            if let Some(recorder) = recorder {
                let status = if stop.load(Ordering::Relaxed) { "interrupted" } else { "passed" };
                recorder.finish(status, series_summary.snapshots as usize)?;
            }
            let summary = series.last().map(summarize);
            match args.format {
                Format::Json => {
                    let output =
                        SeriesOutput { snapshots: &series, summary, series: series_summary };
                    serde_json::to_writer(&mut stdout, &output)?;
                    writeln!(stdout)?;
                }
                Format::Table => {
                    if let Some(last) = series.last() {
                        write_snapshot(&mut stdout, last, args.limit)?;
                    }
                    write_series(&mut stdout, &series_summary, args.limit)?;
                }
            }
        }
        _ => {
            let snapshot = sampler.snapshot().map_err(snap_error)?;
            if let Some(recorder) = recorder {
                recorder.record(&snapshot)?;
                recorder.finish("passed", 1)?;
            }
            match args.format {
                Format::Json => {
                    let output =
                        SnapshotOutput { records: &snapshot, summary: summarize(&snapshot) };
                    serde_json::to_writer(&mut stdout, &output)?;
                    writeln!(stdout)?;
                }
                Format::Table => write_snapshot(&mut stdout, &snapshot, args.limit)?,
            }
        }
    }
    Ok(Outcome::Success)
}

/// Writes snapshots into a run database as they are taken.
#[derive(Debug)]
struct DbRecorder {
    store: Store,
    scope: Scope,
}

impl DbRecorder {
    fn open(path: &Path, args: &Args, root: &ProcRoot) -> anyhow::Result<Self> {
        let store = Store::open(path, Access::ReadWrite).map_err(|err| {
            Fail::runtime(&err).hint("--db needs a writable path for a DuckDB file")
        })?;
        let started_ts_ns = now_ns();
        let run_id = args.run_id.clone().unwrap_or_else(|| format!("snap-{started_ts_ns}"));
        let host = std::fs::read_to_string(root.path("sys/kernel/hostname")).unwrap_or_default();
        let scope = Scope::new(run_id, host.trim());
        let run = RunRecord {
            playbook: "snap".into(),
            playbook_path: None,
            playbook_sha256: None,
            variables_json: Some(
                serde_json::json!({
                    "proc_root": root.dir().display().to_string(),
                    "every_us": args.every.map(|d| d.as_micros() as u64),
                    "for_us": args.total.map(|d| d.as_micros() as u64),
                    "processes": args.processes,
                    "sysctls": args.sysctls,
                })
                .to_string(),
            ),
            started_ts_ns,
            ended_ts_ns: None,
            status: "running".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            kernel: std::fs::read_to_string(root.path("sys/kernel/osrelease"))
                .ok()
                .map(|s| s.trim().to_owned()),
            run_dir: None,
        };
        store.ingest(&scope, [&run]).context("recording the run")?;
        Ok(DbRecorder { store, scope })
    }

    fn record(&self, snapshot: &SnapshotRecords) -> anyhow::Result<()> {
        self.store
            .ingest_snapshot(&self.scope, snapshot)
            .context("writing the snapshot to the database")
    }

    fn finish(self, status: &str, snapshots: usize) -> anyhow::Result<()> {
        self.store.finish_run(&self.scope, now_ns(), status).context("finishing the run")?;
        let path = self.store.close().context("closing the database")?;
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(
            stderr,
            "stored {snapshots} snapshot(s) in {} (run {})",
            path.display(),
            self.scope.run_id
        );
        Ok(())
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Maps library errors to exit codes: bad input is the user's (2), the rest the environment's (3).
pub(crate) fn snap_error(err: SnapError) -> anyhow::Error {
    let fail = match &err {
        SnapError::UnknownKey { .. } => {
            Fail::usage(&err).hint("list keys with `peel sysctl get 'net.*'` or look under /proc/sys")
        }
        SnapError::InvalidKey { .. } | SnapError::InvalidAssignment { .. } | SnapError::SnapshotFile { .. } => {
            Fail::usage(&err)
        }
        SnapError::Rejected { .. } => Fail::usage(&err).hint("the kernel's limits for the key are in its documentation (Documentation/networking/ip-sysctl.rst)"),
        SnapError::JournalExists { path } => Fail::usage(&err).hint(format!(
            "undo the earlier changes first: peel sysctl restore {}",
            path.display()
        )),
        SnapError::Write { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            Fail::runtime(&err).hint("writing sysctls needs root (or CAP_SYS_ADMIN / CAP_NET_ADMIN)")
        }
        SnapError::Netlink(_) => Fail::runtime(&err).hint("use --source proc to read /proc/net/tcp instead"),
        _ => Fail::runtime(&err),
    };
    fail.into()
}

fn progress_line(snapshot: &SnapshotRecords) -> String {
    let states: Vec<String> = by_state(&snapshot.sockets)
        .iter()
        .take(4)
        .map(|s| format!("{} {}", s.state, s.count))
        .collect();
    let cpu = snapshot
        .system
        .as_ref()
        .and_then(|s| s.cpu_usage_pct)
        .map_or_else(String::new, |c| format!("  cpu {c:.1}%"));
    format!(
        "snap {:>3}  tcp {:>6}  {}{cpu}",
        snapshot.snapshot.snap_id,
        snapshot.sockets.len(),
        states.join("  ")
    )
}

/// A plain aligned text table: left-aligned text, right-aligned numbers.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    numeric: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// `columns`: header and whether the column holds numbers (right-aligned).
    pub(crate) fn new(columns: &[(&'static str, bool)]) -> Self {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            numeric: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut text = String::new();
            for (index, cell) in cells.iter().enumerate() {
                let width = widths[index];
                let last = index + 1 == cells.len();
                let padded = if self.numeric[index] {
                    format!("{cell:>width$}")
                } else if last {
                    (*cell).to_owned()
                } else {
                    format!("{cell:<width$}")
                };
                text.push_str(&padded);
                if !last {
                    text.push_str("  ");
                }
            }
            text.trim_end().to_owned()
        };
        writeln!(out, "  {}", line(self.headers.clone()))?;
        for row in &self.rows {
            writeln!(out, "  {}", line(row.iter().map(String::as_str).collect()))?;
        }
        Ok(())
    }
}

fn write_snapshot(
    out: &mut impl Write,
    snapshot: &SnapshotRecords,
    limit: usize,
) -> std::io::Result<()> {
    let summary = summarize(snapshot);
    let meta = &snapshot.snapshot;
    writeln!(
        out,
        "snapshot {}  host {}  sockets via {}  took {:.1} ms",
        meta.snap_id,
        if meta.host.is_empty() { "?" } else { &meta.host },
        meta.socket_source,
        meta.duration_us as f64 / 1000.0
    )?;
    if let Some(system) = &snapshot.system {
        let cpu = match (system.cpu_usage_pct, system.cpu_max_pct) {
            (Some(all), Some(max)) => {
                format!("cpu {all:.1}% (busiest cpu {max:.1}%) of {} cpus", system.cpu_count)
            }
            _ => format!("{} cpus", system.cpu_count),
        };
        writeln!(
            out,
            "load {:.2} {:.2} {:.2}  {cpu}  memory {} used of {}, {} available",
            system.load1,
            system.load5,
            system.load15,
            bytes(system.mem_used_bytes),
            bytes(system.mem_total_bytes),
            bytes(system.mem_available_bytes)
        )?;
    }
    let states: Vec<String> =
        summary.by_state.iter().map(|s| format!("{} {}", s.state, s.count)).collect();
    writeln!(out, "tcp sockets {}: {}", summary.tcp_sockets, states.join(", "))?;
    writeln!(
        out,
        "TIME_WAIT {}  CLOSE_WAIT {}  SYN_RECV {}",
        summary.time_wait, summary.close_wait, summary.syn_recv
    )?;
    let others: Vec<String> = snapshot
        .socket_counts
        .iter()
        .map(|c| format!("{} {} {}", c.protocol, c.state, c.count))
        .collect();
    if !others.is_empty() {
        writeln!(out, "other sockets: {}", others.join(", "))?;
    }

    writeln!(out, "\nby local port and state")?;
    let mut table =
        Table::new(&[("PORT", true), ("STATE", false), ("SOCKETS", true), ("PROCESS", false)]);
    for row in summary.by_local_port.iter().take(limit) {
        table.row(vec![
            row.local_port.to_string(),
            row.state.clone(),
            row.count.to_string(),
            opt(&row.process),
        ]);
    }
    table.write(out)?;

    writeln!(out, "\nby remote endpoint and state")?;
    let mut table = Table::new(&[("REMOTE", false), ("STATE", false), ("SOCKETS", true)]);
    for row in summary.by_remote.iter().take(limit) {
        table.row(vec![
            endpoint(&row.remote_ip, row.remote_port),
            row.state.clone(),
            row.count.to_string(),
        ]);
    }
    table.write(out)?;

    if let Some((low, high)) = summary.ephemeral_range {
        writeln!(out, "\nephemeral ports per destination (ip_local_port_range {low}-{high})")?;
        let mut table = Table::new(&[("DESTINATION", false), ("IN USE", true), ("OF RANGE", true)]);
        for row in summary.ephemeral_by_destination.iter().take(limit) {
            table.row(vec![
                endpoint(&row.remote_ip, row.remote_port),
                row.ports_in_use.to_string(),
                format!("{:.1}%", row.used_pct),
            ]);
        }
        table.write(out)?;
    }

    writeln!(out, "\naccept queues at 80% of their backlog or more")?;
    if summary.accept_queues_near_backlog.is_empty() {
        writeln!(out, "  none")?;
    } else {
        let mut table = Table::new(&[
            ("LISTEN", false),
            ("QUEUE", true),
            ("BACKLOG", true),
            ("PROCESS", false),
        ]);
        for row in summary.accept_queues_near_backlog.iter().take(limit) {
            table.row(vec![
                endpoint(&row.local_ip, row.local_port),
                row.accept_queue.to_string(),
                row.listen_backlog.map_or_else(|| "?".to_owned(), |b| b.to_string()),
                process(row.pid, &row.process),
            ]);
        }
        table.write(out)?;
    }

    if !snapshot.processes.is_empty() {
        writeln!(out, "\nprocesses")?;
        let mut table = Table::new(&[
            ("PID", true),
            ("NAME", false),
            ("CPU%", true),
            ("RSS", true),
            ("THREADS", true),
            ("FDS", true),
            ("FD LIMIT", true),
            ("SOCKETS", true),
            ("CHILDREN", true),
        ]);
        for p in &snapshot.processes {
            table.row(vec![
                p.pid.to_string(),
                p.name.clone(),
                p.cpu_pct.map_or_else(|| "?".to_owned(), |c| format!("{c:.1}")),
                bytes(p.rss_bytes),
                p.threads.to_string(),
                p.open_fds.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                p.fd_limit.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                p.sockets.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                p.children.to_string(),
            ]);
        }
        table.write(out)?;
    }

    writeln!(out, "\nkernel counters (nonzero; rates need --every)")?;
    let mut table = Table::new(&[("COUNTER", false), ("VALUE", true), ("PER SECOND", true)]);
    for counter in snapshot.tcp_counters.iter().filter(|c| c.value != 0 && is_key_counter(&c.name))
    {
        table.row(vec![
            counter.name.clone(),
            counter.value.to_string(),
            counter.rate_per_s.map_or_else(String::new, |r| format!("{r:.1}")),
        ]);
    }
    table.write(out)?;

    for warning in &snapshot.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    Ok(())
}

/// The counters an on-call engineer looks at first; JSON has them all.
fn is_key_counter(name: &str) -> bool {
    const KEY: &[&str] = &[
        "TcpExt.ListenOverflows",
        "TcpExt.ListenDrops",
        "TcpExt.TCPBacklogDrop",
        "TcpExt.TCPTimeWaitOverflow",
        "TcpExt.TCPAbortOnClose",
        "TcpExt.TCPAbortOnTimeout",
        "TcpExt.TCPAbortOnMemory",
        "TcpExt.TCPAbortOnData",
        "TcpExt.SyncookiesSent",
        "TcpExt.TCPReqQFullDrop",
        "TcpExt.TCPReqQFullDoCookies",
        "TcpExt.TW",
        "Tcp.ActiveOpens",
        "Tcp.PassiveOpens",
        "Tcp.AttemptFails",
        "Tcp.EstabResets",
        "Tcp.CurrEstab",
        "Tcp.RetransSegs",
        "Tcp.InErrs",
        "Tcp.OutRsts",
        "sockstat.TCP.inuse",
        "sockstat.TCP.orphan",
        "sockstat.TCP.tw",
        "sockstat.TCP.alloc",
        "sockstat.TCP.mem",
        "sockstat6.TCP6.inuse",
        "conntrack.count",
        "conntrack.max",
        "file-nr.allocated",
        "file-nr.max",
    ];
    KEY.contains(&name)
}

fn write_series(out: &mut impl Write, series: &SeriesSummary, limit: usize) -> std::io::Result<()> {
    writeln!(out, "\nseries: {} snapshots over {:.1} s", series.snapshots, series.duration_s)?;
    let pct = |value: Option<f64>| value.map_or_else(|| "?".to_owned(), |v| format!("{v:.1}%"));
    let load = |value: Option<f64>| value.map_or_else(|| "?".to_owned(), |v| format!("{v:.2}"));
    writeln!(
        out,
        "cpu peak {} (busiest single cpu {})  load1 max {}, last {}",
        pct(series.cpu_peak_pct),
        pct(series.cpu_peak_single_pct),
        load(series.load1_max),
        load(series.load1_last)
    )?;
    let states: Vec<String> =
        series.max_by_state.iter().map(|s| format!("{} {}", s.state, s.count)).collect();
    writeln!(out, "most tcp sockets per state: {}", states.join(", "))?;
    writeln!(out, "\ncounters that moved")?;
    if series.moved_counters.is_empty() {
        writeln!(out, "  none")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        ("COUNTER", false),
        ("CHANGE", true),
        ("PER SECOND", true),
        ("MAX PER SECOND", true),
    ]);
    for counter in series.moved_counters.iter().take(limit.max(20)) {
        table.row(vec![
            counter.name.clone(),
            format!("{:+}", counter.delta),
            counter.rate_per_s.map_or_else(String::new, |r| format!("{r:.1}")),
            counter.max_rate_per_s.map_or_else(String::new, |r| format!("{r:.1}")),
        ]);
    }
    table.write(out)
}

fn endpoint(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

fn opt(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

fn process(pid: Option<u32>, name: &Option<String>) -> String {
    match (pid, name) {
        (Some(pid), Some(name)) => format!("{name} ({pid})"),
        (Some(pid), None) => pid.to_string(),
        _ => String::new(),
    }
}

fn bytes(value: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut amount = value as f64;
    let mut unit = 0;
    while amount >= 1024.0 && unit + 1 < UNITS.len() {
        amount /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value} B")
    } else {
        format!("{amount:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_numbers_right() {
        let mut table = Table::new(&[("PORT", true), ("STATE", false), ("SOCKETS", true)]);
        table.row(vec!["8000".into(), "CLOSE_WAIT".into(), "5".into()]);
        table.row(vec!["22".into(), "LISTEN".into(), "1".into()]);
        let mut out = Vec::new();
        table.write(&mut out).expect("write to a Vec");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text, "  PORT  STATE       SOCKETS\n  8000  CLOSE_WAIT        5\n    22  LISTEN            1\n");
    }

    #[test]
    fn sizes_and_endpoints() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(endpoint("::1", 80), "[::1]:80");
        assert_eq!(endpoint("10.0.0.9", 5432), "10.0.0.9:5432");
    }
}
