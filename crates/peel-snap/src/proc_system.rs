//! CPU, load, memory and the matched processes read from the files of a copied /proc
//! (`--proc-root`): `stat`, `loadavg`, `meminfo`, `uptime`, and per process `<pid>/stat`,
//! `status`, `limits`, `cmdline`, `comm` and `fd/` (symbolic links, as `tar` keeps them). The live
//! host is read through `sysinfo` instead (`system`).
//!
//! Usage figures are differences between two readings: CPU percentages need a second snapshot of a
//! tree whose files changed (`uptime` moved); a single copy reports them as `None`.

use std::collections::HashMap;

use crate::owners::SocketOwners;
use crate::proc_root::ProcRoot;
use crate::records::{CpuRecord, ProcessRecord, SystemRecord};
use crate::system::ProcessMatch;

/// Clock ticks per second of the times in `stat` files (USER_HZ, 100 on every Linux architecture
/// procfs reports to user space).
const TICKS_PER_S: f64 = 100.0;

/// Busy and total ticks of one CPU line of `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct CpuTicks {
    busy: u64,
    total: u64,
}

/// One process as its files describe it.
#[derive(Debug, Clone, PartialEq)]
struct ProcessFiles {
    pid: u32,
    name: String,
    args: Vec<String>,
    ppid: u32,
    cpu_ticks: u64,
    start_time: u64,
    threads: u32,
    rss_bytes: u64,
}

/// Readings of the previous snapshot that usage is measured against.
#[derive(Debug, Default)]
pub(crate) struct FilesProbe {
    previous_uptime_s: Option<f64>,
    previous_cpus: Vec<CpuTicks>,
    previous_total: Option<CpuTicks>,
    /// pid -> (start time, CPU ticks).
    previous_processes: HashMap<u32, (u64, u64)>,
}

impl FilesProbe {
    /// System figures (`None`, with a warning, when the tree lacks `loadavg`, `meminfo` or
    /// `stat`), per-CPU usage, and the processes `matches` selects.
    pub(crate) fn sample(
        &mut self,
        root: &ProcRoot,
        snap_id: u64,
        matches: &[ProcessMatch],
        owners: &SocketOwners,
        warnings: &mut Vec<String>,
    ) -> (Option<SystemRecord>, Vec<CpuRecord>, Vec<ProcessRecord>) {
        let uptime_s = read(root, "uptime")
            .and_then(|text| text.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()));
        let elapsed_s = match (self.previous_uptime_s, uptime_s) {
            (Some(before), Some(now)) if now > before => Some(now - before),
            _ => None,
        };
        self.previous_uptime_s = uptime_s;
        let (system, cpus) = self.system(root, snap_id, elapsed_s.is_some(), warnings);
        let processes = if matches.is_empty() {
            Vec::new()
        } else {
            self.processes(root, snap_id, matches, owners, elapsed_s)
        };
        (system, cpus, processes)
    }

    fn system(
        &mut self,
        root: &ProcRoot,
        snap_id: u64,
        moved: bool,
        warnings: &mut Vec<String>,
    ) -> (Option<SystemRecord>, Vec<CpuRecord>) {
        let (Some(loadavg), Some(meminfo), Some(stat)) =
            (read(root, "loadavg"), read(root, "meminfo"), read(root, "stat"))
        else {
            warnings.push(format!(
                "no loadavg, meminfo or stat in {}: CPU, load and memory are not available",
                root.dir().display()
            ));
            return (None, Vec::new());
        };
        let load: Vec<f64> =
            loadavg.split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect();
        let memory = parse_meminfo(&meminfo);
        let kib = |key: &str| memory.get(key).copied().unwrap_or(0) * 1024;
        let (total, per_cpu) = parse_cpu_ticks(&stat);
        let usage = |now: CpuTicks, before: Option<&CpuTicks>| {
            let before = before.filter(|_| moved)?;
            let total = now.total.checked_sub(before.total).filter(|&t| t > 0)?;
            let busy = now.busy.saturating_sub(before.busy);
            Some((busy as f64 * 100.0 / total as f64).min(100.0))
        };
        let cpus: Vec<CpuRecord> = per_cpu
            .iter()
            .enumerate()
            .map(|(index, ticks)| CpuRecord {
                snap_id,
                cpu: u32::try_from(index).unwrap_or(u32::MAX),
                usage_pct: usage(*ticks, self.previous_cpus.get(index)),
            })
            .collect();
        let cpu_usage_pct = total.and_then(|now| usage(now, self.previous_total.as_ref()));
        self.previous_cpus = per_cpu;
        self.previous_total = total;
        let mem_total_bytes = kib("MemTotal");
        let mem_available_bytes = kib("MemAvailable");
        let system = SystemRecord {
            snap_id,
            load1: load.first().copied().unwrap_or(0.0),
            load5: load.get(1).copied().unwrap_or(0.0),
            load15: load.get(2).copied().unwrap_or(0.0),
            cpu_count: u32::try_from(cpus.len()).unwrap_or(u32::MAX),
            cpu_usage_pct,
            cpu_max_pct: cpus.iter().filter_map(|cpu| cpu.usage_pct).reduce(f64::max),
            mem_total_bytes,
            mem_available_bytes,
            mem_used_bytes: mem_total_bytes.saturating_sub(mem_available_bytes),
            swap_total_bytes: kib("SwapTotal"),
            swap_used_bytes: kib("SwapTotal").saturating_sub(kib("SwapFree")),
        };
        (Some(system), cpus)
    }

    fn processes(
        &mut self,
        root: &ProcRoot,
        snap_id: u64,
        matches: &[ProcessMatch],
        owners: &SocketOwners,
        elapsed_s: Option<f64>,
    ) -> Vec<ProcessRecord> {
        let all: Vec<ProcessFiles> =
            pids(root).into_iter().filter_map(|pid| process(root, pid)).collect();
        let mut records = Vec::new();
        let mut seen = HashMap::new();
        for process in &all {
            seen.insert(process.pid, (process.start_time, process.cpu_ticks));
            let args = process.args.iter().map(String::as_str);
            if !matches.iter().any(|m| m.matches_command(process.pid, &process.name, args.clone()))
            {
                continue;
            }
            let cpu_pct = self
                .previous_processes
                .get(&process.pid)
                .filter(|(start, _)| *start == process.start_time)
                .zip(elapsed_s)
                .map(|((_, before), elapsed_s)| {
                    process.cpu_ticks.saturating_sub(*before) as f64 / TICKS_PER_S / elapsed_s
                        * 100.0
                });
            let fd_dir = root.dir().join(process.pid.to_string()).join("fd");
            let open_fds = std::fs::read_dir(fd_dir)
                .ok()
                .map(|entries| u32::try_from(entries.count()).unwrap_or(u32::MAX));
            let fd_limit = read(root, &format!("{}/limits", process.pid))
                .and_then(|text| open_files_limit(&text));
            records.push(ProcessRecord {
                snap_id,
                pid: process.pid,
                name: process.name.clone(),
                cmdline: process.args.join(" "),
                cpu_pct,
                rss_bytes: process.rss_bytes,
                threads: process.threads,
                open_fds,
                fd_limit,
                sockets: Some(owners.socket_count(process.pid).unwrap_or(0)),
                children: u32::try_from(all.iter().filter(|p| p.ppid == process.pid).count())
                    .unwrap_or(u32::MAX),
            });
        }
        self.previous_processes = seen;
        records
    }
}

/// `<root>/<relative>`, or `None` if it cannot be read.
fn read(root: &ProcRoot, relative: &str) -> Option<String> {
    std::fs::read_to_string(root.path(relative)).ok()
}

/// Numeric directory names under `root`, sorted.
fn pids(root: &ProcRoot) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir(root.dir())
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// One process from `<pid>/stat` (required), `status`, `comm` and `cmdline`.
fn process(root: &ProcRoot, pid: u32) -> Option<ProcessFiles> {
    let stat = read(root, &format!("{pid}/stat"))?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let stat_name = stat.get(open + 1..close)?;
    // Fields from 3 (state) on: the command name may hold spaces and parentheses.
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3).and_then(|v| v.parse::<u64>().ok());
    let status = read(root, &format!("{pid}/status")).unwrap_or_default();
    let status_value = |key: &str| {
        status.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let name = read(root, &format!("{pid}/comm"))
        .map(|comm| comm.trim_end().to_owned())
        .filter(|comm| !comm.is_empty())
        .unwrap_or_else(|| stat_name.to_owned());
    let args = read(root, &format!("{pid}/cmdline"))
        .map(|text| text.split('\0').filter(|arg| !arg.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    Some(ProcessFiles {
        pid,
        name,
        args,
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_time: field(22).unwrap_or(0),
        threads: status_value("Threads")
            .or_else(|| field(20))
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        // VmRSS is in kB; without status, stat's resident pages at the usual 4 KiB.
        rss_bytes: status_value("VmRSS")
            .map(|kib| kib * 1024)
            .or_else(|| field(24).map(|pages| pages * 4096))
            .unwrap_or(0),
    })
}

/// `Max open files  <soft>  <hard>  files` of a limits file; `None` when unlimited or absent.
fn open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// `meminfo` values in kB by key (`MemTotal` -> 8048576).
fn parse_meminfo(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            Some((key, value.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The `cpu` line and the `cpuN` lines of `stat` as busy and total ticks (idle and iowait are
/// not busy; guest time is already inside user and nice).
fn parse_cpu_ticks(text: &str) -> (Option<CpuTicks>, Vec<CpuTicks>) {
    let mut total = None;
    let mut per_cpu = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(label) = words.next().filter(|label| label.starts_with("cpu")) else { continue };
        let values: Vec<u64> = words.take(8).filter_map(|v| v.parse().ok()).collect();
        if values.len() < 4 {
            continue;
        }
        let all: u64 = values.iter().sum();
        let idle = values[3] + values.get(4).copied().unwrap_or(0);
        let ticks = CpuTicks { busy: all.saturating_sub(idle), total: all };
        if label == "cpu" {
            total = Some(ticks);
        } else {
            per_cpu.push(ticks);
        }
    }
    (total, per_cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lines() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 60 0 30 400 10 0 0 0 0 0\n\
                    cpu1 40 0 20 400 40 0 0 0 0 0\nintr 1 2 3\nctxt 99\n";
        let (total, per_cpu) = parse_cpu_ticks(stat);
        assert_eq!(total, Some(CpuTicks { busy: 150, total: 1000 }));
        assert_eq!(
            per_cpu,
            vec![CpuTicks { busy: 90, total: 500 }, CpuTicks { busy: 60, total: 500 }]
        );
    }

    #[test]
    fn open_files_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(open_files_limit(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(open_files_limit(unlimited), None);
        assert_eq!(open_files_limit("Max processes 10 10 processes\n"), None);
    }

    #[test]
    fn meminfo_values() {
        let memory = parse_meminfo(
            "MemTotal:        8048576 kB\nMemAvailable:    2013144 kB\nHugePages_Total:       0\n",
        );
        assert_eq!(memory.get("MemTotal"), Some(&8_048_576));
        assert_eq!(memory.get("HugePages_Total"), Some(&0));
        assert_eq!(memory.get("SwapTotal"), None);
    }
}
