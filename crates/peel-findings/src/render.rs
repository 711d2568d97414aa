//! Findings as text: the aligned table `peel findings` prints, and the Markdown that playbook
//! reports put at their top. Pure functions from data to `String`; the caller decides where the
//! text goes (peel-findings never prints).

use std::fmt::Write as _;

use crate::engine::Diagnosis;
use crate::finding::{Finding, Verdict};

/// Evidence on one line (`new_conns_per_s=52/s requests_per_conn=1x ...`).
pub fn evidence_line(finding: &Finding) -> String {
    finding.evidence.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("  ")
}

/// The text stored in the `findings` table's `detail` column: evidence, then the next step.
pub fn detail(finding: &Finding) -> String {
    format!("{}\nnext step: {}", evidence_line(finding), finding.next_step)
}

fn heading(diagnosis: &Diagnosis) -> String {
    let count = diagnosis.findings.len();
    let what = if count == 1 { "1 finding".to_string() } else { format!("{count} findings") };
    if diagnosis.stage.is_empty() {
        format!("run {}: {what}", diagnosis.run_id)
    } else {
        format!("run {}, stage {}: {what}", diagnosis.run_id, diagnosis.stage)
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            widths[index] = widths[index].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[index]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The human table: ranked findings with their evidence and next step, then every rule's verdict.
pub fn table(diagnoses: &[Diagnosis]) -> String {
    let mut out = String::new();
    for (index, diagnosis) in diagnoses.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}", heading(diagnosis));
        if !diagnosis.findings.is_empty() {
            out.push('\n');
            let mut rows = vec![vec![
                "#".to_string(),
                "SEVERITY".to_string(),
                "RULE".to_string(),
                "SUBJECT".to_string(),
                "FINDING".to_string(),
            ]];
            for (rank, finding) in diagnosis.findings.iter().enumerate() {
                rows.push(vec![
                    (rank + 1).to_string(),
                    finding.severity.to_string(),
                    finding.rule.clone(),
                    finding.subject.to_string(),
                    finding.title.clone(),
                ]);
            }
            out.push_str(&aligned(&rows));
            out.push('\n');
            for (rank, finding) in diagnosis.findings.iter().enumerate() {
                let _ = writeln!(out, "{}. {}", rank + 1, finding.id);
                let _ = writeln!(out, "   evidence: {}", evidence_line(finding));
                let _ = writeln!(out, "   next: {}", finding.next_step);
            }
        }
        out.push('\n');
        let mut rows =
            vec![vec!["RULE".to_string(), "VERDICT".to_string(), "CHECKED / MISSING".to_string()]];
        for report in &diagnosis.rules {
            let mut notes = Vec::new();
            if !report.checked.is_empty() {
                notes.push(report.checked.clone());
            }
            notes.extend(report.missing.iter().map(|m| format!("missing: {m}")));
            let verdict = match report.verdict {
                Verdict::Fired => format!("fired ({})", report.findings),
                other => other.as_str().to_string(),
            };
            rows.push(vec![report.rule.clone(), verdict, notes.join("; ")]);
        }
        out.push_str(&aligned(&rows));
    }
    out
}

/// Markdown for a report: a heading per diagnosis, each finding with its evidence, next step and
/// SQL, then the rules' verdicts (so a rule that could not decide is visible in the report).
pub fn markdown(diagnoses: &[Diagnosis]) -> String {
    let mut out = String::new();
    for diagnosis in diagnoses {
        let _ = writeln!(out, "## Findings: {}\n", heading(diagnosis));
        for (rank, finding) in diagnosis.findings.iter().enumerate() {
            let _ = writeln!(
                out,
                "{}. **{}** `{}`: {}",
                rank + 1,
                finding.severity,
                finding.rule,
                finding.title.replace('|', "\\|")
            );
            let _ = writeln!(out, "   - evidence: {}", evidence_line(finding));
            let _ = writeln!(out, "   - next step: {}", finding.next_step);
            let _ = writeln!(out, "   - reproduce:\n\n     ```sql");
            for line in finding.sql.lines() {
                let _ = writeln!(out, "     {line}");
            }
            let _ = writeln!(out, "     ```\n");
        }
        if diagnosis.findings.is_empty() {
            out.push_str("No rule fired.\n\n");
        }
        out.push_str("| rule | verdict | checked / missing |\n|---|---|---|\n");
        for report in &diagnosis.rules {
            let mut notes = Vec::new();
            if !report.checked.is_empty() {
                notes.push(report.checked.clone());
            }
            notes.extend(report.missing.iter().map(|m| format!("missing: {m}")));
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                report.rule,
                report.verdict.as_str(),
                notes.join("; ").replace('|', "\\|")
            );
        }
        out.push('\n');
    }
    out
}
