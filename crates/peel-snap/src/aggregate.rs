//! The first questions of an incident, answered from snapshot records: which ports and peers hold
//! the sockets and in what state, how many TIME_WAIT/CLOSE_WAIT/SYN_RECV, how close each
//! destination is to running out of ephemeral ports, which accept queues are near their backlog,
//! and over a series which counters moved and how high CPU peaked.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::counters::is_gauge;
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

/// Sockets on a (port, state) and how many of them each process owns.
type PortTally<'a> = (u64, HashMap<&'a str, u64>);

/// Aggregates one snapshot. Lists are sorted by count (largest first), then by key.
pub fn summarize(records: &SnapshotRecords) -> SnapshotSummary {
    let sockets = &records.sockets;
    let mut states: BTreeMap<&str, u64> = BTreeMap::new();
    let mut local: HashMap<(u16, &str), PortTally<'_>> = HashMap::new();
    let mut remote: HashMap<(&str, u16, &str), u64> = HashMap::new();
    for socket in sockets {
        *states.entry(&socket.state).or_default() += 1;
        let entry = local.entry((socket.local_port, &socket.state)).or_default();
        entry.0 += 1;
        if let Some(process) = &socket.process {
            *entry.1.entry(process).or_default() += 1;
        }
        if socket.state != "LISTEN" {
            *remote.entry((&socket.remote_ip, socket.remote_port, &socket.state)).or_default() += 1;
        }
    }
    let count_of = |state: &str| states.get(state).copied().unwrap_or(0);

    let mut by_state: Vec<StateCount> = states
        .iter()
        .map(|(state, count)| StateCount { state: (*state).to_owned(), count: *count })
        .collect();
    by_state.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.state.cmp(&b.state)));

    let mut by_local_port: Vec<LocalPortCount> = local
        .into_iter()
        .map(|((port, state), (count, processes))| LocalPortCount {
            local_port: port,
            state: state.to_owned(),
            count,
            process: processes
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(p, _)| p.to_owned()),
        })
        .collect();
    by_local_port.sort_by(|a, b| {
        b.count.cmp(&a.count).then_with(|| (a.local_port, &a.state).cmp(&(b.local_port, &b.state)))
    });

    let mut by_remote: Vec<RemoteCount> = remote
        .into_iter()
        .map(|((ip, port, state), count)| RemoteCount {
            remote_ip: ip.to_owned(),
            remote_port: port,
            state: state.to_owned(),
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
    let mut per_destination: HashMap<(&str, u16), u64> = HashMap::new();
    for socket in sockets {
        let ephemeral = (low..=high).contains(&socket.local_port);
        if ephemeral && socket.state != "LISTEN" && socket.remote_port != 0 {
            *per_destination.entry((&socket.remote_ip, socket.remote_port)).or_default() += 1;
        }
    }
    let mut uses: Vec<EphemeralUse> = per_destination
        .into_iter()
        .map(|((ip, port), in_use)| EphemeralUse {
            remote_ip: ip.to_owned(),
            remote_port: port,
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
    let max_of = |values: Vec<f64>| values.into_iter().reduce(f64::max);
    let systems: Vec<_> = series.iter().filter_map(|s| s.system.as_ref()).collect();
    let duration_s = match (series.first(), series.last()) {
        (Some(first), Some(last)) => (last.snapshot.ts_ns - first.snapshot.ts_ns) as f64 / 1e9,
        _ => 0.0,
    };

    let mut max_by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for snapshot in series {
        let mut states: HashMap<&str, u64> = HashMap::new();
        for socket in &snapshot.sockets {
            *states.entry(&socket.state).or_default() += 1;
        }
        for (state, count) in states {
            let max = max_by_state.entry(state).or_default();
            *max = (*max).max(count);
        }
    }
    let mut max_by_state: Vec<StateCount> = max_by_state
        .into_iter()
        .map(|(state, count)| StateCount { state: state.to_owned(), count })
        .collect();
    max_by_state.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.state.cmp(&b.state)));

    SeriesSummary {
        snapshots: series.len() as u64,
        duration_s,
        cpu_peak_pct: max_of(systems.iter().filter_map(|s| s.cpu_usage_pct).collect()),
        cpu_peak_single_pct: max_of(systems.iter().filter_map(|s| s.cpu_max_pct).collect()),
        load1_max: max_of(systems.iter().map(|s| s.load1).collect()),
        load1_last: systems.last().map(|s| s.load1),
        max_by_state,
        moved_counters: moved_counters(series, duration_s),
    }
}

fn moved_counters(series: &[SnapshotRecords], duration_s: f64) -> Vec<CounterMove> {
    let (Some(first), Some(last)) = (series.first(), series.last()) else { return Vec::new() };
    let before: HashMap<&str, i64> =
        first.tcp_counters.iter().map(|c| (c.name.as_str(), c.value)).collect();
    let mut max_rates: HashMap<&str, f64> = HashMap::new();
    for snapshot in series {
        for counter in &snapshot.tcp_counters {
            if let Some(rate) = counter.rate_per_s {
                let max = max_rates.entry(&counter.name).or_insert(rate);
                *max = max.max(rate);
            }
        }
    }
    let mut moves: Vec<CounterMove> = last
        .tcp_counters
        .iter()
        .filter_map(|counter| {
            let first = *before.get(counter.name.as_str())?;
            let delta = counter.value - first;
            let gauge = is_gauge(&counter.name);
            (delta != 0).then(|| CounterMove {
                name: counter.name.clone(),
                first,
                last: counter.value,
                delta,
                rate_per_s: (!gauge && duration_s > 0.0).then(|| delta as f64 / duration_s),
                max_rate_per_s: max_rates.get(counter.name.as_str()).copied(),
            })
        })
        .collect();
    moves.sort_by(|a, b| {
        b.delta.unsigned_abs().cmp(&a.delta.unsigned_abs()).then_with(|| a.name.cmp(&b.name))
    });
    moves
}
