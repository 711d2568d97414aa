//! What a load run does: targets with weights and URL classes, the arrival model, connection reuse,
//! bounds. Plain data the binary and the playbook engine fill in; [`crate::run_load`] validates it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::LoadError;

/// One URL the generator requests, with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Absolute `http://` URL.
    pub url: String,
    /// The class the request counts under in summaries (by default the URL's path).
    pub url_class: String,
    /// Relative share of requests (a target with weight 3 gets three times the requests of weight 1).
    pub weight: u32,
}

impl Target {
    /// A target with weight 1 whose class is the URL's path.
    pub fn new(url: &str) -> Result<Target, LoadError> {
        let uri = parse_http_url(url)?;
        Ok(Target { url: url.to_string(), url_class: uri.path().to_string(), weight: 1 })
    }
}

/// Targets from a base URL and a mix `path=weight,path=weight` (`/cached=3,/db=1`): the base URL
/// gives scheme, host and port, each mix path replaces its path.
pub fn targets_from_mix(base_url: &str, mix: &str) -> Result<Vec<Target>, LoadError> {
    let base = parse_http_url(base_url)?;
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    let mut targets = Vec::new();
    for entry in mix.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid =
            |reason: &'static str| LoadError::InvalidMix { entry: entry.to_string(), reason };
        let (path, weight) =
            entry.rsplit_once('=').ok_or_else(|| invalid("expected path=weight"))?;
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(invalid("the path must start with '/'"));
        }
        let weight: u32 =
            weight.trim().parse().map_err(|_| invalid("the weight must be a whole number"))?;
        if weight == 0 {
            return Err(invalid("the weight must be at least 1"));
        }
        let url = format!("http://{authority}{path}");
        let class = parse_http_url(&url)?.path().to_string();
        targets.push(Target { url, url_class: class, weight });
    }
    if targets.is_empty() {
        return Err(LoadError::InvalidMix {
            entry: mix.to_string(),
            reason: "no path=weight entries",
        });
    }
    Ok(targets)
}

/// How requests are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Model {
    /// Open model: requests are scheduled at a constant arrival rate whatever the server does;
    /// latency counts from each request's scheduled time.
    Open { rate_per_s: f64 },
    /// Closed model: this many clients each send a request, wait for the answer, and send the next.
    Closed { concurrency: u32 },
}

impl Model {
    /// `"open"` or `"closed"`.
    pub fn name(self) -> &'static str {
        match self {
            Model::Open { .. } => "open",
            Model::Closed { .. } => "closed",
        }
    }
}

/// Everything a load run needs. Build it with [`LoadConfig::new`] and adjust the public fields.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// What to request; all targets must share one `host:port`.
    pub targets: Vec<Target>,
    pub model: Model,
    /// No request is started after this much time.
    pub duration: Duration,
    /// No more than this many requests are started, whatever the duration.
    pub max_requests: u64,
    /// Size of the connection pool: the most requests in flight at once. With keep-alive these are
    /// the only connections opened (unless the server closes one); without it each request opens a
    /// new one but no more than this many are open at a time.
    pub connections: u32,
    /// Reuse connections (HTTP/1.1 keep-alive); off sends `Connection: close` and opens a new TCP
    /// connection for every request.
    pub keepalive: bool,
    /// A request that has not finished this long after its scheduled time fails with `timeout`.
    pub timeout: Duration,
    /// How often the progress callback is called.
    pub progress_every: Duration,
    /// Worker threads, each with its own single-threaded runtime and its share of the connections
    /// and clients (capped at `connections`, and at `concurrency` in the closed model).
    pub threads: u32,
    /// Set to `true` from elsewhere (Ctrl-C handler, playbook abort) to stop starting requests.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Default for [`LoadConfig::max_requests`]: a bound that a mistyped rate cannot exceed.
pub const DEFAULT_MAX_REQUESTS: u64 = 10_000_000;
/// Default pool size in the open model.
pub const DEFAULT_OPEN_CONNECTIONS: u32 = 64;

impl LoadConfig {
    /// A configuration with defaults: keep-alive on, 10 s timeout, progress every second, at most
    /// [`DEFAULT_MAX_REQUESTS`], and as many connections as clients (closed model) or
    /// [`DEFAULT_OPEN_CONNECTIONS`] (open model).
    pub fn new(targets: Vec<Target>, model: Model, duration: Duration) -> LoadConfig {
        let connections = match model {
            Model::Open { .. } => DEFAULT_OPEN_CONNECTIONS,
            Model::Closed { concurrency } => concurrency.max(1),
        };
        LoadConfig {
            targets,
            model,
            duration,
            max_requests: DEFAULT_MAX_REQUESTS,
            connections,
            keepalive: true,
            timeout: Duration::from_secs(10),
            progress_every: Duration::from_secs(1),
            threads: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)),
            stop: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), LoadError> {
        let invalid =
            |field: &'static str, reason: &'static str| LoadError::InvalidConfig { field, reason };
        if self.targets.is_empty() {
            return Err(invalid("targets", "at least one URL is needed"));
        }
        match self.model {
            Model::Open { rate_per_s } if !(rate_per_s.is_finite() && rate_per_s > 0.0) => {
                return Err(invalid("rate", "must be a positive number of requests per second"));
            }
            Model::Closed { concurrency: 0 } => {
                return Err(invalid("concurrency", "must be at least 1"))
            }
            _ => {}
        }
        if self.duration.is_zero() {
            return Err(invalid("duration", "must be longer than zero"));
        }
        if self.max_requests == 0 {
            return Err(invalid("max_requests", "must be at least 1"));
        }
        if self.connections == 0 {
            return Err(invalid("connections", "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be longer than zero"));
        }
        if self.progress_every.is_zero() {
            return Err(invalid("progress_every", "must be longer than zero"));
        }
        if self.targets.iter().any(|t| t.weight == 0) {
            return Err(invalid("weight", "every target needs a weight of at least 1"));
        }
        Ok(())
    }
}

/// Parses an absolute `http://host:port/path` URL.
pub(crate) fn parse_http_url(url: &str) -> Result<hyper::Uri, LoadError> {
    let invalid = |reason: String| LoadError::InvalidUrl { url: url.to_string(), reason };
    let uri: hyper::Uri =
        url.parse().map_err(|e: hyper::http::uri::InvalidUri| invalid(e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(invalid(format!("scheme '{other}' is not supported, only http://")));
        }
        None => {
            return Err(invalid("expected an absolute URL such as http://127.0.0.1:8080/".into()))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host".into()));
    }
    Ok(uri)
}

/// The order in which targets are requested: a smooth weighted round robin, so every stretch of
/// requests has the configured proportions (no randomness, runs are reproducible).
pub(crate) fn weighted_cycle(weights: &[u32]) -> Result<Vec<usize>, LoadError> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / divisor)).collect();
    let total: i64 = weights.iter().sum();
    let cycle_len = u64::try_from(total).unwrap_or(u64::MAX);
    if cycle_len > MAX_CYCLE_LEN {
        return Err(LoadError::WeightsTooLarge { cycle_len, max: MAX_CYCLE_LEN });
    }
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let best =
            (0..current.len()).fold(0, |best, i| if current[i] > current[best] { i } else { best });
        current[best] -= total;
        cycle.push(best);
    }
    Ok(cycle)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The longest weighted cycle accepted (sum of weights after dividing by their common divisor).
const MAX_CYCLE_LEN: u64 = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_class_is_the_path() {
        let t = Target::new("http://127.0.0.1:8080/db?id=3").unwrap();
        assert_eq!(t.url_class, "/db");
        assert_eq!(t.weight, 1);
        assert_eq!(Target::new("http://localhost:1").unwrap().url_class, "/");
    }

    #[test]
    fn rejects_urls_it_cannot_load() {
        let cases = [
            ("https://127.0.0.1/", "scheme 'https' is not supported, only http://"),
            ("/db", "expected an absolute URL such as http://127.0.0.1:8080/"),
            ("127.0.0.1:80", "expected an absolute URL such as http://127.0.0.1:8080/"),
        ];
        for (url, expected) in cases {
            match Target::new(url) {
                Err(LoadError::InvalidUrl { reason, .. }) => assert_eq!(reason, expected, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn mix_joins_paths_to_the_base_authority() {
        let targets =
            targets_from_mix("http://127.0.0.1:9000/ignored", "/cached=3, /db=1").unwrap();
        assert_eq!(
            targets,
            vec![
                Target {
                    url: "http://127.0.0.1:9000/cached".into(),
                    url_class: "/cached".into(),
                    weight: 3
                },
                Target {
                    url: "http://127.0.0.1:9000/db".into(),
                    url_class: "/db".into(),
                    weight: 1
                },
            ]
        );
    }

    #[test]
    fn mix_errors_name_the_entry() {
        let cases = [
            ("/db", "/db", "expected path=weight"),
            ("db=1", "db=1", "the path must start with '/'"),
            ("/db=x", "/db=x", "the weight must be a whole number"),
            ("/db=0", "/db=0", "the weight must be at least 1"),
            (",", ",", "no path=weight entries"),
        ];
        for (mix, entry_expected, reason_expected) in cases {
            match targets_from_mix("http://127.0.0.1:1/", mix) {
                Err(LoadError::InvalidMix { entry, reason }) => {
                    assert_eq!(
                        (entry.as_str(), reason),
                        (entry_expected, reason_expected),
                        "{mix}"
                    );
                }
                other => panic!("{mix}: {other:?}"),
            }
        }
    }

    #[test]
    fn weighted_cycle_has_exact_smooth_proportions() {
        let cases: &[(&[u32], &[usize])] = &[
            (&[1], &[0]),
            (&[3, 1], &[0, 0, 1, 0]),
            (&[6, 2], &[0, 0, 1, 0]),
            (&[5, 1, 1], &[0, 0, 1, 0, 2, 0, 0]),
            (&[1, 1, 1], &[0, 1, 2]),
        ];
        for (weights, expected) in cases {
            assert_eq!(weighted_cycle(weights).unwrap(), *expected, "{weights:?}");
        }
        assert!(matches!(
            weighted_cycle(&[100_000, 1]),
            Err(LoadError::WeightsTooLarge { cycle_len: 100_001, max: 100_000 })
        ));
    }

    #[test]
    fn validate_names_the_field() {
        let targets = vec![Target::new("http://127.0.0.1:1/").unwrap()];
        let mut config =
            LoadConfig::new(targets, Model::Open { rate_per_s: 0.0 }, Duration::from_secs(1));
        assert!(matches!(config.validate(), Err(LoadError::InvalidConfig { field: "rate", .. })));
        config.model = Model::Closed { concurrency: 0 };
        assert!(matches!(
            config.validate(),
            Err(LoadError::InvalidConfig { field: "concurrency", .. })
        ));
        config.model = Model::Closed { concurrency: 2 };
        assert!(config.validate().is_ok());
        config.connections = 0;
        assert!(matches!(
            config.validate(),
            Err(LoadError::InvalidConfig { field: "connections", .. })
        ));
    }
}
