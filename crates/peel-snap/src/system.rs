//! CPU, load, memory and the processes an incident is about (gunicorn, uwsgi, node, postgres),
//! through `sysinfo`, on the live host. A copied /proc is read from its files (`proc_system`).
//!
//! CPU use is a difference between two readings, so a probe keeps its `sysinfo::System` between
//! snapshots and waits out sysinfo's minimum interval before the first reading it reports.

use std::time::Instant;

use sysinfo::{
    CpuRefreshKind, MemoryRefreshKind, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind,
};

use crate::owners::SocketOwners;
use crate::records::{CpuRecord, ProcessRecord, SystemRecord};

/// Which processes to report: by pid, or by name (`comm`, or the program in the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessMatch {
    Pid(u32),
    Name(String),
}

impl ProcessMatch {
    /// A number is a pid, anything else a name.
    pub fn parse(text: &str) -> Self {
        match text.parse() {
            Ok(pid) => ProcessMatch::Pid(pid),
            Err(_) => ProcessMatch::Name(text.to_owned()),
        }
    }

    fn matches(&self, pid: u32, process: &sysinfo::Process) -> bool {
        let args: Vec<String> =
            process.cmd().iter().take(2).map(|arg| arg.to_string_lossy().into_owned()).collect();
        self.matches_command(
            pid,
            &process.name().to_string_lossy(),
            args.iter().map(String::as_str),
        )
    }

    /// Matches a process by pid, or by its name or the program of its first two arguments.
    pub(crate) fn matches_command<'a>(
        &self,
        pid: u32,
        name: &str,
        args: impl Iterator<Item = &'a str>,
    ) -> bool {
        match self {
            ProcessMatch::Pid(wanted) => *wanted == pid,
            ProcessMatch::Name(wanted) => {
                if name == wanted.as_str() {
                    return true;
                }
                // `python3 /usr/bin/gunicorn app:wsgi`, `gunicorn: worker [app]`, `uwsgi --ini ...`
                args.take(2).any(|arg| {
                    let program = arg.split_whitespace().next().unwrap_or("");
                    let base = program.rsplit('/').next().unwrap_or(program);
                    base == wanted.as_str() || base.strip_suffix(':') == Some(wanted.as_str())
                })
            }
        }
    }
}

/// A `sysinfo::System` kept between snapshots.
#[derive(Debug)]
pub(crate) struct SystemProbe {
    system: System,
    last_refresh: Instant,
}

impl SystemProbe {
    /// Takes the first CPU and process readings that later usage figures are measured against.
    pub(crate) fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        system.refresh_processes_specifics(ProcessesToUpdate::All, true, process_refresh());
        SystemProbe { system, last_refresh: Instant::now() }
    }

    /// CPU use since the previous call (or since `new`), load, memory, and the matched processes.
    pub(crate) fn sample(
        &mut self,
        snap_id: u64,
        matches: &[ProcessMatch],
        owners: &SocketOwners,
    ) -> (SystemRecord, Vec<CpuRecord>, Vec<ProcessRecord>) {
        let since = self.last_refresh.elapsed();
        if since < sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL - since);
        }
        self.system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        self.system.refresh_memory_specifics(MemoryRefreshKind::everything());
        if !matches.is_empty() {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::All,
                true,
                process_refresh(),
            );
        }
        self.last_refresh = Instant::now();

        let cpus: Vec<CpuRecord> = self
            .system
            .cpus()
            .iter()
            .enumerate()
            .map(|(index, cpu)| CpuRecord {
                snap_id,
                cpu: u32::try_from(index).unwrap_or(u32::MAX),
                usage_pct: Some(f64::from(cpu.cpu_usage())),
            })
            .collect();
        let load = System::load_average();
        let system = SystemRecord {
            snap_id,
            load1: load.one,
            load5: load.five,
            load15: load.fifteen,
            cpu_count: u32::try_from(cpus.len()).unwrap_or(u32::MAX),
            cpu_usage_pct: Some(f64::from(self.system.global_cpu_usage())),
            cpu_max_pct: cpus.iter().filter_map(|cpu| cpu.usage_pct).reduce(f64::max),
            mem_total_bytes: self.system.total_memory(),
            mem_available_bytes: self.system.available_memory(),
            mem_used_bytes: self.system.used_memory(),
            swap_total_bytes: self.system.total_swap(),
            swap_used_bytes: self.system.used_swap(),
        };
        let processes = self.processes(snap_id, matches, owners);
        (system, cpus, processes)
    }

    fn processes(
        &self,
        snap_id: u64,
        matches: &[ProcessMatch],
        owners: &SocketOwners,
    ) -> Vec<ProcessRecord> {
        let all = self.system.processes();
        let mut records: Vec<ProcessRecord> = all
            .iter()
            .filter(|(_, process)| process.thread_kind().is_none())
            .filter(|(pid, process)| matches.iter().any(|m| m.matches(pid.as_u32(), process)))
            .map(|(pid, process)| {
                let children = all
                    .values()
                    .filter(|child| child.thread_kind().is_none() && child.parent() == Some(*pid))
                    .count();
                ProcessRecord {
                    snap_id,
                    pid: pid.as_u32(),
                    name: process.name().to_string_lossy().into_owned(),
                    cmdline: process
                        .cmd()
                        .iter()
                        .map(|arg| arg.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(" "),
                    cpu_pct: Some(f64::from(process.cpu_usage())),
                    rss_bytes: process.memory(),
                    threads: process
                        .tasks()
                        .map_or(1, |tasks| u32::try_from(tasks.len().max(1)).unwrap_or(u32::MAX)),
                    open_fds: process.open_files().and_then(|n| u32::try_from(n).ok()),
                    fd_limit: process.open_files_limit().map(|n| n as u64),
                    sockets: Some(owners.socket_count(pid.as_u32()).unwrap_or(0)),
                    children: u32::try_from(children).unwrap_or(u32::MAX),
                }
            })
            .collect();
        records.sort_by_key(|record| record.pid);
        records
    }
}

fn process_refresh() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .with_cpu()
        .with_memory()
        .with_cmd(UpdateKind::OnlyIfNotSet)
        .with_tasks()
}
