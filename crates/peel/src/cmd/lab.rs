//! `peel lab`: runs the incident lab (peel-lab) in the foreground until Ctrl-C, SIGTERM or
//! `--duration`, prints where each tier listens, and its counters when it stops.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use peel_capture::parse_duration;
use peel_lab::{
    Closer, DbChoice, DbKind, DbMode, Lab, LabConfig, LabCounters, LabError, LabHandle, PortRange,
};

use crate::exit::{Fail, Outcome};

/// Run the incident lab on loopback: frontend -> N sync app workers -> PostgreSQL.
///
/// The frontend proxies every request to the app over a new TCP connection (like the story's
/// Next.js server); the app has N workers that each serve one request at a time from one shared
/// accept queue (like gunicorn's sync workers) and serve `/cached` (no database) and `/db` (one
/// query). The database is a throwaway PostgreSQL (initdb into a temporary directory, deleted on
/// exit) when initdb/pg_ctl are on PATH, else a simulated one with a connection-setup cost.
/// `--db-mode per-request` opens a database connection per `/db` request (the outage),
/// `persistent` keeps one per worker with a health check (Django's CONN_MAX_AGE +
/// CONN_HEALTH_CHECKS: the fix).
#[derive(Debug, clap::Args)]
#[command(after_long_help = "Examples:\n  \
    peel lab                                   # the outage: per-request DB connections\n  \
    peel lab --db-mode persistent              # the fix\n  \
    peel lab --db sim --sim-connect-cost 50ms  # no PostgreSQL needed\n  \
    peel lab --backlog 8 --workers 2           # accept queue overflow (listen-backlog.toml)\n  \
    peel lab --slow-close 826ms                # the story's slow close (slow-close.toml)\n  \
    peel lab --upstream-close frontend --ephemeral-ports 40000-40099   # ephemeral-ports.toml\n  \
    peel lab --duration 30s --format json      # bounded, machine-readable")]
pub struct Args {
    /// App tier synchronous workers.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// per-request: a new database connection on every /db request (the outage); persistent: one
    /// per worker, health-checked before reuse (the fix).
    #[arg(long, default_value = "per-request", value_parser = parse_knob::<DbMode>)]
    pub db_mode: DbMode,
    /// real: PostgreSQL from initdb/pg_ctl (an error when impossible); sim: the simulated database;
    /// auto: real when possible, else sim (the reason is printed).
    #[arg(long, default_value = "auto", value_parser = parse_knob::<DbChoice>)]
    pub db: DbChoice,
    /// Frontend port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 18080)]
    pub port: u16,
    /// App tier port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 18081)]
    pub app_port: u16,
    /// Database port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 18082)]
    pub db_port: u16,
    /// Accept-queue length of the app's listen socket (capped by net.core.somaxconn).
    #[arg(long, default_value_t = 2048)]
    pub backlog: u32,
    /// Reuse frontend -> app connections (a pool of at most --workers connections).
    #[arg(long)]
    pub upstream_keepalive: bool,
    /// Which side closes a frontend -> app connection first: app (like gunicorn sync) or frontend
    /// (TIME_WAIT then piles up on the frontend).
    #[arg(long, default_value = "app", value_parser = parse_knob::<Closer>)]
    pub upstream_close: Closer,
    /// Delay before the frontend closes an upstream connection it is done with, e.g. 826ms.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub slow_close: Duration,
    /// Local ports the frontend may use for upstream connections, e.g. 40000-40099 (reproduces
    /// ephemeral port exhaustion without changing ip_local_port_range).
    #[arg(long, value_parser = parse_knob::<PortRange>)]
    pub ephemeral_ports: Option<PortRange>,
    /// Real PostgreSQL: wait added to every new connection by a relay in front of it (the TLS and
    /// authentication round trips to a remote managed database); 0s connects directly.
    #[arg(long, value_parser = parse_duration, default_value = "20ms")]
    pub pg_setup_delay: Duration,
    /// Simulated database: cost of a new connection (PostgreSQL's fork + authentication).
    #[arg(long, value_parser = parse_duration, default_value = "20ms")]
    pub sim_connect_cost: Duration,
    /// Simulated database: cost of the /db query.
    #[arg(long, value_parser = parse_duration, default_value = "1ms")]
    pub sim_query_cost: Duration,
    /// Stop by itself after this long (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How to print the addresses and final counters. JSON: one object when ready
    /// (`event: "ready"`) and one when stopped (`event: "stopped"`), one per line.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn parse_knob<T: std::str::FromStr<Err = LabError>>(text: &str) -> Result<T, String> {
    text.parse().map_err(|err: LabError| match err {
        LabError::InvalidConfig { expected, .. } => format!("expected {expected}"),
        other => other.to_string(),
    })
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = LabConfig {
        workers: args.workers,
        db_mode: args.db_mode,
        db: args.db,
        frontend_port: args.port,
        app_port: args.app_port,
        db_port: args.db_port,
        listen_backlog: args.backlog,
        upstream_keepalive: args.upstream_keepalive,
        upstream_close: args.upstream_close,
        slow_close: args.slow_close,
        ephemeral_ports: args.ephemeral_ports,
        pg_setup_delay: args.pg_setup_delay,
        sim_connect_cost: args.sim_connect_cost,
        sim_query_cost: args.sim_query_cost,
        ..LabConfig::default()
    };
    // Register before starting, so a signal during PostgreSQL's start still tears it down.
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("installing the Ctrl-C/SIGTERM handler")?;
    }
    let mut lab = Lab::start(config).map_err(start_failure)?;
    print_ready(&lab, args.format)?;

    let deadline = args.duration.map(|duration| Instant::now() + duration);
    while !interrupted.load(Ordering::Relaxed)
        && deadline.is_none_or(|deadline| Instant::now() < deadline)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let counters = lab.counters();
    let stopped = lab.stop();
    print_stopped(&counters, args.format)?;
    stopped.context("stopping the lab")?;
    Ok(Outcome::Success)
}

/// Sorts a start failure into a usage error (exit 2) or an environment error (exit 3), with a hint.
fn start_failure(err: LabError) -> anyhow::Error {
    let message = err.to_string();
    let fail = match err {
        LabError::InvalidConfig { .. } => Fail::usage(message).hint("see `peel lab --help`"),
        LabError::Listen { .. } => {
            Fail::runtime(message).hint("another process holds the port: pick others with --port, --app-port, --db-port (0 = any)")
        }
        LabError::PostgresMissing { .. } | LabError::PostgresAsRoot | LabError::Postgres { .. } => {
            Fail::runtime(message).hint("use --db sim (simulated database) or --db auto (fall back to it)")
        }
        LabError::Io { .. } => Fail::runtime(message),
    };
    fail.into()
}

fn db_name(lab: &LabHandle) -> &'static str {
    match lab.db_kind() {
        DbKind::Postgres => "postgres",
        DbKind::Sim => "sim",
    }
}

fn print_ready(lab: &LabHandle, format: Format) -> anyhow::Result<()> {
    let config = lab.config();
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let ready = serde_json::json!({
                "event": "ready",
                "frontend_url": lab.frontend_url(),
                "frontend_addr": lab.frontend_addr().to_string(),
                "app_addr": lab.app_addr().to_string(),
                "db_addr": lab.db_addr().to_string(),
                "postgres_addr": lab.postgres_addr().map(|addr| addr.to_string()),
                "db": db_name(lab),
                "db_mode": config.db_mode.to_string(),
                "db_fallback_reason": lab.db_fallback_reason(),
                "postgres_dir": lab.postgres_dir().map(|dir| dir.display().to_string()),
                "workers": config.workers,
                "listen_backlog": config.listen_backlog,
                "upstream_keepalive": config.upstream_keepalive,
                "upstream_close": config.upstream_close.to_string(),
                "slow_close_ms": config.slow_close.as_millis() as u64,
                "ephemeral_ports": config.ephemeral_ports.map(|range| range.to_string()),
            });
            writeln!(out, "{ready}")?;
        }
        Format::Table => {
            let url = lab.frontend_url();
            let db = match lab.db_kind() {
                DbKind::Postgres => match lab.postgres_addr() {
                    Some(server) if server != lab.db_addr() => format!(
                        "PostgreSQL on {server}, reached through {} (adds {:?} per new connection)",
                        lab.db_addr(),
                        config.pg_setup_delay
                    ),
                    _ => format!("PostgreSQL on {}", lab.db_addr()),
                },
                DbKind::Sim => format!(
                    "simulated database on {} (connect cost {:?}, query cost {:?})",
                    lab.db_addr(),
                    config.sim_connect_cost,
                    config.sim_query_cost
                ),
            };
            writeln!(out, "peel lab is running (Ctrl-C to stop)")?;
            writeln!(out, "  frontend  {url}   try {url}/cached and {url}/db")?;
            writeln!(
                out,
                "  app       http://{}   {} sync workers, backlog {}, DB connections {}",
                lab.app_addr(),
                config.workers,
                config.listen_backlog,
                config.db_mode
            )?;
            writeln!(out, "  database  {db}")?;
            if let Some(reason) = lab.db_fallback_reason() {
                writeln!(out, "  note      real PostgreSQL did not start: {reason}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn counter_rows(counters: &LabCounters) -> [(&'static str, u64); 14] {
    [
        ("frontend_connections", counters.frontend_connections),
        ("frontend_requests", counters.frontend_requests),
        ("upstream_connections_opened", counters.upstream_connections_opened),
        ("upstream_errors", counters.upstream_errors),
        ("upstream_ports_exhausted", counters.upstream_ports_exhausted),
        ("app_connections", counters.app_connections),
        ("app_requests_cached", counters.app_requests_cached),
        ("app_requests_db", counters.app_requests_db),
        ("app_requests_other", counters.app_requests_other),
        ("db_connections_opened", counters.db_connections_opened),
        ("db_health_checks", counters.db_health_checks),
        ("db_queries", counters.db_queries),
        ("db_errors", counters.db_errors),
        ("sim_db_connections_accepted", counters.sim_db_connections_accepted),
    ]
}

fn print_stopped(counters: &LabCounters, format: Format) -> anyhow::Result<()> {
    let rows = counter_rows(counters);
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let mut object = serde_json::Map::new();
            object.insert("event".into(), "stopped".into());
            for (name, value) in rows {
                object.insert(name.into(), value.into());
            }
            writeln!(out, "{}", serde_json::Value::Object(object))?;
        }
        Format::Table => {
            writeln!(out, "peel lab stopped; counters:")?;
            let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
            for (name, value) in rows {
                writeln!(out, "  {name:<width$}  {value:>10}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
