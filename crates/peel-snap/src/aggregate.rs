//! The first questions of an incident, answered from snapshot records: which ports and peers hold
//! the sockets and in what state, how many TIME_WAIT/CLOSE_WAIT/SYN_RECV, how close each
//! destination is to running out of ephemeral ports, which accept queues are near their backlog,
//! and over a series which counters moved and how high CPU peaked.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::counters::is_gauge;
use crate::owners::IntMap;
use crate::records::{SnapshotRecords, SocketRecord};

/// Sockets sharing a key and a state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateCount {
    pub state: String,
    pub count: u64,
}

/// Sockets on one local port in one state (with the process owning most of them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalPortCount {
    pub local_port: u16,
    pub state: String,
    pub count: u64,
    pub process: Option<String>,
}

/// Sockets to one remote endpoint in one state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteCount {
    pub remote_ip: String,
    pub remote_port: u16,
    pub state: String,
    pub count: u64,
}

/// Ephemeral ports bound towards one destination against the size of `ip_local_port_range`: each
/// (local ip, destination) pair can use at most that many.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EphemeralUse {
    pub remote_ip: String,
    pub remote_port: u16,
    pub ports_in_use: u64,
    pub range_size: u64,
    pub used_pct: f64,
}

/// A listener whose accept queue is at least 80 % of its backlog (or non-empty when the backlog
/// is unknown, as with /proc/net/tcp).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcceptQueue {
    pub local_ip: String,
    pub local_port: u16,
    pub accept_queue: u32,
    pub listen_backlog: Option<u32>,
    pub pid: Option<u32>,
    pub process: Option<String>,
}

/// Aggregates of one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotSummary {
    pub snap_id: u64,
    pub tcp_sockets: u64,
    /// Every state present, most sockets first.
    pub by_state: Vec<StateCount>,
    pub time_wait: u64,
    pub close_wait: u64,
    pub syn_recv: u64,
    pub by_local_port: Vec<LocalPortCount>,
    pub by_remote: Vec<RemoteCount>,
    /// `net.ipv4.ip_local_port_range` as read, if it was.
    pub ephemeral_range: Option<(u16, u16)>,
    pub ephemeral_by_destination: Vec<EphemeralUse>,
    pub accept_queues_near_backlog: Vec<AcceptQueue>,
}

/// Distinct strings of one kind (states, processes, addresses) numbered in order of appearance, so
/// that the per-socket tallies are keyed by small integers instead of hashed strings: a snapshot of
/// 100,000 sockets is summarized on every sample of a series.
#[derive(Debug, Default)]
struct Names<'a> {
    index: IntMap<&'a str, u32>,
    names: Vec<&'a str>,
    /// The last name looked up and its number: sockets come in runs of the same state or peer.
    last: Option<(&'a str, u32)>,
}

impl<'a> Names<'a> {
    fn number(&mut self, name: &'a str) -> u32 {
        if let Some((last, number)) = self.last {
            if last == name {
                return number;
            }
        }
        let next = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let number = *self.index.entry(name).or_insert_with(|| {
            self.names.push(name);
            next
        });
        self.last = Some((name, number));
        number
    }

    fn name(&self, number: u32) -> &'a str {
        self.names[number as usize]
    }
}

/// Counts per state, in a short vector (a dozen states at most).
fn count_states(sockets: &[SocketRecord]) -> BTreeMap<&str, u64> {
    let mut states = Names::default();
    let mut counts: Vec<u64> = Vec::new();
    for socket in sockets {
        let state = states.number(&socket.state) as usize;
        if state >= counts.len() {
            counts.resize(state + 1, 0);
        }
        counts[state] += 1;
    }
    counts.iter().enumerate().map(|(state, &count)| (states.name(state as u32), count)).collect()
}

/// Sockets per state, most first (the part of [`summarize`] a progress line needs, for less).
pub fn by_state(sockets: &[SocketRecord]) -> Vec<StateCount> {
    let mut by_state: Vec<StateCount> = count_states(sockets)
        .into_iter()
        .map(|(state, count)| StateCount { state: state.to_owned(), count })
        .collect();
    by_state.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.state.cmp(&b.state)));
    by_state
}

/// Aggregates one snapshot. Lists are sorted by count (largest first), then by key.
pub fn summarize(records: &SnapshotRecords) -> SnapshotSummary {
    let sockets = &records.sockets;
    let states = count_states(sockets);
    let mut state_names = Names::default();
    let mut processes = Names::default();
    let mut ips = Names::default();
    // (port, state) -> sockets; (port, state, process) -> sockets; (ip, port, state) -> sockets.
    let mut local: IntMap<u64, u64> = IntMap::default();
    let mut local_processes: IntMap<u64, u64> = IntMap::default();
    let mut remote: IntMap<u64, u64> = IntMap::default();
    for socket in sockets {
        let state = u64::from(state_names.number(&socket.state));
        let port_state = u64::from(socket.local_port) << 32 | state;
        *local.entry(port_state).or_default() += 1;
        if let Some(process) = &socket.process {
            let process = u64::from(processes.number(process));
            *local_processes.entry(process << 48 | port_state).or_default() += 1;
        }
        if socket.state != "LISTEN" {
            let ip = u64::from(ips.number(&socket.remote_ip));
            *remote.entry(ip << 32 | u64::from(socket.remote_port) << 16 | state).or_default() += 1;
        }
    }
    let count_of = |state: &str| states.get(state).copied().unwrap_or(0);

    let mut by_state: Vec<StateCount> = states
        .iter()
        .map(|(state, count)| StateCount { state: (*state).to_owned(), count: *count })
        .collect();
    by_state.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.state.cmp(&b.state)));

    // The process owning most sockets of each (port, state); on a tie, the first name in order.
    let mut top_process: IntMap<u64, (u64, &str)> = IntMap::default();
    for (key, count) in local_processes {
        let name = processes.name((key >> 48) as u32);
        let top = top_process.entry(key & 0xffff_ffff_ffff).or_insert((count, name));
        if count > top.0 || (count == top.0 && name < top.1) {
            *top = (count, name);
        }
    }
    let mut by_local_port: Vec<LocalPortCount> = local
        .into_iter()
        .map(|(key, count)| LocalPortCount {
            local_port: (key >> 32) as u16,
            state: state_names.name((key & 0xff) as u32).to_owned(),
            count,
            process: top_process.get(&key).map(|(_, name)| (*name).to_owned()),
        })
        .collect();
    by_local_port.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| (a.local_port, &a.state).cmp(&(b.local_port, &b.state)))
    });

    let mut by_remote: Vec<RemoteCount> = remote
        .into_iter()
        .map(|(key, count)| RemoteCount {
            remote_ip: ips.name((key >> 32) as u32).to_owned(),
            remote_port: (key >> 16) as u16,
            state: state_names.name((key & 0xff) as u32).to_owned(),
            count,
        })
        .collect();
    by_remote.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| {
            (&a.remote_ip, a.remote_port, &a.state).cmp(&(&b.remote_ip, b.remote_port, &b.state))
        })
    });

    let ephemeral_range = records
        .sysctls
        .iter()
        .find(|s| s.key == "net.ipv4.ip_local_port_range")
        .and_then(|s| parse_port_range(&s.value));
    let ephemeral_by_destination =
        ephemeral_range.map_or_else(Vec::new, |range| ephemeral_use(sockets, range));

    let mut accept_queues_near_backlog: Vec<AcceptQueue> = sockets
        .iter()
        .filter(|s| s.state == "LISTEN")
        .filter_map(|s| {
            let queue = s.accept_queue?;
            let near = match s.listen_backlog {
                Some(backlog) => queue > 0 && u64::from(queue) * 10 >= u64::from(backlog) * 8,
                None => queue > 0,
            };
            near.then(|| AcceptQueue {
                local_ip: s.local_ip.clone(),
                local_port: s.local_port,
                accept_queue: queue,
                listen_backlog: s.listen_backlog,
                pid: s.pid,
                process: s.process.clone(),
            })
        })
        .collect();
    accept_queues_near_backlog.sort_by(|a, b| {
        b.accept_queue.cmp(&a.accept_queue).then_with(|| a.local_port.cmp(&b.local_port))
    });

    SnapshotSummary {
        snap_id: records.snapshot.snap_id,
        tcp_sockets: sockets.len() as u64,
        time_wait: count_of("TIME_WAIT"),
        close_wait: count_of("CLOSE_WAIT"),
        syn_recv: count_of("SYN_RECV"),
        by_state,
        by_local_port,
        by_remote,
        ephemeral_range,
        ephemeral_by_destination,
        accept_queues_near_backlog,
    }
}

fn parse_port_range(value: &str) -> Option<(u16, u16)> {
    let mut parts = value.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => Some((low, high)),
        _ => None,
    }
}

fn ephemeral_use(sockets: &[SocketRecord], (low, high): (u16, u16)) -> Vec<EphemeralUse> {
    let range_size = u64::from(high - low) + 1;
    let mut ips = Names::default();
    // (ip, port) -> sockets.
    let mut per_destination: IntMap<u64, u64> = IntMap::default();
    for socket in sockets {
        let ephemeral = (low..=high).contains(&socket.local_port);
        if ephemeral && socket.state != "LISTEN" && socket.remote_port != 0 {
            let ip = u64::from(ips.number(&socket.remote_ip));
            *per_destination.entry(ip << 16 | u64::from(socket.remote_port)).or_default() += 1;
        }
    }
    let mut uses: Vec<EphemeralUse> = per_destination
        .into_iter()
        .map(|(key, in_use)| EphemeralUse {
            remote_ip: ips.name((key >> 16) as u32).to_owned(),
            remote_port: key as u16,
            ports_in_use: in_use,
            range_size,
            used_pct: in_use as f64 * 100.0 / range_size as f64,
        })
        .collect();
    uses.sort_by(|a, b| {
        b.ports_in_use
            .cmp(&a.ports_in_use)
            .then_with(|| (&a.remote_ip, a.remote_port).cmp(&(&b.remote_ip, b.remote_port)))
    });
    uses
}

/// A counter that changed over a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterMove {
    pub name: String,
    pub first: i64,
    pub last: i64,
    pub delta: i64,
    /// Average change per second over the series (running totals only).
    pub rate_per_s: Option<f64>,
    /// Highest rate between two consecutive snapshots.
    pub max_rate_per_s: Option<f64>,
}

/// What a series of snapshots adds to the last one: movement and peaks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesSummary {
    pub snapshots: u64,
    pub duration_s: f64,
    /// Highest all-CPU usage seen in any interval, percent. Next to a high load this says "not
    /// CPU-bound" (the clue the outage's dashboards hid).
    pub cpu_peak_pct: Option<f64>,
    /// Highest single-CPU usage seen in any interval, percent.
    pub cpu_peak_single_pct: Option<f64>,
    pub load1_max: Option<f64>,
    pub load1_last: Option<f64>,
    /// Most TCP sockets seen in one snapshot, per state.
    pub max_by_state: Vec<StateCount>,
    /// Counters whose value changed between the first and the last snapshot, largest change first.
    pub moved_counters: Vec<CounterMove>,
}

/// Summarizes a series (snapshots in time order).
pub fn summarize_series(series: &[SnapshotRecords]) -> SeriesSummary {
    let mut tally = SeriesTally::default();
    series.iter().for_each(|snapshot| tally.add(snapshot));
    tally.summary()
}

/// A [`SeriesSummary`] built one snapshot at a time, so that a long series of large snapshots need
/// not be kept in memory to be summarized (five minutes every second of 100,000 sockets would be
/// 300 copies of the socket table).
#[derive(Debug, Default)]
pub struct SeriesTally {
    snapshots: u64,
    first_ts_ns: Option<i64>,
    last_ts_ns: i64,
    cpu_peak_pct: Option<f64>,
    cpu_peak_single_pct: Option<f64>,
    load1_max: Option<f64>,
    load1_last: Option<f64>,
    max_by_state: BTreeMap<String, u64>,
    first_counters: Option<HashMap<String, i64>>,
    last_counters: Vec<(String, i64)>,
    max_rates: HashMap<String, f64>,
}

impl SeriesTally {
    /// Adds the next snapshot of the series.
    pub fn add(&mut self, snapshot: &SnapshotRecords) {
        let max = |peak: &mut Option<f64>, value: Option<f64>| {
            *peak = match (*peak, value) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        };
        self.snapshots += 1;
        self.first_ts_ns.get_or_insert(snapshot.snapshot.ts_ns);
        self.last_ts_ns = snapshot.snapshot.ts_ns;
        if let Some(system) = &snapshot.system {
            max(&mut self.cpu_peak_pct, system.cpu_usage_pct);
            max(&mut self.cpu_peak_single_pct, system.cpu_max_pct);
            max(&mut self.load1_max, Some(system.load1));
            self.load1_last = Some(system.load1);
        }
        for (state, count) in count_states(&snapshot.sockets) {
            let max = self.max_by_state.entry(state.to_owned()).or_default();
            *max = (*max).max(count);
        }
        let counters = || snapshot.tcp_counters.iter().map(|c| (c.name.clone(), c.value));
        self.first_counters.get_or_insert_with(|| counters().collect());
        self.last_counters = counters().collect();
        for counter in &snapshot.tcp_counters {
            if let Some(rate) = counter.rate_per_s {
                let max = self.max_rates.entry(counter.name.clone()).or_insert(rate);
                *max = max.max(rate);
            }
        }
    }

    /// The summary of the snapshots added so far.
    pub fn summary(&self) -> SeriesSummary {
        let duration_s =
            self.first_ts_ns.map_or(0.0, |first| (self.last_ts_ns - first) as f64 / 1e9);
        let mut max_by_state: Vec<StateCount> = self
            .max_by_state
            .iter()
            .map(|(state, count)| StateCount { state: state.clone(), count: *count })
            .collect();
        max_by_state.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.state.cmp(&b.state)));
        SeriesSummary {
            snapshots: self.snapshots,
            duration_s,
            cpu_peak_pct: self.cpu_peak_pct,
            cpu_peak_single_pct: self.cpu_peak_single_pct,
            load1_max: self.load1_max,
            load1_last: self.load1_last,
            max_by_state,
            moved_counters: self.moved_counters(duration_s),
        }
    }

    fn moved_counters(&self, duration_s: f64) -> Vec<CounterMove> {
        let Some(before) = &self.first_counters else { return Vec::new() };
        let mut moves: Vec<CounterMove> = self
            .last_counters
            .iter()
            .filter_map(|(name, last)| {
                let first = *before.get(name)?;
                let delta = last - first;
                let gauge = is_gauge(name);
                (delta != 0).then(|| CounterMove {
                    name: name.clone(),
                    first,
                    last: *last,
                    delta,
                    rate_per_s: (!gauge && duration_s > 0.0).then(|| delta as f64 / duration_s),
                    max_rate_per_s: self.max_rates.get(name).copied(),
                })
            })
            .collect();
        moves.sort_by(|a, b| {
            b.delta.unsigned_abs().cmp(&a.delta.unsigned_abs()).then_with(|| a.name.cmp(&b.name))
        });
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{SnapshotRecord, SystemRecord, TcpCounterRecord};

    fn socket(state: &str, local_port: u16, remote: (&str, u16), process: &str) -> SocketRecord {
        SocketRecord {
            family: "ipv4".to_owned(),
            state: state.to_owned(),
            local_ip: "10.0.0.1".to_owned(),
            local_port,
            remote_ip: remote.0.to_owned(),
            remote_port: remote.1,
            process: (!process.is_empty()).then(|| process.to_owned()),
            ..SocketRecord::default()
        }
    }

    fn records(sockets: Vec<SocketRecord>) -> SnapshotRecords {
        SnapshotRecords {
            snapshot: SnapshotRecord {
                snap_id: 7,
                ts_ns: 0,
                host: String::new(),
                proc_root: "/proc".to_owned(),
                socket_source: "netlink".to_owned(),
                duration_us: 0,
            },
            system: None,
            cpus: Vec::new(),
            sysctls: Vec::new(),
            sockets,
            socket_counts: Vec::new(),
            tcp_counters: Vec::new(),
            processes: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn tallies_by_port_peer_and_state_with_ties_broken_by_name() {
        let summary = summarize(&records(vec![
            socket("ESTABLISHED", 80, ("10.0.0.9", 5000), "worker"),
            socket("ESTABLISHED", 80, ("10.0.0.8", 5001), "nginx"),
            socket("ESTABLISHED", 80, ("10.0.0.9", 5002), "nginx"),
            socket("ESTABLISHED", 80, ("10.0.0.9", 5003), "worker"),
            socket("CLOSE_WAIT", 80, ("10.0.0.9", 5004), ""),
            socket("LISTEN", 80, ("0.0.0.0", 0), "nginx"),
            socket("TIME_WAIT", 41000, ("10.0.0.9", 5432), ""),
            socket("TIME_WAIT", 41001, ("10.0.0.9", 5432), ""),
        ]));
        let states: Vec<(&str, u64)> =
            summary.by_state.iter().map(|s| (s.state.as_str(), s.count)).collect();
        assert_eq!(
            states,
            [("ESTABLISHED", 4), ("TIME_WAIT", 2), ("CLOSE_WAIT", 1), ("LISTEN", 1)]
        );
        let ports: Vec<(u16, &str, u64, Option<&str>)> = summary
            .by_local_port
            .iter()
            .map(|p| (p.local_port, p.state.as_str(), p.count, p.process.as_deref()))
            .collect();
        assert_eq!(
            ports,
            [
                (80, "ESTABLISHED", 4, Some("nginx")), // 2 nginx, 2 worker: the first name
                (80, "CLOSE_WAIT", 1, None),
                (80, "LISTEN", 1, Some("nginx")),
                (41000, "TIME_WAIT", 1, None),
                (41001, "TIME_WAIT", 1, None),
            ]
        );
        let remotes: Vec<(&str, u16, &str, u64)> = summary
            .by_remote
            .iter()
            .take(3)
            .map(|r| (r.remote_ip.as_str(), r.remote_port, r.state.as_str(), r.count))
            .collect();
        assert_eq!(
            remotes,
            [
                ("10.0.0.9", 5432, "TIME_WAIT", 2),
                ("10.0.0.8", 5001, "ESTABLISHED", 1),
                ("10.0.0.9", 5000, "ESTABLISHED", 1),
            ]
        );
        assert_eq!(summary.by_remote.len(), 6, "LISTEN sockets have no peer");
        assert_eq!((summary.time_wait, summary.close_wait, summary.syn_recv), (2, 1, 0));
    }

    fn counter(name: &str, value: i64, rate_per_s: Option<f64>) -> TcpCounterRecord {
        TcpCounterRecord { snap_id: 0, name: name.to_owned(), value, rate_per_s }
    }

    fn system(cpu_usage_pct: f64, cpu_max_pct: f64, load1: f64) -> SystemRecord {
        SystemRecord {
            snap_id: 0,
            load1,
            load5: 0.0,
            load15: 0.0,
            cpu_count: 2,
            cpu_usage_pct: Some(cpu_usage_pct),
            cpu_max_pct: Some(cpu_max_pct),
            mem_total_bytes: 0,
            mem_available_bytes: 0,
            mem_used_bytes: 0,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
        }
    }

    #[test]
    fn a_series_reports_peaks_and_counters_that_moved() {
        let mut first = records(vec![socket("CLOSE_WAIT", 80, ("10.0.0.9", 1), "")]);
        first.snapshot.ts_ns = 1_000_000_000;
        first.system = Some(system(10.0, 30.0, 4.0));
        first.tcp_counters = vec![
            counter("TcpExt.ListenOverflows", 5, None),
            counter("Tcp.CurrEstab", 9, None),
            counter("Tcp.OutRsts", 1, None),
        ];
        let mut second = records(vec![
            socket("CLOSE_WAIT", 80, ("10.0.0.9", 1), ""),
            socket("CLOSE_WAIT", 80, ("10.0.0.9", 2), ""),
        ]);
        second.snapshot.ts_ns = 3_000_000_000;
        second.system = Some(system(25.0, 45.0, 6.5));
        second.tcp_counters = vec![
            counter("TcpExt.ListenOverflows", 45, Some(20.0)),
            counter("Tcp.CurrEstab", 7, None),
            counter("Tcp.OutRsts", 1, Some(0.0)),
        ];
        let mut third = records(Vec::new());
        third.snapshot.ts_ns = 5_000_000_000;
        third.system = Some(system(5.0, 9.0, 5.0));
        third.tcp_counters = vec![
            counter("TcpExt.ListenOverflows", 49, Some(2.0)),
            counter("Tcp.CurrEstab", 7, None),
            counter("Tcp.OutRsts", 1, Some(0.0)),
        ];
        let summary = summarize_series(&[first, second, third]);
        assert_eq!((summary.snapshots, summary.duration_s), (3, 4.0));
        assert_eq!((summary.cpu_peak_pct, summary.cpu_peak_single_pct), (Some(25.0), Some(45.0)));
        assert_eq!((summary.load1_max, summary.load1_last), (Some(6.5), Some(5.0)));
        assert_eq!(summary.max_by_state, [StateCount { state: "CLOSE_WAIT".to_owned(), count: 2 }]);
        let moved: Vec<(&str, i64, Option<f64>, Option<f64>)> = summary
            .moved_counters
            .iter()
            .map(|c| (c.name.as_str(), c.delta, c.rate_per_s, c.max_rate_per_s))
            .collect();
        assert_eq!(
            moved,
            [
                ("TcpExt.ListenOverflows", 44, Some(11.0), Some(20.0)),
                ("Tcp.CurrEstab", -2, None, None)
            ]
        );
    }
}
