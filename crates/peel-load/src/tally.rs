//! Running totals per URL class: an HDR histogram of latency, status and error counts. Fed one
//! record at a time by the collector; turned into [`LoadSummary`] rows at the end and into
//! [`crate::Progress`] figures while the run goes on.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::records::{ErrorKind, LoadSummary, RequestRecord, StatusCount};

/// Highest latency the histograms hold exactly (one hour); larger values are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

#[derive(Debug, Clone)]
pub(crate) struct Tally {
    latency_us: Histogram<u64>,
    requests: u64,
    responses: u64,
    status_classes: [u64; 5],
    statuses: BTreeMap<u16, u64>,
    errors: [u64; ErrorKind::ALL.len()],
    connections_opened: u64,
    response_body_bytes: u64,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("invariant: constant bounds 1..1h with 3 digits are valid"),
            requests: 0,
            responses: 0,
            status_classes: [0; 5],
            statuses: BTreeMap::new(),
            errors: [0; ErrorKind::ALL.len()],
            connections_opened: 0,
            response_body_bytes: 0,
        }
    }

    pub(crate) fn add(&mut self, record: &RequestRecord) {
        self.requests += 1;
        self.response_body_bytes += record.response_body_bytes;
        if record.connection_id.is_some() && !record.reused {
            self.connections_opened += 1;
        }
        if let Some(kind) = record.error_kind {
            self.errors[error_index(kind)] += 1;
            return;
        }
        self.responses += 1;
        self.latency_us.saturating_record(record.latency_us.max(1));
        if let Some(status) = record.status {
            *self.statuses.entry(status).or_default() += 1;
            if let Some(slot) = (status / 100)
                .checked_sub(1)
                .and_then(|i| self.status_classes.get_mut(usize::from(i)))
            {
                *slot += 1;
            }
        }
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Latency at quantile `q` (0..=1) in microseconds; 0 before the first response.
    pub(crate) fn latency_at_us(&self, q: f64) -> u64 {
        if self.latency_us.is_empty() {
            return 0;
        }
        self.latency_us.value_at_quantile(q)
    }

    pub(crate) fn summary(&self, url_class: &str, elapsed: Duration) -> LoadSummary {
        let seconds = elapsed.as_secs_f64();
        let empty = self.latency_us.is_empty();
        let at = |q| self.latency_at_us(q);
        let [s1, s2, s3, s4, s5] = self.status_classes;
        let [refused, timeout, reset, other] = self.errors;
        LoadSummary {
            url_class: url_class.to_string(),
            requests: self.requests,
            responses: self.responses,
            requests_per_s: if seconds > 0.0 { self.requests as f64 / seconds } else { 0.0 },
            status_1xx: s1,
            status_2xx: s2,
            status_3xx: s3,
            status_4xx: s4,
            status_5xx: s5,
            errors: self.errors(),
            errors_connect_refused: refused,
            errors_timeout: timeout,
            errors_reset: reset,
            errors_other: other,
            connections_opened: self.connections_opened,
            response_body_bytes: self.response_body_bytes,
            latency_min_us: if empty { 0 } else { self.latency_us.min() },
            latency_mean_us: if empty { 0.0 } else { self.latency_us.mean() },
            latency_p50_us: at(0.50),
            latency_p90_us: at(0.90),
            latency_p99_us: at(0.99),
            latency_p999_us: at(0.999),
            latency_max_us: if empty { 0 } else { self.latency_us.max() },
        }
    }

    pub(crate) fn status_counts(&self, url_class: &str) -> impl Iterator<Item = StatusCount> + '_ {
        let url_class = url_class.to_string();
        self.statuses.iter().map(move |(&status, &count)| StatusCount {
            url_class: url_class.clone(),
            status,
            count,
        })
    }
}

fn error_index(kind: ErrorKind) -> usize {
    match kind {
        ErrorKind::ConnectRefused => 0,
        ErrorKind::Timeout => 1,
        ErrorKind::Reset => 2,
        ErrorKind::Other => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        latency_us: u64,
        status: Option<u16>,
        error_kind: Option<ErrorKind>,
        reused: bool,
    ) -> RequestRecord {
        RequestRecord {
            request_id: 0,
            url_class: "/db".into(),
            method: "GET".into(),
            url: "http://127.0.0.1:1/db".into(),
            scheduled_ts_ns: 0,
            start_ts_ns: 0,
            first_byte_ts_ns: None,
            end_ts_ns: latency_us * 1000,
            latency_us,
            status,
            response_body_bytes: 10,
            error_kind,
            connection_id: Some(1),
            local_port: Some(40000),
            reused,
        }
    }

    #[test]
    fn counts_statuses_errors_connections_and_percentiles() {
        let mut tally = Tally::new();
        for latency_us in 1..=100 {
            tally.add(&record(latency_us * 1000, Some(200), None, latency_us > 1));
        }
        tally.add(&record(5, Some(503), None, true));
        tally.add(&record(7, Some(404), None, true));
        tally.add(&record(9_000_000, None, Some(ErrorKind::Timeout), false));
        tally.add(&record(3, None, Some(ErrorKind::Reset), true));
        let s = tally.summary("/db", Duration::from_secs(2));
        assert_eq!((s.requests, s.responses, s.errors), (104, 102, 2));
        assert_eq!((s.status_2xx, s.status_4xx, s.status_5xx, s.status_1xx), (100, 1, 1, 0));
        assert_eq!((s.errors_timeout, s.errors_reset, s.errors_connect_refused), (1, 1, 0));
        assert_eq!(
            s.connections_opened, 2,
            "first request and the timed-out one opened connections"
        );
        assert_eq!(s.requests_per_s, 52.0);
        assert_eq!(s.response_body_bytes, 1040);
        assert_eq!(s.latency_min_us, 5);
        assert_eq!(s.latency_max_us, 100_031, "HDR histogram with 3 significant digits");
        assert_eq!(s.latency_p50_us, 49_023, "51st of 102: 5us, 7us, then 1ms..49ms");
        let statuses: Vec<_> = tally.status_counts("/db").map(|c| (c.status, c.count)).collect();
        assert_eq!(statuses, vec![(200, 100), (404, 1), (503, 1)]);
    }

    #[test]
    fn empty_tally_reports_zeros() {
        let s = Tally::new().summary("/x", Duration::ZERO);
        assert_eq!(
            (s.requests, s.latency_p99_us, s.latency_max_us, s.requests_per_s),
            (0, 0, 0, 0.0)
        );
    }
}
