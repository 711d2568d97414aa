//! `sysctl_ranges`: kernel parameters too small for the load the run observed. Our outage's team
//! changed kernel parameters one after another without a record; this rule says which ones the
//! measured load actually outgrew, with the numbers, instead of a generic tuning list.
//!
//! - `net.core.somaxconn` caps every listen backlog. It is too small when a listener's backlog sits
//!   at the cap and either its accept queue reached half of it or more new connections arrived in
//!   one second than it can hold.
//! - `net.ipv4.tcp_max_syn_backlog` bounds half-open connections; too small when one second's new
//!   connections on the host exceed it.
//! - `net.ipv4.ip_local_port_range` must hold a destination's new connections for the 60 s each
//!   stays in TIME_WAIT: peak new connections per second to one destination times 60 against the
//!   range's size.

use std::collections::BTreeMap;

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{Evidence, Finding, Severity, Subject, Unit};
use crate::rules::{share, Endpoint};

pub(crate) const NAME: &str = "sysctl_ranges";

/// Linux keeps a closed connection in TIME_WAIT for 60 s (TCP_TIMEWAIT_LEN, not tunable).
const TIME_WAIT_S: f64 = 60.0;
/// Share of the port range the observed load needs from which a finding is made.
const PORTS_WARN_SHARE: f64 = 0.5;
/// Accept queue peak, as a share of a capped backlog, that shows the cap matters.
const QUEUE_PRESSURE_SHARE: f64 = 0.5;

const KEYS: &[&str] =
    &["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.ip_local_port_range"];

/// The last recorded value of each key, per host.
pub(crate) fn sysctl_sql(scope: &RunScope) -> String {
    let keys: Vec<String> = KEYS.iter().map(|k| format!("'{k}'")).collect();
    format!(
        "SELECT host, key, arg_max(value, snap_id) AS value FROM sysctl\n\
         WHERE {} AND key IN ({})\nGROUP BY host, key ORDER BY host, key",
        scope.filter(""),
        keys.join(", ")
    )
}

/// Per listening port: backlog and accept queue peak.
pub(crate) fn listen_sql(scope: &RunScope) -> String {
    format!(
        "SELECT local_port, max(listen_backlog) AS listen_backlog, max(accept_queue) AS accept_queue_peak\n\
         FROM sockets WHERE {} AND state = 'LISTEN' AND listen_backlog IS NOT NULL\n\
         GROUP BY local_port ORDER BY local_port",
        scope.filter("")
    )
}

/// Per server endpoint: the most new connections (SYNs) seen in one second.
pub(crate) fn rate_sql(scope: &RunScope) -> String {
    format!(
        "WITH per_s AS (\n  SELECT CAST(server_ip AS VARCHAR) AS server_ip, server_port, syn_ts_ns // 1000000000 AS second,\n    \
         count(*) AS new_conns\n  FROM connections WHERE {} AND syn_ts_ns IS NOT NULL\n  \
         GROUP BY server_ip, server_port, second\n)\n\
         SELECT server_ip, server_port, max(new_conns) AS peak_new_conns_per_s\n\
         FROM per_s GROUP BY server_ip, server_port ORDER BY peak_new_conns_per_s DESC",
        scope.filter("")
    )
}

/// `"32768 60999"` -> 28232 ports.
pub(crate) fn port_range_size(value: &str) -> Option<f64> {
    let mut parts = value.split_whitespace().map(str::parse::<u32>);
    let (Some(Ok(lo)), Some(Ok(hi)), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    (hi >= lo).then(|| f64::from(hi - lo + 1))
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    if ctx.rows_in("sysctl")? == 0 {
        return Ok(Look::cannot_decide(vec![
            ctx.missing("sysctl", "record a snapshot during the run (`peel snap --db`)")
        ]));
    }
    let mut missing = Vec::new();
    let have_sockets = ctx.rows_in("sockets")? > 0;
    let have_connections = ctx.rows_in("connections")? > 0;
    if !have_sockets {
        missing.push(ctx.missing("sockets", "listen backlogs unknown"));
    }
    if !have_connections {
        missing.push(
            ctx.missing(
                "connections",
                "the observed connection rate is unknown (analyze a capture)",
            ),
        );
    }
    if !have_sockets && !have_connections {
        return Ok(Look::cannot_decide(missing));
    }
    let sysctl_sql = sysctl_sql(&ctx.scope);
    // One host's values: runs with several hosts get the strictest (smallest) value.
    let mut values: BTreeMap<String, f64> = BTreeMap::new();
    for row in ctx.query(&sysctl_sql)?.iter() {
        let key = row.text("key")?;
        let text = row.text("value")?;
        let value = if key == "net.ipv4.ip_local_port_range" {
            port_range_size(&text)
        } else {
            text.trim().parse().ok()
        };
        if let Some(value) = value {
            let entry = values.entry(key).or_insert(value);
            *entry = entry.min(value);
        }
    }
    for key in KEYS {
        if !values.contains_key(*key) {
            missing.push(format!("{key} not recorded in {}", ctx.describe()));
        }
    }
    let mut rates: Vec<(Endpoint, f64)> = Vec::new();
    let rate_sql = rate_sql(&ctx.scope);
    if have_connections {
        for row in ctx.query(&rate_sql)?.iter() {
            let endpoint = Endpoint { ip: row.text("server_ip")?, port: row.port("server_port")? };
            rates.push((endpoint, row.f64_or_zero("peak_new_conns_per_s")?));
        }
    }
    let peak_rate = |port: u16| {
        rates.iter().filter(|(e, _)| e.port == port).map(|(_, r)| *r).fold(0.0, f64::max)
    };
    let host_peak_rate: f64 = {
        // Host-wide: the sum of the endpoints' peaks bounds the busiest second from above; use the
        // busiest single endpoint to stay conservative.
        rates.iter().map(|(_, r)| *r).fold(0.0, f64::max)
    };
    let mut findings = Vec::new();

    if let (Some(&somaxconn), true) = (values.get("net.core.somaxconn"), have_sockets) {
        let listen_sql = listen_sql(&ctx.scope);
        let mut worst: Option<(u16, f64, f64, f64)> = None;
        for row in ctx.query(&listen_sql)?.iter() {
            let port = row.port("local_port")?;
            let backlog = row.f64_or_zero("listen_backlog")?;
            let queue_peak = row.f64_or_zero("accept_queue_peak")?;
            let rate = peak_rate(port);
            let capped = backlog > 0.0 && backlog >= somaxconn;
            let pressed = share(queue_peak, backlog) >= QUEUE_PRESSURE_SHARE || rate > backlog;
            if capped
                && pressed
                && worst.is_none_or(|w| share(queue_peak, backlog) > share(w.2, w.1))
            {
                worst = Some((port, backlog, queue_peak, rate));
            }
        }
        if let Some((port, backlog, queue_peak, rate)) = worst {
            findings.push(Finding {
                id: format!("{NAME}:net.core.somaxconn"),
                rule: NAME.to_string(),
                title: format!(
                    "net.core.somaxconn={somaxconn:.0} caps the backlog of port {port}; its accept queue reached {queue_peak:.0} with up to {rate:.0} new connections/s"
                ),
                severity: Severity::Warning,
                subject: Subject::Sysctl { key: "net.core.somaxconn".to_string() },
                impact: share(queue_peak, backlog).min(1.0),
                evidence: vec![
                    Evidence::new("somaxconn", somaxconn, Unit::Count),
                    Evidence::new("listen_backlog", backlog, Unit::Count),
                    Evidence::new("accept_queue_peak", queue_peak, Unit::Count),
                    Evidence::new("peak_new_conns_per_s", rate, Unit::PerSecond),
                ],
                sql: format!("{sysctl_sql};\n{listen_sql};\n{rate_sql}"),
                next_step: "Raise net.core.somaxconn (e.g. 4096) together with the server's own \
                            backlog (gunicorn --backlog, uWSGI --listen), then re-run the playbook: \
                            a bigger queue absorbs bursts, it does not add workers."
                    .to_string(),
            });
        }
    }

    if let Some(&syn_backlog) = values.get("net.ipv4.tcp_max_syn_backlog") {
        if have_connections && host_peak_rate > syn_backlog {
            findings.push(Finding {
                id: format!("{NAME}:net.ipv4.tcp_max_syn_backlog"),
                rule: NAME.to_string(),
                title: format!(
                    "net.ipv4.tcp_max_syn_backlog={syn_backlog:.0} is below the {host_peak_rate:.0} new connections seen in one second"
                ),
                severity: Severity::Warning,
                subject: Subject::Sysctl { key: "net.ipv4.tcp_max_syn_backlog".to_string() },
                impact: (1.0 - share(syn_backlog, host_peak_rate)).clamp(0.0, 1.0),
                evidence: vec![
                    Evidence::new("tcp_max_syn_backlog", syn_backlog, Unit::Count),
                    Evidence::new("peak_new_conns_per_s", host_peak_rate, Unit::PerSecond),
                ],
                sql: format!("{sysctl_sql};\n{rate_sql}"),
                next_step: "Raise net.ipv4.tcp_max_syn_backlog to at least the burst of new \
                            connections (and keep tcp_syncookies=1); better, reuse connections."
                    .to_string(),
            });
        }
    }

    if let Some(&range_ports) = values.get("net.ipv4.ip_local_port_range") {
        if let Some((destination, rate)) =
            rates.iter().max_by(|a, b| a.1.total_cmp(&b.1)).filter(|_| have_connections)
        {
            let needed = rate * TIME_WAIT_S;
            let needed_share = share(needed, range_ports);
            if needed_share >= PORTS_WARN_SHARE {
                findings.push(Finding {
                    id: format!("{NAME}:net.ipv4.ip_local_port_range"),
                    rule: NAME.to_string(),
                    title: format!(
                        "net.ipv4.ip_local_port_range holds {range_ports:.0} ports; {rate:.0} new connections/s to {} need {needed:.0} over TIME_WAIT's 60 s",
                        destination.text()
                    ),
                    severity: if needed_share >= 1.0 { Severity::Critical } else { Severity::Warning },
                    subject: Subject::Sysctl { key: "net.ipv4.ip_local_port_range".to_string() },
                    impact: needed_share.min(1.0),
                    evidence: vec![
                        Evidence::new("range_ports", range_ports, Unit::Ports),
                        Evidence::new("peak_new_conns_per_s", *rate, Unit::PerSecond),
                        Evidence::new("ports_needed", needed, Unit::Ports),
                        Evidence::new("range_needed", needed_share * 100.0, Unit::Percent),
                    ],
                    sql: format!("{sysctl_sql};\n{rate_sql}"),
                    next_step: "Reuse connections to this destination; meanwhile widen \
                                net.ipv4.ip_local_port_range (e.g. 1024 65535) and set \
                                net.ipv4.tcp_tw_reuse=1 on the connecting side."
                        .to_string(),
                });
            }
        }
    }
    let checked = format!(
        "{} of {} keys; peak {host_peak_rate:.0} new connections/s",
        values.len(),
        KEYS.len()
    );
    Ok(Look::decided(findings, checked, missing))
}

#[cfg(test)]
mod tests {
    use super::port_range_size;

    #[test]
    fn port_range_sizes() {
        assert_eq!(port_range_size("32768 60999"), Some(28232.0));
        assert_eq!(port_range_size("32768\t60999"), Some(28232.0));
        assert_eq!(port_range_size("1024 1024"), Some(1.0));
        assert_eq!(port_range_size("60999 32768"), None);
        assert_eq!(port_range_size("32768"), None);
        assert_eq!(port_range_size("a b"), None);
        assert_eq!(port_range_size("1 2 3"), None);
    }
}
