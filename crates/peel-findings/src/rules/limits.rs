//! `limits`: tables and descriptors close to their maximum. When the conntrack table is full the
//! kernel drops new flows ("nf_conntrack: table full, dropping packet"); when a process reaches its
//! fd limit `accept()` fails with EMFILE and the listen queue backs up; when the system-wide
//! file-nr reaches file-max every process fails to open anything. Each is an outage one step away.
//!
//! Peaks over the run's snapshots: `conntrack.count` / `conntrack.max`, `file-nr` in use
//! (allocated - unused) / `file-nr.max` per host, and open fds / fd limit per process.

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{Evidence, Finding, Severity, Subject, Unit};
use crate::rules::{plural, share};

pub(crate) const NAME: &str = "limits";

/// Share of a limit from which a finding is made.
const WARN_SHARE: f64 = 0.8;
/// From this share on, the finding is critical.
const CRITICAL_SHARE: f64 = 0.95;

/// Per host: peak conntrack and file-nr use against their maximums.
pub(crate) fn host_sql(scope: &RunScope) -> String {
    format!(
        "WITH c AS (\n  SELECT host, snap_id,\n    \
         max(value) FILTER (WHERE name = 'conntrack.count') AS conntrack_count,\n    \
         max(value) FILTER (WHERE name = 'conntrack.max') AS conntrack_max,\n    \
         max(value) FILTER (WHERE name = 'file-nr.allocated') - coalesce(max(value) FILTER (WHERE name = 'file-nr.unused'), 0) AS files_in_use,\n    \
         max(value) FILTER (WHERE name = 'file-nr.max') AS files_max\n  \
         FROM tcp_counters WHERE {} AND (name LIKE 'conntrack.%' OR name LIKE 'file-nr.%')\n  \
         GROUP BY host, snap_id\n)\n\
         SELECT host, max(conntrack_count) AS conntrack_peak, max(conntrack_max) AS conntrack_max,\n  \
         max(files_in_use) AS files_peak, max(files_max) AS files_max\nFROM c GROUP BY host ORDER BY host",
        scope.filter("")
    )
}

/// Per process: peak open fds against the fd limit.
pub(crate) fn process_sql(scope: &RunScope, pid: Option<u64>) -> String {
    let filter = pid.map(|p| format!(" AND pid = {p}")).unwrap_or_default();
    format!(
        "SELECT host, pid, any_value(name) AS name, max(open_fds) AS open_fds_peak, max(fd_limit) AS fd_limit\n\
         FROM processes WHERE {} AND open_fds IS NOT NULL AND fd_limit > 0{filter}\n\
         GROUP BY host, pid ORDER BY open_fds_peak DESC",
        scope.filter("")
    )
}

/// A use of a limit, as a finding if it is close.
struct Use<'a> {
    what: &'a str,
    used: f64,
    max: f64,
    subject: Subject,
    id: String,
    sql: String,
    next_step: &'a str,
}

fn judge(usage: Use<'_>) -> Option<Finding> {
    let used_share = share(usage.used, usage.max);
    if usage.max <= 0.0 || used_share < WARN_SHARE {
        return None;
    }
    Some(Finding {
        id: usage.id,
        rule: NAME.to_string(),
        title: format!(
            "{} at {:.0}% of its maximum on {} ({:.0} of {:.0})",
            usage.what,
            used_share * 100.0,
            usage.subject,
            usage.used,
            usage.max
        ),
        severity: if used_share >= CRITICAL_SHARE { Severity::Critical } else { Severity::Warning },
        subject: usage.subject,
        impact: used_share.min(1.0),
        evidence: vec![
            Evidence::new("peak", usage.used, Unit::Count),
            Evidence::new("max", usage.max, Unit::Count),
            Evidence::new("used", used_share * 100.0, Unit::Percent),
        ],
        sql: usage.sql,
        next_step: usage.next_step.to_string(),
    })
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    let have_counters = ctx.rows_in("tcp_counters")? > 0;
    let have_processes = ctx.rows_in("processes")? > 0;
    let mut missing = Vec::new();
    if !have_counters {
        missing.push(
            ctx.missing("tcp_counters", "conntrack and file-nr not checked (`peel snap --db`)"),
        );
    }
    if !have_processes {
        missing.push(
            ctx.missing("processes", "fd limits not checked (`peel snap --process NAME --db`)"),
        );
    }
    if !have_counters && !have_processes {
        return Ok(Look::cannot_decide(missing));
    }
    let mut findings = Vec::new();
    let mut checked = Vec::new();
    if have_counters {
        let sql = host_sql(&ctx.scope);
        let table = ctx.query(&sql)?;
        checked.push(plural(table.len(), "host", "hosts"));
        for row in table.iter() {
            let host = row.text("host")?;
            if row.f64_opt("conntrack_max")?.is_none() {
                missing.push(format!(
                    "no conntrack counters on host {host} (nf_conntrack not loaded?)"
                ));
            }
            let uses = [
                Use {
                    what: "conntrack table",
                    used: row.f64_or_zero("conntrack_peak")?,
                    max: row.f64_or_zero("conntrack_max")?,
                    subject: Subject::Host { host: host.clone() },
                    id: format!("{NAME}:conntrack:{host}"),
                    sql: sql.clone(),
                    next_step: "Raise net.netfilter.nf_conntrack_max (and the hash size), shorten \
                                nf_conntrack_tcp_timeout_time_wait, or exempt loopback/internal \
                                traffic from tracking (NOTRACK).",
                },
                Use {
                    what: "open files (file-nr)",
                    used: row.f64_or_zero("files_peak")?,
                    max: row.f64_or_zero("files_max")?,
                    subject: Subject::Host { host: host.clone() },
                    id: format!("{NAME}:file-nr:{host}"),
                    sql: sql.clone(),
                    next_step: "Raise fs.file-max and find the process holding the descriptors \
                                (processes table, open_fds).",
                },
            ];
            findings.extend(uses.into_iter().filter_map(judge));
        }
    }
    if have_processes {
        let table = ctx.query(&process_sql(&ctx.scope, None))?;
        checked.push(plural(table.len(), "process", "processes"));
        for row in table.iter() {
            let pid = row.u64("pid")?;
            let name = row.text("name")?;
            let usage = Use {
                what: "open file descriptors",
                used: row.f64_or_zero("open_fds_peak")?,
                max: row.f64_or_zero("fd_limit")?,
                subject: Subject::Process { name, pid: u32::try_from(pid).ok() },
                id: format!("{NAME}:fds:{pid}"),
                sql: process_sql(&ctx.scope, Some(pid)),
                next_step:
                    "Raise the process's fd limit (LimitNOFILE in its systemd unit, ulimit -n) \
                            and look for leaked sockets (CLOSE_WAIT) or an oversized pool.",
            };
            findings.extend(judge(usage));
        }
    }
    Ok(Look::decided(findings, checked.join(", "), missing))
}
