//! What a rule concludes: a [`Finding`] (something is wrong, with the numbers that show it, the SQL
//! that reproduces them and what to try next) and, per rule, a [`RuleReport`] that says whether the
//! rule fired, found nothing, or could not decide because data was missing.
//!
//! This is plain data: it serializes to the stable JSON of `peel findings --format json` and maps to
//! the `findings` table of the run database. Rendering lives in `render`, deciding in `rules`.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

/// How urgently a finding deserves the on-call engineer's first minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Explains a large share of the slowness or is one step from an outage (a limit about to hit).
    Critical,
    /// Abnormal and worth checking, but not shown to be the main cost.
    Warning,
    /// Context that helps read the other findings (e.g. the dominant phase is the server's work).
    Info,
}

impl Severity {
    /// The text stored in the database and printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// Lower ranks come first.
    fn rank(self) -> u8 {
        match self {
            Severity::Critical => 0,
            Severity::Warning => 1,
            Severity::Info => 2,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    /// A server endpoint (ip:port) as seen in the capture or in the socket table.
    Endpoint { ip: String, port: u16 },
    /// A remote endpoint that local clients connect to (ephemeral ports are spent per destination).
    Destination { ip: String, port: u16 },
    /// A process (by name; pid when one process is meant).
    Process { name: String, pid: Option<u32> },
    /// A URL class of the load generator.
    UrlClass { class: String },
    /// A kernel parameter.
    Sysctl { key: String },
    /// The host as a whole (CPU, kernel counters, system-wide tables).
    Host { host: String },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Endpoint { ip, port } => write!(f, "{}", endpoint_text(ip, *port)),
            Subject::Destination { ip, port } => write!(f, "-> {}", endpoint_text(ip, *port)),
            Subject::Process { name, pid: Some(pid) } => write!(f, "{name}[{pid}]"),
            Subject::Process { name, pid: None } => write!(f, "{name}"),
            Subject::UrlClass { class } => write!(f, "class {class}"),
            Subject::Sysctl { key } => write!(f, "{key}"),
            Subject::Host { host } if host.is_empty() => f.write_str("host"),
            Subject::Host { host } => write!(f, "host {host}"),
        }
    }
}

/// `ip:port`, with brackets around IPv6 addresses.
pub(crate) fn endpoint_text(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The unit of an evidence value: every number a finding shows says what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Microseconds,
    Milliseconds,
    Seconds,
    /// 0..=100 (CPU usage, share of time, fill level).
    Percent,
    PerSecond,
    Count,
    /// A dimensionless ratio (requests per connection, slow-down factor).
    Ratio,
    Bytes,
    /// A number of TCP ports (ephemeral port ranges and their use).
    Ports,
}

impl Unit {
    /// The short suffix printed after a value.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Microseconds => "us",
            Unit::Milliseconds => "ms",
            Unit::Seconds => "s",
            Unit::Percent => "%",
            Unit::PerSecond => "/s",
            Unit::Count => "",
            Unit::Ratio => "x",
            Unit::Bytes => "B",
            Unit::Ports => "ports",
        }
    }
}

/// One named number behind a finding (`close_p50` = `826.5 ms`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    /// Stable snake_case name, documented per rule in docs/findings.md.
    pub name: String,
    pub value: f64,
    pub unit: Unit,
}

impl Evidence {
    /// A named value with its unit.
    pub fn new(name: &str, value: f64, unit: Unit) -> Evidence {
        Evidence { name: name.to_string(), value, unit }
    }
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = format_number(self.value);
        match self.unit {
            Unit::Count => write!(f, "{}={value}", self.name),
            Unit::Ratio | Unit::Percent | Unit::PerSecond => {
                write!(f, "{}={value}{}", self.name, self.unit.suffix())
            }
            _ => write!(f, "{}={value} {}", self.name, self.unit.suffix()),
        }
    }
}

/// A number with as many decimals as it deserves: integers plain, small values with 3 significant
/// decimals, so `0.013711` ms and `826.461` ms both read well.
pub(crate) fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    let abs = value.abs();
    if abs >= 100.0 {
        format!("{value:.1}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// One diagnosis: something measured in the run is wrong, with the numbers that show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable within a run: `<rule>:<subject>` (e.g. `churn:127.0.0.1:5432`).
    pub id: String,
    /// The rule that produced it (docs/findings.md has one section per rule).
    pub rule: String,
    /// One line a human reads first.
    pub title: String,
    pub severity: Severity,
    pub subject: Subject,
    /// Ranks findings of the same severity: the share (0..=1) of the observed slowness or of the
    /// limit this finding accounts for. Rules document how they compute it.
    pub impact: f64,
    pub evidence: Vec<Evidence>,
    /// A query that reproduces the evidence (`peel sql DB "<sql>"`).
    pub sql: String,
    /// What to try or look at next.
    pub next_step: String,
}

impl Finding {
    /// The value of the named evidence, if the finding has it.
    pub fn evidence_value(&self, name: &str) -> Option<f64> {
        self.evidence.iter().find(|e| e.name == name).map(|e| e.value)
    }
}

/// Orders findings for reports: severity first, then impact (largest first), then id for a stable
/// order between equals.
pub fn rank(findings: &mut [Finding]) {
    findings.sort_by(compare);
}

fn compare(a: &Finding, b: &Finding) -> Ordering {
    a.severity
        .rank()
        .cmp(&b.severity.rank())
        .then_with(|| b.impact.partial_cmp(&a.impact).unwrap_or(Ordering::Equal))
        .then_with(|| a.id.cmp(&b.id))
}

/// What one rule concluded for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// At least one finding.
    Fired,
    /// The data the rule needs was there and showed nothing wrong.
    Clear,
    /// The rule could not look: the data it needs is missing (see `missing`).
    CannotDecide,
}

impl Verdict {
    /// The text printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Fired => "fired",
            Verdict::Clear => "clear",
            Verdict::CannotDecide => "cannot decide",
        }
    }
}

/// One rule's account of a run: its verdict, what it looked at, and what it could not look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub verdict: Verdict,
    /// What was examined ("3 endpoints, 1200 connections"), so "clear" is never a silent pass.
    pub checked: String,
    /// Inputs that were absent ("no tcp_counters rows for run 1: record snapshots with `peel snap
    /// --db`"). Non-empty with a `clear` verdict means the rule looked only at part of what it could.
    pub missing: Vec<String>,
    pub findings: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, severity: Severity, impact: f64) -> Finding {
        Finding {
            id: id.to_string(),
            rule: "test".to_string(),
            title: String::new(),
            severity,
            subject: Subject::Host { host: String::new() },
            impact,
            evidence: Vec::new(),
            sql: String::new(),
            next_step: String::new(),
        }
    }

    #[test]
    fn ranking_is_severity_then_impact_then_id() {
        let mut findings = vec![
            finding("w-small", Severity::Warning, 0.1),
            finding("i-big", Severity::Info, 1.0),
            finding("c-small", Severity::Critical, 0.2),
            finding("w-big", Severity::Warning, 0.9),
            finding("c-big-b", Severity::Critical, 0.7),
            finding("c-big-a", Severity::Critical, 0.7),
        ];
        rank(&mut findings);
        let ids: Vec<&str> = findings.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["c-big-a", "c-big-b", "c-small", "w-big", "w-small", "i-big"]);
    }

    #[test]
    fn evidence_reads_with_its_unit() {
        let cases = [
            (Evidence::new("close_p50", 826.461507, Unit::Milliseconds), "close_p50=826.5 ms"),
            (
                Evidence::new("handshake_p50", 0.013711, Unit::Milliseconds),
                "handshake_p50=0.014 ms",
            ),
            (Evidence::new("new_conns_per_s", 52.0, Unit::PerSecond), "new_conns_per_s=52/s"),
            (Evidence::new("setup_share", 74.69879, Unit::Percent), "setup_share=74.70%"),
            (Evidence::new("requests_per_conn", 1.0, Unit::Ratio), "requests_per_conn=1x"),
            (Evidence::new("connections", 1200.0, Unit::Count), "connections=1200"),
            (Evidence::new("range_ports", 28232.0, Unit::Ports), "range_ports=28232 ports"),
            (Evidence::new("window", 4.906, Unit::Seconds), "window=4.91 s"),
        ];
        for (evidence, expected) in cases {
            assert_eq!(evidence.to_string(), expected);
        }
    }

    #[test]
    fn subjects_read_as_endpoints_processes_and_keys() {
        let cases = [
            (Subject::Endpoint { ip: "127.0.0.1".into(), port: 8000 }, "127.0.0.1:8000"),
            (Subject::Endpoint { ip: "::1".into(), port: 5432 }, "[::1]:5432"),
            (Subject::Destination { ip: "10.0.0.5".into(), port: 5432 }, "-> 10.0.0.5:5432"),
            (Subject::Process { name: "gunicorn".into(), pid: Some(42) }, "gunicorn[42]"),
            (Subject::UrlClass { class: "cached".into() }, "class cached"),
            (Subject::Sysctl { key: "net.core.somaxconn".into() }, "net.core.somaxconn"),
            (Subject::Host { host: "lab".into() }, "host lab"),
        ];
        for (subject, expected) in cases {
            assert_eq!(subject.to_string(), expected);
        }
    }
}
