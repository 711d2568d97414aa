//! `close_wait`: sockets piling up in CLOSE_WAIT. The peer closed, and the local application never
//! called `close()`: a leak in the application (a connection pool that does not notice dead
//! connections, a handler that returns without closing). Each one holds a file descriptor.
//!
//! Sockets are grouped by the side the application is on:
//! - server side (the local port is a listening port, or outside the ephemeral range): per local
//!   endpoint, the service whose clients went away;
//! - client side (the local port is ephemeral and nothing listens on it): per remote endpoint, the
//!   server the application forgot to close its connections towards (a database or an upstream
//!   whose idle connections the server closed). Each leaked socket has a port of its own, so only
//!   the remote endpoint gathers them.
//!
//! Per group and owning process: CLOSE_WAIT sockets in the first and the last snapshot of the run
//! and the peak between. It fires when the count grew by [`MIN_GROWTH`] or more, or (with a single
//! snapshot) when [`MIN_STANDING`] or more sit there.

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{Evidence, Finding, Severity, Subject, Unit};
use crate::rules::{plural, Endpoint};

pub(crate) const NAME: &str = "close_wait";

/// Growth over the run that makes a finding.
const MIN_GROWTH: u64 = 10;
/// With one snapshot only: a standing count that makes a finding.
const MIN_STANDING: u64 = 100;
/// Linux's default `ip_local_port_range` (32768..=60999), used when no sysctl was recorded.
const DEFAULT_RANGE: (u64, u64) = (32768, 60999);

/// Which end of the leaked connections the application is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Grouped by local endpoint: the application's own listening port.
    Server,
    /// Grouped by remote endpoint: the server the application connected to.
    Client,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Server => "server",
            Side::Client => "client",
        }
    }

    fn parse(text: &str) -> Side {
        if text == "client" {
            Side::Client
        } else {
            Side::Server
        }
    }
}

/// Per group (side and endpoint) and process: CLOSE_WAIT counts in the first and last snapshot,
/// and the peak. `group` narrows the query to one group.
fn sql(scope: &RunScope, group: Option<(Side, &Endpoint)>) -> String {
    let filter = group
        .map(|(side, e)| format!(" AND side = '{}'{}", side.as_str(), e.sql_filter("ip", "port")))
        .unwrap_or_default();
    let (lo, hi) = DEFAULT_RANGE;
    format!(
        "WITH snaps AS (\n  SELECT host, min(snap_id) AS first_snap, max(snap_id) AS last_snap, count(*) AS snapshots\n  \
         FROM snapshots WHERE {} GROUP BY host\n), range AS (\n  \
         SELECT host, arg_max(value, snap_id) AS value FROM sysctl\n  \
         WHERE {} AND key = 'net.ipv4.ip_local_port_range' GROUP BY host\n), bounds AS (\n  \
         SELECT n.host,\n    \
         coalesce(TRY_CAST(split_part(r.value, ' ', 1) AS INTEGER), {lo}) AS lo,\n    \
         coalesce(TRY_CAST(split_part(r.value, ' ', 2) AS INTEGER), {hi}) AS hi\n  \
         FROM snaps n LEFT JOIN range r ON r.host = n.host\n), listening AS (\n  \
         SELECT DISTINCT s.host, s.snap_id, s.local_port FROM sockets s WHERE {} AND s.state = 'LISTEN'\n\
         ), classified AS (\n  \
         SELECT s.host, s.snap_id, s.process,\n    \
         CASE WHEN s.local_port BETWEEN b.lo AND b.hi AND l.local_port IS NULL THEN 'client' ELSE 'server' END AS side,\n    \
         CAST(s.local_ip AS VARCHAR) AS local_ip, s.local_port, CAST(s.remote_ip AS VARCHAR) AS remote_ip, s.remote_port\n  \
         FROM sockets s JOIN bounds b ON b.host = s.host\n  \
         LEFT JOIN listening l ON l.host = s.host AND l.snap_id = s.snap_id AND l.local_port = s.local_port\n  \
         WHERE {} AND s.state = 'CLOSE_WAIT'\n), grouped AS (\n  \
         SELECT host, snap_id, process, side,\n    \
         CASE side WHEN 'client' THEN remote_ip ELSE local_ip END AS ip,\n    \
         CASE side WHEN 'client' THEN remote_port ELSE local_port END AS port\n  \
         FROM classified\n), per_snap AS (\n  \
         SELECT host, snap_id, side, ip, port, coalesce(any_value(process), '') AS process, count(*) AS close_wait\n  \
         FROM grouped WHERE true{filter}\n  \
         GROUP BY host, snap_id, side, ip, port\n)\n\
         SELECT p.side, p.ip, p.port, any_value(p.process) AS process, any_value(n.snapshots) AS snapshots,\n  \
         coalesce(sum(p.close_wait) FILTER (WHERE p.snap_id = n.first_snap), 0) AS first_count,\n  \
         coalesce(sum(p.close_wait) FILTER (WHERE p.snap_id = n.last_snap), 0) AS last_count,\n  \
         max(p.close_wait) AS peak_count\n\
         FROM per_snap p JOIN snaps n ON n.host = p.host\n\
         GROUP BY p.side, p.ip, p.port ORDER BY peak_count DESC, p.side, p.ip, p.port",
        scope.filter(""),
        scope.filter(""),
        scope.filter("s"),
        scope.filter("s"),
    )
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    if ctx.rows_in("sockets")? == 0 || ctx.rows_in("snapshots")? == 0 {
        return Ok(Look::cannot_decide(vec![ctx.missing(
            "sockets",
            "record snapshots during the load (`peel snap --every 1s --db`)",
        )]));
    }
    let table = ctx.query(&sql(&ctx.scope, None))?;
    let mut findings = Vec::new();
    let mut missing = Vec::new();
    for row in table.iter() {
        let side = Side::parse(&row.text("side")?);
        let endpoint = Endpoint { ip: row.text("ip")?, port: row.port("port")? };
        let snapshots = row.u64("snapshots")?;
        let first = row.u64("first_count")?;
        let last = row.u64("last_count")?;
        let peak = row.u64("peak_count")?;
        let growth = last.saturating_sub(first);
        let fires = if snapshots >= 2 { growth >= MIN_GROWTH } else { peak >= MIN_STANDING };
        if snapshots < 2 && missing.is_empty() {
            missing.push(format!(
                "one snapshot only in {}: growth unknown, only standing counts of {MIN_STANDING}+ are reported",
                ctx.describe()
            ));
        }
        if !fires {
            continue;
        }
        let process = row.text("process")?;
        let owner = if process.is_empty() { String::new() } else { format!(" ({process})") };
        let (id, place) = match side {
            Side::Server => (endpoint.finding_id(NAME), format!("on {}", endpoint.text())),
            Side::Client => (
                endpoint.finding_id(&format!("{NAME}:client")),
                format!("on client sockets towards {}", endpoint.text()),
            ),
        };
        findings.push(Finding {
            id,
            rule: NAME.to_string(),
            title: if snapshots >= 2 {
                format!("CLOSE_WAIT grows {place}{owner}: {first} -> {last} (peak {peak})")
            } else {
                format!("{peak} sockets in CLOSE_WAIT {place}{owner}")
            },
            severity: Severity::Warning,
            subject: if process.is_empty() {
                endpoint.subject()
            } else {
                Subject::Process { name: process.clone(), pid: None }
            },
            impact: 0.3,
            evidence: vec![
                Evidence::new("close_wait_first", first as f64, Unit::Count),
                Evidence::new("close_wait_last", last as f64, Unit::Count),
                Evidence::new("close_wait_peak", peak as f64, Unit::Count),
                Evidence::new("snapshots", snapshots as f64, Unit::Count),
            ],
            sql: sql(&ctx.scope, Some((side, &endpoint))),
            next_step: match side {
                Side::Server => {
                    "The application does not close sockets its peer closed: check its \
                                 connection handling and error paths that return without close(); \
                                 `ls -l /proc/PID/fd` shows the leaked sockets."
                        .to_string()
                }
                Side::Client => format!(
                    "{} closed these connections and the application never closed its end: its \
                     client or pool for that server keeps dead connections (set a max age or a \
                     health check below the server's idle timeout, close on error paths); \
                     `ss -tnp state close-wait dst {}` shows the owner.",
                    endpoint.text(),
                    endpoint.text()
                ),
            },
        });
    }
    let checked = plural(
        table.len(),
        "endpoint with CLOSE_WAIT (local, or remote for client sockets)",
        "endpoints with CLOSE_WAIT (local, or remote for client sockets)",
    );
    Ok(Look::decided(findings, checked, missing))
}
