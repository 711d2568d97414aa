//! `not_cpu_bound`: latency rose while the CPU peak stayed low. In our outage every dashboard
//! looked normal and the low CPU peak was the clue nobody read: requests were waiting (for a worker,
//! for a connection to be set up, for a lock or IO), not computing.
//!
//! Latency per server endpoint comes from the capture: each exchange's request start to response
//! end, and for a connection's first exchange from its SYN, so connection setup the request paid is
//! included. Latency "rose" when the slow requests (p90) took [`RISE_FACTOR`] times what the fastest
//! (p5) took, and at least [`MIN_P90_MS`]. The load generator's latency (what users saw) is judged
//! the same way. The CPU peak is the highest whole-host busy percentage over the run's snapshots.
//! When the host was busy but the processes the run recorded used little of it (other work shared
//! the host), the rule cannot decide and says so, rather than calling the service CPU-bound.

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{format_number, Evidence, Finding, Severity, Subject, Unit};
use crate::rules::{ms, plural, Endpoint};

pub(crate) const NAME: &str = "not_cpu_bound";

/// Fewer latency samples than this do not show a trend.
const MIN_SAMPLES: u64 = 20;
/// p90 at least this many times p5 means requests waited.
const RISE_FACTOR: f64 = 3.0;
/// And the p90 is at least this slow.
const MIN_P90_MS: f64 = 10.0;
/// A whole-host CPU peak below this is "low".
const LOW_CPU_PCT: f64 = 50.0;
/// A single CPU busier than this may be a single-threaded bottleneck: then the rule does not claim
/// "not CPU-bound".
const HOT_SINGLE_CPU_PCT: f64 = 90.0;

/// The CPU peak over the run's snapshots.
pub(crate) fn cpu_sql(scope: &RunScope) -> String {
    format!(
        "SELECT max(cpu_usage_pct) AS cpu_peak_pct, max(cpu_max_pct) AS single_cpu_peak_pct, \
         count(cpu_usage_pct) AS samples\nFROM system WHERE {}",
        scope.filter("")
    )
}

/// Per server endpoint: latency percentiles of its exchanges (first exchange from the SYN).
pub(crate) fn endpoint_sql(scope: &RunScope, endpoint: Option<&Endpoint>) -> String {
    let e_scope = scope.filter("e");
    let filter = endpoint.map(|e| e.sql_filter("c.server_ip", "c.server_port")).unwrap_or_default();
    format!(
        "WITH lat AS (\n  SELECT CAST(c.server_ip AS VARCHAR) AS server_ip, c.server_port,\n    \
         (e.response_end_ts_ns - CASE WHEN e.seq = 0 AND c.syn_ts_ns IS NOT NULL THEN c.syn_ts_ns \
         ELSE e.request_start_ts_ns END) / 1000.0 AS latency_us\n  \
         FROM exchanges e JOIN connections c\n    ON c.run_id = e.run_id AND c.stage = e.stage AND c.host = e.host AND c.conn_id = e.conn_id\n  \
         WHERE {e_scope} AND e.response_end_ts_ns IS NOT NULL{filter}\n)\n\
         SELECT server_ip, server_port, count(*) AS samples,\n  \
         quantile_cont(latency_us, 0.05) AS p5_us, quantile_cont(latency_us, 0.5) AS p50_us,\n  \
         quantile_cont(latency_us, 0.9) AS p90_us, quantile_cont(latency_us, 0.99) AS p99_us\n\
         FROM lat GROUP BY server_ip, server_port ORDER BY server_ip, server_port"
    )
}

/// Latency percentiles of the load generator's completed requests.
pub(crate) fn load_sql(scope: &RunScope) -> String {
    format!(
        "SELECT count(*) AS samples,\n  \
         quantile_cont(latency_us, 0.05) AS p5_us, quantile_cont(latency_us, 0.5) AS p50_us,\n  \
         quantile_cont(latency_us, 0.9) AS p90_us, quantile_cont(latency_us, 0.99) AS p99_us\n\
         FROM load_requests WHERE {} AND error_kind IS NULL",
        scope.filter("")
    )
}

/// Latency percentiles of one subject.
struct Latency {
    samples: u64,
    p5_us: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
}

impl Latency {
    fn read(row: &crate::table::Row<'_>) -> Result<Latency, FindingsError> {
        Ok(Latency {
            samples: row.u64("samples")?,
            p5_us: row.f64_or_zero("p5_us")?,
            p50_us: row.f64_or_zero("p50_us")?,
            p90_us: row.f64_or_zero("p90_us")?,
            p99_us: row.f64_or_zero("p99_us")?,
        })
    }

    /// The slow-down factor if latency rose, `None` if it did not (or too few samples).
    fn rise(&self) -> Option<f64> {
        if self.samples < MIN_SAMPLES || ms(self.p90_us) < MIN_P90_MS {
            return None;
        }
        let factor = if self.p5_us > 0.0 { self.p90_us / self.p5_us } else { f64::INFINITY };
        (factor >= RISE_FACTOR).then_some(factor)
    }
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    let mut missing = Vec::new();
    let have_capture = ctx.rows_in("exchanges")? > 0;
    if !have_capture {
        missing.push(ctx.missing("exchanges", "analyze a capture for per-endpoint latency"));
    }
    let have_load = ctx.rows_in("load_requests")? > 0;
    if !have_load {
        missing
            .push(ctx.missing("load_requests", "run load with `--db` for the latency users saw"));
    }
    if ctx.rows_in("system")? == 0 {
        missing.push(
            ctx.missing("system", "record snapshots during the load (`peel snap --every 1s --db`)"),
        );
        return Ok(Look::cannot_decide(missing));
    }
    if !have_capture && !have_load {
        return Ok(Look::cannot_decide(missing));
    }
    let cpu_sql = cpu_sql(&ctx.scope);
    let cpu = ctx.query(&cpu_sql)?;
    let Some(cpu_row) = cpu.iter().next() else {
        return Ok(Look::cannot_decide(missing));
    };
    let Some(cpu_peak_pct) = cpu_row.f64_opt("cpu_peak_pct")? else {
        missing.push(format!(
            "no CPU usage samples for {}: a single snapshot has no usage; sample with `--every`",
            ctx.describe()
        ));
        return Ok(Look::cannot_decide(missing));
    };
    let single_cpu_peak_pct = cpu_row.f64_opt("single_cpu_peak_pct")?;
    let cpu_low = cpu_peak_pct < LOW_CPU_PCT
        && single_cpu_peak_pct.is_none_or(|pct| pct < HOT_SINGLE_CPU_PCT);

    let mut subjects: Vec<(Subject, String, String, Latency)> = Vec::new();
    if have_capture {
        for row in ctx.query(&endpoint_sql(&ctx.scope, None))?.iter() {
            let endpoint = Endpoint { ip: row.text("server_ip")?, port: row.port("server_port")? };
            let sql = endpoint_sql(&ctx.scope, Some(&endpoint));
            subjects.push((
                endpoint.subject(),
                endpoint.finding_id(NAME),
                sql,
                Latency::read(&row)?,
            ));
        }
    }
    if have_load {
        let sql = load_sql(&ctx.scope);
        if let Some(row) = ctx.query(&sql)?.iter().next() {
            let subject = Subject::UrlClass { class: "all requests (load)".to_string() };
            subjects.push((subject, format!("{NAME}:load"), sql, Latency::read(&row)?));
        }
    }

    let mut findings = Vec::new();
    let mut rose = 0;
    for (subject, id, sql, latency) in subjects.iter() {
        let Some(factor) = latency.rise() else { continue };
        rose += 1;
        if !cpu_low {
            continue;
        }
        let mut evidence = vec![
            Evidence::new("latency_p5", ms(latency.p5_us), Unit::Milliseconds),
            Evidence::new("latency_p50", ms(latency.p50_us), Unit::Milliseconds),
            Evidence::new("latency_p90", ms(latency.p90_us), Unit::Milliseconds),
            Evidence::new("latency_p99", ms(latency.p99_us), Unit::Milliseconds),
            Evidence::new("rise", factor, Unit::Ratio),
            Evidence::new("cpu_peak", cpu_peak_pct, Unit::Percent),
            Evidence::new("samples", latency.samples as f64, Unit::Count),
        ];
        if let Some(pct) = single_cpu_peak_pct {
            evidence.push(Evidence::new("single_cpu_peak", pct, Unit::Percent));
        }
        findings.push(Finding {
            id: id.clone(),
            rule: NAME.to_string(),
            title: format!(
                "not CPU-bound on {subject}: p90 latency {} ms ({}x the fastest) while CPU peaked at {:.0}%",
                format_number(ms(latency.p90_us)),
                format_number(factor),
                cpu_peak_pct
            ),
            severity: Severity::Critical,
            subject: subject.clone(),
            // The share of the slow requests' time that is waiting beyond the fastest requests.
            impact: 1.0 - 1.0 / factor.max(1.0),
            evidence,
            sql: format!("{sql};\n{cpu_sql}"),
            next_step: BASE_NEXT_STEP.to_string(),
        });
    }
    let checked = format!(
        "{}, {rose} with rising latency; CPU peak {cpu_peak_pct:.0}%{}",
        plural(subjects.len(), "latency source", "latency sources"),
        single_cpu_peak_pct.map(|p| format!(", busiest CPU {p:.0}%")).unwrap_or_default()
    );
    if rose > 0 && !cpu_low {
        if let Some(busy_elsewhere) = busy_elsewhere(ctx, cpu_peak_pct)? {
            missing.push(busy_elsewhere);
            return Ok(Look::cannot_decide(missing));
        }
    }
    Ok(Look::decided(findings, checked, missing))
}

/// Per snapshot, the recorded processes' CPU as a share of the host's, and the busiest process.
pub(crate) fn processes_sql(scope: &RunScope) -> String {
    format!(
        "WITH per_snap AS (\n  SELECT host, snap_id, sum(cpu_pct) AS cpu_pct_sum, max(cpu_pct) AS cpu_pct_max\n  \
         FROM processes WHERE {} AND cpu_pct IS NOT NULL GROUP BY host, snap_id\n)\n\
         SELECT max(p.cpu_pct_sum / (s.cpu_count * 100.0) * 100) AS processes_peak_pct,\n  \
         max(p.cpu_pct_max) AS process_peak_pct\n\
         FROM per_snap p JOIN system s ON s.host = p.host AND s.snap_id = p.snap_id AND {}",
        scope.filter(""),
        scope.filter("s")
    )
}

/// When the host's CPU was busy but the processes the run recorded (the service) used little of
/// it, other work shared the host: whether the service was CPU-bound cannot be told from the
/// host's CPU, and saying "CPU-bound" (a clear verdict) would be wrong.
fn busy_elsewhere(ctx: &Ctx<'_>, cpu_peak_pct: f64) -> Result<Option<String>, FindingsError> {
    if ctx.rows_in("processes")? == 0 {
        return Ok(None);
    }
    let table = ctx.query(&processes_sql(&ctx.scope))?;
    let Some(row) = table.iter().next() else { return Ok(None) };
    let (Some(processes_pct), Some(process_pct)) =
        (row.f64_opt("processes_peak_pct")?, row.f64_opt("process_peak_pct")?)
    else {
        return Ok(None);
    };
    if processes_pct >= LOW_CPU_PCT || process_pct >= HOT_SINGLE_CPU_PCT {
        return Ok(None);
    }
    Ok(Some(format!(
        "the host's CPU peaked at {cpu_peak_pct:.0}% while the recorded processes used at most \
         {processes_pct:.0}% of it (busiest {process_pct:.0}% of one CPU): other work shared the \
         host, so whether the service is CPU-bound cannot be told"
    )))
}

const BASE_NEXT_STEP: &str = "Requests wait instead of computing: look at worker pool saturation \
     (accept queue, busy workers), connection setup (churn), and locks/IO (pg_stat_activity wait \
     events, slow disks). Adding CPU or instances will not help.";

/// Points each not-CPU-bound finding at the waits other rules found on the same subject (or on the
/// host), so the report names the likely wait instead of a list of possibilities.
pub(crate) fn relate(findings: &mut [Finding]) {
    let related: Vec<(Subject, String, String)> = findings
        .iter()
        .filter(|f| f.rule != NAME)
        .filter_map(|f| {
            let wait = match f.rule.as_str() {
                "churn" => "connection setup",
                "accept_queue" => "worker pool saturation / listen backlog",
                "dominant_phase" => "a waiting phase",
                "cached_slow" => "queueing before the application",
                _ => return None,
            };
            Some((f.subject.clone(), wait.to_string(), f.id.clone()))
        })
        .collect();
    for finding in findings.iter_mut().filter(|f| f.rule == NAME) {
        let waits: Vec<String> = related
            .iter()
            .filter(|(subject, _, _)| {
                *subject == finding.subject || matches!(finding.subject, Subject::UrlClass { .. })
            })
            .map(|(_, wait, id)| format!("{wait} ({id})"))
            .collect();
        if !waits.is_empty() {
            finding.next_step =
                format!("Likely waits found in this run: {}. {BASE_NEXT_STEP}", waits.join(", "));
        }
    }
}
