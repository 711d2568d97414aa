//! Taking snapshots: one ([`take`]), or a series every `every` for `total` ([`Sampler::run`],
//! [`Sampler::spawn`] for a playbook stage running in the background). A series turns counters
//! into per-second rates and measures CPU between snapshots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Result, SnapError};
use crate::owners::OwnerCache;
use crate::proc_root::ProcRoot;
use crate::proc_system::FilesProbe;
use crate::records::{SnapshotRecord, SnapshotRecords, TcpCounterRecord};
use crate::system::{ProcessMatch, SystemProbe};
use crate::{counters, proc_net, sock_diag, sysctl};

/// How to read the TCP socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketSource {
    /// Netlink on the live host, falling back to /proc/net/tcp (with a warning) when it fails;
    /// always /proc/net/tcp under a copied proc root.
    #[default]
    Auto,
    /// Netlink sock_diag only; an error if it is unavailable.
    Netlink,
    /// /proc/net/tcp{,6} only.
    Proc,
}

/// What a snapshot reads.
#[derive(Debug, Clone, Default)]
pub struct SnapOptions {
    pub proc_root: ProcRoot,
    /// Sysctl keys or globs read in addition to the curated incident set.
    pub sysctl_patterns: Vec<String>,
    /// Processes to report (CPU, memory, fds, sockets, children).
    pub processes: Vec<ProcessMatch>,
    pub socket_source: SocketSource,
}

/// Takes snapshots, remembering what rates and CPU use are measured against, and which process
/// holds which socket: after the first snapshot (a full walk of every /proc/<pid>/fd), a snapshot
/// lists each process's descriptors and reads the links of only those that may have changed, with
/// the owners a full walk would find (the `owners` module has the rules, and the one contrived
/// case they cannot see).
#[derive(Debug)]
pub struct Sampler {
    options: SnapOptions,
    next_snap_id: u64,
    previous_counters: Option<(Instant, Vec<TcpCounterRecord>)>,
    probe: Probe,
    /// Socket owners learned by earlier snapshots: later ones read only what may have changed.
    owners: OwnerCache,
    /// TCP sockets in the previous snapshot, to size the next one's vector.
    last_socket_count: usize,
}

/// Where CPU, load, memory and processes come from.
#[derive(Debug)]
enum Probe {
    /// `sysinfo` on the live host.
    Live(Box<SystemProbe>),
    /// The files of a copied /proc.
    Files(FilesProbe),
}

/// One snapshot of the host (or of a copied /proc).
pub fn take(options: SnapOptions) -> Result<SnapshotRecords> {
    Sampler::new(options).snapshot()
}

impl Sampler {
    /// A sampler whose first snapshot gets `snap_id` 0. On the live host the CPU baseline is taken
    /// now, so even the first snapshot reports CPU use (over at least 200 ms).
    pub fn new(options: SnapOptions) -> Self {
        let probe = if options.proc_root.is_live() {
            Probe::Live(Box::new(SystemProbe::new()))
        } else {
            Probe::Files(FilesProbe::default())
        };
        Sampler {
            options,
            next_snap_id: 0,
            previous_counters: None,
            probe,
            owners: OwnerCache::default(),
            last_socket_count: 0,
        }
    }

    /// Starts numbering at `snap_id` (to continue a series already stored in a database).
    pub fn with_first_snap_id(mut self, snap_id: u64) -> Self {
        self.next_snap_id = snap_id;
        self
    }

    /// Takes the next snapshot of the series.
    pub fn snapshot(&mut self) -> Result<SnapshotRecords> {
        let started = Instant::now();
        let ts_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let snap_id = self.next_snap_id;
        let root = &self.options.proc_root;
        let mut warnings = Vec::new();

        let sysctls = sysctl::read_incident_set(root, &self.options.sysctl_patterns)?;
        let (mut sockets, socket_source) = read_tcp_sockets(
            root,
            self.options.socket_source,
            self.last_socket_count,
            &mut warnings,
        )?;
        self.last_socket_count = sockets.len();
        let owners = self.owners.refresh(root, &mut sockets);
        for socket in &mut sockets {
            socket.snap_id = snap_id;
        }
        let mut socket_counts = proc_net::read_socket_counts(root, &mut warnings)?;
        socket_counts.iter_mut().for_each(|count| count.snap_id = snap_id);

        let counters_at = Instant::now();
        let mut tcp_counters = counters::read(root, &mut warnings)?;
        tcp_counters.iter_mut().for_each(|counter| counter.snap_id = snap_id);
        if let Some((previous_at, previous)) = &self.previous_counters {
            counters::with_rates(
                &mut tcp_counters,
                previous,
                counters_at.duration_since(*previous_at),
            );
        }
        self.previous_counters = Some((counters_at, tcp_counters.clone()));

        let (system, cpus, processes) = match &mut self.probe {
            Probe::Live(probe) => {
                let (system, cpus, processes) =
                    probe.sample(snap_id, &self.options.processes, &owners);
                (Some(system), cpus, processes)
            }
            Probe::Files(probe) => {
                probe.sample(root, snap_id, &self.options.processes, &owners, &mut warnings)
            }
        };

        self.next_snap_id += 1;
        Ok(SnapshotRecords {
            snapshot: SnapshotRecord {
                snap_id,
                ts_ns,
                host: hostname(root),
                proc_root: root.dir().display().to_string(),
                socket_source: socket_source.to_owned(),
                duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            },
            system,
            cpus,
            sysctls: sysctl::to_records(snap_id, &sysctls),
            sockets,
            socket_counts,
            tcp_counters,
            processes,
            warnings,
        })
    }

    /// Takes a snapshot now and then every `every` until `total` has passed (both ends included:
    /// 60 s every 1 s is 61 snapshots, 60 rate intervals) or `stop` is set. Each snapshot is handed
    /// to `on_snapshot` as it is taken (to store it, print progress); an error from it ends the
    /// series. Returns how many snapshots were taken.
    pub fn run<E: From<SnapError>>(
        &mut self,
        every: Duration,
        total: Duration,
        stop: &AtomicBool,
        mut on_snapshot: impl FnMut(SnapshotRecords) -> Result<(), E>,
    ) -> Result<u64, E> {
        let every = every.max(Duration::from_millis(10));
        let start = Instant::now();
        let mut taken = 0u64;
        loop {
            on_snapshot(self.snapshot()?)?;
            taken += 1;
            let next = every.saturating_mul(u32::try_from(taken).unwrap_or(u32::MAX));
            if next > total || !sleep_until(start + next, stop) {
                return Ok(taken);
            }
        }
    }

    /// Runs [`Sampler::run`] on a thread, collecting the snapshots; for a playbook stage that
    /// samples in the background. Stop it early with [`SamplerHandle::stop`].
    pub fn spawn(self, every: Duration, total: Duration) -> SamplerHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let mut sampler = self;
        let thread = std::thread::spawn(move || {
            let mut series = Vec::new();
            sampler.run(every, total, &flag, |snapshot| {
                series.push(snapshot);
                Ok::<(), SnapError>(())
            })?;
            Ok(series)
        });
        SamplerHandle { stop, thread }
    }
}

/// A series being taken on another thread.
#[derive(Debug)]
pub struct SamplerHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<SnapshotRecords>>>,
}

impl SamplerHandle {
    /// Ends the series after the snapshot in progress and returns everything taken.
    pub fn stop(self) -> Result<Vec<SnapshotRecords>> {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits until the series has run its full length.
    pub fn join(self) -> Result<Vec<SnapshotRecords>> {
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => Err(SnapError::SamplerPanicked),
        }
    }
}

/// Sleeps until `deadline` in short steps; false if `stop` was set meanwhile.
fn sleep_until(deadline: Instant, stop: &AtomicBool) -> bool {
    const STEP: Duration = Duration::from_millis(50);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(STEP));
    }
}

fn read_tcp_sockets(
    root: &ProcRoot,
    source: SocketSource,
    expected: usize,
    warnings: &mut Vec<String>,
) -> Result<(Vec<crate::records::SocketRecord>, &'static str)> {
    let use_netlink = match source {
        SocketSource::Proc => false,
        SocketSource::Netlink => true,
        SocketSource::Auto => root.is_live(),
    };
    if use_netlink {
        match sock_diag::dump_tcp(expected) {
            Ok(sockets) => return Ok((sockets, "netlink")),
            Err(err) if source == SocketSource::Netlink => return Err(SnapError::Netlink(err)),
            Err(err) => warnings
                .push(format!("netlink sock_diag failed ({err}); read /proc/net/tcp instead")),
        }
    }
    Ok((proc_net::read_tcp(root, warnings)?, "proc"))
}

fn hostname(root: &ProcRoot) -> String {
    std::fs::read_to_string(root.path("sys/kernel/hostname"))
        .map_or_else(|_| String::new(), |name| name.trim().to_owned())
}
