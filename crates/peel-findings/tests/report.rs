//! The whole diagnosis of a run: stages judged separately, findings ranked and cross-referenced,
//! rendered for humans, and stored in the `findings` table.

mod fixture;

use fixture::*;
use peel_findings::{Severity, Verdict};
use peel_store::{Scope, Store};

/// `count` PostgreSQL connections to :5432 in `scope`, `queries` queries each, 50 ms apart, with
/// query times that grow connection after connection (latency rises while the CPU idles).
fn pg_run(store: &Store, scope: &Scope, count: u64, queries: u32) {
    let mut sink = store.connection_sink(scope).expect("sink");
    for i in 0..count {
        let server_us = 1000.0 + i as f64 * 1000.0;
        let finished = pg_connection(i, T0_NS + i as i64 * 50 * MS, 5000.0, queries, |_| server_us);
        sink.push(&finished).expect("push");
    }
    sink.finish().expect("finish");
    let mut first = snapshot(0);
    first.system = Some(system(0, 15.0, 30.0));
    let mut second = snapshot(1);
    second.system = Some(system(1, 12.0, 25.0));
    for snapshot in [first, second] {
        store.ingest_snapshot(scope, &snapshot).expect("snapshot");
    }
}

fn two_stage_store() -> Store {
    let store = store();
    let reproduce = Scope::new(RUN, "lab").with_stage("reproduce");
    let verify = Scope::new(RUN, "lab").with_stage("verify-fix");
    pg_run(&store, &reproduce, 60, 1);
    pg_run(&store, &verify, 3, 40);
    store
}

#[test]
fn stages_are_judged_separately_and_the_fix_removes_churn() {
    let store = two_stage_store();
    assert_eq!(peel_findings::stages(&store, RUN).expect("stages"), ["reproduce", "verify-fix"]);
    let diagnoses = peel_findings::diagnose_run(&store, RUN).expect("diagnose");
    assert_eq!(diagnoses.len(), 2);
    let (reproduce, verify) = (&diagnoses[0], &diagnoses[1]);
    assert_eq!(reproduce.stage, "reproduce");
    let churn: Vec<_> = reproduce.findings_of("churn").collect();
    assert_eq!(churn.len(), 1, "{reproduce:#?}");
    assert_eq!(churn[0].subject.to_string(), "127.0.0.1:5432");
    let not_cpu: Vec<_> = reproduce.findings_of("not_cpu_bound").collect();
    assert_eq!(not_cpu.len(), 1, "{reproduce:#?}");
    assert_eq!(not_cpu[0].subject.to_string(), "127.0.0.1:5432");
    // The not-CPU-bound finding names the wait another rule found on the same endpoint.
    assert!(
        not_cpu[0].next_step.contains("connection setup (churn:127.0.0.1:5432)"),
        "{}",
        not_cpu[0].next_step
    );

    assert_eq!(verify.stage, "verify-fix");
    assert_eq!(verify.findings_of("churn").count(), 0, "{verify:#?}");
    assert_eq!(verify.rule("churn").map(|r| r.verdict), Some(Verdict::Clear));
}

#[test]
fn findings_are_ranked_by_severity_then_impact() {
    let store = two_stage_store();
    let diagnosis = peel_findings::diagnose(&store, RUN, "reproduce").expect("diagnose");
    assert!(diagnosis.findings.len() >= 2);
    for pair in diagnosis.findings.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let rank = |s: Severity| match s {
            Severity::Critical => 0,
            Severity::Warning => 1,
            Severity::Info => 2,
        };
        assert!(
            rank(a.severity) < rank(b.severity)
                || (a.severity == b.severity && a.impact >= b.impact),
            "{} ranked before {}",
            a.id,
            b.id
        );
    }
}

#[test]
fn unknown_runs_are_errors_that_list_the_known_runs() {
    let store = two_stage_store();
    let err = peel_findings::diagnose_run(&store, "nope").unwrap_err().to_string();
    assert_eq!(err, "run 'nope' is not in the database (runs there: run-1)");
    assert_eq!(peel_findings::only_run(&store).expect("one run"), RUN);
}

#[test]
fn findings_are_stored_once_per_run_stage() {
    let store = two_stage_store();
    let diagnoses = peel_findings::diagnose_run(&store, RUN).expect("diagnose");
    let total: usize = diagnoses.iter().map(|d| d.findings.len()).sum();
    let scope = Scope::new(RUN, "lab");
    assert_eq!(peel_findings::save(&store, &scope, &diagnoses).expect("save"), total as u64);
    // Saving again replaces instead of duplicating.
    peel_findings::save(&store, &scope, &diagnoses).expect("save again");
    let rows = store
        .query("SELECT finding_id, rule, severity, stage, endpoint, evidence_sql FROM findings ORDER BY finding_id")
        .expect("query findings");
    assert_eq!(rows.rows.len(), total);
    assert_eq!(rows.get(0, "finding_id").and_then(|c| c.as_i64()), Some(0));
    assert_eq!(rows.get(0, "stage").and_then(|c| c.as_str()), Some("reproduce"));
    assert_eq!(rows.get(0, "severity").and_then(|c| c.as_str()), Some("critical"));
    // Every stored SQL runs.
    for row in 0..rows.rows.len() {
        let sql = rows.get(row, "evidence_sql").and_then(|c| c.as_str()).expect("sql");
        for statement in peel_store::split_statements(sql).expect("split") {
            store.query(statement.sql).unwrap_or_else(|e| panic!("{e}\n{sql}"));
        }
    }
}

#[test]
fn table_and_markdown_show_findings_and_every_rule_verdict() {
    let store = two_stage_store();
    let diagnoses = peel_findings::diagnose_run(&store, RUN).expect("diagnose");
    let table = peel_findings::render::table(&diagnoses);
    assert!(table.starts_with("run run-1, stage reproduce: "), "{table}");
    assert!(table.contains("critical  not_cpu_bound"), "{table}");
    assert!(
        table.contains("cached_slow     cannot decide  missing: no load_requests rows"),
        "{table}"
    );
    assert!(table.contains("run run-1, stage verify-fix: "), "{table}");
    let markdown = peel_findings::render::markdown(&diagnoses);
    assert!(markdown.starts_with("## Findings: run run-1, stage reproduce: "), "{markdown}");
    assert!(markdown.contains("```sql"), "{markdown}");
    assert!(markdown.contains("| churn | clear |"), "{markdown}");
}
