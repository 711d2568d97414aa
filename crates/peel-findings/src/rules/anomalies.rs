//! `anomalies`: retransmissions, zero windows and resets per server endpoint, with resets broken
//! down by the side that sent them and the phase the connection was in. Loopback and a healthy LAN
//! show none of these; a few percent is a lossy path, a receiver that cannot keep up (zero windows),
//! or a peer that gives up (resets during `server`: a proxy timeout; during `close`: SO_LINGER 0 or
//! an application closing with unread data).
//!
//! The capture counts retransmitted segments per connection, not per side: the rule says which
//! endpoint, and the reset breakdown says which side.

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{Evidence, Finding, Severity, Unit};
use crate::rules::{plural, share, Endpoint};

pub(crate) const NAME: &str = "anomalies";

/// Retransmitted segments per packet from which a finding is made.
const MIN_RETRANSMIT_RATE: f64 = 0.01;
/// ... and a count that is more than noise.
const MIN_RETRANSMITS: u64 = 10;
/// Share of connections with zero windows or resets from which a finding is made.
const MIN_CONN_SHARE: f64 = 0.01;
/// Share above which any of them is critical.
const CRITICAL_SHARE: f64 = 0.1;

/// Per endpoint: retransmissions, zero windows, resets.
pub(crate) fn sql(scope: &RunScope, endpoint: Option<&Endpoint>) -> String {
    let filter = endpoint.map(|e| e.sql_filter("server_ip", "server_port")).unwrap_or_default();
    format!(
        "SELECT CAST(server_ip AS VARCHAR) AS server_ip, server_port, count(*) AS connections,\n  \
         sum(packets) AS packets, sum(retransmits) AS retransmits,\n  \
         sum(zero_windows) AS zero_windows, count(*) FILTER (WHERE zero_windows > 0) AS conns_with_zero_windows,\n  \
         count(*) FILTER (WHERE reset_by IS NOT NULL) AS resets,\n  \
         count(*) FILTER (WHERE reset_by = 'client') AS resets_by_client,\n  \
         count(*) FILTER (WHERE reset_by = 'server') AS resets_by_server\n\
         FROM connections WHERE {}{filter}\nGROUP BY server_ip, server_port ORDER BY server_ip, server_port",
        scope.filter("")
    )
}

/// Per endpoint, side and phase: resets.
pub(crate) fn resets_sql(scope: &RunScope, endpoint: Option<&Endpoint>) -> String {
    let filter = endpoint.map(|e| e.sql_filter("server_ip", "server_port")).unwrap_or_default();
    format!(
        "SELECT CAST(server_ip AS VARCHAR) AS server_ip, server_port, reset_by,\n  \
         coalesce(reset_phase, 'unknown') AS reset_phase, count(*) AS resets\n\
         FROM connections WHERE {} AND reset_by IS NOT NULL{filter}\n\
         GROUP BY ALL ORDER BY server_ip, server_port, resets DESC",
        scope.filter("")
    )
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    if let Some(missing) = ctx.missing_capture()? {
        return Ok(Look::cannot_decide(vec![missing]));
    }
    let table = ctx.query(&sql(&ctx.scope, None))?;
    let resets = ctx.query(&resets_sql(&ctx.scope, None))?;
    let mut findings = Vec::new();
    for row in table.iter() {
        let endpoint = Endpoint { ip: row.text("server_ip")?, port: row.port("server_port")? };
        let connections = row.u64("connections")? as f64;
        let packets = row.u64("packets")? as f64;
        let retransmits = row.u64("retransmits")?;
        let rate = share(retransmits as f64, packets);
        if retransmits >= MIN_RETRANSMITS && rate >= MIN_RETRANSMIT_RATE {
            findings.push(Finding {
                id: format!("{NAME}:retransmits:{}", endpoint.text()),
                rule: NAME.to_string(),
                title: format!(
                    "{:.1}% of packets to and from {} are retransmissions",
                    rate * 100.0,
                    endpoint.text()
                ),
                severity: severity(rate),
                subject: endpoint.subject(),
                impact: rate.min(1.0),
                evidence: vec![
                    Evidence::new("retransmits", retransmits as f64, Unit::Count),
                    Evidence::new("packets", packets, Unit::Count),
                    Evidence::new("retransmit_rate", rate * 100.0, Unit::Percent),
                ],
                sql: sql(&ctx.scope, Some(&endpoint)),
                next_step:
                    "Loss on the path or a full queue: check `nstat` drops (TCPBacklogDrop, \
                            netdev_max_backlog), interface errors, and the receiver's buffers."
                        .to_string(),
            });
        }
        let zero_conns = row.u64("conns_with_zero_windows")? as f64;
        let zero_share = share(zero_conns, connections);
        if zero_conns > 0.0 && zero_share >= MIN_CONN_SHARE {
            findings.push(Finding {
                id: format!("{NAME}:zero_windows:{}", endpoint.text()),
                rule: NAME.to_string(),
                title: format!(
                    "{:.1}% of connections on {} advertised a zero window (a receiver not reading)",
                    zero_share * 100.0,
                    endpoint.text()
                ),
                severity: severity(zero_share),
                subject: endpoint.subject(),
                impact: zero_share.min(1.0),
                evidence: vec![
                    Evidence::new("zero_windows", row.f64_or_zero("zero_windows")?, Unit::Count),
                    Evidence::new("conns_with_zero_windows", zero_conns, Unit::Count),
                    Evidence::new("connections", connections, Unit::Count),
                ],
                sql: sql(&ctx.scope, Some(&endpoint)),
                next_step: "The receiving application does not read fast enough (blocked workers, \
                            slow consumers): find which side advertised it with `peel sql` on the \
                            exchanges around it, and check that side's CPU and event loop."
                    .to_string(),
            });
        }
        let reset_count = row.u64("resets")? as f64;
        let reset_share = share(reset_count, connections);
        if reset_count > 0.0 && reset_share >= MIN_CONN_SHARE {
            let mut evidence = vec![
                Evidence::new("resets", reset_count, Unit::Count),
                Evidence::new(
                    "resets_by_client",
                    row.f64_or_zero("resets_by_client")?,
                    Unit::Count,
                ),
                Evidence::new(
                    "resets_by_server",
                    row.f64_or_zero("resets_by_server")?,
                    Unit::Count,
                ),
                Evidence::new("reset_share", reset_share * 100.0, Unit::Percent),
            ];
            let mut top = None;
            for reset in resets.iter() {
                if reset.text("server_ip")? != endpoint.ip
                    || reset.port("server_port")? != endpoint.port
                {
                    continue;
                }
                let (side, phase) = (reset.text("reset_by")?, reset.text("reset_phase")?);
                let count = reset.u64("resets")? as f64;
                evidence.push(Evidence::new(
                    &format!("resets_by_{side}_in_{phase}"),
                    count,
                    Unit::Count,
                ));
                top.get_or_insert((side, phase));
            }
            let detail = top
                .map(|(side, phase)| format!(", mostly by the {side} during {phase}"))
                .unwrap_or_default();
            findings.push(Finding {
                id: format!("{NAME}:resets:{}", endpoint.text()),
                rule: NAME.to_string(),
                title: format!(
                    "{:.1}% of connections on {} were reset{detail}",
                    reset_share * 100.0,
                    endpoint.text()
                ),
                severity: severity(reset_share),
                subject: endpoint.subject(),
                impact: reset_share.min(1.0),
                evidence,
                sql: format!(
                    "{};\n{}",
                    sql(&ctx.scope, Some(&endpoint)),
                    resets_sql(&ctx.scope, Some(&endpoint))
                ),
                next_step: "Resets during server time are usually a timeout on the other side (proxy, \
                            client); during close, SO_LINGER 0 or a close with unread data; refused \
                            handshakes mean nothing listened or the backlog overflowed."
                    .to_string(),
            });
        }
    }
    Ok(Look::decided(findings, plural(table.len(), "endpoint", "endpoints"), Vec::new()))
}

fn severity(share: f64) -> Severity {
    if share >= CRITICAL_SHARE {
        Severity::Critical
    } else {
        Severity::Warning
    }
}
