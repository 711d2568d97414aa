//! `dominant_phase`: on which phase do an endpoint's connections spend their time, and which side is
//! slow? The outage in our story was found this way: close took 826 ms of a 1.14 s connection
//! because the client was late with its FIN.
//!
//! Time per phase is summed over the endpoint's connections (exchanges' request, server and response
//! times summed over all exchanges). The rule fires when a *waiting* phase (handshake, request wait,
//! request sending, close) holds at least [`MIN_SHARE`] of the time: those are not the
//! application's work and point at the network stack, the pool or the peer. Server, response and
//! idle time dominating is the normal case and is only reported in `checked`.

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{format_number, Evidence, Finding, Severity, Unit};
use crate::rules::{ms, plural, share, Endpoint};

pub(crate) const NAME: &str = "dominant_phase";

/// A waiting phase with at least this share of connection time makes a finding.
const MIN_SHARE: f64 = 0.4;
/// From this share on, the finding is critical.
const CRITICAL_SHARE: f64 = 0.6;

/// The phases in the order they happen, and whether they are waiting (not the server's work).
const PHASES: &[(&str, bool)] = &[
    ("handshake", true),
    ("request_wait", true),
    ("request", true),
    ("server", false),
    ("response", false),
    ("idle", false),
    ("close", true),
];

/// Per endpoint: connections, close sides, and per phase the summed time, p50 and p99.
pub(crate) fn sql(scope: &RunScope, endpoint: Option<&Endpoint>) -> String {
    let (ex_scope, c_scope) = (scope.filter(""), scope.filter("c"));
    let filter = endpoint.map(|e| e.sql_filter("c.server_ip", "c.server_port")).unwrap_or_default();
    let mut aggregates = String::new();
    for (phase, _) in PHASES {
        aggregates.push_str(&format!(
            ",\n  sum({phase}_us) AS {phase}_sum_us, quantile_cont({phase}_us, 0.5) AS {phase}_p50_us, \
             quantile_cont({phase}_us, 0.99) AS {phase}_p99_us"
        ));
    }
    format!(
        "WITH ex AS (\n  SELECT host, conn_id, sum((request_end_ts_ns - request_start_ts_ns) / 1000.0) AS request_us,\n    \
         sum(server_us) AS server_us, sum(response_us) AS response_us\n  \
         FROM exchanges WHERE {ex_scope} GROUP BY host, conn_id\n), per_conn AS (\n  \
         SELECT CAST(c.server_ip AS VARCHAR) AS server_ip, c.server_port, c.closed_by,\n    \
         coalesce(c.handshake_us, 0) AS handshake_us, coalesce(c.synack_to_ack_us, 0) AS synack_to_ack_us,\n    \
         coalesce(c.request_wait_us, 0) AS request_wait_us, coalesce(ex.request_us, 0) AS request_us,\n    \
         coalesce(ex.server_us, c.server_us, 0) AS server_us, coalesce(ex.response_us, c.response_us, 0) AS response_us,\n    \
         coalesce(c.idle_us, 0) AS idle_us, coalesce(c.close_us, 0) AS close_us\n  \
         FROM connections c LEFT JOIN ex ON ex.host = c.host AND ex.conn_id = c.conn_id\n  \
         WHERE {c_scope}{filter}\n)\n\
         SELECT server_ip, server_port, count(*) AS connections,\n  \
         count(*) FILTER (WHERE closed_by = 'client') AS closed_by_client,\n  \
         count(*) FILTER (WHERE closed_by = 'server') AS closed_by_server,\n  \
         sum(synack_to_ack_us) AS synack_to_ack_sum_us{aggregates}\n\
         FROM per_conn GROUP BY server_ip, server_port ORDER BY server_ip, server_port"
    )
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    if let Some(missing) = ctx.missing_capture()? {
        return Ok(Look::cannot_decide(vec![missing]));
    }
    let mut missing = Vec::new();
    if ctx.rows_in("exchanges")? == 0 {
        missing.push(
            ctx.missing("exchanges", "only the first exchange of each connection is counted"),
        );
    }
    let table = ctx.query(&sql(&ctx.scope, None))?;
    let mut findings = Vec::new();
    let mut dominants = Vec::new();
    for row in table.iter() {
        let endpoint = Endpoint { ip: row.text("server_ip")?, port: row.port("server_port")? };
        let mut sums = Vec::with_capacity(PHASES.len());
        for (phase, waiting) in PHASES {
            sums.push((*phase, *waiting, row.f64_or_zero(&format!("{phase}_sum_us"))?));
        }
        let total_us: f64 = sums.iter().map(|(_, _, sum)| sum).sum();
        let Some(&(phase, waiting, phase_us)) =
            sums.iter().max_by(|a, b| a.2.partial_cmp(&b.2).unwrap_or(std::cmp::Ordering::Equal))
        else {
            continue;
        };
        let phase_share = share(phase_us, total_us);
        dominants.push(format!("{} {phase} {:.0}%", endpoint.text(), phase_share * 100.0));
        if !waiting || phase_share < MIN_SHARE {
            continue;
        }
        let connections = row.u64("connections")?;
        let p50_us = row.f64_or_zero(&format!("{phase}_p50_us"))?;
        let p99_us = row.f64_or_zero(&format!("{phase}_p99_us"))?;
        let mut evidence = vec![
            Evidence::new(&format!("{phase}_share"), phase_share * 100.0, Unit::Percent),
            Evidence::new(&format!("{phase}_p50"), ms(p50_us), Unit::Milliseconds),
            Evidence::new(&format!("{phase}_p99"), ms(p99_us), Unit::Milliseconds),
            Evidence::new("connections", connections as f64, Unit::Count),
        ];
        let side = slow_side(phase, &row, p50_us, &mut evidence)?;
        let severity =
            if phase_share >= CRITICAL_SHARE { Severity::Critical } else { Severity::Warning };
        findings.push(Finding {
            id: endpoint.finding_id(NAME),
            rule: NAME.to_string(),
            title: format!(
                "{phase} is {:.0}% of connection time on {}; {side}",
                phase_share * 100.0,
                endpoint.text()
            ),
            severity,
            subject: endpoint.subject(),
            impact: phase_share,
            evidence,
            sql: sql(&ctx.scope, Some(&endpoint)),
            next_step: next_step(phase).to_string(),
        });
    }
    let checked = format!(
        "{}: {}",
        plural(table.len(), "endpoint", "endpoints"),
        if dominants.is_empty() { "no phase time".to_string() } else { dominants.join(", ") }
    );
    Ok(Look::decided(findings, checked, missing))
}

/// Says which side makes the phase slow, adding the numbers that show it.
fn slow_side(
    phase: &str,
    row: &crate::table::Row<'_>,
    p50_us: f64,
    evidence: &mut Vec<Evidence>,
) -> Result<String, FindingsError> {
    Ok(match phase {
        "handshake" => {
            let handshake_us = row.f64_or_zero("handshake_sum_us")?;
            let client_us = row.f64_or_zero("synack_to_ack_sum_us")?;
            let server_us = (handshake_us - client_us).max(0.0);
            evidence.push(Evidence::new(
                "syn_to_synack_share",
                share(server_us, handshake_us) * 100.0,
                Unit::Percent,
            ));
            if server_us >= client_us {
                "the server is slow to answer SYNs (SYN/accept queue)".to_string()
            } else {
                "the client is slow to acknowledge the SYN/ACK (client-side RTT)".to_string()
            }
        }
        "request_wait" => "the client connects, then waits before sending its request".to_string(),
        "request" => "the client is slow to send its requests".to_string(),
        "close" => {
            let by_client = row.u64("closed_by_client")?;
            let by_server = row.u64("closed_by_server")?;
            evidence.push(Evidence::new("closed_by_client", by_client as f64, Unit::Count));
            evidence.push(Evidence::new("closed_by_server", by_server as f64, Unit::Count));
            let (closer, peer) =
                if by_server >= by_client { ("server", "client") } else { ("client", "server") };
            format!(
                "closed by {closer}; the {peer} takes {} ms (p50) to send its FIN",
                format_number(ms(p50_us))
            )
        }
        _ => String::new(),
    })
}

fn next_step(phase: &str) -> &'static str {
    match phase {
        "handshake" => {
            "Check the accept_queue finding and `ss -ltn` Recv-Q against the backlog; raise the server's \
             listen backlog and net.core.somaxconn, or add workers."
        }
        "request_wait" => {
            "The client opens connections before it has work for them: check its pool (pre-connect, \
             pool size) and its event loop (blocked before writing)."
        }
        "request" => "Check the client's send path and the server's receive window (zero windows).",
        "close" => {
            "Find who delays its FIN: the late side keeps the socket open after the response \
             (missing close(), keep-alive timers, lingering). Make the side that finishes first close, \
             or reuse connections (keep-alive, pooling) so closes leave the request path."
        }
        _ => "",
    }
}
