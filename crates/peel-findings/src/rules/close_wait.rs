//! `close_wait`: sockets piling up in CLOSE_WAIT. The peer closed, and the local application never
//! called `close()`: a leak in the application (a connection pool that does not notice dead
//! connections, a handler that returns without closing). Each one holds a file descriptor.
//!
//! Per local endpoint and owning process: CLOSE_WAIT sockets in the first and the last snapshot of
//! the run and the peak between. It fires when the count grew by [`MIN_GROWTH`] or more, or (with a
//! single snapshot) when [`MIN_STANDING`] or more sit there.

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{Evidence, Finding, Severity, Subject, Unit};
use crate::rules::{plural, Endpoint};

pub(crate) const NAME: &str = "close_wait";

/// Growth over the run that makes a finding.
const MIN_GROWTH: u64 = 10;
/// With one snapshot only: a standing count that makes a finding.
const MIN_STANDING: u64 = 100;

/// Per local endpoint and process: CLOSE_WAIT counts in the first and last snapshot, and the peak.
pub(crate) fn sql(scope: &RunScope, endpoint: Option<&Endpoint>) -> String {
    let filter = endpoint.map(|e| e.sql_filter("s.local_ip", "s.local_port")).unwrap_or_default();
    format!(
        "WITH snaps AS (\n  SELECT host, min(snap_id) AS first_snap, max(snap_id) AS last_snap, count(*) AS snapshots\n  \
         FROM snapshots WHERE {} GROUP BY host\n), per_snap AS (\n  \
         SELECT s.host, s.snap_id, CAST(s.local_ip AS VARCHAR) AS local_ip, s.local_port,\n    \
         coalesce(any_value(s.process), '') AS process, count(*) AS close_wait\n  \
         FROM sockets s WHERE {} AND s.state = 'CLOSE_WAIT'{filter}\n  \
         GROUP BY s.host, s.snap_id, s.local_ip, s.local_port\n)\n\
         SELECT p.local_ip, p.local_port, any_value(p.process) AS process, any_value(n.snapshots) AS snapshots,\n  \
         coalesce(sum(p.close_wait) FILTER (WHERE p.snap_id = n.first_snap), 0) AS first_count,\n  \
         coalesce(sum(p.close_wait) FILTER (WHERE p.snap_id = n.last_snap), 0) AS last_count,\n  \
         max(p.close_wait) AS peak_count\n\
         FROM per_snap p JOIN snaps n ON n.host = p.host\n\
         GROUP BY p.local_ip, p.local_port ORDER BY peak_count DESC",
        scope.filter(""),
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
        let endpoint = Endpoint { ip: row.text("local_ip")?, port: row.port("local_port")? };
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
        findings.push(Finding {
            id: endpoint.finding_id(NAME),
            rule: NAME.to_string(),
            title: if snapshots >= 2 {
                format!("CLOSE_WAIT grows on {}{owner}: {first} -> {last} (peak {peak})", endpoint.text())
            } else {
                format!("{peak} sockets in CLOSE_WAIT on {}{owner}", endpoint.text())
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
            sql: sql(&ctx.scope, Some(&endpoint)),
            next_step: "The application does not close sockets its peer closed: check its connection \
                        pool's dead-connection handling and error paths that return without close(); \
                        `ls -l /proc/PID/fd` shows the leaked sockets."
                .to_string(),
        });
    }
    let checked =
        plural(table.len(), "local endpoint with CLOSE_WAIT", "local endpoints with CLOSE_WAIT");
    Ok(Look::decided(findings, checked, missing))
}
