//! Plain records that leave peel-snap: one struct per table the run database stores
//! (`snapshots`, `sysctl`, `sockets`, `socket_counts`, `tcp_counters`, `processes`, `cpus`, `system`).
//!
//! These are data only (numbers and strings, units in the names) so that peel-store can ingest them
//! without knowing how a socket table is read. Field names are a stable interface: add fields, do not
//! rename them. Every record carries the `snap_id` of the [`SnapshotRecord`] it belongs to.

use serde::{Deserialize, Serialize};

/// One snapshot: when and where it was taken, and how the socket table was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Sequence number of the snapshot within a run (0, 1, 2, ... for a sampled series).
    pub snap_id: u64,
    /// Wall-clock time the snapshot started, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Host name (from `<proc-root>/sys/kernel/hostname`).
    pub host: String,
    /// Directory the kernel files were read from (`/proc`, or a copy given with `--proc-root`).
    pub proc_root: String,
    /// How TCP sockets were read: `"netlink"` (sock_diag with tcp_info) or `"proc"` (/proc/net/tcp).
    pub socket_source: String,
    /// Time the snapshot took to gather, microseconds.
    pub duration_us: u64,
}

/// One kernel parameter as read (`net.core.somaxconn` = `4096`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SysctlRecord {
    pub snap_id: u64,
    /// Dotted key (`net.ipv4.tcp_fin_timeout`).
    pub key: String,
    /// Value as the kernel prints it, whitespace-normalized (`32768 60999`).
    pub value: String,
}

/// One TCP socket (IPv4 or IPv6).
///
/// The `tcp_info` fields (`rtt_us` to `last_recv_ms`) are `None` when the socket table came from
/// /proc/net/tcp, which does not carry them, or for sockets without tcp_info (LISTEN, TIME_WAIT).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SocketRecord {
    pub snap_id: u64,
    /// `"ipv4"` or `"ipv6"`.
    pub family: String,
    /// Kernel state name (include/net/tcp_states.h): `ESTABLISHED`, `LISTEN`, `TIME_WAIT`,
    /// `CLOSE_WAIT`, `SYN_RECV` (request sockets included), `FIN_WAIT1`, ...
    pub state: String,
    pub local_ip: String,
    pub local_port: u16,
    pub remote_ip: String,
    pub remote_port: u16,
    /// Bytes queued for sending, not yet acknowledged (for LISTEN: 0; see `listen_backlog`).
    pub send_q_bytes: u32,
    /// Bytes received, not yet read by the application (for LISTEN: 0; see `accept_queue`).
    pub recv_q_bytes: u32,
    /// Pending timer: `off`, `on` (retransmit), `keepalive`, `timewait`, `probe` (zero window).
    pub timer: String,
    /// Time until the timer fires, milliseconds (0 when `timer` is `off`).
    pub timer_expires_ms: u64,
    /// Retransmit timeouts that have fired for the unacknowledged data (`ss` "timer:(on,..,N)").
    pub retransmits: u32,
    pub uid: u32,
    /// Socket inode; 0 for TIME_WAIT and other sockets without an owner.
    pub inode: u64,
    /// Owning process found through /proc/<pid>/fd (the lowest pid when several share the socket).
    pub pid: Option<u32>,
    /// Command name (`comm`) of `pid`.
    pub process: Option<String>,
    /// For LISTEN sockets: the backlog the listener asked for, capped by net.core.somaxconn.
    pub listen_backlog: Option<u32>,
    /// For LISTEN sockets: connections completed and waiting for `accept()`.
    pub accept_queue: Option<u32>,
    /// Smoothed round-trip time, microseconds (tcp_info `tcpi_rtt`).
    pub rtt_us: Option<u32>,
    /// Round-trip time variance, microseconds (`tcpi_rttvar`).
    pub rttvar_us: Option<u32>,
    /// Congestion window, segments (`tcpi_snd_cwnd`).
    pub cwnd_segments: Option<u32>,
    /// Segments retransmitted and not yet acknowledged (`tcpi_retrans`).
    pub retrans_segments: Option<u32>,
    /// Retransmitted segments over the connection's life (`tcpi_total_retrans`).
    pub total_retrans_segments: Option<u32>,
    /// Segments considered lost (`tcpi_lost`).
    pub lost_segments: Option<u32>,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked_segments: Option<u32>,
    /// Bytes acknowledged by the peer (`tcpi_bytes_acked`).
    pub bytes_acked: Option<u64>,
    /// Bytes received from the peer (`tcpi_bytes_received`).
    pub bytes_received: Option<u64>,
    /// Time since the last data was sent, milliseconds (`tcpi_last_data_sent`).
    pub last_send_ms: Option<u32>,
    /// Time since the last data was received, milliseconds (`tcpi_last_data_recv`).
    pub last_recv_ms: Option<u32>,
}

/// How many sockets of a kind not listed one by one exist in a state (UDP, Unix stream/datagram).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketCountRecord {
    pub snap_id: u64,
    /// `udp`, `udp6`, `unix_stream`, `unix_dgram`, `unix_seqpacket`.
    pub protocol: String,
    /// State name (`LISTEN`, `ESTABLISHED`, `UNCONN`, ...).
    pub state: String,
    pub count: u64,
}

/// One kernel counter or gauge: /proc/net/netstat, /proc/net/snmp, sockstat, conntrack, file-nr.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpCounterRecord {
    pub snap_id: u64,
    /// `<group>.<name>`: `TcpExt.ListenOverflows`, `Tcp.RetransSegs`, `sockstat.TCP.tw`,
    /// `sockstat6.TCP6.inuse`, `conntrack.count`, `conntrack.max`, `file-nr.allocated`, ...
    pub name: String,
    pub value: i64,
    /// Change per second since the previous snapshot of a series; `None` for the first snapshot and
    /// for gauges (values that are a level, not a running total: `Tcp.CurrEstab`, sockstat, ...).
    pub rate_per_s: Option<f64>,
}

/// One process matched by name or pid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub snap_id: u64,
    pub pid: u32,
    /// Process name (`comm`).
    pub name: String,
    /// Full command line, arguments joined by spaces.
    pub cmdline: String,
    /// CPU use since the previous sample, percent of one CPU (can exceed 100); `None` on a first
    /// snapshot that has no earlier sample to compare with.
    pub cpu_pct: Option<f64>,
    pub rss_bytes: u64,
    pub threads: u32,
    /// Open file descriptors (`None` when /proc/<pid>/fd cannot be read).
    pub open_fds: Option<u32>,
    /// Soft limit on open files (`Max open files` in /proc/<pid>/limits; `None` if unlimited/unreadable).
    pub fd_limit: Option<u64>,
    /// File descriptors that are sockets.
    pub sockets: Option<u32>,
    /// Direct children.
    pub children: u32,
}

/// Usage of one CPU over the window since the previous sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuRecord {
    pub snap_id: u64,
    /// CPU index as the kernel numbers it (`cpu3` -> 3).
    pub cpu: u32,
    /// Busy percent (0..=100); `None` on a first snapshot with no earlier sample.
    pub usage_pct: Option<f64>,
}

/// Load averages, CPU totals and memory at the moment of the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemRecord {
    pub snap_id: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub cpu_count: u32,
    /// Busy percent over all CPUs since the previous sample; `None` on a first snapshot.
    pub cpu_usage_pct: Option<f64>,
    /// Busiest single CPU since the previous sample, percent.
    pub cpu_max_pct: Option<f64>,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub mem_used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

/// Every record of one snapshot, as peel-store ingests it and as `peel snap --format json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecords {
    pub snapshot: SnapshotRecord,
    pub system: Option<SystemRecord>,
    pub cpus: Vec<CpuRecord>,
    pub sysctls: Vec<SysctlRecord>,
    pub sockets: Vec<SocketRecord>,
    pub socket_counts: Vec<SocketCountRecord>,
    pub tcp_counters: Vec<TcpCounterRecord>,
    pub processes: Vec<ProcessRecord>,
    /// Lines or sources that could not be read (`net/tcp:17: ...`); not stored as a table.
    #[serde(default)]
    pub warnings: Vec<String>,
}
