//! Thresholds as playbooks write them: `p99(server_us) < 50ms`, `rate(errors) < 1%`,
//! `improves_by = "50%"`, `at_most = "20ms"`.
//!
//! The metric's unit comes from its name (peel's columns carry it: `server_us`, `close_ns`,
//! `latency_ms`), so `50ms` against `server_us` compares with 50000. A duration against a metric
//! without a unit suffix is refused rather than guessed. Percentages compare as fractions (`1%` is
//! 0.01) except against `*_pct`/`*_percent` metrics. Evaluation only compares numbers; fetching them
//! (SQL, load results) is the runner's job.

use std::fmt;
use std::time::Duration;

/// A number with the unit it was written in.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Quantity {
    Number(f64),
    Percent(f64),
    Duration(Duration),
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::Number(n) => write!(f, "{}", trim_float(*n)),
            Quantity::Percent(p) => write!(f, "{}%", trim_float(*p)),
            Quantity::Duration(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// Formats a float without a trailing `.0` and with at most 3 decimals.
pub fn trim_float(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        let s = format!("{n:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Parses `50ms`, `1.5s`, `5m`, `1%`, `0.25`, `1e3`.
pub fn parse_quantity(text: &str) -> Result<Quantity, String> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        return percent
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|p| p.is_finite())
            .map(Quantity::Percent)
            .ok_or_else(|| format!("'{text}' is not a percentage"));
    }
    if let Ok(n) = text.parse::<f64>() {
        if n.is_finite() {
            return Ok(Quantity::Number(n));
        }
    }
    peel_capture::parse_duration(text).map(Quantity::Duration).map_err(|e| e.to_string())
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => (left - right).abs() <= f64::EPSILON * left.abs().max(right.abs()).max(1.0),
            Op::Ne => !Op::Eq.holds(left, right),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// `p99(server_us) < 50ms`: a metric, an operator and a bound.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Threshold {
    /// The aggregate written around the metric (`p99`, `rate`), if any.
    pub function: Option<String>,
    /// The metric or column name (`server_us`, `errors`).
    pub column: String,
    pub op: Op,
    pub bound: Quantity,
}

const FUNCTIONS: &[&str] =
    &["p50", "p90", "p95", "p99", "p999", "max", "min", "avg", "mean", "rate", "count", "sum"];

impl Threshold {
    /// Parses `metric op bound`; `metric` may be `name` or `func(name)`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let ops = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let Some((at, (symbol, op))) = ops
            .iter()
            .filter_map(|(s, op)| text.find(s).map(|at| (at, (*s, *op))))
            .min_by_key(|(at, _)| *at)
        else {
            return Err(format!("'{text}' has no comparison (one of < <= > >= == !=)"));
        };
        let left = text[..at].trim();
        let right = text[at + symbol.len()..].trim();
        if right.is_empty() {
            return Err(format!("'{text}' has nothing after '{symbol}'"));
        }
        let bound = parse_quantity(right)?;
        let (function, column) = match left.split_once('(') {
            Some((function, rest)) => {
                let Some(column) = rest.strip_suffix(')') else {
                    return Err(format!("'{left}' is missing its closing ')'"));
                };
                let function = function.trim().to_lowercase();
                if !FUNCTIONS.contains(&function.as_str()) {
                    let hint =
                        crate::diagnostic::did_you_mean(&function, FUNCTIONS.iter().copied())
                            .map(|help| format!("; {help}"))
                            .unwrap_or_default();
                    return Err(format!(
                        "unknown function '{function}' (one of {}){hint}",
                        FUNCTIONS.join(", ")
                    ));
                }
                (Some(function), column.trim().to_string())
            }
            None => (None, left.to_string()),
        };
        if column.is_empty()
            || !column.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(format!("'{left}' is not a metric name"));
        }
        let threshold = Threshold { function, column, op, bound };
        threshold.bound_in_metric_unit()?;
        Ok(threshold)
    }

    /// The column name a query result should carry for this metric: `p99(server_us)` -> `p99_server_us`.
    pub fn metric_name(&self) -> String {
        match &self.function {
            Some(function) => format!("{function}_{}", self.column),
            None => self.column.clone(),
        }
    }

    /// The bound converted to the metric's unit.
    pub fn bound_in_metric_unit(&self) -> Result<f64, String> {
        convert(self.bound, &self.metric_name(), self.function.as_deref() == Some("rate"))
    }

    /// Checks `value` (in the metric's unit) against the bound.
    pub fn holds(&self, value: f64) -> Result<bool, String> {
        Ok(self.op.holds(value, self.bound_in_metric_unit()?))
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.function {
            Some(function) => write!(f, "{function}({})", self.column)?,
            None => write!(f, "{}", self.column)?,
        }
        write!(f, " {} {}", self.op.as_str(), self.bound)
    }
}

/// The unit a metric name carries, as nanoseconds per unit, if it names a time unit.
pub fn time_unit_ns(metric: &str) -> Option<f64> {
    let suffixes =
        [("_ns", 1.0), ("_us", 1e3), ("_ms", 1e6), ("_s", 1e9), ("_secs", 1e9), ("_seconds", 1e9)];
    suffixes.iter().find(|(suffix, _)| metric.ends_with(suffix)).map(|(_, ns)| *ns)
}

/// Converts `quantity` to the unit of `metric`.
pub fn convert(quantity: Quantity, metric: &str, is_rate: bool) -> Result<f64, String> {
    match quantity {
        Quantity::Number(n) => Ok(n),
        Quantity::Percent(p) => {
            let whole = metric.ends_with("_pct") || metric.ends_with("_percent");
            Ok(if whole && !is_rate { p } else { p / 100.0 })
        }
        Quantity::Duration(d) => match time_unit_ns(metric) {
            Some(ns) => Ok(d.as_nanos() as f64 / ns),
            None => Err(format!(
                "'{metric}' has no time unit suffix (_ns, _us, _ms, _s), so a duration cannot be compared with it"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k6_style_thresholds() {
        let t = Threshold::parse("p99(server_us) < 50ms").unwrap();
        assert_eq!(t.function.as_deref(), Some("p99"));
        assert_eq!(t.column, "server_us");
        assert_eq!(t.op, Op::Lt);
        assert_eq!(t.bound_in_metric_unit().unwrap(), 50_000.0);
        assert!(t.holds(49_999.0).unwrap());
        assert!(!t.holds(50_000.0).unwrap());
        assert_eq!(t.to_string(), "p99(server_us) < 50ms");

        let rate = Threshold::parse("rate(errors) < 1%").unwrap();
        assert_eq!(rate.bound_in_metric_unit().unwrap(), 0.01);

        let plain = Threshold::parse("p99_server_us <= 50000").unwrap();
        assert_eq!(plain.metric_name(), "p99_server_us");
        assert!(plain.holds(50_000.0).unwrap());

        let pct = Threshold::parse("free_disk_pct >= 5%").unwrap();
        assert_eq!(pct.bound_in_metric_unit().unwrap(), 5.0);
    }

    #[test]
    fn rejects_malformed_thresholds() {
        let cases = [
            ("p99(server_us) 50ms", "'p99(server_us) 50ms' has no comparison (one of < <= > >= == !=)"),
            ("p99(server_us) <", "'p99(server_us) <' has nothing after '<'"),
            ("p98(server_us) < 1", "unknown function 'p98' (one of p50, p90, p95, p99, p999, max, min, avg, mean, rate, count, sum); did you mean 'p90' or 'p95' or 'p99'?"),
            ("p99(server_us < 1", "'p99(server_us' is missing its closing ')'"),
            ("errors < 5ms", "'errors' has no time unit suffix (_ns, _us, _ms, _s), so a duration cannot be compared with it"),
            ("server_us < fast", "invalid duration 'fast': expected a number (write it like 30s, 5m, 1h, 250ms or 1h30m)"),
        ];
        for (text, expected) in cases {
            assert_eq!(Threshold::parse(text).unwrap_err(), expected, "{text}");
        }
    }

    #[test]
    fn durations_and_quantities() {
        assert_eq!(
            parse_quantity("1.5s").unwrap(),
            Quantity::Duration(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_quantity("250ms").unwrap(),
            Quantity::Duration(Duration::from_millis(250))
        );
        assert!(parse_quantity("30s5").is_err());
        assert_eq!(parse_quantity("50%").unwrap(), Quantity::Percent(50.0));
        assert_eq!(parse_quantity("0.5").unwrap(), Quantity::Number(0.5));
    }
}
