//! `churn`: connections opened for (almost) every request. Our outage paid a PostgreSQL startup on
//! every request while the connection count stayed far below max_connections, so no dashboard
//! showed it: a count below a limit says nothing about what each connection costs.
//!
//! Per server endpoint: new connections per second over the capture window, requests per connection
//! (answered exchanges; for PostgreSQL only those after the startup's ReadyForQuery, so neither the
//! startup's turns nor a closing Terminate message count), and setup cost (TCP handshake
//! plus PostgreSQL startup `db_setup_us`) as a share of setup plus request time. When the capture
//! analysis gives no `db_setup_us` for a PostgreSQL connection whose SYN it saw, its first exchange
//! (the startup) stands in for it, as setup and not as a request. Connections without
//! a SYN in the capture (`partial`) were not opened during it and are not counted.

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{format_number, Evidence, Finding, Severity, Unit};
use crate::rules::{ms, plural, share, Endpoint};

pub(crate) const NAME: &str = "churn";

/// Fewer connections than this in the window is too little to call a pattern.
const MIN_CONNECTIONS: u64 = 20;
/// New connections per second from which opening them is a load of its own.
const MIN_NEW_CONNS_PER_S: f64 = 5.0;
/// Requests per connection up to this value mean "one connection per request".
const MAX_REQUESTS_PER_CONN: f64 = 1.5;
/// Setup share of request time from which churn is critical.
const CRITICAL_SETUP_SHARE: f64 = 0.2;

/// Per endpoint: new connections, their rate over the capture window, requests per connection and
/// the setup and work time they paid.
pub(crate) fn sql(scope: &RunScope, endpoint: Option<&Endpoint>) -> String {
    let (all, c_scope, e_scope) = (scope.filter(""), scope.filter("c"), scope.filter("e"));
    let filter = endpoint.map(|e| e.sql_filter("c.server_ip", "c.server_port")).unwrap_or_default();
    format!(
        "WITH win AS (\n  SELECT (max(last_ts_ns) - min(first_ts_ns)) / 1e9 AS window_s FROM connections WHERE {all}\n\
         ), marked AS (\n  SELECT e.host, e.conn_id, e.response_start_ts_ns IS NOT NULL AS answered,\n    \
         coalesce(e.server_us, 0) + coalesce(e.response_us, 0) AS work_us,\n    \
         (coalesce(e.response_end_ts_ns, e.request_end_ts_ns) - e.request_start_ts_ns) / 1000.0 AS turn_us,\n    \
         CASE WHEN c.protocol <> 'postgresql' THEN false\n      \
         WHEN c.db_setup_us IS NOT NULL AND c.first_request_ts_ns IS NOT NULL\n        \
         THEN e.request_start_ts_ns < c.first_request_ts_ns + CAST(c.db_setup_us * 1000 AS BIGINT)\n      \
         ELSE e.seq = 0 AND c.syn_ts_ns IS NOT NULL END AS is_setup\n  \
         FROM exchanges e JOIN connections c\n    ON c.run_id = e.run_id AND c.stage = e.stage AND c.host = e.host AND c.conn_id = e.conn_id\n  \
         WHERE {e_scope}\n), ex AS (\n  \
         SELECT host, conn_id, count(*) FILTER (WHERE answered AND NOT is_setup) AS requests,\n    \
         sum(work_us) FILTER (WHERE answered AND NOT is_setup) AS work_us,\n    \
         sum(turn_us) FILTER (WHERE is_setup) AS setup_turns_us\n  \
         FROM marked GROUP BY host, conn_id\n), per_conn AS (\n  \
         SELECT CAST(c.server_ip AS VARCHAR) AS server_ip, c.server_port, c.protocol,\n    \
         coalesce(ex.requests, c.exchanges) AS requests,\n    \
         coalesce(c.handshake_us, 0) AS handshake_us,\n    \
         coalesce(c.db_setup_us, ex.setup_turns_us, 0) AS db_setup_us,\n    \
         coalesce(ex.work_us, coalesce(c.server_us, 0) + coalesce(c.response_us, 0)) AS work_us\n  \
         FROM connections c LEFT JOIN ex ON ex.host = c.host AND ex.conn_id = c.conn_id\n  \
         WHERE {c_scope} AND c.state <> 'partial'{filter}\n)\n\
         SELECT server_ip, server_port, mode(protocol) AS protocol, count(*) AS connections,\n  \
         any_value(win.window_s) AS window_s,\n  \
         count(*) / greatest(any_value(win.window_s), 0.001) AS new_conns_per_s,\n  \
         avg(requests) AS requests_per_conn,\n  \
         sum(handshake_us) AS handshake_sum_us, sum(db_setup_us) AS db_setup_sum_us, sum(work_us) AS work_sum_us,\n  \
         quantile_cont(handshake_us, 0.5) AS handshake_p50_us,\n  \
         quantile_cont(db_setup_us, 0.5) FILTER (WHERE db_setup_us > 0) AS db_setup_p50_us\n\
         FROM per_conn, win GROUP BY server_ip, server_port ORDER BY server_ip, server_port"
    )
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    if let Some(missing) = ctx.missing_capture()? {
        return Ok(Look::cannot_decide(vec![missing]));
    }
    let mut missing = Vec::new();
    if ctx.rows_in("exchanges")? == 0 {
        missing.push(ctx.missing(
            "exchanges",
            "requests per connection come from the connections' exchange counts",
        ));
    }
    let table = ctx.query(&sql(&ctx.scope, None))?;
    let mut findings = Vec::new();
    for row in table.iter() {
        let endpoint = Endpoint { ip: row.text("server_ip")?, port: row.port("server_port")? };
        let connections = row.u64("connections")?;
        let rate_per_s = row.f64_or_zero("new_conns_per_s")?;
        let requests_per_conn = row.f64_or_zero("requests_per_conn")?;
        if connections < MIN_CONNECTIONS
            || rate_per_s < MIN_NEW_CONNS_PER_S
            || requests_per_conn > MAX_REQUESTS_PER_CONN
        {
            continue;
        }
        let protocol = row.text("protocol")?;
        let handshake_us = row.f64_or_zero("handshake_sum_us")?;
        let db_setup_us = row.f64_or_zero("db_setup_sum_us")?;
        let work_us = row.f64_or_zero("work_sum_us")?;
        let setup_share = share(handshake_us + db_setup_us, handshake_us + db_setup_us + work_us);
        let db_setup_p50_us = row.f64_opt("db_setup_p50_us")?;
        let mut evidence = vec![
            Evidence::new("new_conns_per_s", rate_per_s, Unit::PerSecond),
            Evidence::new("requests_per_conn", requests_per_conn, Unit::Ratio),
            Evidence::new("connections", connections as f64, Unit::Count),
            Evidence::new("window", row.f64_or_zero("window_s")?, Unit::Seconds),
            Evidence::new("setup_share", setup_share * 100.0, Unit::Percent),
            Evidence::new(
                "handshake_p50",
                ms(row.f64_or_zero("handshake_p50_us")?),
                Unit::Milliseconds,
            ),
        ];
        let mut setup_text = format!("setup is {:.0}% of request time", setup_share * 100.0);
        if let Some(p50_us) = db_setup_p50_us {
            evidence.push(Evidence::new("db_setup_p50", ms(p50_us), Unit::Milliseconds));
            setup_text
                .push_str(&format!(" (PostgreSQL startup p50 {} ms)", format_number(ms(p50_us))));
        }
        let severity = if setup_share >= CRITICAL_SETUP_SHARE {
            Severity::Critical
        } else {
            Severity::Warning
        };
        let what = if protocol == "postgresql" {
            "a new DB connection per request"
        } else {
            "a new connection per request"
        };
        findings.push(Finding {
            id: endpoint.finding_id(NAME),
            rule: NAME.to_string(),
            title: format!(
                "{what} on {} ({protocol}): {} new conns/s, {} requests/conn, {setup_text}",
                endpoint.text(),
                format_number(rate_per_s),
                format_number(requests_per_conn),
            ),
            severity,
            subject: endpoint.subject(),
            impact: setup_share,
            evidence,
            sql: sql(&ctx.scope, Some(&endpoint)),
            next_step: next_step(&protocol).to_string(),
        });
    }
    let checked = format!("{} with new connections", plural(table.len(), "endpoint", "endpoints"));
    Ok(Look::decided(findings, checked, missing))
}

fn next_step(protocol: &str) -> &'static str {
    if protocol == "postgresql" {
        "Keep DB connections open across requests: Django `CONN_MAX_AGE = 60` with \
         `CONN_HEALTH_CHECKS = True` (Django >= 4.1; the key is plural), or a pooler (pgbouncer). \
         Verify with a verify-fix run that requests/conn rises and setup_share falls."
    } else {
        "Reuse connections: enable HTTP keep-alive on the client (e.g. a keep-alive agent in Node.js) \
         and on the server, or pool connections. Verify that requests/conn rises."
    }
}
