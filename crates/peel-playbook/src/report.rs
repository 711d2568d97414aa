//! `report.md` in the run folder: findings first, then the verdict checks, then per stage the steps,
//! the load per URL class and the phase breakdown per endpoint. Every table of numbers is followed
//! by the SQL that produced it, so a reader can re-run it with `peel sql`.

use std::fmt::Write as _;
use std::path::PathBuf;

use peel_store::Store;

use crate::model::Plan;
use crate::run::{RunSummary, StepStatus};

/// Writes `report.md`; returns its path or why it could not be written.
pub(crate) fn write(store: &Store, plan: &Plan, summary: &RunSummary) -> Result<PathBuf, String> {
    let text = render(store, plan, summary);
    let path = summary.run_dir.join("report.md");
    std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let html = summary.run_dir.join("report.html");
    let charts = matrix_charts(store, plan, &quote(&summary.run_id));
    std::fs::write(&html, crate::report_html::render(&text, summary, &charts))
        .map_err(|e| format!("writing {}: {e}", html.display()))?;
    Ok(path)
}

fn quote(text: &str) -> String {
    text.replace('\'', "''")
}

fn render(store: &Store, plan: &Plan, summary: &RunSummary) -> String {
    let mut out = String::new();
    let run = quote(&summary.run_id);
    let _ = writeln!(out, "# {}: {}\n", plan.meta.name, summary.status.as_str().to_uppercase());
    if !plan.meta.description.is_empty() {
        let _ = writeln!(out, "{}\n", plan.meta.description);
    }
    let _ = writeln!(
        out,
        "- run: `{}`\n- folder: `{}`\n- database: `{}`",
        summary.run_id,
        summary.run_dir.display(),
        summary.db.display()
    );
    if let Some(sha256) = &summary.playbook_sha256 {
        let _ = writeln!(out, "- playbook: `playbook.toml`, sha256 `{sha256}`");
    }
    if !plan.vars.is_empty() {
        let vars: Vec<String> =
            plan.vars.iter().map(|v| format!("`{}={}`", v.name, v.value)).collect();
        let _ = writeln!(out, "- variables: {}", vars.join(", "));
    }
    let skipped: Vec<String> = summary
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Skipped)
        .map(|s| format!("{}/{} ({})", s.stage, s.name, s.message))
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(out, "- **skipped steps**: {}", skipped.join("; "));
    }
    if let Some(trip) = &summary.guard {
        let _ = writeln!(out, "- **guard tripped** in stage {}: {}", trip.stage, trip.message());
    }

    out.push_str("\n## Findings\n\n");
    let findings_sql = format!(
        "SELECT severity, stage, endpoint, title, detail FROM findings WHERE run_id = '{run}' ORDER BY finding_id"
    );
    table_or_note(
        store,
        &mut out,
        &findings_sql,
        "No findings were computed in this run (no findings step).",
    );

    out.push_str("\n## Checks\n\n");
    let checks: Vec<_> =
        summary.steps.iter().flat_map(|s| s.checks.iter().map(move |c| (s, c))).collect();
    if checks.is_empty() {
        out.push_str("No checks in this run.\n");
    } else {
        out.push_str("| result | stage | step | check | numbers |\n|---|---|---|---|---|\n");
        for (step, check) in &checks {
            let result = if check.passed { "PASS" } else { "**FAIL**" };
            let _ = writeln!(
                out,
                "| {result} | {} | {} | {} | {} |",
                step.stage,
                step.name,
                cell(&check.name),
                cell(&check.detail)
            );
        }
        out.push_str("\nSQL behind each check:\n\n");
        for (step, check) in &checks {
            for sql in &check.sql {
                let _ = writeln!(out, "- {} / {}: `{}`", step.stage, check.name, one_line(sql));
            }
        }
    }

    let mut stages: Vec<&str> = Vec::new();
    for step in &summary.steps {
        if !stages.contains(&step.stage.as_str()) {
            stages.push(&step.stage);
        }
    }
    matrix_section(store, &mut out, &run, &stages);
    for stage in stages {
        let _ = writeln!(out, "\n## Stage {stage}\n");
        out.push_str("| # | step | kind | status | time | result |\n|---|---|---|---|---|---|\n");
        for (i, step) in summary.steps.iter().filter(|s| s.stage == stage).enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1}s | {} |",
                i + 1,
                step.name,
                step.kind,
                step.status.as_str(),
                step.duration.as_secs_f64(),
                cell(&step.message)
            );
        }
        let stage_q = quote(stage);
        let load_sql = format!(
            "SELECT url_class, requests, round(requests_per_s, 1) AS req_per_s, errors, latency_p50_us, \
             latency_p99_us, connections_opened FROM load_summaries WHERE run_id = '{run}' AND stage = '{stage_q}' \
             ORDER BY url_class"
        );
        section(store, &mut out, "Load per URL class", &load_sql);
        let phases_sql = format!(
            "SELECT endpoint, phase, samples, round(p50_us, 1) AS p50_us, round(p90_us, 1) AS p90_us, \
             round(p99_us, 1) AS p99_us, round(max_us, 1) AS max_us FROM v_endpoint_phases \
             WHERE run_id = '{run}' AND stage = '{stage_q}' ORDER BY endpoint, phase"
        );
        section(store, &mut out, "Phases per endpoint (µs)", &phases_sql);
        let churn_sql = format!(
            "SELECT endpoint, protocol, new_connections, round(new_conn_per_s, 1) AS new_conn_per_s, \
             round(requests_per_conn, 2) AS requests_per_conn, round(db_setup_p50_us, 1) AS db_setup_p50_us \
             FROM v_churn WHERE run_id = '{run}' AND stage = '{stage_q}' ORDER BY endpoint"
        );
        section(store, &mut out, "Connection churn", &churn_sql);
        let cpu_sql = format!(
            "SELECT round(max(cpu_max_pct), 1) AS cpu_peak_pct, count(*) AS samples FROM system \
             WHERE run_id = '{run}' AND stage = '{stage_q}' HAVING count(*) > 0"
        );
        section(store, &mut out, "CPU peak", &cpu_sql);
    }

    if !summary.cleanup.is_empty() {
        out.push_str("\n## Cleanup\n\n| action | ok | result |\n|---|---|---|\n");
        for c in &summary.cleanup {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(&c.description),
                if c.ok { "yes" } else { "**no**" },
                cell(&c.message)
            );
        }
    }
    out
}

/// Matrix stages (`reproduce[workers=4]`) side by side: the load per URL class and the connection
/// churn of each value, in the order the values ran, so one table answers "did more help?".
fn matrix_section(store: &Store, out: &mut String, run: &str, stages: &[&str]) {
    let labels: Vec<String> =
        stages.iter().filter(|s| s.contains('[')).map(|s| format!("'{}'", quote(s))).collect();
    if labels.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Matrix\n");
    let _ = writeln!(out, "Stages run once per value: {}.", labels.join(", "));
    let order = format!("list_position([{}], stage)", labels.join(", "));
    let load_sql = format!(
        "SELECT stage, url_class, requests, round(requests_per_s, 1) AS req_per_s, errors, \
         latency_p50_us, latency_p99_us, connections_opened FROM load_summaries \
         WHERE run_id = '{run}' AND {order} IS NOT NULL ORDER BY {order}, url_class"
    );
    section(store, out, "Load per value", &load_sql);
    let churn_sql = format!(
        "SELECT stage, endpoint, new_connections, round(new_conn_per_s, 1) AS new_conn_per_s, \
         round(requests_per_conn, 2) AS requests_per_conn FROM v_churn \
         WHERE run_id = '{run}' AND {order} IS NOT NULL ORDER BY {order}, endpoint"
    );
    section(store, out, "Connection churn per value", &churn_sql);
}

/// p99 latency of every URL class of one matrix stage, against the matrix value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MatrixChart {
    /// `reproduce: p99 latency per URL class against workers`.
    pub(crate) title: String,
    /// The matrix values, in the order they ran.
    pub(crate) values: Vec<String>,
    /// URL class -> p99 in µs per value (none when that value ran no load of the class).
    pub(crate) series: Vec<(String, Vec<Option<f64>>)>,
    /// The SQL behind the numbers.
    pub(crate) sql: String,
}

/// One chart per stage that has a matrix and ran load.
fn matrix_charts(store: &Store, plan: &Plan, run: &str) -> Vec<MatrixChart> {
    let mut charts = Vec::new();
    for name in crate::model::StageName::ALL {
        let instances: Vec<(&str, &crate::model::MatrixValue)> = plan
            .stages
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.matrix.as_ref().map(|m| (s.instance.as_str(), m)))
            .collect();
        let Some((_, first)) = instances.first() else { continue };
        let labels: Vec<String> =
            instances.iter().map(|(instance, _)| format!("'{}'", quote(instance))).collect();
        let sql = format!(
            "SELECT stage, url_class, latency_p99_us FROM load_summaries WHERE run_id = '{run}' \
             AND stage IN ({}) ORDER BY url_class",
            labels.join(", ")
        );
        let Ok(result) = store.query(&sql) else { continue };
        let mut series: Vec<(String, Vec<Option<f64>>)> = Vec::new();
        for row in &result.rows {
            let (Some(stage), Some(class), p99) = (row.first(), row.get(1), row.get(2)) else {
                continue;
            };
            let (stage, class) = (stage.to_string(), class.to_string());
            let Some(at) = instances.iter().position(|(instance, _)| *instance == stage) else {
                continue;
            };
            let index = match series.iter().position(|(c, _)| *c == class) {
                Some(index) => index,
                None => {
                    series.push((class, vec![None; instances.len()]));
                    series.len() - 1
                }
            };
            series[index].1[at] = p99.and_then(|c| c.as_f64());
        }
        if series.is_empty() {
            continue;
        }
        charts.push(MatrixChart {
            title: format!("{name}: p99 latency per URL class against {}", first.var),
            values: instances.iter().map(|(_, m)| m.value.clone()).collect(),
            series,
            sql,
        });
    }
    charts
}

/// A titled table, only when the query has rows.
fn section(store: &Store, out: &mut String, title: &str, sql: &str) {
    let Ok(result) = store.query(sql) else { return };
    if result.rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n### {title}\n");
    markdown_table(out, &result);
    let _ = writeln!(out, "\nSQL: `{}`", one_line(sql));
}

fn table_or_note(store: &Store, out: &mut String, sql: &str, note: &str) {
    match store.query(sql) {
        Ok(result) if !result.rows.is_empty() => {
            markdown_table(out, &result);
            let _ = writeln!(out, "\nSQL: `{}`", one_line(sql));
        }
        _ => {
            let _ = writeln!(out, "{note}");
        }
    }
}

fn markdown_table(out: &mut String, result: &peel_store::QueryResult) {
    let names: Vec<&str> = result.columns.iter().map(|c| c.name.as_str()).collect();
    let _ = writeln!(out, "| {} |", names.join(" | "));
    let _ = writeln!(out, "|{}|", vec!["---"; names.len()].join("|"));
    for row in &result.rows {
        let cells: Vec<String> = row.iter().map(|c| cell(&c.to_string())).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
}

fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
