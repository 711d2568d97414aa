//! `accept_queue`: the listen backlog overflows. When workers cannot `accept()` fast enough, the
//! kernel's accept queue fills up to its backlog, further handshakes are dropped
//! (`ListenOverflows`/`ListenDrops` rise) and clients re-send their SYNs after 1 s, 3 s, 7 s: a
//! latency cliff with the CPU idle.
//!
//! Three signals, each from its own source: the kernel counters rising over the run (tcp_counters),
//! a LISTEN socket's accept queue at its backlog in a snapshot (sockets), and SYN retransmits per
//! endpoint (connections from a capture). One finding for the host's counters, one per listening
//! port for the other two.

use std::collections::BTreeMap;

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{Evidence, Finding, Severity, Subject, Unit};
use crate::rules::{plural, share, Endpoint};

pub(crate) const NAME: &str = "accept_queue";

/// Kernel counters that count dropped or refused handshakes at a listener.
const OVERFLOW_COUNTERS: &[&str] =
    &["TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.TCPReqQFullDrop"];
/// A share of connections with SYN retransmits above this makes a finding on its own.
const MIN_SYN_RETRANSMIT_SHARE: f64 = 0.01;

/// Per host: first and last value of the overflow counters and of PassiveOpens over the run.
pub(crate) fn counters_sql(scope: &RunScope) -> String {
    let names: Vec<String> = OVERFLOW_COUNTERS
        .iter()
        .chain(["Tcp.PassiveOpens"].iter())
        .map(|n| format!("'{n}'"))
        .collect();
    format!(
        "SELECT host, name, count(*) AS samples,\n  \
         arg_max(value, snap_id) - arg_min(value, snap_id) AS rise, max(rate_per_s) AS peak_rate_per_s\n\
         FROM tcp_counters WHERE {} AND name IN ({})\nGROUP BY host, name ORDER BY host, name",
        scope.filter(""),
        names.join(", ")
    )
}

/// Per listening port: the accept queue's peak against the backlog, over the run's snapshots.
pub(crate) fn listen_sql(scope: &RunScope, port: Option<u16>) -> String {
    let all = scope.filter("");
    let filter = port.map(|p| format!(" AND local_port = {p}")).unwrap_or_default();
    format!(
        "SELECT CAST(local_ip AS VARCHAR) AS local_ip, local_port, count(*) AS samples,\n  \
         max(accept_queue) AS accept_queue_peak, max(listen_backlog) AS listen_backlog,\n  \
         count(*) FILTER (WHERE listen_backlog > 0 AND accept_queue >= listen_backlog) AS samples_at_backlog\n\
         FROM sockets WHERE {all} AND state = 'LISTEN' AND accept_queue IS NOT NULL{filter}\n\
         GROUP BY local_ip, local_port ORDER BY local_port"
    )
}

/// Per server endpoint in the capture: connections and SYN retransmits.
pub(crate) fn syn_sql(scope: &RunScope, port: Option<u16>) -> String {
    let all = scope.filter("");
    let filter = port.map(|p| format!(" AND server_port = {p}")).unwrap_or_default();
    format!(
        "SELECT CAST(server_ip AS VARCHAR) AS server_ip, server_port, count(*) AS connections,\n  \
         sum(syn_retransmits) AS syn_retransmits,\n  \
         count(*) FILTER (WHERE syn_retransmits > 0) AS conns_with_syn_retransmits\n\
         FROM connections WHERE {all} AND syn_ts_ns IS NOT NULL{filter}\n\
         GROUP BY server_ip, server_port ORDER BY server_port"
    )
}

/// What one listening port showed.
#[derive(Default)]
struct PortSignals {
    endpoint: Option<Endpoint>,
    evidence: Vec<Evidence>,
    at_backlog: bool,
    syn_share: f64,
    impact: f64,
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    let run = &ctx.scope;
    let have_counters = ctx.rows_in("tcp_counters")? > 0;
    let have_sockets = ctx.rows_in("sockets")? > 0;
    let have_connections = ctx.rows_in("connections")? > 0;
    let mut missing = Vec::new();
    if !have_counters {
        missing.push(
            ctx.missing("tcp_counters", "record snapshots (`peel snap --db`) for ListenOverflows"),
        );
    }
    if !have_sockets {
        missing
            .push(ctx.missing("sockets", "record snapshots (`peel snap --db`) for accept queues"));
    }
    if !have_connections {
        missing.push(ctx.missing("connections", "analyze a capture for SYN retransmits"));
    }
    if !have_counters && !have_sockets && !have_connections {
        return Ok(Look::cannot_decide(missing));
    }
    let mut findings = Vec::new();
    let mut checked = Vec::new();

    if have_counters {
        let table = ctx.query(&counters_sql(run))?;
        let mut hosts: BTreeMap<String, Vec<(String, u64, f64, f64)>> = BTreeMap::new();
        for row in table.iter() {
            let entry = (
                row.text("name")?,
                row.u64("samples")?,
                row.f64_or_zero("rise")?,
                row.f64_or_zero("peak_rate_per_s")?,
            );
            hosts.entry(row.text("host")?).or_default().push(entry);
        }
        let single_snapshot = hosts.values().flatten().all(|(_, samples, _, _)| *samples < 2);
        if single_snapshot {
            missing.push(format!(
                "one snapshot only in {}: whether counters rose is unknown (sample with `--every`)",
                ctx.describe()
            ));
        }
        checked.push(plural(hosts.len(), "host's counters", "hosts' counters"));
        for (host, counters) in hosts {
            let rise =
                |name: &str| counters.iter().find(|c| c.0 == name).map(|c| c.2).unwrap_or(0.0);
            let overflows = rise("TcpExt.ListenOverflows");
            let drops = rise("TcpExt.ListenDrops");
            let qfull = rise("TcpExt.TCPReqQFullDrop");
            if overflows <= 0.0 && drops <= 0.0 && qfull <= 0.0 {
                continue;
            }
            let peak_rate = counters
                .iter()
                .filter(|c| c.0 == "TcpExt.ListenOverflows" || c.0 == "TcpExt.ListenDrops")
                .map(|c| c.3)
                .fold(0.0, f64::max);
            let dropped = overflows.max(drops);
            let opened = rise("Tcp.PassiveOpens");
            findings.push(Finding {
                id: format!("{NAME}:host:{host}"),
                rule: NAME.to_string(),
                title: format!(
                    "listen queues overflowed on {}: ListenOverflows +{overflows:.0}, ListenDrops +{drops:.0} during the run",
                    if host.is_empty() { "the host".to_string() } else { host.clone() }
                ),
                severity: Severity::Critical,
                subject: Subject::Host { host },
                impact: share(dropped, dropped + opened).max(0.5),
                evidence: vec![
                    Evidence::new("listen_overflows_rise", overflows, Unit::Count),
                    Evidence::new("listen_drops_rise", drops, Unit::Count),
                    Evidence::new("req_q_full_drops_rise", qfull, Unit::Count),
                    Evidence::new("drops_peak_rate", peak_rate, Unit::PerSecond),
                    Evidence::new("passive_opens_rise", opened, Unit::Count),
                ],
                sql: counters_sql(run),
                next_step: NEXT_STEP.to_string(),
            });
        }
    }

    let mut ports: BTreeMap<u16, PortSignals> = BTreeMap::new();
    if have_sockets {
        let table = ctx.query(&listen_sql(run, None))?;
        checked.push(plural(table.len(), "listening socket", "listening sockets"));
        for row in table.iter() {
            let port = row.port("local_port")?;
            let samples = row.u64("samples")?;
            let at_backlog = row.u64("samples_at_backlog")?;
            if at_backlog == 0 {
                continue;
            }
            let signals = ports.entry(port).or_default();
            signals.endpoint.get_or_insert(Endpoint { ip: row.text("local_ip")?, port });
            signals.at_backlog = true;
            signals.impact = signals.impact.max(share(at_backlog as f64, samples as f64));
            signals.evidence.extend([
                Evidence::new(
                    "accept_queue_peak",
                    row.f64_or_zero("accept_queue_peak")?,
                    Unit::Count,
                ),
                Evidence::new("listen_backlog", row.f64_or_zero("listen_backlog")?, Unit::Count),
                Evidence::new("snapshots_at_backlog", at_backlog as f64, Unit::Count),
                Evidence::new("snapshots", samples as f64, Unit::Count),
            ]);
        }
    }
    if have_connections {
        let table = ctx.query(&syn_sql(run, None))?;
        checked.push(plural(table.len(), "captured endpoint", "captured endpoints"));
        for row in table.iter() {
            let port = row.port("server_port")?;
            let connections = row.u64("connections")?;
            let with_retransmits = row.u64("conns_with_syn_retransmits")?;
            let syn_share = share(with_retransmits as f64, connections as f64);
            if with_retransmits == 0 {
                continue;
            }
            let signals = ports.entry(port).or_default();
            // The captured address beats a wildcard listen address (0.0.0.0, ::).
            signals.endpoint = Some(Endpoint { ip: row.text("server_ip")?, port });
            signals.syn_share = syn_share;
            signals.impact = signals.impact.max(syn_share);
            signals.evidence.extend([
                Evidence::new("syn_retransmits", row.f64_or_zero("syn_retransmits")?, Unit::Count),
                Evidence::new("conns_with_syn_retransmits_share", syn_share * 100.0, Unit::Percent),
                Evidence::new("connections", connections as f64, Unit::Count),
            ]);
        }
    }
    for (port, signals) in ports {
        if !signals.at_backlog && signals.syn_share < MIN_SYN_RETRANSMIT_SHARE {
            continue;
        }
        let Some(endpoint) = signals.endpoint else { continue };
        let mut what = Vec::new();
        let mut sql = Vec::new();
        if signals.at_backlog {
            what.push("accept queue at its backlog".to_string());
            sql.push(listen_sql(run, Some(port)));
        }
        if signals.syn_share > 0.0 {
            what.push(format!(
                "{:.1}% of connections re-sent their SYN",
                signals.syn_share * 100.0
            ));
            sql.push(syn_sql(run, Some(port)));
        }
        findings.push(Finding {
            id: endpoint.finding_id(NAME),
            rule: NAME.to_string(),
            title: format!("listen backlog overflows on {}: {}", endpoint.text(), what.join("; ")),
            severity: if signals.at_backlog { Severity::Critical } else { Severity::Warning },
            subject: endpoint.subject(),
            impact: signals.impact,
            evidence: signals.evidence,
            sql: sql.join(";\n"),
            next_step: NEXT_STEP.to_string(),
        });
    }
    Ok(Look::decided(findings, checked.join(", "), missing))
}

const NEXT_STEP: &str =
    "Workers do not accept fast enough: add workers or make them accept sooner \
     (gunicorn --workers/--threads, uWSGI --listen), and raise the listen backlog together with \
     net.core.somaxconn and net.ipv4.tcp_max_syn_backlog. Check `ss -ltn` Recv-Q against Send-Q.";
