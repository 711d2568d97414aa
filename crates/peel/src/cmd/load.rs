//! `peel load`: HTTP/1.1 load against one service, open model (`--rate`) or closed model
//! (`--concurrency`), with a live progress line, a per-class table or JSON report, and optionally
//! every request recorded in a run database. The generator is peel-load's; this module maps flags to
//! its config, draws progress and renders.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use peel_capture::parse_duration;
use peel_load::{
    run_load, targets_from_mix, LoadConfig, LoadError, LoadReport, LoadSummary, Model, Progress,
    RecordSink, RequestRecord, SinkError, Target, DEFAULT_MAX_REQUESTS,
};
use peel_store::{Access, RunRecord, Scope, Store};

use crate::exit::{Fail, Outcome};

const LONG_ABOUT: &str = "\
Send HTTP/1.1 load to one service and report latency per URL class.

Two models. --rate R is the open model: requests are scheduled at a constant R per second whatever
the server does, and each request's latency is measured from its scheduled time, so a stalled
server shows up as latency instead of being hidden by a generator that waits (coordinated
omission). --concurrency C is the closed model: C clients each send a request, wait for the answer,
then send the next.

Connections are exact. With --keepalive on (the default) at most --connections N TCP connections
are opened and reused (a new one only replaces one the server closed). With --keepalive off every
request opens a new TCP connection and sends `Connection: close`, like a client without a pool;
--connections still bounds how many are open at once. In the open model, requests wait for a free
connection, and that wait counts in their latency.

Each URL's path is its class (cached vs uncached endpoints get separate percentiles). --mix gives
weights: one base URL plus path=weight entries, sent in exact proportions. Percentiles come from
HDR histograms (3 significant digits) over responses of any status; failed requests are counted by
kind: connect_refused, timeout (counted from the scheduled time), reset (the peer closed or reset
the connection before the response was complete), other.

The run ends after --duration or --max-requests, whichever comes first; requests still in flight
then finish (or time out). Ctrl-C stops early and still prints the report. A progress line is
drawn on stderr when it is a terminal.

With --db PATH every request (scheduled, start, first byte and end timestamps, status, bytes,
connection id, local port, reuse) goes into the table load_requests and each class's summary into
load_summaries, under --run-id (the database is created if missing).";

const EXAMPLES: &str = "\
Examples:
  # 200 requests/s for 30 s, latency counted from the schedule
  peel load http://127.0.0.1:8000/db --rate 200 --duration 30s

  # 64 clients, no keep-alive (one TCP connection per request), two classes
  peel load http://127.0.0.1:8000/cached http://127.0.0.1:8000/db --concurrency 64 \\
      --keepalive off --duration 1m

  # three cached requests for each uncached one, every request into a run database
  peel load http://127.0.0.1:8000 --mix /cached=3,/db=1 --rate 500 --duration 5m --db run.duckdb";

/// Send HTTP/1.1 load (open or closed model) and report latency per URL class.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_long_help = EXAMPLES)]
pub struct Args {
    /// http:// URLs to load (one host:port); with --mix, one base URL.
    #[arg(value_name = "URL", required = true)]
    urls: Vec<String>,

    /// Open model: requests scheduled per second.
    #[arg(long, value_name = "R", required_unless_present = "concurrency")]
    rate: Option<f64>,

    /// Closed model: concurrent clients.
    #[arg(long, value_name = "C", conflicts_with = "rate")]
    concurrency: Option<u32>,

    /// How long to start requests (30s, 5m, 1h).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    duration: Duration,

    /// Connection pool size [default: C in the closed model, 64 in the open model].
    #[arg(long, value_name = "N")]
    connections: Option<u32>,

    /// Reuse connections (on) or open one per request with `Connection: close` (off).
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    keepalive: OnOff,

    /// Weighted paths on the base URL: /cached=3,/db=1.
    #[arg(long, value_name = "PATH=WEIGHT,...")]
    mix: Option<String>,

    /// A request not finished this long after its scheduled time fails as `timeout`.
    #[arg(long, value_name = "T", value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,

    /// Start at most this many requests.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REQUESTS)]
    max_requests: u64,

    /// Record every request into this run database (created if missing).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,

    /// Run id for the rows written with --db [default: load-<start time in ns>].
    #[arg(long, value_name = "ID", requires = "db")]
    run_id: Option<String>,

    /// Format of the final report.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut config = config_from(&args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once (status 130).
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    config.stop = Some(stop);
    config.progress_every = Duration::from_millis(250);

    let bar = progress_bar();
    let mut on_progress = |p: &Progress| bar.set_message(progress_line(p));
    let report = match &args.db {
        None => run_load(&config, &mut on_progress, &mut peel_load::DiscardRecords),
        Some(path) => return run_with_db(&args, &config, path, &bar, &mut on_progress),
    };
    bar.finish_and_clear();
    let report = report.map_err(load_error)?;
    render(&report, args.format, None)?;
    Ok(Outcome::Success)
}

fn config_from(args: &Args) -> anyhow::Result<LoadConfig> {
    let targets = match &args.mix {
        Some(mix) => {
            let [base] = args.urls.as_slice() else {
                return Err(Fail::usage("--mix takes exactly one base URL")
                    .hint("peel load http://127.0.0.1:8000 --mix /cached=3,/db=1 ...")
                    .into());
            };
            targets_from_mix(base, mix).map_err(load_error)?
        }
        None => args
            .urls
            .iter()
            .map(|url| Target::new(url))
            .collect::<Result<_, _>>()
            .map_err(load_error)?,
    };
    let model = match (args.rate, args.concurrency) {
        (Some(rate_per_s), _) => Model::Open { rate_per_s },
        (None, Some(concurrency)) => Model::Closed { concurrency },
        (None, None) => return Err(Fail::usage("give --rate R or --concurrency C").into()),
    };
    let mut config = LoadConfig::new(targets, model, args.duration);
    if let Some(connections) = args.connections {
        config.connections = connections;
    }
    config.keepalive = args.keepalive == OnOff::On;
    config.timeout = args.timeout;
    config.max_requests = args.max_requests;
    Ok(config)
}

/// Settings and URLs are the user's to fix (exit 2); the rest is the environment (exit 3).
fn load_error(err: LoadError) -> anyhow::Error {
    match &err {
        LoadError::InvalidUrl { .. }
        | LoadError::InvalidMix { .. }
        | LoadError::InvalidConfig { .. }
        | LoadError::MixedAuthorities { .. }
        | LoadError::WeightsTooLarge { .. } => Fail::usage(&err).into(),
        LoadError::Resolve { source, .. } => {
            Fail::usage(format!("{err}: {source}")).hint("check the host name in the URL").into()
        }
        _ => anyhow::Error::new(err),
    }
}

fn run_with_db(
    args: &Args,
    config: &LoadConfig,
    path: &std::path::Path,
    bar: &ProgressBar,
    on_progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<Outcome> {
    let store = Store::open(path, Access::ReadWrite)
        .map_err(|err| Fail::runtime(&err).hint("--db needs a writable path for a DuckDB file"))?;
    let started_ts_ns = now_ns();
    let run_id = args.run_id.clone().unwrap_or_else(|| format!("load-{started_ts_ns}"));
    let scope = Scope::new(run_id.clone(), hostname());
    let run = RunRecord {
        playbook: "load".into(),
        playbook_path: None,
        playbook_sha256: None,
        variables_json: Some(
            serde_json::json!({
                "urls": args.urls,
                "mix": args.mix,
                "rate_per_s": args.rate,
                "concurrency": args.concurrency,
                "duration_us": config.duration.as_micros() as u64,
                "connections": config.connections,
                "keepalive": config.keepalive,
            })
            .to_string(),
        ),
        started_ts_ns,
        ended_ts_ns: None,
        status: "running".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string()),
        run_dir: None,
    };
    store.ingest(&scope, [&run]).context("recording the run")?;
    let report = {
        let mut requests = store.sink::<RequestRecord>(&scope).context("opening load_requests")?;
        let mut sink = StoreSink(&mut requests);
        let report = run_load(config, on_progress, &mut sink);
        bar.finish_and_clear();
        let report = report.map_err(load_error)?;
        requests.finish().context("writing load_requests")?;
        report
    };
    let summaries: Vec<&LoadSummary> = report.classes.iter().chain([&report.total]).collect();
    store.ingest(&scope, summaries).context("writing load_summaries")?;
    let status = if report.stopped_early { "interrupted" } else { "passed" };
    store.finish_run(&scope, now_ns(), status).context("finishing the run")?;
    let db_path = store.close().context("closing the database")?;
    render(&report, args.format, Some((&db_path, &run_id)))?;
    Ok(Outcome::Success)
}

/// Streams records into peel-store's Appender on the collector's thread.
struct StoreSink<'s, 'conn>(&'s mut peel_store::Sink<'conn, RequestRecord>);

impl RecordSink for StoreSink<'_, '_> {
    fn record(&mut self, record: RequestRecord) -> Result<(), SinkError> {
        self.record_ref(&record)
    }

    /// The appender only reads the record: no clone per request.
    fn record_ref(&mut self, record: &RequestRecord) -> Result<(), SinkError> {
        self.0.push(record).map_err(SinkError::from)
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A spinner with the live figures on stderr; hidden when stderr is not a terminal.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

fn progress_line(p: &Progress) -> String {
    format!(
        "{:>6.1} s  {} requests  {:.0} req/s  p50 {}  p99 {}  {} errors  {} connections",
        p.elapsed.as_secs_f64(),
        p.requests,
        p.requests_per_s,
        ms(p.latency_p50_us),
        ms(p.latency_p99_us),
        p.errors,
        p.connections_opened
    )
}

/// Microseconds as milliseconds with three decimals (the histograms' own resolution).
fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

fn render(
    report: &LoadReport,
    format: Format,
    db: Option<(&std::path::Path, &str)>,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => {
            let mut text = report_table(report);
            if let Some((path, run_id)) = db {
                text.push_str(&format!(
                    "\nrecorded {} requests in {} (run {run_id})\n",
                    report.total.requests,
                    path.display()
                ));
            }
            text
        }
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("writing the report")
}

/// A header line, one aligned row per class plus the total, then errors by kind if any.
fn report_table(report: &LoadReport) -> String {
    let model = match (report.rate_per_s, report.concurrency) {
        (Some(rate), _) => format!("open model, {rate} req/s scheduled"),
        (None, Some(clients)) => format!("closed model, {clients} clients"),
        (None, None) => report.model.clone(),
    };
    let keepalive = if report.keepalive { "keep-alive" } else { "no keep-alive" };
    let mut out = format!(
        "{model}, {} connections max ({keepalive}), {:.1} s{}, {} connections opened\n\n",
        report.connections,
        report.elapsed_us as f64 / 1e6,
        if report.stopped_early { ", stopped early" } else { "" },
        report.connections_opened,
    );
    let header = [
        "class", "requests", "req/s", "2xx", "3xx", "4xx", "5xx", "errors", "conns", "p50_ms",
        "p90_ms", "p99_ms", "p99.9_ms", "max_ms",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for summary in report.classes.iter().chain([&report.total]) {
        let cell_ms = |us: u64| format!("{}.{:03}", us / 1000, us % 1000);
        rows.push(vec![
            summary.url_class.clone(),
            summary.requests.to_string(),
            format!("{:.1}", summary.requests_per_s),
            summary.status_2xx.to_string(),
            summary.status_3xx.to_string(),
            summary.status_4xx.to_string(),
            summary.status_5xx.to_string(),
            summary.errors.to_string(),
            summary.connections_opened.to_string(),
            cell_ms(summary.latency_p50_us),
            cell_ms(summary.latency_p90_us),
            cell_ms(summary.latency_p99_us),
            cell_ms(summary.latency_p999_us),
            cell_ms(summary.latency_max_us),
        ]);
    }
    out.push_str(&columns(&rows));
    let t = &report.total;
    if t.errors > 0 {
        out.push_str(&format!(
            "\nerrors: connect_refused {}, timeout {}, reset {}, other {}\n",
            t.errors_connect_refused, t.errors_timeout, t.errors_reset, t.errors_other
        ));
    }
    out
}

/// The first column left-aligned, the others right-aligned, each as wide as its widest cell.
fn columns(rows: &[Vec<String>]) -> String {
    let width_of =
        |column: usize| rows.iter().filter_map(|r| r.get(column)).map(|c| c.chars().count()).max();
    let widths: Vec<usize> =
        (0..rows.first().map_or(0, Vec::len)).map(|c| width_of(c).unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(
                    |(i, (cell, &w))| {
                        if i == 0 {
                            format!("{cell:<w$}")
                        } else {
                            format!("{cell:>w$}")
                        }
                    },
                )
                .collect();
            line.join("  ").trim_end().to_string() + "\n"
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(class: &str, requests: u64, p50_us: u64) -> LoadSummary {
        LoadSummary {
            url_class: class.into(),
            requests,
            responses: requests,
            requests_per_s: requests as f64 / 10.0,
            status_1xx: 0,
            status_2xx: requests,
            status_3xx: 0,
            status_4xx: 0,
            status_5xx: 0,
            errors: 0,
            errors_connect_refused: 0,
            errors_timeout: 0,
            errors_reset: 0,
            errors_other: 0,
            connections_opened: 4,
            response_body_bytes: 0,
            latency_min_us: 100,
            latency_mean_us: 900.0,
            latency_p50_us: p50_us,
            latency_p90_us: 2_000,
            latency_p99_us: 12_345,
            latency_p999_us: 20_000,
            latency_max_us: 1_234_567,
        }
    }

    #[test]
    fn report_table_is_aligned_per_class_with_total() {
        let mut total = summary("total", 4000, 900);
        total.errors = 3;
        total.errors_timeout = 3;
        let report = LoadReport {
            model: "closed".into(),
            rate_per_s: None,
            concurrency: Some(8),
            connections: 8,
            keepalive: true,
            duration_us: 10_000_000,
            timeout_us: 10_000_000,
            started_ts_ns: 0,
            ended_ts_ns: 10_000_000_000,
            elapsed_us: 10_012_000,
            connections_opened: 8,
            stopped_early: false,
            classes: vec![summary("/cached", 3000, 850), summary("/db", 1000, 1_500)],
            total,
            statuses: vec![],
        };
        let expected = "\
closed model, 8 clients, 8 connections max (keep-alive), 10.0 s, 8 connections opened

class    requests  req/s   2xx  3xx  4xx  5xx  errors  conns  p50_ms  p90_ms  p99_ms  p99.9_ms    max_ms
/cached      3000  300.0  3000    0    0    0       0      4   0.850   2.000  12.345    20.000  1234.567
/db          1000  100.0  1000    0    0    0       0      4   1.500   2.000  12.345    20.000  1234.567
total        4000  400.0  4000    0    0    0       3      4   0.900   2.000  12.345    20.000  1234.567

errors: connect_refused 0, timeout 3, reset 0, other 0
";
        assert_eq!(report_table(&report), expected);
    }

    #[test]
    fn ms_keeps_microsecond_resolution() {
        assert_eq!(ms(0), "0.000 ms");
        assert_eq!(ms(1_234), "1.234 ms");
        assert_eq!(ms(826_461), "826.461 ms");
    }
}
