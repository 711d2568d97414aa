//! Kernel counters that explain a connection problem: /proc/net/netstat (TcpExt), /proc/net/snmp
//! (Tcp), /proc/net/sockstat{,6}, conntrack count/max and fs.file-nr.
//!
//! Values are read as they are; turning running totals into per-second rates needs two snapshots
//! and happens in [`with_rates`].

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Result, SnapError};
use crate::proc_root::ProcRoot;
use crate::records::TcpCounterRecord;

/// Groups kept from the `Group: names` / `Group: values` line pairs of netstat and snmp.
const PAIRED_GROUPS: &[&str] = &["TcpExt", "Tcp"];

/// One counter by its `<group>.<name>` (e.g. `TcpExt.ListenOverflows`), read the way a snapshot
/// reads it; `Ok(None)` when this kernel does not have it. For callers that watch a single counter
/// (a playbook guard) without taking a whole snapshot.
pub fn read_one(root: &ProcRoot, name: &str) -> Result<Option<i64>> {
    let mut ignored_warnings = Vec::new();
    Ok(read(root, &mut ignored_warnings)?.into_iter().find(|c| c.name == name).map(|c| c.value))
}

/// Reads every counter; files the kernel does not have (no IPv6, no conntrack) are skipped.
pub(crate) fn read(root: &ProcRoot, warnings: &mut Vec<String>) -> Result<Vec<TcpCounterRecord>> {
    let mut counters = Vec::new();
    for file in ["net/netstat", "net/snmp"] {
        if let Some(text) = root.read_optional(file)? {
            parse_paired(&text, file, &mut counters, warnings);
        }
    }
    for (file, prefix) in [("net/sockstat", "sockstat"), ("net/sockstat6", "sockstat6")] {
        if let Some(text) = root.read_optional(file)? {
            parse_sockstat(&text, prefix, &mut counters);
        }
    }
    for (file, name) in [
        ("sys/net/netfilter/nf_conntrack_count", "conntrack.count"),
        ("sys/net/netfilter/nf_conntrack_max", "conntrack.max"),
    ] {
        if let Some(text) = root.read_optional(file)? {
            match text.trim().parse() {
                Ok(value) => counters.push(counter(name, value)),
                Err(_) => warnings.push(format!("{file}:1: '{}' is not a number", text.trim())),
            }
        }
    }
    if let Some(text) = root.read_optional("sys/fs/file-nr")? {
        let values: Vec<&str> = text.split_whitespace().collect();
        for (name, value) in
            ["file-nr.allocated", "file-nr.unused", "file-nr.max"].iter().zip(values)
        {
            match value.parse() {
                Ok(value) => counters.push(counter(name, value)),
                Err(_) => warnings.push(format!("sys/fs/file-nr:1: '{value}' is not a number")),
            }
        }
    }
    if counters.is_empty() {
        return Err(SnapError::Parse {
            path: root.path("net/snmp"),
            line: 0,
            message: "no counters found (is this a /proc tree?)".to_owned(),
        });
    }
    Ok(counters)
}

fn counter(name: &str, value: i64) -> TcpCounterRecord {
    TcpCounterRecord { snap_id: 0, name: name.to_owned(), value, rate_per_s: None }
}

/// `TcpExt: SyncookiesSent ListenOverflows ...` followed by `TcpExt: 0 12 ...`.
fn parse_paired(
    text: &str,
    file: &str,
    counters: &mut Vec<TcpCounterRecord>,
    warnings: &mut Vec<String>,
) {
    let lines: Vec<&str> = text.lines().collect();
    let mut index = 0;
    while index + 1 < lines.len() {
        let (Some((group, names)), Some((value_group, values))) =
            (lines[index].split_once(':'), lines[index + 1].split_once(':'))
        else {
            index += 1;
            continue;
        };
        if group != value_group {
            index += 1;
            continue;
        }
        index += 2;
        if !PAIRED_GROUPS.contains(&group) {
            continue;
        }
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            warnings.push(format!(
                "{file}:{}: {} names but {} values for {group}",
                index,
                names.len(),
                values.len()
            ));
        }
        for (name, value) in names.iter().zip(values) {
            match value.parse::<i64>() {
                Ok(value) => counters.push(counter(&format!("{group}.{name}"), value)),
                Err(_) => warnings
                    .push(format!("{file}:{index}: {group}.{name} = '{value}' is not a number")),
            }
        }
    }
}

/// `TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1` -> `sockstat.TCP.inuse` = 5, ...
fn parse_sockstat(text: &str, prefix: &str, counters: &mut Vec<TcpCounterRecord>) {
    for line in text.lines() {
        let Some((group, rest)) = line.split_once(':') else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        for pair in words.chunks_exact(2) {
            if let Ok(value) = pair[1].parse() {
                counters.push(counter(&format!("{prefix}.{group}.{}", pair[0]), value));
            }
        }
    }
}

/// True for values that are a level rather than a running total: they get no rate.
pub fn is_gauge(name: &str) -> bool {
    name.starts_with("sockstat")
        || name.starts_with("conntrack.")
        || name.starts_with("file-nr.")
        || matches!(
            name,
            "Tcp.CurrEstab" | "Tcp.RtoAlgorithm" | "Tcp.RtoMin" | "Tcp.RtoMax" | "Tcp.MaxConn"
        )
}

/// Sets `rate_per_s` on running totals from the change since `previous`, taken `elapsed` earlier.
/// A counter that went backwards (reset, namespace change) gets no rate.
pub(crate) fn with_rates(
    current: &mut [TcpCounterRecord],
    previous: &[TcpCounterRecord],
    elapsed: Duration,
) {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return;
    }
    let before: HashMap<&str, i64> = previous.iter().map(|c| (c.name.as_str(), c.value)).collect();
    for counter in current.iter_mut() {
        if is_gauge(&counter.name) {
            continue;
        }
        counter.rate_per_s = before
            .get(counter.name.as_str())
            .filter(|&&old| old <= counter.value)
            .map(|&old| (counter.value - old) as f64 / seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_pairs_keep_tcp_groups_only() {
        let text = "\
TcpExt: SyncookiesSent ListenOverflows ListenDrops
TcpExt: 0 12 12
IpExt: InNoRoutes
IpExt: 0
Tcp: RtoAlgorithm MaxConn CurrEstab
Tcp: 1 -1 7
";
        let mut counters = Vec::new();
        let mut warnings = Vec::new();
        parse_paired(text, "net/netstat", &mut counters, &mut warnings);
        let got: Vec<(&str, i64)> = counters.iter().map(|c| (c.name.as_str(), c.value)).collect();
        assert_eq!(
            got,
            vec![
                ("TcpExt.SyncookiesSent", 0),
                ("TcpExt.ListenOverflows", 12),
                ("TcpExt.ListenDrops", 12),
                ("Tcp.RtoAlgorithm", 1),
                ("Tcp.MaxConn", -1),
                ("Tcp.CurrEstab", 7)
            ]
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn mismatched_pairs_warn() {
        let mut counters = Vec::new();
        let mut warnings = Vec::new();
        parse_paired("Tcp: A B\nTcp: 1\n", "net/snmp", &mut counters, &mut warnings);
        assert_eq!(counters.len(), 1);
        assert_eq!(warnings, vec!["net/snmp:2: 2 names but 1 values for Tcp".to_owned()]);
    }

    #[test]
    fn sockstat_words() {
        let mut counters = Vec::new();
        parse_sockstat(
            "sockets: used 300\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1\n",
            "sockstat",
            &mut counters,
        );
        let names: Vec<&str> = counters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sockstat.sockets.used",
                "sockstat.TCP.inuse",
                "sockstat.TCP.orphan",
                "sockstat.TCP.tw",
                "sockstat.TCP.alloc",
                "sockstat.TCP.mem"
            ]
        );
    }

    #[test]
    fn rates_for_totals_not_gauges() {
        let previous = vec![
            counter("Tcp.ActiveOpens", 100),
            counter("Tcp.CurrEstab", 5),
            counter("Tcp.OutRsts", 9),
        ];
        let mut current = vec![
            counter("Tcp.ActiveOpens", 300),
            counter("Tcp.CurrEstab", 50),
            counter("Tcp.OutRsts", 3),
        ];
        with_rates(&mut current, &previous, Duration::from_secs(2));
        let rates: Vec<Option<f64>> = current.iter().map(|c| c.rate_per_s).collect();
        assert_eq!(rates, vec![Some(100.0), None, None]);
    }
}
