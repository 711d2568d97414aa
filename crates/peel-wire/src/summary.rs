//! Aggregation per server endpoint (ip:port): how many connections and how fast they churn,
//! requests per connection, percentiles of every phase, who closes, resets, SYN retransmits, the
//! retransmission rate, the dominant phase and the slowest connections. This answers "which phase
//! dominates on which endpoint" from a stream of finished connections, in bounded memory.
//!
//! Percentiles are exact (nearest rank) up to [`EXACT_SAMPLES`] values per phase and endpoint,
//! then come from an HDR histogram with 3 significant digits (0.1 %); `max_us` is always exact.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::IpAddr;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::analyzer::{AnalysisEnd, FxHasher};
use crate::records::{CaptureWarning, ConnState, FinishedConnection, Side};

/// Values kept exactly before a phase's distribution switches to a histogram.
pub const EXACT_SAMPLES: usize = 4096;
/// Slowest connections kept per endpoint.
pub const SLOWEST_KEPT: usize = 5;

/// The phases aggregated, in display order.
pub const PHASES: [&str; 8] =
    ["handshake", "request_wait", "server", "response", "idle", "close", "db_setup", "lifetime"];
/// Phases that compete for "dominant" (idle is the client's think time; db_setup overlaps exchanges).
const DOMINANT_CANDIDATES: [usize; 5] = [0, 1, 2, 3, 5];

/// Percentiles of one phase on one endpoint, in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseStats {
    pub phase: &'static str,
    /// Values aggregated (connections, or exchanges for `server` and `response`).
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub total_us: f64,
}

/// One of the slowest connections of an endpoint (by lifetime).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowConnection {
    pub conn_id: u64,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub lifetime_us: f64,
    pub handshake_us: Option<f64>,
    pub request_wait_us: Option<f64>,
    pub server_us: Option<f64>,
    pub response_us: Option<f64>,
    pub close_us: Option<f64>,
    pub exchanges: u32,
    pub state: ConnState,
}

/// Everything known about one server endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointSummary {
    pub server_ip: IpAddr,
    pub server_port: u16,
    pub connections: u64,
    /// Connections over the capture's duration; `None` for a capture shorter than 1 µs.
    pub connections_per_sec: Option<f64>,
    pub exchanges: u64,
    pub requests_per_connection: f64,
    /// Only phases with at least one value, in [`PHASES`] order.
    pub phases: Vec<PhaseStats>,
    /// Share of connections whose first FIN came from the client / the server (0..1).
    pub closed_by_client_share: f64,
    pub closed_by_server_share: f64,
    pub resets: u64,
    pub resets_by_server: u64,
    pub syn_retransmits: u64,
    pub retransmits: u64,
    /// Retransmitted segments over all segments of the endpoint's connections.
    pub retransmission_rate: f64,
    pub partial: u64,
    /// The phase with the largest total time among handshake, request_wait, server, response, close.
    pub dominant_phase: Option<&'static str>,
    pub slowest: Vec<SlowConnection>,
}

/// The whole analysis in numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub packets: u64,
    pub tcp_packets: u64,
    pub connections: u64,
    pub first_ts_ns: Option<i64>,
    pub last_ts_ns: Option<i64>,
    /// Endpoints, most connections first.
    pub endpoints: Vec<EndpointSummary>,
    pub warnings: Vec<CaptureWarning>,
}

#[derive(Debug)]
enum Distribution {
    Exact(Vec<u64>),
    Hdr(Box<Histogram<u64>>),
}

#[derive(Debug)]
struct Phase {
    values: Distribution,
    count: u64,
    max_ns: u64,
    total_ns: u128,
}

impl Phase {
    fn new() -> Phase {
        Phase { values: Distribution::Exact(Vec::new()), count: 0, max_ns: 0, total_ns: 0 }
    }

    fn record_us(&mut self, us: f64) {
        // Negative values only come from captures whose clock went backwards: they count as 0.
        let ns = round_ns(us * 1000.0);
        self.count += 1;
        self.max_ns = self.max_ns.max(ns);
        self.total_ns += u128::from(ns);
        match &mut self.values {
            Distribution::Exact(values) if values.len() < EXACT_SAMPLES => values.push(ns),
            Distribution::Exact(values) => {
                // 3 significant digits; auto-resizing, so the range follows the data.
                let Ok(mut histogram) = Histogram::<u64>::new(3) else {
                    values.push(ns);
                    return;
                };
                for &v in values.iter() {
                    record(&mut histogram, v);
                }
                record(&mut histogram, ns);
                self.values = Distribution::Hdr(Box::new(histogram));
            }
            Distribution::Hdr(histogram) => record(histogram, ns),
        }
    }

    fn stats(&mut self, phase: &'static str) -> PhaseStats {
        let us = |ns: u64| ns as f64 / 1000.0;
        let (p50, p90, p99) = match &mut self.values {
            Distribution::Exact(values) => {
                values.sort_unstable();
                let rank = |q: f64| {
                    let n = values.len();
                    let i = ((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
                    values.get(i).copied().unwrap_or(0)
                };
                (rank(0.5), rank(0.9), rank(0.99))
            }
            Distribution::Hdr(h) => {
                (h.value_at_quantile(0.5), h.value_at_quantile(0.9), h.value_at_quantile(0.99))
            }
        };
        PhaseStats {
            phase,
            count: self.count,
            p50_us: us(p50),
            p90_us: us(p90),
            p99_us: us(p99),
            max_us: us(self.max_ns),
            total_us: self.total_ns as f64 / 1000.0,
        }
    }
}

/// `x.round().max(0.0) as u64`, without the libm call `round` compiles to on baseline x86-64
/// (it ran for every phase value). Truncation leaves the fraction exact (`x - trunc(x)` is exact),
/// and half rounds away from zero as `round` does; NaN and negatives give 0, huge values saturate.
fn round_ns(x: f64) -> u64 {
    let whole = x as u64;
    if x - whole as f64 >= 0.5 {
        whole.saturating_add(1)
    } else {
        whole
    }
}

/// Records into an auto-resizing histogram (`saturating_record` would clamp instead of growing).
fn record(histogram: &mut Histogram<u64>, ns: u64) {
    if histogram.record(ns).is_err() {
        histogram.saturating_record(ns);
    }
}

#[derive(Debug)]
struct Endpoint {
    connections: u64,
    exchanges: u64,
    phases: Vec<Phase>,
    closed_by: [u64; 2],
    resets: u64,
    resets_by_server: u64,
    syn_retransmits: u64,
    retransmits: u64,
    packets: u64,
    partial: u64,
    slowest: Vec<SlowConnection>,
}

impl Endpoint {
    fn new() -> Endpoint {
        Endpoint {
            connections: 0,
            exchanges: 0,
            phases: PHASES.iter().map(|_| Phase::new()).collect(),
            closed_by: [0, 0],
            resets: 0,
            resets_by_server: 0,
            syn_retransmits: 0,
            retransmits: 0,
            packets: 0,
            partial: 0,
            slowest: Vec::new(),
        }
    }

    fn add(&mut self, finished: &FinishedConnection) {
        let c = &finished.connection;
        self.connections += 1;
        self.exchanges += u64::from(c.exchanges);
        for (i, value) in [c.handshake_us, c.request_wait_us].into_iter().enumerate() {
            if let Some(us) = value {
                self.phases[i].record_us(us);
            }
        }
        for exchange in &finished.exchanges {
            if let Some(us) = exchange.server_us {
                self.phases[2].record_us(us);
            }
            if let Some(us) = exchange.response_us {
                self.phases[3].record_us(us);
            }
        }
        for (i, value) in
            [(4, c.idle_us), (5, c.close_us), (6, c.db_setup_us), (7, Some(c.lifetime_us))]
        {
            if let Some(us) = value {
                self.phases[i].record_us(us);
            }
        }
        match c.closed_by {
            Some(Side::Client) => self.closed_by[0] += 1,
            Some(Side::Server) => self.closed_by[1] += 1,
            None => {}
        }
        if let Some(side) = c.reset_by {
            self.resets += 1;
            self.resets_by_server += u64::from(side == Side::Server);
        }
        self.syn_retransmits += u64::from(c.syn_retransmits);
        self.retransmits += u64::from(c.retransmits);
        self.packets += c.packets;
        self.partial += u64::from(c.state == ConnState::Partial);
        self.keep_if_slow(finished);
    }

    fn keep_if_slow(&mut self, finished: &FinishedConnection) {
        let c = &finished.connection;
        let fastest_kept = self.slowest.last().map_or(f64::NEG_INFINITY, |s| s.lifetime_us);
        if self.slowest.len() >= SLOWEST_KEPT && c.lifetime_us <= fastest_kept {
            return;
        }
        self.slowest.push(SlowConnection {
            conn_id: c.conn_id,
            client_ip: c.client_ip,
            client_port: c.client_port,
            lifetime_us: c.lifetime_us,
            handshake_us: c.handshake_us,
            request_wait_us: c.request_wait_us,
            server_us: c.server_us,
            response_us: c.response_us,
            close_us: c.close_us,
            exchanges: c.exchanges,
            state: c.state,
        });
        self.slowest.sort_by(|a, b| {
            b.lifetime_us.total_cmp(&a.lifetime_us).then(a.conn_id.cmp(&b.conn_id))
        });
        self.slowest.truncate(SLOWEST_KEPT);
    }

    fn summarize(mut self, server: (IpAddr, u16), duration_s: Option<f64>) -> EndpointSummary {
        let phases: Vec<PhaseStats> = self
            .phases
            .iter_mut()
            .zip(PHASES)
            .filter(|(p, _)| p.count > 0)
            .map(|(p, name)| p.stats(name))
            .collect();
        let dominant_phase = DOMINANT_CANDIDATES
            .iter()
            .map(|&i| (PHASES[i], self.phases[i].total_ns))
            .filter(|(_, total)| *total > 0)
            .max_by_key(|(_, total)| *total)
            .map(|(name, _)| name);
        let share =
            |n: u64| if self.connections == 0 { 0.0 } else { n as f64 / self.connections as f64 };
        EndpointSummary {
            server_ip: server.0,
            server_port: server.1,
            connections: self.connections,
            connections_per_sec: duration_s.map(|s| self.connections as f64 / s),
            exchanges: self.exchanges,
            requests_per_connection: share(self.exchanges),
            phases,
            closed_by_client_share: share(self.closed_by[0]),
            closed_by_server_share: share(self.closed_by[1]),
            resets: self.resets,
            resets_by_server: self.resets_by_server,
            syn_retransmits: self.syn_retransmits,
            retransmits: self.retransmits,
            retransmission_rate: if self.packets == 0 {
                0.0
            } else {
                self.retransmits as f64 / self.packets as f64
            },
            partial: self.partial,
            dominant_phase,
            slowest: self.slowest,
        }
    }
}

/// Builds a [`Summary`] from finished connections as they stream by.
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    /// FxHash, as the flow table: one lookup per connection; the output is sorted, not in map order.
    endpoints: HashMap<(IpAddr, u16), Endpoint, BuildHasherDefault<FxHasher>>,
    ports: Vec<u16>,
}

impl SummaryBuilder {
    /// Aggregates every endpoint.
    pub fn new() -> SummaryBuilder {
        SummaryBuilder::default()
    }

    /// Aggregates only endpoints whose server port is in `ports` (all when empty).
    pub fn with_ports(ports: Vec<u16>) -> SummaryBuilder {
        SummaryBuilder { endpoints: HashMap::default(), ports }
    }

    /// Whether a connection to `server_port` is kept by the port filter.
    pub fn wants(&self, server_port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&server_port)
    }

    /// Adds one finished connection.
    pub fn add(&mut self, finished: &FinishedConnection) {
        let c = &finished.connection;
        if !self.wants(c.server_port) {
            return;
        }
        self.endpoints
            .entry((c.server_ip, c.server_port))
            .or_insert_with(Endpoint::new)
            .add(finished);
    }

    /// The summary, with the capture's counts and warnings.
    pub fn finish(self, end: &AnalysisEnd) -> Summary {
        let duration_s = match (end.stats.first_ts_ns, end.stats.last_ts_ns) {
            (Some(first), Some(last)) if last.saturating_sub(first) >= 1000 => {
                Some(last.saturating_sub(first) as f64 / 1e9)
            }
            _ => None,
        };
        let mut endpoints: Vec<EndpointSummary> =
            self.endpoints.into_iter().map(|(server, e)| e.summarize(server, duration_s)).collect();
        endpoints.sort_by(|a, b| {
            b.connections
                .cmp(&a.connections)
                .then(a.server_ip.cmp(&b.server_ip))
                .then(a.server_port.cmp(&b.server_port))
        });
        Summary {
            packets: end.stats.packets,
            tcp_packets: end.stats.tcp_packets,
            connections: end.stats.connections,
            first_ts_ns: end.stats.first_ts_ns,
            last_ts_ns: end.stats.last_ts_ns,
            endpoints,
            warnings: end.warnings.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_percentiles_then_histogram_within_a_tenth_of_a_percent() {
        let mut phase = Phase::new();
        for us in 1..=100 {
            phase.record_us(f64::from(us));
        }
        let stats = phase.stats("server");
        assert_eq!(
            (stats.p50_us, stats.p90_us, stats.p99_us, stats.max_us),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!((stats.count, stats.total_us), (100, 5050.0));
        let mut big = Phase::new();
        for i in 0..12_000u64 {
            big.record_us((i % 1000 + 1) as f64 * 1000.0);
        }
        let stats = big.stats("server");
        assert!((stats.p50_us - 500_000.0).abs() <= 500.0, "{stats:?}");
        assert_eq!(stats.max_us, 1_000_000.0);
    }

    #[test]
    fn round_ns_is_round_max_zero() {
        let mut values = vec![
            0.0,
            -0.0,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            -0.4,
            -0.5,
            -7.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            4_503_599_627_370_495.5,
            9_007_199_254_740_993.0,
            1.8e19,
            1.9e19,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        for ns in [1_i64, 999, 1000, 1001, 13_711, 107_958_716, 208_214_137, 826_461_507] {
            values.push(ns as f64 / 1000.0 * 1000.0);
        }
        for i in 0..10_000u32 {
            values.push(f64::from(i) * 0.37 + 0.005);
        }
        for x in values {
            assert_eq!(round_ns(x), x.round().max(0.0) as u64, "{x:e}");
        }
    }
}
