//! What a lab looks like: tiers, sizes and the knobs each shipped playbook turns.
//!
//! The defaults reproduce the outage peel exists for (the team's STORY.md): four synchronous workers and a database whose
//! connection setup costs far more than its query, reached over a new connection per request.
//! Validation happens here, before any socket or process exists, so a bad value never leaves
//! anything behind.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::LabError;

/// How the app workers use database connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbMode {
    /// Open, use and close a connection on every `/db` request (the outage).
    PerRequest,
    /// Keep one connection per worker, health-checked before each reuse (Django's `CONN_MAX_AGE`
    /// with `CONN_HEALTH_CHECKS`: the fix).
    Persistent,
}

/// Which database the lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbChoice {
    /// A real PostgreSQL started from `initdb`/`pg_ctl` found on PATH; an error when impossible.
    Real,
    /// The simulated database: a small line protocol over TCP with a configurable setup cost.
    Sim,
    /// Real PostgreSQL when it can be started, otherwise the simulated one (the reason is kept).
    Auto,
}

/// Which side of a frontend -> app connection closes it first (non-keep-alive upstreams only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    /// The frontend asks `Connection: close` and the app closes after its response, like gunicorn's
    /// sync workers: TIME_WAIT sits on the app side.
    App,
    /// The frontend closes as soon as it has read the response, without waiting for the app: TIME_WAIT
    /// piles up on the frontend (client) side, where ephemeral ports run out.
    Frontend,
}

/// An inclusive range of local ports for the frontend's upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub fn len(&self) -> usize {
        usize::from(self.last) - usize::from(self.first) + 1
    }

    /// Always false: a valid range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Everything a lab is made of. `LabConfig::default()` is the outage.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// App tier synchronous workers (each serves one connection at a time).
    pub workers: usize,
    /// Per-request (outage) or persistent (fix) database connections.
    pub db_mode: DbMode,
    /// Real PostgreSQL, simulated database, or whichever can run.
    pub db: DbChoice,
    /// Frontend listen port on 127.0.0.1 (0 picks a free one).
    pub frontend_port: u16,
    /// App listen port on 127.0.0.1 (0 picks a free one).
    pub app_port: u16,
    /// Database listen port on 127.0.0.1 (0 picks a free one).
    pub db_port: u16,
    /// Accept-queue length of the app's shared listen socket (capped by net.core.somaxconn).
    pub listen_backlog: u32,
    /// Reuse frontend -> app connections from a pool of at most `workers` connections.
    pub upstream_keepalive: bool,
    /// Which side closes a frontend -> app connection first (without keep-alive).
    pub upstream_close: Closer,
    /// How long the frontend waits before closing an upstream connection it is done with (the
    /// story's 826 ms close); zero closes at once.
    pub slow_close: Duration,
    /// Local ports the frontend may use for upstream connections (None: the kernel picks).
    pub ephemeral_ports: Option<PortRange>,
    /// Real PostgreSQL: extra wait on every new connection, added by a relay in front of it (the
    /// TLS and authentication round trips to a remote managed database); zero connects directly.
    pub pg_setup_delay: Duration,
    /// Simulated database: time to accept a new connection (PostgreSQL's fork + authentication).
    pub sim_connect_cost: Duration,
    /// Simulated database: time to answer one query.
    pub sim_query_cost: Duration,
    /// Client connections the frontend serves at once; more wait in its accept queue.
    pub frontend_max_connections: usize,
    /// Read/write timeout on every lab socket, so a stuck peer never pins a thread forever.
    pub io_timeout: Duration,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            workers: 4,
            db_mode: DbMode::PerRequest,
            db: DbChoice::Auto,
            frontend_port: 0,
            app_port: 0,
            db_port: 0,
            listen_backlog: 2048,
            upstream_keepalive: false,
            upstream_close: Closer::App,
            slow_close: Duration::ZERO,
            ephemeral_ports: None,
            pg_setup_delay: Duration::from_millis(20),
            sim_connect_cost: Duration::from_millis(20),
            sim_query_cost: Duration::from_millis(1),
            frontend_max_connections: 2048,
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// Upper bounds that keep a typo from starting thousands of threads or hour-long sleeps.
const MAX_WORKERS: usize = 256;
const MAX_FRONTEND_CONNECTIONS: usize = 16_384;
const MAX_COST: Duration = Duration::from_secs(10);
const MAX_SLOW_CLOSE: Duration = Duration::from_secs(60);

impl LabConfig {
    /// Checks every knob; the first invalid one is reported with its name and allowed range.
    pub fn validate(&self) -> Result<(), LabError> {
        let invalid = |key: &'static str, value: String, expected: &'static str| {
            Err(LabError::InvalidConfig { key, value, expected })
        };
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return invalid("workers", self.workers.to_string(), "1..=256");
        }
        if self.listen_backlog == 0 || self.listen_backlog > i32::MAX as u32 {
            return invalid("listen-backlog", self.listen_backlog.to_string(), "at least 1");
        }
        if self.frontend_max_connections == 0
            || self.frontend_max_connections > MAX_FRONTEND_CONNECTIONS
        {
            return invalid(
                "frontend-max-connections",
                self.frontend_max_connections.to_string(),
                "1..=16384",
            );
        }
        if self.sim_connect_cost > MAX_COST {
            return invalid(
                "sim-connect-cost",
                format!("{:?}", self.sim_connect_cost),
                "at most 10s",
            );
        }
        if self.pg_setup_delay > MAX_COST {
            return invalid("pg-setup-delay", format!("{:?}", self.pg_setup_delay), "at most 10s");
        }
        if self.sim_query_cost > MAX_COST {
            return invalid("sim-query-cost", format!("{:?}", self.sim_query_cost), "at most 10s");
        }
        if self.slow_close > MAX_SLOW_CLOSE {
            return invalid("slow-close", format!("{:?}", self.slow_close), "at most 60s");
        }
        if self.io_timeout.is_zero() {
            return invalid("io-timeout", "0s".to_string(), "more than zero");
        }
        if let Some(range) = self.ephemeral_ports {
            if range.first == 0 || range.first > range.last {
                return invalid(
                    "ephemeral-ports",
                    range.to_string(),
                    "FIRST-LAST with 1 <= FIRST <= LAST <= 65535",
                );
            }
        }
        let ports = [
            ("frontend-port", self.frontend_port),
            ("app-port", self.app_port),
            ("db-port", self.db_port),
        ];
        for (i, (key, port)) in ports.iter().enumerate() {
            if *port != 0 && ports[..i].iter().any(|(_, other)| other == port) {
                return invalid(key, port.to_string(), "a port no other lab tier uses");
            }
        }
        Ok(())
    }
}

/// `Display` and `FromStr` for a knob whose values are a fixed set of CLI words.
macro_rules! cli_words {
    ($type:ty, $key:literal, $expected:literal, [$(($word:literal, $value:expr)),+ $(,)?]) => {
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let word = [$(($word, $value)),+]
                    .into_iter()
                    .find_map(|(word, value)| (value == *self).then_some(word))
                    .unwrap_or("?");
                f.write_str(word)
            }
        }

        impl FromStr for $type {
            type Err = LabError;
            fn from_str(text: &str) -> Result<Self, LabError> {
                [$(($word, $value)),+].into_iter().find_map(|(word, value)| (word == text).then_some(value)).ok_or_else(
                    || LabError::InvalidConfig { key: $key, value: text.to_string(), expected: $expected },
                )
            }
        }
    };
}

cli_words!(
    DbMode,
    "db-mode",
    "per-request or persistent",
    [("per-request", DbMode::PerRequest), ("persistent", DbMode::Persistent),]
);
cli_words!(
    DbChoice,
    "db",
    "real, sim or auto",
    [("real", DbChoice::Real), ("sim", DbChoice::Sim), ("auto", DbChoice::Auto),]
);
cli_words!(
    Closer,
    "upstream-close",
    "app or frontend",
    [("app", Closer::App), ("frontend", Closer::Frontend)]
);

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = LabError;
    fn from_str(text: &str) -> Result<Self, LabError> {
        let invalid = || LabError::InvalidConfig {
            key: "ephemeral-ports",
            value: text.to_string(),
            expected: "FIRST-LAST with 1 <= FIRST <= LAST <= 65535, e.g. 40000-40099",
        };
        let (first, last) = text.split_once('-').ok_or_else(invalid)?;
        let first: u16 = first.trim().parse().map_err(|_| invalid())?;
        let last: u16 = last.trim().parse().map_err(|_| invalid())?;
        if first == 0 || first > last {
            return Err(invalid());
        }
        Ok(PortRange { first, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(config: LabConfig) -> String {
        match config.validate() {
            Ok(()) => "ok".to_string(),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn validation_names_the_knob_and_its_range() {
        let cases: Vec<(LabConfig, &str)> = vec![
            (LabConfig::default(), "ok"),
            (
                LabConfig { workers: 0, ..LabConfig::default() },
                "invalid lab setting workers = 0: expected 1..=256",
            ),
            (
                LabConfig { workers: 257, ..LabConfig::default() },
                "invalid lab setting workers = 257: expected 1..=256",
            ),
            (
                LabConfig { listen_backlog: 0, ..LabConfig::default() },
                "invalid lab setting listen-backlog = 0: expected at least 1",
            ),
            (
                LabConfig { sim_connect_cost: Duration::from_secs(11), ..LabConfig::default() },
                "invalid lab setting sim-connect-cost = 11s: expected at most 10s",
            ),
            (
                LabConfig { slow_close: Duration::from_secs(61), ..LabConfig::default() },
                "invalid lab setting slow-close = 61s: expected at most 60s",
            ),
            (
                LabConfig { io_timeout: Duration::ZERO, ..LabConfig::default() },
                "invalid lab setting io-timeout = 0s: expected more than zero",
            ),
            (
                LabConfig { frontend_port: 18080, app_port: 18080, ..LabConfig::default() },
                "invalid lab setting app-port = 18080: expected a port no other lab tier uses",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(error_of(config), expected);
        }
    }

    #[test]
    fn knobs_parse_from_their_cli_spelling() {
        assert_eq!("per-request".parse::<DbMode>().ok(), Some(DbMode::PerRequest));
        assert_eq!("persistent".parse::<DbMode>().ok(), Some(DbMode::Persistent));
        assert_eq!("sim".parse::<DbChoice>().ok(), Some(DbChoice::Sim));
        assert_eq!("frontend".parse::<Closer>().ok(), Some(Closer::Frontend));
        assert_eq!(
            [DbMode::PerRequest.to_string(), DbChoice::Auto.to_string(), Closer::App.to_string()],
            ["per-request", "auto", "app"]
        );
        assert_eq!(
            "40000-40099".parse::<PortRange>().ok(),
            Some(PortRange { first: 40000, last: 40099 })
        );
        assert_eq!("40000-40099".parse::<PortRange>().map(|r| r.len()).ok(), Some(100));
        for bad in ["", "40000", "0-10", "20-10", "1-70000", "a-b"] {
            let err = bad.parse::<PortRange>().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.starts_with("invalid lab setting ephemeral-ports"), "{bad}: {err}");
        }
        let err = "sometimes".parse::<DbMode>().err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            err,
            "invalid lab setting db-mode = sometimes: expected per-request or persistent"
        );
    }
}
