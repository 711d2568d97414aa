//! Runs every rule over one run of the database and collects their findings and verdicts.
//!
//! A rule is a plain function from a [`Ctx`] (the store and the run) to a [`Look`]: the findings it
//! made, what it examined, and what it could not examine. The engine turns each `Look` into a
//! [`RuleReport`] with an explicit verdict, so a rule that lacks data says so instead of passing.

use crate::error::FindingsError;
use crate::finding::{rank, Finding, RuleReport, Verdict};
use crate::table::Table;

/// The slice of the database a diagnosis covers: one stage of one run (all hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunScope {
    pub run_id: String,
    /// `reproduce`, `verify-fix`, ...; empty for data recorded outside a playbook stage.
    pub stage: String,
}

impl RunScope {
    /// `<alias>.run_id = '..' AND <alias>.stage = '..'` (no prefix for an empty alias).
    pub fn filter(&self, alias: &str) -> String {
        let prefix = if alias.is_empty() { String::new() } else { format!("{alias}.") };
        format!(
            "{prefix}run_id = {} AND {prefix}stage = {}",
            sql_text(&self.run_id),
            sql_text(&self.stage)
        )
    }
}

/// What a rule sees: the database and the run stage it is asked about.
pub(crate) struct Ctx<'a> {
    pub(crate) store: &'a peel_store::Store,
    pub(crate) scope: RunScope,
    /// The rule being evaluated, for error messages.
    pub(crate) rule: &'static str,
}

impl Ctx<'_> {
    /// Runs a query and materializes its result.
    pub(crate) fn query(&self, sql: &str) -> Result<Table, FindingsError> {
        self.store.query(sql).map(Table).map_err(|source| FindingsError::Query {
            rule: self.rule,
            sql: sql.to_string(),
            source: Box::new(source),
        })
    }

    /// Rows of `table` that belong to this run stage (every peel database has every table).
    pub(crate) fn rows_in(&self, table: &str) -> Result<u64, FindingsError> {
        let sql = format!("SELECT count(*) AS n FROM {table} WHERE {}", self.scope.filter(""));
        let result = self.query(&sql)?;
        let count = match result.iter().next() {
            Some(row) => row.u64("n")?,
            None => 0,
        };
        Ok(count)
    }

    /// The explanation used when `table` has no rows for this run stage.
    pub(crate) fn missing(&self, table: &str, how: &str) -> String {
        format!("no {table} rows for {}: {how}", self.describe())
    }

    /// Why a rule that reads the capture cannot decide, if this stage has no analyzed capture.
    pub(crate) fn missing_capture(&self) -> Result<Option<String>, FindingsError> {
        if self.rows_in("connections")? > 0 {
            return Ok(None);
        }
        Ok(Some(self.missing(
            "connections",
            "analyze a capture of the run into the database (`peel analyze FILE --db DB`)",
        )))
    }

    /// "run R" or "run R, stage S".
    pub(crate) fn describe(&self) -> String {
        if self.scope.stage.is_empty() {
            format!("run {}", self.scope.run_id)
        } else {
            format!("run {}, stage {}", self.scope.run_id, self.scope.stage)
        }
    }
}

/// A SQL string literal: single quotes doubled.
pub(crate) fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What one rule found.
#[derive(Debug, Default)]
pub(crate) struct Look {
    pub findings: Vec<Finding>,
    /// What was examined, in a few words.
    pub checked: String,
    /// Inputs that were absent.
    pub missing: Vec<String>,
    /// False when the rule could not examine anything.
    pub decided: bool,
}

impl Look {
    /// The rule had nothing to look at.
    pub fn cannot_decide(missing: Vec<String>) -> Look {
        Look { findings: Vec::new(), checked: String::new(), missing, decided: false }
    }

    /// The rule looked (perhaps at part of its inputs, the rest listed in `missing`).
    pub fn decided(findings: Vec<Finding>, checked: String, missing: Vec<String>) -> Look {
        Look { findings, checked, missing, decided: true }
    }
}

/// A named rule.
pub(crate) struct Rule {
    pub name: &'static str,
    pub check: fn(&Ctx<'_>) -> Result<Look, FindingsError>,
}

/// Every finding of a run, ranked, and every rule's verdict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnosis {
    pub run_id: String,
    /// The playbook stage the data came from (empty outside a playbook).
    pub stage: String,
    /// Ranked: severity, then impact.
    pub findings: Vec<Finding>,
    /// One per rule, in the documented rule order.
    pub rules: Vec<RuleReport>,
}

impl Diagnosis {
    /// The findings one rule produced.
    pub fn findings_of<'a>(&'a self, rule: &'a str) -> impl Iterator<Item = &'a Finding> + 'a {
        self.findings.iter().filter(move |f| f.rule == rule)
    }

    /// The report of one rule.
    pub fn rule(&self, rule: &str) -> Option<&RuleReport> {
        self.rules.iter().find(|r| r.rule == rule)
    }
}

/// Runs `rules` over the run and ranks the result.
pub(crate) fn evaluate(
    store: &peel_store::Store,
    scope: &RunScope,
    rules: &[Rule],
) -> Result<Diagnosis, FindingsError> {
    let mut findings = Vec::new();
    let mut reports = Vec::with_capacity(rules.len());
    for rule in rules {
        let ctx = Ctx { store, scope: scope.clone(), rule: rule.name };
        let look = (rule.check)(&ctx).map_err(|source| match source {
            query @ FindingsError::Query { .. } => query,
            other => FindingsError::Rule { rule: rule.name, source: Box::new(other) },
        })?;
        let verdict = if !look.findings.is_empty() {
            Verdict::Fired
        } else if look.decided {
            Verdict::Clear
        } else {
            Verdict::CannotDecide
        };
        reports.push(RuleReport {
            rule: rule.name.to_string(),
            verdict,
            checked: look.checked,
            missing: look.missing,
            findings: look.findings.len(),
        });
        findings.extend(look.findings);
    }
    crate::rules::relate(&mut findings);
    rank(&mut findings);
    Ok(Diagnosis {
        run_id: scope.run_id.clone(),
        stage: scope.stage.clone(),
        findings,
        rules: reports,
    })
}
