//! peel-findings: turns a run database into a ranked diagnosis. Each rule (docs/findings.md) is a
//! small SQL query over peel-store's tables plus a few lines of Rust that judge its result; it
//! returns findings with their evidence, the SQL that reproduces it and the next step, or says
//! explicitly that it cannot decide because data is missing.
//!
//! Rules read through peel-store's query API only; they never write. [`save`] stores findings in
//! the `findings` table; [`render`] turns them into the table and Markdown that `peel findings` and
//! playbook reports show. Nothing here prints.

mod engine;
mod error;
mod finding;
pub mod render;
mod rules;
mod table;

use peel_store::{FindingRecord, Scope, Store};

pub use engine::Diagnosis;
pub use error::FindingsError;
pub use finding::{rank, Evidence, Finding, RuleReport, Severity, Subject, Unit, Verdict};
pub use rules::rule_names;

use engine::{sql_text, RunScope};

/// Diagnoses one stage of one run (`stage` is empty for data recorded outside a playbook).
pub fn diagnose(store: &Store, run_id: &str, stage: &str) -> Result<Diagnosis, FindingsError> {
    let scope = RunScope { run_id: run_id.to_string(), stage: stage.to_string() };
    engine::evaluate(store, &scope, rules::RULES)
}

/// Diagnoses every stage of a run separately (a reproduce stage and a verify-fix stage must not
/// blur into one), in the order the stages first appear.
pub fn diagnose_run(store: &Store, run_id: &str) -> Result<Vec<Diagnosis>, FindingsError> {
    let stages = stages(store, run_id)?;
    if stages.is_empty() {
        return Err(unknown_run(store, run_id)?);
    }
    stages.iter().map(|stage| diagnose(store, run_id, stage)).collect()
}

/// The stages of a run that hold measured data, in the order their data starts.
pub fn stages(store: &Store, run_id: &str) -> Result<Vec<String>, FindingsError> {
    let sql = format!(
        "SELECT stage FROM (\n  \
         SELECT stage, min(first_ts_ns) AS start_ts_ns FROM connections WHERE run_id = {run} GROUP BY stage\n  \
         UNION ALL SELECT stage, min(ts_ns) FROM snapshots WHERE run_id = {run} GROUP BY stage\n  \
         UNION ALL SELECT stage, min(start_ts_ns) FROM load_requests WHERE run_id = {run} GROUP BY stage\n\
         ) GROUP BY stage ORDER BY min(start_ts_ns), stage",
        run = sql_text(run_id)
    );
    let result = store.query(&sql).map_err(|source| FindingsError::Query {
        rule: "stages",
        sql,
        source: Box::new(source),
    })?;
    Ok(result.rows.iter().filter_map(|row| row.first()?.as_str().map(str::to_string)).collect())
}

/// Every run id in the database, sorted.
pub fn runs(store: &Store) -> Result<Vec<String>, FindingsError> {
    let pairs = store.runs_and_hosts().map_err(|source| FindingsError::Query {
        rule: "runs",
        sql: "-- runs and hosts of every table".to_string(),
        source: Box::new(source),
    })?;
    let mut runs: Vec<String> = pairs.into_iter().map(|(run, _)| run).collect();
    runs.dedup();
    Ok(runs)
}

/// The only run of a database, or an error listing the runs to choose from.
pub fn only_run(store: &Store) -> Result<String, FindingsError> {
    let runs = runs(store)?;
    match runs.as_slice() {
        [] => Err(FindingsError::NoRuns),
        [run] => Ok(run.clone()),
        _ => Err(FindingsError::SeveralRuns { runs: runs.join(", ") }),
    }
}

fn unknown_run(store: &Store, run_id: &str) -> Result<FindingsError, FindingsError> {
    let runs = runs(store)?;
    if runs.is_empty() {
        return Ok(FindingsError::NoRuns);
    }
    Ok(FindingsError::UnknownRun { run_id: run_id.to_string(), known: runs.join(", ") })
}

/// The rows of the `findings` table for these diagnoses, numbered by rank across them.
pub fn to_records(diagnoses: &[Diagnosis]) -> Vec<FindingRecord> {
    let mut records = Vec::new();
    for diagnosis in diagnoses {
        for finding in &diagnosis.findings {
            records.push(FindingRecord {
                finding_id: records.len() as i64,
                rule: finding.rule.clone(),
                severity: finding.severity.as_str().to_string(),
                score: score(finding),
                stage: (!diagnosis.stage.is_empty()).then(|| diagnosis.stage.clone()),
                endpoint: Some(finding.subject.to_string()),
                title: finding.title.clone(),
                detail: render::detail(finding),
                evidence_sql: Some(finding.sql.clone()),
            });
        }
    }
    records
}

/// The ranking as one number, higher first: the severity's band plus the impact within it.
fn score(finding: &Finding) -> f64 {
    let band = match finding.severity {
        Severity::Critical => 2.0,
        Severity::Warning => 1.0,
        Severity::Info => 0.0,
    };
    band + finding.impact.clamp(0.0, 1.0) * 0.999
}

/// Stores the findings of these diagnoses in the `findings` table under `scope`'s run and host,
/// replacing findings stored earlier for the same run, host and stages. Returns the rows written.
pub fn save(store: &Store, scope: &Scope, diagnoses: &[Diagnosis]) -> Result<u64, FindingsError> {
    let store_err =
        |source| FindingsError::Store { run_id: scope.run_id.clone(), source: Box::new(source) };
    for diagnosis in diagnoses {
        let stage_filter = if diagnosis.stage.is_empty() {
            "(stage IS NULL OR stage = '')".to_string()
        } else {
            format!("stage = {}", sql_text(&diagnosis.stage))
        };
        store
            .query(&format!(
                "DELETE FROM findings WHERE run_id = {} AND host = {} AND {stage_filter}",
                sql_text(&scope.run_id),
                sql_text(&scope.host)
            ))
            .map_err(store_err)?;
    }
    let records = to_records(diagnoses);
    store.ingest(scope, &records).map_err(store_err)
}
