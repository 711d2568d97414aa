//! `port_pressure`: TIME_WAIT pile-up and ephemeral port pressure per destination. A client that
//! opens a connection per request leaves one TIME_WAIT socket per request for 60 s; each holds a
//! local port towards that destination, and once the `ip_local_port_range` is spent, `connect()`
//! fails or stalls while every dashboard shows a healthy connection count.
//!
//! Per destination (remote ip:port) and snapshot: local sockets whose port lies in the ephemeral
//! range (any state but LISTEN), and how many of them are in TIME_WAIT; the peak over the run is
//! compared with the range's size. The kernel's `TCPTimeWaitOverflow` rising (TIME_WAIT buckets
//! exhausted) is a host finding of its own.

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{Evidence, Finding, Severity, Subject, Unit};
use crate::rules::{plural, share, Endpoint};

pub(crate) const NAME: &str = "port_pressure";

/// Share of the ephemeral range used towards one destination that makes a finding.
const WARN_SHARE: f64 = 0.5;
/// From this share on, the finding is critical.
const CRITICAL_SHARE: f64 = 0.8;
/// Linux's default `ip_local_port_range` (32768..=60999), used when no sysctl was recorded.
const DEFAULT_RANGE: (u64, u64) = (32768, 60999);

/// Per destination: peak ephemeral ports in use and in TIME_WAIT against the range size.
pub(crate) fn sql(scope: &RunScope, destination: Option<&Endpoint>) -> String {
    let filter =
        destination.map(|d| d.sql_filter("s.remote_ip", "s.remote_port")).unwrap_or_default();
    let (lo, hi) = DEFAULT_RANGE;
    format!(
        "WITH range AS (\n  SELECT host, arg_max(value, snap_id) AS value FROM sysctl\n  \
         WHERE {} AND key = 'net.ipv4.ip_local_port_range' GROUP BY host\n), bounds AS (\n  \
         SELECT DISTINCT s.host,\n    \
         coalesce(TRY_CAST(split_part(r.value, ' ', 1) AS INTEGER), {lo}) AS lo,\n    \
         coalesce(TRY_CAST(split_part(r.value, ' ', 2) AS INTEGER), {hi}) AS hi\n  \
         FROM sockets s LEFT JOIN range r ON r.host = s.host WHERE {}\n), per_snap AS (\n  \
         SELECT s.host, s.snap_id, CAST(s.remote_ip AS VARCHAR) AS remote_ip, s.remote_port,\n    \
         count(*) AS ports_in_use, count(*) FILTER (WHERE s.state = 'TIME_WAIT') AS time_wait,\n    \
         any_value(b.hi - b.lo + 1) AS range_ports\n  \
         FROM sockets s JOIN bounds b ON b.host = s.host\n  \
         WHERE {} AND s.state <> 'LISTEN' AND s.local_port BETWEEN b.lo AND b.hi{filter}\n  \
         GROUP BY s.host, s.snap_id, s.remote_ip, s.remote_port\n)\n\
         SELECT remote_ip, remote_port, max(ports_in_use) AS ports_in_use_peak,\n  \
         max(time_wait) AS time_wait_peak, min(range_ports) AS range_ports, count(*) AS snapshots\n\
         FROM per_snap GROUP BY remote_ip, remote_port ORDER BY ports_in_use_peak DESC",
        scope.filter(""),
        scope.filter("s"),
        scope.filter("s"),
    )
}

/// Per host: how much `TCPTimeWaitOverflow` rose over the run.
pub(crate) fn overflow_sql(scope: &RunScope) -> String {
    format!(
        "SELECT host, arg_max(value, snap_id) - arg_min(value, snap_id) AS rise\n\
         FROM tcp_counters WHERE {} AND name = 'TcpExt.TCPTimeWaitOverflow' GROUP BY host",
        scope.filter("")
    )
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    if ctx.rows_in("sockets")? == 0 {
        return Ok(Look::cannot_decide(vec![ctx.missing(
            "sockets",
            "record snapshots during the load (`peel snap --every 1s --db`)",
        )]));
    }
    let mut missing = Vec::new();
    let range_known = ctx
        .query(&format!(
            "SELECT count(*) AS n FROM sysctl WHERE {} AND key = 'net.ipv4.ip_local_port_range'",
            ctx.scope.filter("")
        ))?
        .iter()
        .next()
        .map(|row| row.u64("n"))
        .transpose()?
        .unwrap_or(0)
        > 0;
    if !range_known {
        missing.push(format!(
            "no net.ipv4.ip_local_port_range in {}: assumed Linux's default {}-{}",
            ctx.describe(),
            DEFAULT_RANGE.0,
            DEFAULT_RANGE.1
        ));
    }
    let mut findings = Vec::new();
    let table = ctx.query(&sql(&ctx.scope, None))?;
    for row in table.iter() {
        let destination = Endpoint { ip: row.text("remote_ip")?, port: row.port("remote_port")? };
        let in_use = row.u64("ports_in_use_peak")? as f64;
        let time_wait = row.u64("time_wait_peak")? as f64;
        let range_ports = row.u64("range_ports")? as f64;
        let used = share(in_use, range_ports);
        if used < WARN_SHARE {
            continue;
        }
        findings.push(Finding {
            id: destination.finding_id(NAME),
            rule: NAME.to_string(),
            title: format!(
                "ephemeral ports towards {} {:.0}% used ({in_use:.0} of {range_ports:.0}, {time_wait:.0} in TIME_WAIT)",
                destination.text(),
                used * 100.0
            ),
            severity: if used >= CRITICAL_SHARE { Severity::Critical } else { Severity::Warning },
            subject: Subject::Destination { ip: destination.ip.clone(), port: destination.port },
            impact: used.min(1.0),
            evidence: vec![
                Evidence::new("ports_in_use_peak", in_use, Unit::Ports),
                Evidence::new("time_wait_peak", time_wait, Unit::Count),
                Evidence::new("range_ports", range_ports, Unit::Ports),
                Evidence::new("range_used", used * 100.0, Unit::Percent),
            ],
            sql: sql(&ctx.scope, Some(&destination)),
            next_step: "Reuse connections to this destination (keep-alive, pooling) so fewer enter \
                        TIME_WAIT; meanwhile widen net.ipv4.ip_local_port_range and enable \
                        net.ipv4.tcp_tw_reuse=1 on the client."
                .to_string(),
        });
    }
    let mut checked = plural(table.len(), "destination", "destinations");
    if ctx.rows_in("tcp_counters")? > 0 {
        let overflow_sql = overflow_sql(&ctx.scope);
        for row in ctx.query(&overflow_sql)?.iter() {
            let rise = row.f64_or_zero("rise")?;
            if rise <= 0.0 {
                continue;
            }
            let host = row.text("host")?;
            findings.push(Finding {
                id: format!("{NAME}:time_wait_overflow:{host}"),
                rule: NAME.to_string(),
                title: format!("TIME_WAIT buckets overflowed {rise:.0} times during the run"),
                severity: Severity::Warning,
                subject: Subject::Host { host },
                impact: 0.5,
                evidence: vec![Evidence::new("time_wait_overflow_rise", rise, Unit::Count)],
                sql: overflow_sql.clone(),
                next_step:
                    "Connections closed while TIME_WAIT was full skipped it: reuse connections, \
                            or raise net.ipv4.tcp_max_tw_buckets."
                        .to_string(),
            });
        }
        checked.push_str(", TCPTimeWaitOverflow");
    } else {
        missing.push(ctx.missing("tcp_counters", "TCPTimeWaitOverflow not checked"));
    }
    Ok(Look::decided(findings, checked, missing))
}
