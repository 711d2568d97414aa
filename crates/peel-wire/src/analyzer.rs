//! The streaming analysis engine: packets in (from files or a live capture), finished connections
//! out through the caller's sink, so memory is bounded by the connections open at once, never by
//! the capture's size.
//!
//! Connections are keyed by both endpoints plus the VLAN tag stack and the capture interface (tshark
//! merges same-tuple connections on different VLANs; peel does not). A SYN with a new ISN on a key
//! starts a new connection (port reuse); retransmitted SYNs, FINs and RSTs never do. A closed
//! connection lingers briefly (capture time) to absorb late retransmissions, then is emitted. Idle
//! expiry exists only to bound memory, is generous by default, and is counted in the warnings.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use serde::Serialize;

use crate::conn::Conn;
use crate::decode::{decode, Decoded, Segment, FLAG_ACK, FLAG_SYN};
use crate::exchange::Scratch;
use crate::records::{CaptureWarning, FinishedConnection, WarningReason};
use crate::warnings::WarningTally;

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Boxes of finished connections kept for reuse (enough for a burst of closes and opens).
const SPARE_CONNS: usize = 64;

/// Tuning of the engine; the defaults suit files and live capture alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Ports known to be servers (`--port`): decide the client of a connection whose SYN was not seen.
    pub server_ports: Vec<u16>,
    /// A connection silent this long (capture time) is emitted as `expired` (default 2 h, like
    /// TCP keep-alive's default, so a keep-alive connection is not cut into pieces).
    pub idle_timeout_ns: i64,
    /// How long after its close a connection's late retransmitted FINs/RSTs/ACKs are recognized as
    /// such (default 2 s; TCP retransmission timeouts start at 200 ms).
    pub close_linger_ns: i64,
    /// Most connections held at once (default 250,000, a few hundred MB at worst); beyond it the
    /// longest-silent eighth is emitted early as `expired` and counted (`flow_table_full`).
    pub max_flows: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            server_ports: Vec::new(),
            idle_timeout_ns: 7200 * NANOS_PER_SEC,
            close_linger_ns: 2 * NANOS_PER_SEC,
            max_flows: 250_000,
        }
    }
}

/// Identifies a capture source (a file, or a live interface) for warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceId(u32);

/// One captured packet as handed to [`Analyzer::push`].
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Epoch nanoseconds.
    pub ts_ns: i64,
    /// LINKTYPE_* of the packet's interface ([`crate::decode::linktype`]).
    pub linktype: u32,
    /// Interface index (pcapng IDB index, or the live capture's own numbering).
    pub interface_id: u32,
    /// Captured bytes, starting with the link-layer header.
    pub data: &'a [u8],
    /// Length on the wire.
    pub orig_len: u32,
    /// Where it came from.
    pub source: SourceId,
    /// 0-based index of the packet within its source.
    pub index: u64,
}

/// Counts over the whole capture.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CaptureStats {
    pub packets: u64,
    pub tcp_packets: u64,
    pub connections: u64,
    /// Earliest packet timestamp (epoch ns).
    pub first_ts_ns: Option<i64>,
    /// Latest packet timestamp (epoch ns).
    pub last_ts_ns: Option<i64>,
}

/// What is left when the analysis ends (the connections went to the sink).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisEnd {
    pub stats: CaptureStats,
    pub warnings: Vec<CaptureWarning>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    low: (IpAddr, u16),
    high: (IpAddr, u16),
    vlan_key: u64,
    interface_id: u32,
}

impl std::hash::Hash for FlowKey {
    /// Four words for IPv4 (the per-packet case) instead of the derived field-by-field walk.
    fn hash<H: Hasher>(&self, state: &mut H) {
        fn endpoint<H: Hasher>(end: (IpAddr, u16), state: &mut H) {
            match end.0 {
                IpAddr::V4(v4) => {
                    state.write_u64((u64::from(u32::from(v4)) << 16) | u64::from(end.1))
                }
                IpAddr::V6(v6) => {
                    let bits = u128::from(v6);
                    state.write_u64(bits as u64);
                    state.write_u64((bits >> 64) as u64 ^ (u64::from(end.1) << 48));
                }
            }
        }
        endpoint(self.low, state);
        endpoint(self.high, state);
        state.write_u64(self.vlan_key ^ (u64::from(self.interface_id) << 48));
    }
}

/// FxHash (rustc's hasher): the flow key is not attacker-chosen in a way that matters for an
/// offline tool, and SipHash would cost a noticeable share of the per-packet time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Connections are boxed: the table's entries stay small (fast to probe and to grow), and a
/// connection's state (most of a kilobyte) is never copied when it is inserted, removed or finished.
type FlowTable = HashMap<FlowKey, Box<Conn>, BuildHasherDefault<FxHasher>>;

/// What remains of an emitted connection while late retransmissions may still arrive.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    closed_ts_ns: i64,
    syn_isn: Option<u32>,
}

type Tuple = ((IpAddr, u16), (IpAddr, u16), u32);

type Tombstones = HashMap<FlowKey, Tombstone, BuildHasherDefault<FxHasher>>;

/// The engine. Feed it packets in time order with [`Analyzer::push`], then call [`Analyzer::finish`].
#[derive(Debug)]
pub struct Analyzer {
    config: Config,
    table: FlowTable,
    tombstones: Tombstones,
    /// Tagged keys of one direction that belong to a connection keyed on another VLAN.
    vlan_aliases: HashMap<FlowKey, FlowKey, BuildHasherDefault<FxHasher>>,
    /// VLAN keys in use per endpoint pair and interface (tagged traffic only).
    vlans_of_tuple: HashMap<Tuple, Vec<u64>, BuildHasherDefault<FxHasher>>,
    next_id: u64,
    max_ts_ns: i64,
    next_sweep_ns: i64,
    sources: Vec<WarningTally>,
    stats: CaptureStats,
    finished: Vec<FinishedConnection>,
    /// Boxes of finished connections, for the next ones (the boxes are the point: their
    /// allocations are reused, so they are not unboxed into the vector).
    #[allow(clippy::vec_box)]
    spare_conns: Vec<Box<Conn>>,
    /// Scratch space (HTTP events, spare per-connection queues), shared by every connection.
    scratch: Scratch,
}

impl Analyzer {
    /// A new engine with no sources yet.
    pub fn new(config: Config) -> Analyzer {
        Analyzer {
            config,
            table: FlowTable::default(),
            tombstones: Tombstones::default(),
            vlan_aliases: HashMap::default(),
            vlans_of_tuple: HashMap::default(),
            next_id: 0,
            max_ts_ns: i64::MIN,
            next_sweep_ns: i64::MIN,
            sources: Vec::new(),
            stats: CaptureStats::default(),
            finished: Vec::new(),
            spare_conns: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// Registers a source (file path or interface name) that packets and warnings refer to.
    pub fn add_source(&mut self, name: &str) -> SourceId {
        self.sources.push(WarningTally::new(name.to_string()));
        SourceId((self.sources.len() - 1) as u32)
    }

    /// Adds warnings found outside the engine (the file reader's) to the result.
    pub fn add_warnings(&mut self, source: SourceId, tally: WarningTally) {
        if let Some(mine) = self.sources.get_mut(source.0 as usize) {
            mine.merge(tally);
        }
    }

    /// Connections currently held in the flow table.
    pub fn open_connections(&self) -> usize {
        self.table.len()
    }

    /// Analyzes one packet; connections that end go to `sink` (possibly later, after lingering).
    pub fn push<F: FnMut(FinishedConnection)>(&mut self, packet: &Packet<'_>, sink: &mut F) {
        self.push_packet(packet);
        self.flush(sink);
    }

    /// The work of [`Analyzer::push`] up to the sink. Not generic, so it is compiled (and
    /// optimized) in this crate, whatever the profile of the crate that supplies the sink.
    fn push_packet(&mut self, packet: &Packet<'_>) {
        self.stats.packets += 1;
        let ts_ns = packet.ts_ns;
        self.stats.first_ts_ns = Some(self.stats.first_ts_ns.map_or(ts_ns, |t| t.min(ts_ns)));
        self.stats.last_ts_ns = Some(self.stats.last_ts_ns.map_or(ts_ns, |t| t.max(ts_ns)));
        let cut = (packet.data.len() as u64) < u64::from(packet.orig_len);
        // Borrowed, not moved out: a moved copy was read back right after it was written (a
        // store-forwarding stall per packet).
        let decoded = decode(packet.linktype, packet.data, cut);
        let seg = match &decoded {
            Decoded::Tcp(seg) => seg,
            Decoded::NotTcp => return,
            &Decoded::Skipped(reason) => {
                let linktype = packet.linktype;
                self.warn(packet, reason, move || match reason {
                    WarningReason::UnsupportedLinkType => {
                        format!("link type {linktype} is not decoded")
                    }
                    _ => format!("first at packet {}", packet.index),
                });
                return;
            }
        };
        self.stats.tcp_packets += 1;
        if seg.header_cut || seg.payload.len() < seg.payload_len as usize {
            self.warn(packet, WarningReason::SnaplenCut, || match seg.header_cut {
                true => "TCP options cut by the snapshot length; decoded from the fixed 20-byte header"
                    .to_string(),
                false => format!(
                    "TCP payload cut by the snapshot length ({} of {} bytes captured); sequence analysis still uses it",
                    seg.payload.len(),
                    seg.payload_len
                ),
            });
        }
        if ts_ns > self.max_ts_ns {
            self.max_ts_ns = ts_ns;
            if ts_ns >= self.next_sweep_ns {
                self.sweep(false);
                self.next_sweep_ns = ts_ns.saturating_add(NANOS_PER_SEC);
            }
        }
        self.segment(packet, seg);
        if self.table.len() > self.config.max_flows {
            self.evict(packet.source);
        }
    }

    fn segment(&mut self, packet: &Packet<'_>, seg: &Segment<'_>) {
        let src = (seg.src, seg.src_port);
        let dst = (seg.dst, seg.dst_port);
        let (low, high) = if endpoint_le(src, dst) { (src, dst) } else { (dst, src) };
        let mut key =
            FlowKey { low, high, vlan_key: seg.vlan_key, interface_id: packet.interface_id };
        let pure_syn = seg.has(FLAG_SYN) && !seg.has(FLAG_ACK);
        let synack = seg.has(FLAG_SYN) && seg.has(FLAG_ACK);
        // Assigned in place (not `let key = if ..`): the untagged common case copies no key.
        if seg.vlan_key != 0 && !pure_syn {
            key = self.vlan_partner(key, src);
        }
        // Fast path: most packets belong to a connection in the table and open or close nothing.
        if !(pure_syn || synack) {
            if let Some(conn) = self.table.get_mut(&key) {
                let side = conn.side_of(src);
                conn.segment(side, seg, packet.ts_ns, packet.source.0, &mut self.scratch);
                if conn.is_finished() {
                    self.retire(key);
                }
                return;
            }
        }
        if let Some(&tomb) = self.tombstones.get(&key) {
            // zeek#862: a retransmitted FIN/RST/ACK of a finished connection is not a new one.
            if !(pure_syn && tomb.syn_isn != Some(seg.seq)) {
                self.warn(packet, WarningReason::AfterClose, || {
                    "packets of an already finished connection (late retransmissions); absorbed"
                        .to_string()
                });
                return;
            }
            self.tombstones.remove(&key);
        }
        let replace = match self.table.get(&key) {
            None => false,
            Some(conn) if pure_syn => {
                // The same attempt's SYN again is a retransmission; a new ISN is a new connection.
                !conn.accepts_syn(conn.side_of(src), seg.seq)
            }
            Some(conn) if synack => conn.is_closed() && conn.synack_isn() != Some(seg.seq),
            Some(_) => false,
        };
        if replace {
            if let Some(old) = self.table.remove(&key) {
                self.emit(old, false);
            }
        }
        let conn = match self.table.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let (client, server) = if pure_syn {
                    (src, dst)
                } else if synack {
                    (dst, src)
                } else {
                    choose_client(src, dst, &self.config.server_ports)
                };
                self.stats.connections += 1;
                let id = self.next_id;
                self.next_id += 1;
                let conn = Conn::new(
                    id,
                    client,
                    server,
                    seg,
                    packet.interface_id,
                    packet.source.0,
                    packet.ts_ns,
                );
                // A finished connection's box is reused: no allocation per connection.
                entry.insert(match self.spare_conns.pop() {
                    Some(mut spare) => {
                        *spare = conn;
                        spare
                    }
                    None => Box::new(conn),
                })
            }
        };
        let side = conn.side_of(src);
        conn.segment(side, seg, packet.ts_ns, packet.source.0, &mut self.scratch);
        if seg.vlan_key != 0 {
            let tuple = (key.low, key.high, key.interface_id);
            let keys = self.vlans_of_tuple.entry(tuple).or_default();
            if !keys.contains(&key.vlan_key) {
                keys.push(key.vlan_key);
            }
        }
        if conn.is_finished() {
            self.retire(key);
        }
    }

    /// Emits a finished connection and leaves a tombstone to absorb its late retransmissions.
    fn retire(&mut self, key: FlowKey) {
        if let Some(conn) = self.table.remove(&key) {
            let tomb = Tombstone { closed_ts_ns: conn.last_ts_ns, syn_isn: conn.syn_isn() };
            self.tombstones.insert(key, tomb);
            self.emit(conn, false);
        }
    }

    /// The key a tagged packet belongs to. Routed networks tapped on a trunk show one connection's
    /// directions on different VLANs (client VLAN out, server VLAN back): a packet with no connection
    /// on its own VLAN joins a connection of the same endpoints on another VLAN that has not yet
    /// seen this sender. Same-tuple connections that each show both directions on their own VLAN
    /// (the VLAN-collision case) stay apart.
    fn vlan_partner(&mut self, key: FlowKey, src: (IpAddr, u16)) -> FlowKey {
        if self.table.contains_key(&key) || self.tombstones.contains_key(&key) {
            return key;
        }
        if let Some(&alias) = self.vlan_aliases.get(&key) {
            if self.table.contains_key(&alias) || self.tombstones.contains_key(&alias) {
                return alias;
            }
            self.vlan_aliases.remove(&key);
        }
        let tuple = (key.low, key.high, key.interface_id);
        let Some(vlans) = self.vlans_of_tuple.get(&tuple) else {
            return key;
        };
        let partner = vlans.iter().map(|&vlan_key| FlowKey { vlan_key, ..key }).find(|other| {
            self.table.get(other).is_some_and(|conn| !conn.has_sent(conn.side_of(src)))
        });
        match partner {
            Some(partner) => {
                self.vlan_aliases.insert(key, partner);
                partner
            }
            None => key,
        }
    }

    /// Emits lingering closed connections and (or, at the end, all) idle ones.
    fn sweep(&mut self, everything: bool) {
        let now = self.max_ts_ns;
        let linger = self.config.close_linger_ns;
        let idle = self.config.idle_timeout_ns;
        let mut expired_per_source: Vec<(u32, u64, u64)> = Vec::new();
        self.tombstones
            .retain(|_, tomb| !everything && now.saturating_sub(tomb.closed_ts_ns) <= linger);
        let (table, tombstones) = (&self.table, &self.tombstones);
        let alive = |k: &FlowKey| table.contains_key(k) || tombstones.contains_key(k);
        self.vlan_aliases.retain(|_, target| alive(target));
        self.vlans_of_tuple.retain(|&(low, high, interface_id), vlans| {
            vlans.retain(|&vlan_key| alive(&FlowKey { low, high, vlan_key, interface_id }));
            !vlans.is_empty()
        });
        let mut leaving: Vec<(FlowKey, bool)> = Vec::new();
        for (key, conn) in &self.table {
            let silent = now.saturating_sub(conn.last_ts_ns);
            let closed = conn.is_closed() && silent > linger;
            let expired = !closed && silent > idle;
            if !(everything || closed || expired) {
                continue;
            }
            if expired {
                match expired_per_source.iter_mut().find(|(s, _, _)| *s == conn.source) {
                    Some(entry) => entry.1 += 1,
                    None => expired_per_source.push((conn.source, 1, conn.id)),
                }
            }
            leaving.push((*key, expired));
        }
        for (key, expired) in leaving {
            if let Some(conn) = self.table.remove(&key) {
                self.emit(conn, expired);
            }
        }
        for (source, count, conn_id) in expired_per_source {
            if let Some(tally) = self.sources.get_mut(source as usize) {
                tally.add_many(WarningReason::IdleExpired, count, None, None, || {
                    format!(
                        "connection {conn_id} (and others) silent longer than the idle timeout of {} s; emitted as expired",
                        idle / NANOS_PER_SEC
                    )
                });
            }
        }
    }

    /// Finishes a connection for the sink, counting exchanges it could not keep.
    fn emit(&mut self, mut conn: Box<Conn>, expired: bool) {
        let source = conn.source as usize;
        let finished = conn.finish(expired, &mut self.scratch);
        if self.spare_conns.len() < SPARE_CONNS {
            self.spare_conns.push(conn);
        }
        let seen = u64::from(finished.connection.exchanges);
        let kept = finished.exchanges.len() as u64;
        if seen > kept {
            if let Some(tally) = self.sources.get_mut(source) {
                let conn_id = finished.connection.conn_id;
                tally.add_many(WarningReason::ExchangesNotKept, seen - kept, None, None, || {
                    format!(
                        "connection {conn_id} had {seen} exchanges; only the first {kept} are kept as records (all are counted)"
                    )
                });
            }
        }
        self.finished.push(finished);
    }

    /// The flow table is full: emit the longest-silent eighth of it.
    fn evict(&mut self, source: SourceId) {
        let mut silent: Vec<(i64, FlowKey)> =
            self.table.iter().map(|(k, c)| (c.last_ts_ns, *k)).collect();
        silent.sort_unstable_by_key(|(ts, _)| *ts);
        let count = (silent.len() / 8).max(1);
        for (_, key) in silent.into_iter().take(count) {
            if let Some(conn) = self.table.remove(&key) {
                self.emit(conn, true);
            }
        }
        let max = self.config.max_flows;
        if let Some(tally) = self.sources.get_mut(source.0 as usize) {
            tally.add_many(WarningReason::FlowTableFull, count as u64, None, None, || {
                format!("more than {max} connections open at once; the longest-silent were emitted early")
            });
        }
    }

    fn flush<F: FnMut(FinishedConnection)>(&mut self, sink: &mut F) {
        if self.finished.is_empty() {
            return;
        }
        // Deterministic output: the flow table's iteration order is not.
        self.finished.sort_unstable_by_key(|f| f.connection.conn_id);
        for conn in self.finished.drain(..) {
            sink(conn);
        }
    }

    fn warn(
        &mut self,
        packet: &Packet<'_>,
        reason: WarningReason,
        detail: impl FnOnce() -> String,
    ) {
        if let Some(tally) = self.sources.get_mut(packet.source.0 as usize) {
            tally.add(reason, Some(packet.index), None, detail);
        }
    }

    /// Moves the analysis clock to `now_ns` without a packet (a live capture on a quiet link):
    /// connections that finished lingering or went idle are emitted now rather than at the next packet.
    pub fn advance_to<F: FnMut(FinishedConnection)>(&mut self, now_ns: i64, sink: &mut F) {
        if now_ns > self.max_ts_ns {
            self.max_ts_ns = now_ns;
            self.sweep(false);
            self.next_sweep_ns = now_ns.saturating_add(NANOS_PER_SEC);
        }
        self.flush(sink);
    }

    /// Ends the analysis: every connection still open goes to `sink`, in connection order.
    pub fn finish<F: FnMut(FinishedConnection)>(mut self, sink: &mut F) -> AnalysisEnd {
        self.sweep(true);
        self.flush(sink);
        let mut warnings = Vec::new();
        for tally in self.sources {
            warnings.extend(tally.into_records());
        }
        AnalysisEnd { stats: self.stats, warnings }
    }
}

/// `a <= b` for the flow key's canonical order; IPv4 compares as integers (the hot case).
fn endpoint_le(a: (IpAddr, u16), b: (IpAddr, u16)) -> bool {
    match (a.0, b.0) {
        (IpAddr::V4(x), IpAddr::V4(y)) => (u32::from(x), a.1) <= (u32::from(y), b.1),
        _ => a <= b,
    }
}

/// A connection whose SYN was not seen: the server is the `--port` end, else the well-known
/// (lower, < 1024) port, else the lower port, and on a tie the destination of the first packet.
fn choose_client(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    server_ports: &[u16],
) -> ((IpAddr, u16), (IpAddr, u16)) {
    let src_listed = server_ports.contains(&src.1);
    let dst_listed = server_ports.contains(&dst.1);
    if src_listed != dst_listed {
        return if src_listed { (dst, src) } else { (src, dst) };
    }
    if src.1 < dst.1 {
        (dst, src)
    } else {
        (src, dst)
    }
}
