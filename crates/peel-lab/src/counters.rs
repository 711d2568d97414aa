//! Per-tier counters the lab keeps while it runs, read by tests and playbooks through
//! [`crate::LabHandle::counters`]. They count events (connections opened, requests served), never
//! durations: timings belong to peel-load and to the capture.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the tiers' threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frontend_connections: AtomicU64,
    pub(crate) frontend_requests: AtomicU64,
    pub(crate) upstream_connections_opened: AtomicU64,
    pub(crate) upstream_errors: AtomicU64,
    pub(crate) upstream_ports_exhausted: AtomicU64,
    pub(crate) app_connections: AtomicU64,
    pub(crate) app_requests_cached: AtomicU64,
    pub(crate) app_requests_db: AtomicU64,
    pub(crate) app_requests_other: AtomicU64,
    pub(crate) db_connections_opened: AtomicU64,
    pub(crate) db_health_checks: AtomicU64,
    pub(crate) db_queries: AtomicU64,
    pub(crate) db_errors: AtomicU64,
    pub(crate) sim_db_connections_accepted: AtomicU64,
    pub(crate) sim_db_queries: AtomicU64,
}

/// A snapshot of the lab's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabCounters {
    /// Client connections the frontend accepted.
    pub frontend_connections: u64,
    /// Requests the frontend answered (including its own 502s).
    pub frontend_requests: u64,
    /// Frontend -> app connections opened.
    pub upstream_connections_opened: u64,
    /// Requests the frontend answered with 502 because the app could not be reached or answered badly.
    pub upstream_errors: u64,
    /// Of those, upstream connections that found no free local port in `ephemeral_ports`.
    pub upstream_ports_exhausted: u64,
    /// Connections the app workers accepted.
    pub app_connections: u64,
    /// `/cached` requests the app served (no database).
    pub app_requests_cached: u64,
    /// `/db` requests the app served (successfully or with 503).
    pub app_requests_db: u64,
    /// Requests for any other path (404).
    pub app_requests_other: u64,
    /// Database connections the app workers opened.
    pub db_connections_opened: u64,
    /// Health checks run on a persistent connection before reusing it.
    pub db_health_checks: u64,
    /// Queries that returned a row.
    pub db_queries: u64,
    /// Database connects, health checks or queries that failed.
    pub db_errors: u64,
    /// Connections the simulated database accepted (0 with real PostgreSQL).
    pub sim_db_connections_accepted: u64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LabCounters {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LabCounters {
            frontend_connections: read(&self.frontend_connections),
            frontend_requests: read(&self.frontend_requests),
            upstream_connections_opened: read(&self.upstream_connections_opened),
            upstream_errors: read(&self.upstream_errors),
            upstream_ports_exhausted: read(&self.upstream_ports_exhausted),
            app_connections: read(&self.app_connections),
            app_requests_cached: read(&self.app_requests_cached),
            app_requests_db: read(&self.app_requests_db),
            app_requests_other: read(&self.app_requests_other),
            db_connections_opened: read(&self.db_connections_opened),
            db_health_checks: read(&self.db_health_checks),
            db_queries: read(&self.db_queries),
            db_errors: read(&self.db_errors),
            sim_db_connections_accepted: read(&self.sim_db_connections_accepted),
        }
    }
}
