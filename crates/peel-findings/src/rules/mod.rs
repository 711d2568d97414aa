//! The rule set, in the order reports list it. Each rule is one module with one `check` function,
//! its thresholds as named constants, and its SQL next to the logic; docs/findings.md documents
//! each rule under the same name.

use crate::engine::{sql_text, Rule};
use crate::finding::{endpoint_text, Subject};

mod accept_queue;
mod anomalies;
mod cached_slow;
mod churn;
mod close_wait;
mod dominant_phase;
mod limits;
mod not_cpu_bound;
mod port_pressure;
mod sysctl_ranges;

/// Every rule, in report order.
pub(crate) const RULES: &[Rule] = &[
    Rule { name: churn::NAME, check: churn::check },
    Rule { name: dominant_phase::NAME, check: dominant_phase::check },
    Rule { name: not_cpu_bound::NAME, check: not_cpu_bound::check },
    Rule { name: accept_queue::NAME, check: accept_queue::check },
    Rule { name: cached_slow::NAME, check: cached_slow::check },
    Rule { name: port_pressure::NAME, check: port_pressure::check },
    Rule { name: close_wait::NAME, check: close_wait::check },
    Rule { name: anomalies::NAME, check: anomalies::check },
    Rule { name: limits::NAME, check: limits::check },
    Rule { name: sysctl_ranges::NAME, check: sysctl_ranges::check },
];

/// Cross-references between rules' findings, applied once every rule has run.
pub(crate) fn relate(findings: &mut [crate::finding::Finding]) {
    not_cpu_bound::relate(findings);
}

/// The names of every rule, in report order.
pub fn rule_names() -> Vec<&'static str> {
    RULES.iter().map(|r| r.name).collect()
}

/// A server endpoint as rules carry it between their query and their findings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Endpoint {
    pub ip: String,
    pub port: u16,
}

impl Endpoint {
    pub fn subject(&self) -> Subject {
        Subject::Endpoint { ip: self.ip.clone(), port: self.port }
    }

    pub fn text(&self) -> String {
        endpoint_text(&self.ip, self.port)
    }

    /// `AND <ip_col> = '<ip>' AND <port_col> = <port>`: narrows a rule's query to this endpoint so
    /// the finding carries a query that shows exactly its own numbers.
    pub fn sql_filter(&self, ip_column: &str, port_column: &str) -> String {
        format!(
            " AND CAST({ip_column} AS VARCHAR) = {} AND {port_column} = {}",
            sql_text(&self.ip),
            self.port
        )
    }

    /// `<rule>:<ip:port>`
    pub fn finding_id(&self, rule: &str) -> String {
        format!("{rule}:{}", self.text())
    }
}

/// `value / total`, 0 when the total is 0.
pub(crate) fn share(value: f64, total: f64) -> f64 {
    if total > 0.0 {
        value / total
    } else {
        0.0
    }
}

/// Microseconds to milliseconds, for evidence that reads best in ms.
pub(crate) fn ms(us: f64) -> f64 {
    us / 1000.0
}

/// "3 endpoints" / "1 endpoint".
pub(crate) fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}
