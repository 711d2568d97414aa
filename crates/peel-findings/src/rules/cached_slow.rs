//! `cached_slow`: requests that should be cheap (served from a cache) are slow too. In our outage
//! this was the clue that the bottleneck sat *before* the application logic: requests queued for a
//! worker (or in the listen backlog) whatever they asked for, so neither the DB nor the cache was
//! the cause.
//!
//! URL classes come from the load generator (`peel load --class`). A class counts as cached when its
//! name says so (`cached`, `cache-hit`, `static`, `health`), and not when it says `uncached`,
//! `nocache` or `no-cache`. The rule fires when a cached class's median latency is at least
//! [`MIN_RATIO`] of the slowest uncached class's median and at least [`MIN_CACHED_P50_MS`].

use crate::engine::{Ctx, Look, RunScope};
use crate::error::FindingsError;
use crate::finding::{format_number, Evidence, Finding, Severity, Subject, Unit};
use crate::rules::{ms, plural, share};

pub(crate) const NAME: &str = "cached_slow";

/// A cached class this close to the uncached median is "slow too".
const MIN_RATIO: f64 = 0.5;
/// And at least this slow (a fast cache next to a fast DB is fine).
const MIN_CACHED_P50_MS: f64 = 50.0;
/// A class with fewer completed requests is not judged.
const MIN_REQUESTS: u64 = 10;

/// Latency percentiles per URL class of the load generator's completed requests.
pub(crate) fn sql(scope: &RunScope) -> String {
    format!(
        "SELECT url_class, count(*) AS requests,\n  \
         quantile_cont(latency_us, 0.5) AS p50_us, quantile_cont(latency_us, 0.99) AS p99_us\n\
         FROM load_requests WHERE {} AND error_kind IS NULL\nGROUP BY url_class ORDER BY url_class",
        scope.filter("")
    )
}

/// Whether a URL class name says its requests are served from a cache.
pub(crate) fn is_cached_class(class: &str) -> bool {
    let name = class.to_ascii_lowercase();
    let negated =
        ["uncached", "nocache", "no-cache", "no_cache", "not-cached", "not_cached", "miss"];
    if negated.iter().any(|n| name.contains(n)) {
        return false;
    }
    ["cached", "cache-hit", "cache_hit", "static", "health"].iter().any(|n| name.contains(n))
}

struct Class {
    name: String,
    requests: u64,
    p50_us: f64,
    p99_us: f64,
}

pub(crate) fn check(ctx: &Ctx<'_>) -> Result<Look, FindingsError> {
    if ctx.rows_in("load_requests")? == 0 {
        return Ok(Look::cannot_decide(vec![ctx.missing(
            "load_requests",
            "run load with URL classes (`peel load --class cached=URL --class uncached=URL --db DB`)",
        )]));
    }
    let sql = sql(&ctx.scope);
    let mut classes = Vec::new();
    for row in ctx.query(&sql)?.iter() {
        let class = Class {
            name: row.text("url_class")?,
            requests: row.u64("requests")?,
            p50_us: row.f64_or_zero("p50_us")?,
            p99_us: row.f64_or_zero("p99_us")?,
        };
        if class.requests >= MIN_REQUESTS {
            classes.push(class);
        }
    }
    let (cached, uncached): (Vec<&Class>, Vec<&Class>) =
        classes.iter().partition(|c| is_cached_class(&c.name));
    if cached.is_empty() || uncached.is_empty() {
        let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
        return Ok(Look::cannot_decide(vec![format!(
            "{} needs a cached and an uncached URL class with {MIN_REQUESTS}+ requests; classes: [{}]",
            ctx.describe(),
            names.join(", ")
        )]));
    }
    let Some(slowest) = uncached.iter().max_by(|a, b| a.p50_us.total_cmp(&b.p50_us)) else {
        return Ok(Look::cannot_decide(Vec::new()));
    };
    let mut findings = Vec::new();
    for class in &cached {
        let ratio = share(class.p50_us, slowest.p50_us);
        if ratio < MIN_RATIO || ms(class.p50_us) < MIN_CACHED_P50_MS {
            continue;
        }
        findings.push(Finding {
            id: format!("{NAME}:{}", class.name),
            rule: NAME.to_string(),
            title: format!(
                "cached requests are slow too: {} p50 {} ms vs {} p50 {} ms; the wait is before the application",
                class.name,
                format_number(ms(class.p50_us)),
                slowest.name,
                format_number(ms(slowest.p50_us))
            ),
            severity: Severity::Warning,
            subject: Subject::UrlClass { class: class.name.clone() },
            impact: ratio.min(1.0),
            evidence: vec![
                Evidence::new("cached_p50", ms(class.p50_us), Unit::Milliseconds),
                Evidence::new("cached_p99", ms(class.p99_us), Unit::Milliseconds),
                Evidence::new("uncached_p50", ms(slowest.p50_us), Unit::Milliseconds),
                Evidence::new("uncached_p99", ms(slowest.p99_us), Unit::Milliseconds),
                Evidence::new("cached_to_uncached", ratio, Unit::Ratio),
                Evidence::new("cached_requests", class.requests as f64, Unit::Count),
            ],
            sql: sql.clone(),
            next_step: "Neither the DB nor the cache explains this: look at queueing before the \
                        application (busy workers, accept queue, connection setup to the app). \
                        Compare worker counts in a playbook matrix."
                .to_string(),
        });
    }
    let checked = format!(
        "{} cached vs {} uncached",
        plural(cached.len(), "class", "classes"),
        plural(uncached.len(), "class", "classes")
    );
    Ok(Look::decided(findings, checked, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::is_cached_class;

    #[test]
    fn class_names_say_whether_they_are_cached() {
        let cases = [
            ("cached", true),
            ("/api/cached", true),
            ("Cache-Hit", true),
            ("static", true),
            ("healthz", true),
            ("uncached", false),
            ("nocache", false),
            ("no-cache", false),
            ("cache_miss", false),
            ("/api/orders", false),
        ];
        for (class, expected) in cases {
            assert_eq!(is_cached_class(class), expected, "{class}");
        }
    }
}
