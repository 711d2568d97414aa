//! Judging numbers: query expectations and compare thresholds. Pure functions over values already
//! fetched, so every verdict rule is unit-tested without a database.

use crate::model::{Better, CompareStep};
use crate::threshold::{self, trim_float, Quantity, Threshold};

/// One pass/fail check with the numbers behind it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckResult {
    /// What was checked: `p99_server_us < 50ms`, `p99_us improves by 50%`.
    pub name: String,
    pub passed: bool,
    /// The numbers: `p99_us = 1234 (bound 50000)`.
    pub detail: String,
    /// The SQL that produced the numbers.
    pub sql: Vec<String>,
}

/// Checks one threshold against a value looked up by column name (`None`: no such column or NULL).
pub fn check_threshold(threshold: &Threshold, value: Option<f64>, sql: &str) -> CheckResult {
    let name = threshold.to_string();
    let sql = vec![sql.to_string()];
    let Some(value) = value else {
        return CheckResult {
            name,
            passed: false,
            detail: format!(
                "no value for '{}' in the result (no row, NULL, or no such column)",
                threshold.metric_name()
            ),
            sql,
        };
    };
    match (threshold.holds(value), threshold.bound_in_metric_unit()) {
        (Ok(passed), Ok(bound)) => CheckResult {
            name,
            passed,
            detail: format!(
                "{} = {} (bound {})",
                threshold.metric_name(),
                trim_float(value),
                trim_float(bound)
            ),
            sql,
        },
        (Err(message), _) | (_, Err(message)) => {
            CheckResult { name, passed: false, detail: message, sql }
        }
    }
}

/// The values a compare step measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub baseline: f64,
    pub candidate: f64,
}

impl Comparison {
    /// Relative change from baseline to candidate (-0.5 is 50% lower); `None` when baseline is 0.
    pub fn relative_change(&self) -> Option<f64> {
        (self.baseline != 0.0).then(|| (self.candidate - self.baseline) / self.baseline.abs())
    }
}

/// Judges a compare step's thresholds.
pub fn check_compare(step: &CompareStep, values: Comparison) -> Vec<CheckResult> {
    let sql = vec![step.sql_baseline.clone(), step.sql_candidate.clone()];
    let change = match values.relative_change() {
        Some(change) => format!("{:+.1}%", change * 100.0),
        None => "n/a (baseline is 0)".to_string(),
    };
    let numbers = format!(
        "{} {} = {}, {} = {} ({change})",
        step.metric,
        step.baseline,
        trim_float(values.baseline),
        step.candidate,
        trim_float(values.candidate)
    );
    let mut checks = Vec::new();
    if let Some(Quantity::Percent(required_pct)) = step.improves_by {
        let improvement = values.relative_change().map(|change| match step.better {
            Better::Lower => -change,
            Better::Higher => change,
        });
        let passed = improvement.is_some_and(|i| i * 100.0 >= required_pct);
        let direction = match step.better {
            Better::Lower => "lower",
            Better::Higher => "higher",
        };
        checks.push(CheckResult {
            name: format!(
                "{} improves by {}% ({direction} is better)",
                step.metric,
                trim_float(required_pct)
            ),
            passed,
            detail: numbers.clone(),
            sql: sql.clone(),
        });
    }
    for (word, bound, holds) in [
        ("at most", step.at_most, (|v: f64, b: f64| v <= b) as fn(f64, f64) -> bool),
        ("at least", step.at_least, |v, b| v >= b),
    ] {
        let Some(bound) = bound else { continue };
        let (passed, detail) = match threshold::convert(bound, &step.metric, false) {
            Ok(limit) => {
                (holds(values.candidate, limit), format!("{numbers}; limit {}", trim_float(limit)))
            }
            Err(message) => (false, message),
        };
        checks.push(CheckResult {
            name: format!("{} {word} {bound}", step.metric),
            passed,
            detail,
            sql: sql.clone(),
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(
        improves_by: Option<Quantity>,
        at_most: Option<Quantity>,
        better: Better,
    ) -> CompareStep {
        CompareStep {
            metric: "p99_us".into(),
            baseline: "reproduce".into(),
            candidate: "verify-fix".into(),
            sql_baseline: "A".into(),
            sql_candidate: "B".into(),
            better,
            improves_by,
            at_most,
            at_least: None,
        }
    }

    #[test]
    fn improvement_is_judged_in_the_better_direction() {
        let step = compare(Some(Quantity::Percent(50.0)), None, Better::Lower);
        let checks = check_compare(&step, Comparison { baseline: 1000.0, candidate: 400.0 });
        assert_eq!(checks.len(), 1);
        assert!(checks[0].passed);
        assert_eq!(checks[0].detail, "p99_us reproduce = 1000, verify-fix = 400 (-60.0%)");
        let checks = check_compare(&step, Comparison { baseline: 1000.0, candidate: 600.0 });
        assert!(!checks[0].passed);
        let higher = compare(Some(Quantity::Percent(50.0)), None, Better::Higher);
        assert!(check_compare(&higher, Comparison { baseline: 100.0, candidate: 150.0 })[0].passed);
        assert!(!check_compare(&higher, Comparison { baseline: 100.0, candidate: 40.0 })[0].passed);
    }

    #[test]
    fn zero_baseline_cannot_show_improvement() {
        let step = compare(Some(Quantity::Percent(10.0)), None, Better::Lower);
        let checks = check_compare(&step, Comparison { baseline: 0.0, candidate: 0.0 });
        assert!(!checks[0].passed);
        assert!(checks[0].detail.ends_with("(n/a (baseline is 0))"), "{}", checks[0].detail);
    }

    #[test]
    fn at_most_uses_the_metric_unit() {
        let step = compare(
            None,
            Some(Quantity::Duration(std::time::Duration::from_millis(1))),
            Better::Lower,
        );
        let checks = check_compare(&step, Comparison { baseline: 5000.0, candidate: 900.0 });
        assert!(checks[0].passed, "{checks:?}");
        assert_eq!(checks[0].name, "p99_us at most 1ms");
        assert!(
            !check_compare(&step, Comparison { baseline: 5000.0, candidate: 1001.0 })[0].passed
        );
    }

    #[test]
    fn thresholds_report_their_numbers() {
        let t = Threshold::parse("p99(server_us) < 50ms").unwrap();
        let check = check_threshold(&t, Some(61_000.0), "SELECT ...");
        assert!(!check.passed);
        assert_eq!(check.detail, "p99_server_us = 61000 (bound 50000)");
        assert!(!check_threshold(&t, None, "").passed);
    }
}
