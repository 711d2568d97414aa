//! Running captures: one thread per interface reading batches with `pcap_dispatch` into a
//! [`RingWriter`], and one supervisor thread enforcing the duration and the disk-space floor.
//!
//! Everything that can fail because of what the user asked (filter, interface, privilege, output
//! directory, disk space) fails in [`Capture::start`] before the first packet; once running, a
//! capture only ends with a [`StopReason`]. Stopping always flushes and closes every file, so what is
//! on disk is readable whatever ended the capture.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::CaptureConfig;
use crate::pcap_file::{FileFormat, RingWriter, TimestampPrecision, WrittenFile};
use crate::{disk, pcap_message, precision, privilege, CaptureError};

/// How long a quiet interface waits in libpcap before the thread looks at its stop flag again.
const READ_TIMEOUT_MS: i32 = 200;
/// How often files are flushed, libpcap's counters read and the disk floor checked.
const TICK: Duration = Duration::from_secs(1);
/// How often the supervisor looks at the clock and the disk.
const SUPERVISOR_POLL: Duration = Duration::from_millis(100);
/// Packets the live tap buffers before it starts counting drops instead of slowing capture down.
const TAP_CAPACITY_PACKETS: usize = 65_536;

/// Why a capture ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// [`CaptureHandle::stop`] was called (Ctrl-C, SIGTERM, end of a playbook stage).
    Requested,
    /// The configured duration passed.
    Duration(Duration),
    /// The configured number of packets was captured.
    PacketLimit(u64),
    /// Free space on the output filesystem fell under the floor.
    DiskFloor { path: PathBuf, free_fraction: f64, min_free_fraction: f64 },
    /// Reading an interface or writing a file failed.
    Failed { interface: String, message: String },
}

impl StopReason {
    /// A stable machine name: `requested`, `duration`, `packet_limit`, `disk_floor` or `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            StopReason::Requested => "requested",
            StopReason::Duration(_) => "duration",
            StopReason::PacketLimit(_) => "packet_limit",
            StopReason::DiskFloor { .. } => "disk_floor",
            StopReason::Failed { .. } => "failed",
        }
    }

    /// True when the capture ended before what was asked for (disk floor, failure).
    pub fn is_early(&self) -> bool {
        matches!(self, StopReason::DiskFloor { .. } | StopReason::Failed { .. })
    }
}

/// libpcap's short name of a link type (`EN10MB`, `LINUX_SLL`), or its number.
pub fn linktype_name(linktype: i32) -> String {
    pcap::Linktype(linktype).get_name().unwrap_or_else(|_| linktype.to_string())
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Requested => f.write_str("stopped on request"),
            StopReason::Duration(duration) => write!(f, "duration of {duration:?} reached"),
            StopReason::PacketLimit(count) => write!(f, "packet limit of {count} reached"),
            StopReason::DiskFloor { path, free_fraction, min_free_fraction } => write!(
                f,
                "stopped early: only {:.1}% free on the filesystem holding {}, under the {:.1}% floor",
                free_fraction * 100.0,
                path.display(),
                min_free_fraction * 100.0
            ),
            StopReason::Failed { interface, message } => {
                write!(f, "capture on '{interface}' failed: {message}")
            }
        }
    }
}

/// A copy of one captured packet for a live analysis.
#[derive(Debug, Clone)]
pub struct TappedPacket {
    /// Index into [`CaptureConfig::interfaces`].
    pub interface_index: u32,
    /// LINKTYPE_* value of the interface (1 Ethernet, 113 Linux cooked, ...).
    pub linktype: u32,
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Length of the packet on the wire (more than `data.len()` when cut by the snaplen).
    pub orig_len: u32,
    /// The captured bytes, starting at the link-layer header.
    pub data: Vec<u8>,
}

/// Counters of one interface while its capture runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    /// Interface name.
    pub interface: String,
    /// Packets written to files.
    pub packets_captured: u64,
    /// Bytes written to files, headers included (deleted ring files included).
    pub bytes_written: u64,
    /// Packets that passed the filter in the kernel (libpcap `ps_recv`).
    pub packets_received: u64,
    /// Packets dropped because the kernel buffer was full (libpcap `ps_drop`).
    pub packets_dropped_kernel: u64,
    /// Packets dropped by the interface or its driver (libpcap `ps_ifdrop`).
    pub packets_dropped_interface: u64,
    /// Packet copies the live tap dropped because its reader fell behind (files are unaffected).
    pub tap_dropped: u64,
}

/// What one interface's capture left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceReport {
    /// Final counters.
    pub stats: InterfaceStats,
    /// libpcap link type (`None` only if the capture thread died).
    pub linktype: Option<i32>,
    /// Timestamp resolution in the files (`None` only if the capture thread died).
    pub precision: Option<TimestampPrecision>,
    /// Files kept on disk, oldest first.
    pub files: Vec<WrittenFile>,
    /// Ring files deleted to respect the count.
    pub files_deleted: u64,
    /// Set if closing the files or reading the final counters failed.
    pub error: Option<String>,
}

/// The end-of-capture report.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureReport {
    /// Why the capture ended.
    pub stop_reason: StopReason,
    /// How long it ran.
    pub elapsed: Duration,
    /// One entry per interface, in the configured order.
    pub interfaces: Vec<InterfaceReport>,
}

impl CaptureReport {
    /// Packets written over all interfaces.
    pub fn packets_captured(&self) -> u64 {
        self.interfaces.iter().map(|i| i.stats.packets_captured).sum()
    }

    /// Kernel-buffer drops over all interfaces.
    pub fn packets_dropped_kernel(&self) -> u64 {
        self.interfaces.iter().map(|i| i.stats.packets_dropped_kernel).sum()
    }

    /// Interface drops over all interfaces.
    pub fn packets_dropped_interface(&self) -> u64 {
        self.interfaces.iter().map(|i| i.stats.packets_dropped_interface).sum()
    }

    /// Every file kept on disk.
    pub fn files(&self) -> impl Iterator<Item = &WrittenFile> {
        self.interfaces.iter().flat_map(|i| i.files.iter())
    }
}

/// Entry point for live captures.
#[derive(Debug)]
pub struct Capture;

impl Capture {
    /// Checks everything, opens every interface with the filter set, then captures in background
    /// threads until the returned handle is stopped or a limit is reached.
    pub fn start(config: CaptureConfig) -> Result<CaptureHandle, CaptureError> {
        config.validate()?;
        if let Some(filter) = &config.bpf_filter {
            check_filter(filter)?;
        }
        check_interfaces_exist(&config.interfaces)?;
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("peel"));
        privilege::check_capture_privilege(&exe)?;
        std::fs::create_dir_all(&config.out_dir)
            .map_err(|source| CaptureError::OutDir { path: config.out_dir.clone(), source })?;
        let free_fraction = disk::free_fraction(&config.out_dir)
            .map_err(|source| CaptureError::DiskSpace { path: config.out_dir.clone(), source })?;
        if free_fraction < config.min_free_fraction {
            return Err(CaptureError::LowDiskSpace {
                path: config.out_dir.clone(),
                free_fraction,
                min_free_fraction: config.min_free_fraction,
            });
        }

        let started_unix_s =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut opened = Vec::with_capacity(config.interfaces.len());
        for name in &config.interfaces {
            let mut cap = open_interface(name, &config)?;
            let format = FileFormat {
                linktype: cap.get_datalink().0,
                snaplen_bytes: config.snaplen_bytes,
                precision: precision::of_capture(&cap),
            };
            let prefix = config.out_dir.join(format!("{}-{started_unix_s}", file_safe(name)));
            let mut ring = RingWriter::new(prefix, format, config.ring);
            ring.open_first()
                .map_err(|(path, source)| CaptureError::CreateFile { path, source })?;
            let breaker = cap.breakloop_handle();
            opened.push((name.clone(), cap, ring, format, breaker));
        }

        let (tap_tx, tap_rx) = if config.tap_packets {
            let (tx, rx) = mpsc::sync_channel(TAP_CAPACITY_PACKETS);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            reason: Mutex::new(None),
            breakloops: Mutex::new(Vec::new()),
            total_packets: AtomicU64::new(0),
            max_packets: config.max_packets,
            counters: config.interfaces.iter().map(|_| Counters::default()).collect(),
        });
        let started = Instant::now();
        let mut handle = CaptureHandle {
            shared: Arc::clone(&shared),
            interfaces: config.interfaces.clone(),
            threads: Vec::new(),
            supervisor: None,
            supervisor_stop: None,
            packets: tap_rx,
            started,
        };
        for (index, (name, cap, ring, format, breaker)) in opened.into_iter().enumerate() {
            lock(&shared.breakloops).push(breaker);
            let worker = InterfaceWorker {
                index,
                name: name.clone(),
                shared: Arc::clone(&shared),
                tap: tap_tx.clone(),
                format,
            };
            let thread = std::thread::Builder::new()
                .name(format!("peel-capture-{name}"))
                .spawn(move || worker.run(cap, ring))
                .map_err(|source| CaptureError::Spawn { source })?;
            // On an early return the handle's Drop stops the threads already started.
            handle.threads.push(thread);
        }
        let (stop_tx, stop_rx) = mpsc::channel();
        let supervisor = Supervisor {
            shared,
            deadline: config.duration.map(|d| (started + d, d)),
            out_dir: config.out_dir.clone(),
            min_free_fraction: config.min_free_fraction,
        };
        let thread = std::thread::Builder::new()
            .name("peel-capture-supervisor".into())
            .spawn(move || supervisor.run(stop_rx))
            .map_err(|source| CaptureError::Spawn { source })?;
        handle.supervisor = Some(thread);
        handle.supervisor_stop = Some(stop_tx);
        Ok(handle)
    }
}

/// Compiles `filter` with libpcap (for an Ethernet link) without capturing or needing privilege.
pub fn check_filter(filter: &str) -> Result<(), CaptureError> {
    let bad = |message: String| CaptureError::BadFilter {
        filter: filter.to_string(),
        interface: None,
        message,
    };
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| bad(pcap_message(&e)))?;
    dead.compile(filter, true).map(drop).map_err(|e| bad(pcap_message(&e)))
}

fn check_interfaces_exist(names: &[String]) -> Result<(), CaptureError> {
    // If libpcap cannot list devices, opening them reports the problem instead.
    let Ok(devices) = pcap::Device::list() else { return Ok(()) };
    for name in names {
        if !devices.iter().any(|d| &d.name == name) {
            let available = devices.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(CaptureError::UnknownInterface { name: name.clone(), available });
        }
    }
    Ok(())
}

fn open_interface(
    name: &str,
    config: &CaptureConfig,
) -> Result<pcap::Capture<pcap::Active>, CaptureError> {
    let open_err = |e: pcap::Error| CaptureError::Open {
        interface: name.to_string(),
        message: pcap_message(&e),
    };
    // validate() bounded snaplen and buffer to i32 range.
    let mut cap = pcap::Capture::from_device(name)
        .map_err(open_err)?
        .immediate_mode(true)
        .promisc(false)
        .snaplen(config.snaplen_bytes as i32)
        .buffer_size(config.buffer_bytes as i32)
        .precision(pcap::Precision::Nano)
        .timeout(READ_TIMEOUT_MS)
        .open()
        .map_err(open_err)?;
    if let Some(filter) = &config.bpf_filter {
        cap.filter(filter, true).map_err(|e| CaptureError::BadFilter {
            filter: filter.clone(),
            interface: Some(name.to_string()),
            message: pcap_message(&e),
        })?;
    }
    Ok(cap)
}

/// Interface names as file-name parts: `any`, `eth0`, `br-1a2b` stay; `/` and the like become `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another capture thread panicked; the data is plain counters.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default)]
struct Counters {
    packets_captured: AtomicU64,
    bytes_written: AtomicU64,
    packets_received: AtomicU64,
    packets_dropped_kernel: AtomicU64,
    packets_dropped_interface: AtomicU64,
    tap_dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self, interface: &str) -> InterfaceStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        InterfaceStats {
            interface: interface.to_string(),
            packets_captured: get(&self.packets_captured),
            bytes_written: get(&self.bytes_written),
            packets_received: get(&self.packets_received),
            packets_dropped_kernel: get(&self.packets_dropped_kernel),
            packets_dropped_interface: get(&self.packets_dropped_interface),
            tap_dropped: get(&self.tap_dropped),
        }
    }

    fn store_pcap_stats(&self, stat: pcap::Stat) {
        self.packets_received.store(u64::from(stat.received), Ordering::Relaxed);
        self.packets_dropped_kernel.store(u64::from(stat.dropped), Ordering::Relaxed);
        self.packets_dropped_interface.store(u64::from(stat.if_dropped), Ordering::Relaxed);
    }
}

/// State every thread of one capture sees.
struct Shared {
    stop: AtomicBool,
    reason: Mutex<Option<StopReason>>,
    breakloops: Mutex<Vec<pcap::BreakLoop>>,
    total_packets: AtomicU64,
    max_packets: Option<u64>,
    counters: Vec<Counters>,
}

impl Shared {
    /// Records the first reason given and wakes every capture thread.
    fn request_stop(&self, reason: StopReason) {
        lock(&self.reason).get_or_insert(reason);
        self.stop.store(true, Ordering::SeqCst);
        for breaker in lock(&self.breakloops).iter() {
            breaker.breakloop();
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

struct InterfaceWorker {
    index: usize,
    name: String,
    shared: Arc<Shared>,
    tap: Option<SyncSender<TappedPacket>>,
    format: FileFormat,
}

/// Outcome of one capture thread, turned into an [`InterfaceReport`] by [`CaptureHandle::stop`].
struct WorkerOutcome {
    format: Option<FileFormat>,
    files: Vec<WrittenFile>,
    files_deleted: u64,
    error: Option<String>,
}

impl InterfaceWorker {
    fn run(self, mut cap: pcap::Capture<pcap::Active>, mut ring: RingWriter) -> WorkerOutcome {
        let counters = &self.shared.counters[self.index];
        let mut write_error: Option<(PathBuf, std::io::Error)> = None;
        let mut last_tick = Instant::now();
        while !self.shared.stopping() {
            let result = cap.dispatch(None, |packet| {
                if write_error.is_none() {
                    if let Err(err) = self.handle_packet(&packet, &mut ring) {
                        write_error = Some(err);
                    }
                }
            });
            if let Some((path, err)) = &write_error {
                self.fail(format!("writing {}: {err}", path.display()));
                break;
            }
            if let Err(err) = result {
                // pcap_breakloop makes dispatch return an error; only a real one is a failure.
                if !self.shared.stopping() {
                    self.fail(pcap_message(&err));
                }
                break;
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                if let Ok(stat) = cap.stats() {
                    counters.store_pcap_stats(stat);
                }
                if let Err((path, err)) = ring.flush() {
                    self.fail(format!("writing {}: {err}", path.display()));
                    break;
                }
            }
        }
        let mut errors = Vec::new();
        match cap.stats() {
            Ok(stat) => counters.store_pcap_stats(stat),
            Err(err) => errors.push(format!("reading libpcap statistics: {}", pcap_message(&err))),
        }
        match ring.finish() {
            Ok(outcome) => WorkerOutcome {
                format: Some(self.format),
                files: outcome.files,
                files_deleted: outcome.deleted_files,
                error: (!errors.is_empty()).then(|| errors.join("; ")),
            },
            Err((path, err)) => {
                errors.push(format!("closing {}: {err}", path.display()));
                WorkerOutcome {
                    format: Some(self.format),
                    files: Vec::new(),
                    files_deleted: 0,
                    error: Some(errors.join("; ")),
                }
            }
        }
    }

    fn handle_packet(
        &self,
        packet: &pcap::Packet<'_>,
        ring: &mut RingWriter,
    ) -> Result<(), (PathBuf, std::io::Error)> {
        if self.shared.stopping() {
            return Ok(());
        }
        let seen = self.shared.total_packets.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(max) = self.shared.max_packets {
            if seen > max {
                return Ok(());
            }
            if seen == max {
                self.shared.request_stop(StopReason::PacketLimit(max));
            }
        }
        let header = packet.header;
        // Classic pcap stores 32-bit seconds (valid until 2106); the fraction is below 1e9.
        let ts_sec = header.ts.tv_sec as u32;
        let ts_frac = header.ts.tv_usec as u32;
        ring.write(ts_sec, ts_frac, header.len, packet.data)?;
        let counters = &self.shared.counters[self.index];
        counters.packets_captured.fetch_add(1, Ordering::Relaxed);
        counters.bytes_written.fetch_add(
            crate::pcap_file::RECORD_HEADER_BYTES + packet.data.len() as u64,
            Ordering::Relaxed,
        );
        if let Some(tap) = &self.tap {
            let frac_ns = match self.format.precision {
                TimestampPrecision::Nanos => i64::from(ts_frac),
                TimestampPrecision::Micros => i64::from(ts_frac) * 1_000,
            };
            let copy = TappedPacket {
                // At most a handful of interfaces; the index fits in u32.
                interface_index: self.index as u32,
                linktype: self.format.linktype as u32,
                ts_ns: i64::from(ts_sec) * 1_000_000_000 + frac_ns,
                orig_len: header.len,
                data: packet.data.to_vec(),
            };
            match tap.try_send(copy) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    counters.tap_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    fn fail(&self, message: String) {
        self.shared.request_stop(StopReason::Failed { interface: self.name.clone(), message });
    }
}

struct Supervisor {
    shared: Arc<Shared>,
    deadline: Option<(Instant, Duration)>,
    out_dir: PathBuf,
    min_free_fraction: f64,
}

impl Supervisor {
    fn run(self, stop_rx: Receiver<()>) {
        let mut last_disk_check = Instant::now();
        loop {
            match stop_rx.recv_timeout(SUPERVISOR_POLL) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.shared.stopping() {
                return;
            }
            if let Some((deadline, duration)) = self.deadline {
                if Instant::now() >= deadline {
                    self.shared.request_stop(StopReason::Duration(duration));
                    return;
                }
            }
            if last_disk_check.elapsed() >= TICK {
                last_disk_check = Instant::now();
                if let Some(reason) = self.disk_floor_reached() {
                    self.shared.request_stop(reason);
                    return;
                }
            }
        }
    }

    fn disk_floor_reached(&self) -> Option<StopReason> {
        let free_fraction = match disk::free_fraction(&self.out_dir) {
            Ok(fraction) => fraction,
            Err(err) => {
                return Some(StopReason::Failed {
                    interface: String::new(),
                    message: format!("reading free space of {}: {err}", self.out_dir.display()),
                })
            }
        };
        (free_fraction < self.min_free_fraction).then(|| StopReason::DiskFloor {
            path: self.out_dir.clone(),
            free_fraction,
            min_free_fraction: self.min_free_fraction,
        })
    }
}

/// A running capture. Dropping it stops the capture too (the report is then lost).
#[derive(Debug)]
pub struct CaptureHandle {
    shared: Arc<Shared>,
    interfaces: Vec<String>,
    threads: Vec<JoinHandle<WorkerOutcome>>,
    supervisor: Option<JoinHandle<()>>,
    supervisor_stop: Option<Sender<()>>,
    packets: Option<Receiver<TappedPacket>>,
    started: Instant,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("stop", &self.stop).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WorkerOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerOutcome").field("files", &self.files).finish_non_exhaustive()
    }
}

impl CaptureHandle {
    /// Counters of every interface so far.
    pub fn stats(&self) -> Vec<InterfaceStats> {
        self.interfaces
            .iter()
            .zip(&self.shared.counters)
            .map(|(name, counters)| counters.snapshot(name))
            .collect()
    }

    /// Why the capture is ending, once a limit was reached or a stop requested; `None` while it runs.
    pub fn stop_reason(&self) -> Option<StopReason> {
        lock(&self.shared.reason).clone()
    }

    /// The live packet copies, if the config asked for them (`tap_packets`); only the first call
    /// gets the receiver. The channel ends when the capture stops.
    pub fn take_packets(&mut self) -> Option<Receiver<TappedPacket>> {
        self.packets.take()
    }

    /// How long the capture has been running.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops capturing (if no limit did already), closes every file and returns the report.
    pub fn stop(mut self) -> CaptureReport {
        let outcomes = self.shutdown();
        let reason = lock(&self.shared.reason).clone().unwrap_or(StopReason::Requested);
        let interfaces = self
            .stats()
            .into_iter()
            .zip(outcomes)
            .map(|(stats, outcome)| InterfaceReport {
                stats,
                linktype: outcome.format.map(|f| f.linktype),
                precision: outcome.format.map(|f| f.precision),
                files: outcome.files,
                files_deleted: outcome.files_deleted,
                error: outcome.error,
            })
            .collect();
        CaptureReport { stop_reason: reason, elapsed: self.started.elapsed(), interfaces }
    }

    fn shutdown(&mut self) -> Vec<WorkerOutcome> {
        self.shared.request_stop(StopReason::Requested);
        if let Some(stop) = self.supervisor_stop.take() {
            let _ = stop.send(());
        }
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        self.threads
            .drain(..)
            .map(|thread| {
                thread.join().unwrap_or_else(|_| WorkerOutcome {
                    format: None,
                    files: Vec::new(),
                    files_deleted: 0,
                    error: Some("capture thread panicked".into()),
                })
            })
            .collect()
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.supervisor.is_some() {
            self.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisor(out_dir: &std::path::Path, min_free_fraction: f64) -> Supervisor {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            reason: Mutex::new(None),
            breakloops: Mutex::new(Vec::new()),
            total_packets: AtomicU64::new(0),
            max_packets: None,
            counters: Vec::new(),
        });
        Supervisor { shared, deadline: None, out_dir: out_dir.to_path_buf(), min_free_fraction }
    }

    #[test]
    fn disk_floor_stops_with_the_numbers() {
        let dir = tempfile::tempdir().unwrap();
        match supervisor(dir.path(), 0.999_999).disk_floor_reached() {
            Some(StopReason::DiskFloor { path, free_fraction, min_free_fraction }) => {
                assert_eq!(path, dir.path());
                assert!(free_fraction < min_free_fraction);
                assert_eq!(min_free_fraction, 0.999_999);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(supervisor(dir.path(), 0.0).disk_floor_reached(), None);
    }

    #[test]
    fn first_stop_reason_wins() {
        let supervisor = supervisor(std::path::Path::new("/"), 0.0);
        supervisor.shared.request_stop(StopReason::PacketLimit(10));
        supervisor.shared.request_stop(StopReason::Requested);
        assert!(supervisor.shared.stopping());
        assert_eq!(*lock(&supervisor.shared.reason), Some(StopReason::PacketLimit(10)));
    }

    #[test]
    fn stop_reasons_read_well() {
        let cases = [
            (StopReason::Requested, "requested", "stopped on request"),
            (StopReason::Duration(Duration::from_secs(30)), "duration", "duration of 30s reached"),
            (StopReason::PacketLimit(5), "packet_limit", "packet limit of 5 reached"),
            (
                StopReason::DiskFloor {
                    path: "/var/tmp/cap".into(),
                    free_fraction: 0.049,
                    min_free_fraction: 0.05,
                },
                "disk_floor",
                "stopped early: only 4.9% free on the filesystem holding /var/tmp/cap, under the 5.0% floor",
            ),
            (
                StopReason::Failed { interface: "eth0".into(), message: "The interface went down".into() },
                "failed",
                "capture on 'eth0' failed: The interface went down",
            ),
        ];
        for (reason, kind, text) in cases {
            assert_eq!((reason.kind(), reason.to_string().as_str()), (kind, text));
        }
    }

    #[test]
    fn interface_names_become_file_safe() {
        assert_eq!(file_safe("eth0"), "eth0");
        assert_eq!(file_safe("br-1a2b.100"), "br-1a2b.100");
        assert_eq!(file_safe("usb/1:2"), "usb_1_2");
    }
}
