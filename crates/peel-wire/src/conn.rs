//! One TCP connection's state: handshake, per-direction sequence tracking (retransmissions,
//! out-of-order, duplicate ACKs, zero windows, window-full), close and reset, and the in-order
//! payload handed to [`crate::exchange`]. Sequence numbers decide what a segment is; time decides
//! only whether a gap-filling segment was out of order or a retransmission (as tshark does).
//!
//! The flow table (which connection a packet belongs to, when one ends) is [`crate::analyzer`]'s job.

use std::net::IpAddr;

use crate::decode::{Segment, FLAG_ACK, FLAG_FIN, FLAG_RST, FLAG_SYN};
use crate::exchange::{micros, Exchanges, Scratch};
use crate::records::{ConnState, ConnectionRecord, FinishedConnection, Phase, Side};

/// A gap-filling segment later than this after the gap appeared is a retransmission.
const DEFAULT_OUT_OF_ORDER_NS: i64 = 3_000_000;
const MAX_HOLES: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Hole {
    start: i64,
    end: i64,
    seen_ts_ns: i64,
}

/// Sequence state of one direction. Sequence numbers are tracked relative to the first data byte
/// (ISN + 1 when the SYN was seen), in 64 bits, so wrap-around is handled once, here.
#[derive(Debug, Default)]
struct Direction {
    isn: Option<u32>,
    /// Raw sequence number of relative offset 0.
    base: Option<u32>,
    /// Highest relative data end seen.
    next: i64,
    /// Relative offset up to which payload was handed to the exchange tracker.
    delivered: i64,
    holes: Vec<Hole>,
    fin_at: Option<i64>,
    fin_acked_ts_ns: Option<i64>,
    last_ack: Option<u32>,
    last_window: u16,
    window_scale: Option<u8>,
}

impl Direction {
    fn rel(&self, seq: u32) -> Option<i64> {
        let base = self.base?;
        let raw_next = base.wrapping_add(self.next as u32);
        Some(self.next + i64::from(seq.wrapping_sub(raw_next) as i32))
    }

    fn set_base(&mut self, first_data_seq: u32) {
        self.base = Some(first_data_seq);
        self.next = 0;
        self.delivered = 0;
        self.holes.clear();
    }
}

/// What a data segment was, by its sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeqVerdict {
    New,
    Retransmission,
    OutOfOrder,
    KeepAlive,
}

/// A connection in the flow table.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    vlan: Option<u16>,
    interface_id: u32,
    pub(crate) source: u32,
    pub(crate) first_ts_ns: i64,
    pub(crate) last_ts_ns: i64,
    packets: u64,
    syn_ts_ns: Option<i64>,
    syn_retransmits: u32,
    synack_ts_ns: Option<i64>,
    /// The ACK number of the SYN/ACK: the client's ISN + 1.
    synack_ack: Option<u32>,
    handshake_ack_ts_ns: Option<i64>,
    dirs: [Direction; 2],
    sent: [bool; 2],
    first_fin: Option<(i64, Side)>,
    rst: Option<(i64, Side, Phase)>,
    retransmits: u32,
    out_of_order: u32,
    dup_acks: u32,
    zero_windows: u32,
    window_full: u32,
    exchanges: Exchanges,
}

fn index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

impl Conn {
    pub(crate) fn new(
        id: u64,
        client: (IpAddr, u16),
        server: (IpAddr, u16),
        seg: &Segment<'_>,
        interface_id: u32,
        source: u32,
        ts_ns: i64,
    ) -> Conn {
        Conn {
            id,
            client,
            server,
            vlan: seg.vlan,
            interface_id,
            source,
            first_ts_ns: ts_ns,
            last_ts_ns: ts_ns,
            packets: 0,
            syn_ts_ns: None,
            syn_retransmits: 0,
            synack_ts_ns: None,
            synack_ack: None,
            handshake_ack_ts_ns: None,
            dirs: [Direction::default(), Direction::default()],
            sent: [false, false],
            first_fin: None,
            rst: None,
            retransmits: 0,
            out_of_order: 0,
            dup_acks: 0,
            zero_windows: 0,
            window_full: 0,
            exchanges: Exchanges::new(),
        }
    }

    /// Which side sent a segment from `src`.
    pub(crate) fn side_of(&self, src: (IpAddr, u16)) -> Side {
        if src == self.client {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// The ISN of the client's SYN, if one was seen.
    pub(crate) fn syn_isn(&self) -> Option<u32> {
        self.syn_ts_ns.and(self.dirs[0].isn)
    }

    /// The ISN of the server's SYN/ACK, if one was seen.
    pub(crate) fn synack_isn(&self) -> Option<u32> {
        self.synack_ts_ns.and(self.dirs[1].isn)
    }

    /// Whether `side` has sent any segment on this connection.
    pub(crate) fn has_sent(&self, side: Side) -> bool {
        self.sent[index(side)]
    }

    /// Whether a pure SYN with `seq` from `side` belongs to this connection: a retransmission of its
    /// SYN, or its own SYN captured after the SYN/ACK that answers it (reordered capture).
    pub(crate) fn accepts_syn(&self, side: Side, seq: u32) -> bool {
        if side != Side::Client {
            return false;
        }
        match self.syn_isn() {
            Some(isn) => isn == seq,
            None => self.synack_ack == Some(seq.wrapping_add(1)),
        }
    }

    /// Closed by FINs in both directions or by a RST: only late retransmissions can follow.
    pub(crate) fn is_closed(&self) -> bool {
        self.rst.is_some() || (self.dirs[0].fin_at.is_some() && self.dirs[1].fin_at.is_some())
    }

    /// Over for good: reset, or both FINs acknowledged. Nothing but stray retransmissions can follow.
    pub(crate) fn is_finished(&self) -> bool {
        self.rst.is_some()
            || (self.dirs[0].fin_acked_ts_ns.is_some() && self.dirs[1].fin_acked_ts_ns.is_some())
    }

    fn rtt_ns(&self) -> i64 {
        match (self.syn_ts_ns, self.handshake_ack_ts_ns) {
            (Some(syn), Some(ack)) if ack > syn => {
                ack.saturating_sub(syn).max(DEFAULT_OUT_OF_ORDER_NS)
            }
            _ => DEFAULT_OUT_OF_ORDER_NS,
        }
    }

    /// Accounts one segment sent by `side`.
    /// `scratch` is the analyzer's scratch space, shared by all connections.
    pub(crate) fn segment(
        &mut self,
        side: Side,
        seg: &Segment<'_>,
        ts_ns: i64,
        source: u32,
        scratch: &mut Scratch,
    ) {
        self.packets += 1;
        self.source = source;
        self.last_ts_ns = self.last_ts_ns.max(ts_ns);
        let me = index(side);
        self.sent[me] = true;
        if seg.has(FLAG_RST) {
            if !self.rst_acceptable(side, seg) {
                return;
            }
            if self.rst.is_none() {
                let phase = self.phase();
                self.rst = Some((ts_ns, side, phase));
            }
            return;
        }
        if seg.has(FLAG_SYN) {
            self.syn(side, seg, ts_ns);
        } else if side == Side::Client && seg.has(FLAG_ACK) && self.handshake_ack_ts_ns.is_none() {
            if let Some(isn) = self.synack_isn() {
                if seg.ack == isn.wrapping_add(1) {
                    self.handshake_ack_ts_ns = Some(ts_ns);
                }
            }
        }
        let data_seq = if seg.has(FLAG_SYN) { seg.seq.wrapping_add(1) } else { seg.seq };
        if self.dirs[me].base.is_none() {
            self.dirs[me].set_base(data_seq);
        }
        let Some(start) = self.dirs[me].rel(data_seq) else {
            return;
        };
        let end = start + i64::from(seg.payload_len);
        if seg.payload_len > 0 {
            self.data(side, seg, ts_ns, (start, end), scratch);
        }
        if seg.has(FLAG_FIN) {
            self.fin(side, ts_ns, end, seg.payload_len == 0);
        }
        if seg.has(FLAG_ACK) {
            self.ack(side, seg, ts_ns);
        }
    }

    /// RFC 9293 3.10.7.3: while only the client's SYN is known, a RST answering it must acknowledge
    /// the SYN; anything else is injected or stale and does not end the connection.
    fn rst_acceptable(&self, side: Side, seg: &Segment<'_>) -> bool {
        let (Some(isn), None, Side::Server) = (self.syn_isn(), self.synack_ts_ns, side) else {
            return true;
        };
        seg.has(FLAG_ACK) && seg.ack == isn.wrapping_add(1)
    }

    fn syn(&mut self, side: Side, seg: &Segment<'_>, ts_ns: i64) {
        let me = index(side);
        let dir = &mut self.dirs[me];
        if dir.isn == Some(seg.seq) && (self.syn_ts_ns.is_some() || side == Side::Server) {
            // The same SYN (or SYN/ACK) again: the peer did not get it or its answer.
            self.retransmits += 1;
            if side == Side::Client && !seg.has(FLAG_ACK) {
                self.syn_retransmits += 1;
            }
            if side == Side::Server {
                self.synack_ts_ns = Some(ts_ns);
            }
            return;
        }
        // A SYN/ACK with another ISN replaces the first one only while no data depends on it
        // (zeek#3313: otherwise byte counts would jump by the difference of the ISNs).
        if dir.isn.is_some() && dir.next > 0 {
            return;
        }
        dir.isn = Some(seg.seq);
        dir.set_base(seg.seq.wrapping_add(1));
        dir.window_scale = seg.window_scale;
        match side {
            Side::Client if !seg.has(FLAG_ACK) => {
                self.syn_ts_ns.get_or_insert(ts_ns);
            }
            _ => {
                self.synack_ts_ns = Some(ts_ns);
                self.synack_ack = Some(seg.ack);
            }
        }
    }

    fn data(
        &mut self,
        side: Side,
        seg: &Segment<'_>,
        ts_ns: i64,
        (start, end): (i64, i64),
        scratch: &mut Scratch,
    ) {
        let rtt_ns = self.rtt_ns();
        let me = index(side);
        let verdict = classify(&mut self.dirs[me], start, end, ts_ns, rtt_ns);
        match verdict {
            SeqVerdict::Retransmission => self.retransmits += 1,
            SeqVerdict::OutOfOrder => self.out_of_order += 1,
            SeqVerdict::KeepAlive => {}
            SeqVerdict::New => {
                let peer = &self.dirs[1 - me];
                if let (Some(ack), true) = (peer.last_ack, peer.last_window > 0) {
                    let scale = match (peer.window_scale, self.dirs[me].window_scale) {
                        (Some(s), Some(_)) => u32::from(s),
                        _ => 0,
                    };
                    let window = i64::from(u32::from(peer.last_window) << scale);
                    if self.dirs[me].rel(ack).is_some_and(|acked| end == acked + window) {
                        self.window_full += 1;
                    }
                }
            }
        }
        // Hand over the bytes beyond what was delivered, in order; missing bytes become a gap.
        let dir = &mut self.dirs[me];
        if end <= dir.delivered {
            return;
        }
        if start > dir.delivered {
            let missing = (start - dir.delivered) as u64;
            dir.delivered = start;
            self.exchanges.gap(side, missing);
        }
        let dir = &mut self.dirs[me];
        let skip = (dir.delivered - start) as usize;
        let captured = seg.payload.get(skip..).unwrap_or(&[]);
        let wire_left = (end - dir.delivered) as usize;
        let take = captured.len().min(wire_left);
        dir.delivered = end;
        self.exchanges.data(side, ts_ns, &captured[..take], self.id, scratch);
        if take < wire_left {
            self.exchanges.gap(side, (wire_left - take) as u64);
        }
    }

    fn fin(&mut self, side: Side, ts_ns: i64, at: i64, bare: bool) {
        let dir = &mut self.dirs[index(side)];
        // A FIN again, or a FIN in sequence space already used: a retransmission.
        if dir.fin_at == Some(at) || at < dir.next {
            if bare {
                self.retransmits += 1;
            }
            if dir.fin_at.is_some() {
                return;
            }
        }
        dir.fin_at = Some(at);
        self.first_fin.get_or_insert((ts_ns, side));
    }

    fn ack(&mut self, side: Side, seg: &Segment<'_>, ts_ns: i64) {
        let me = index(side);
        let (mine, peer) = if me == 0 {
            let (a, b) = self.dirs.split_at_mut(1);
            (&mut a[0], &mut b[0])
        } else {
            let (a, b) = self.dirs.split_at_mut(1);
            (&mut b[0], &mut a[0])
        };
        let acked = peer.rel(seg.ack);
        if let (Some(fin_at), Some(acked)) = (peer.fin_at, acked) {
            if acked > fin_at && peer.fin_acked_ts_ns.is_none() {
                peer.fin_acked_ts_ns = Some(ts_ns);
            }
        }
        let pure = seg.payload_len == 0 && seg.flags & (FLAG_SYN | FLAG_FIN | FLAG_RST) == 0;
        if pure
            && mine.last_ack == Some(seg.ack)
            && mine.last_window == seg.window
            && acked.is_some_and(|a| peer.next > a)
        {
            self.dup_acks += 1;
        }
        if seg.window == 0 && !seg.has(FLAG_SYN) && !seg.has(FLAG_FIN) {
            self.zero_windows += 1;
        }
        mine.last_ack = Some(seg.ack);
        mine.last_window = seg.window;
    }

    fn phase(&self) -> Phase {
        if self.first_fin.is_some() {
            return Phase::Close;
        }
        if self.syn_ts_ns.is_some()
            && self.handshake_ack_ts_ns.is_none()
            && self.exchanges.first_request_ts_ns.is_none()
        {
            return Phase::Handshake;
        }
        self.exchanges.phase()
    }

    /// The connection's records. `expired` says the flow table dropped it before it ended.
    /// (By reference, so the analyzer can reuse the connection's allocation for the next one.)
    pub(crate) fn finish(&mut self, expired: bool, scratch: &mut Scratch) -> FinishedConnection {
        let id = self.id;
        // Read in place: a moved-out copy would be read back right after its memcpy (a store
        // forwarding stall once per connection).
        let exchanges = &mut self.exchanges;
        let protocol = exchanges.protocol();
        let http_requests = exchanges.http_requests;
        let http_responses = exchanges.http_responses;
        let first_request_ts_ns = exchanges.first_request_ts_ns;
        let db_setup_us = exchanges.db_setup_ns.map(micros);
        let (records, idle_ns, exchange_count) = exchanges.finish(id, scratch);
        let handshake_end = self.handshake_ack_ts_ns;
        let last_fin_ack = match (self.dirs[0].fin_acked_ts_ns, self.dirs[1].fin_acked_ts_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        let (close_start_ts_ns, close_us) = match (self.first_fin, self.rst) {
            (Some((fin, _)), Some((rst, _, _))) if last_fin_ack.is_none() => {
                (Some(fin), Some(micros(rst.saturating_sub(fin))))
            }
            (Some((fin, _)), _) => {
                (Some(fin), last_fin_ack.map(|end| micros(end.saturating_sub(fin))))
            }
            (None, Some((rst, _, _))) => (Some(rst), None),
            (None, None) => (None, None),
        };
        let both_fins = self.dirs[0].fin_at.is_some() && self.dirs[1].fin_at.is_some();
        let state = if self.rst.is_some() {
            ConnState::Reset
        } else if self.syn_ts_ns.is_none() {
            ConnState::Partial
        } else if both_fins {
            ConnState::Complete
        } else {
            ConnState::Open
        };
        let half_closed = self.rst.is_none()
            && !both_fins
            && (self.dirs[0].fin_acked_ts_ns.is_some() || self.dirs[1].fin_acked_ts_ns.is_some());
        let first = records.first();
        let bytes = |d: &Direction| d.next.max(0) as u64;
        let connection = ConnectionRecord {
            conn_id: id,
            client_ip: self.client.0,
            client_port: self.client.1,
            server_ip: self.server.0,
            server_port: self.server.1,
            vlan: self.vlan,
            interface_id: self.interface_id,
            syn_ts_ns: self.syn_ts_ns,
            handshake_us: match (self.syn_ts_ns, handshake_end) {
                (Some(syn), Some(ack)) => Some(micros(ack.saturating_sub(syn))),
                _ => None,
            },
            synack_to_ack_us: match (self.synack_ts_ns, handshake_end) {
                (Some(synack), Some(ack)) => Some(micros(ack.saturating_sub(synack))),
                _ => None,
            },
            syn_retransmits: self.syn_retransmits,
            first_request_ts_ns,
            request_wait_us: match (handshake_end, first_request_ts_ns) {
                (Some(hs), Some(req)) => Some(micros(req.saturating_sub(hs))),
                _ => None,
            },
            server_us: first.and_then(|e| e.server_us),
            response_us: first.and_then(|e| e.response_us),
            exchanges: exchange_count,
            db_setup_us,
            idle_us: idle_ns.map(micros),
            close_start_ts_ns,
            close_us,
            closed_by: self.first_fin.map(|(_, side)| side),
            reset_by: self.rst.map(|(_, side, _)| side),
            reset_phase: self.rst.map(|(_, _, phase)| phase),
            half_closed,
            retransmits: self.retransmits,
            out_of_order: self.out_of_order,
            dup_acks: self.dup_acks,
            zero_windows: self.zero_windows,
            window_full: self.window_full,
            bytes_c2s: bytes(&self.dirs[0]),
            bytes_s2c: bytes(&self.dirs[1]),
            first_ts_ns: self.first_ts_ns,
            last_ts_ns: self.last_ts_ns,
            lifetime_us: micros(self.last_ts_ns.saturating_sub(self.first_ts_ns)),
            packets: self.packets,
            state,
            protocol,
            http_requests,
            http_responses,
            expired,
        };
        FinishedConnection { connection, exchanges: records }
    }
}

/// Classifies a data segment `[start, end)` against what the direction has seen, updating it.
fn classify(
    dir: &mut Direction,
    start: i64,
    end: i64,
    ts_ns: i64,
    out_of_order_ns: i64,
) -> SeqVerdict {
    if start >= dir.next {
        if start > dir.next && dir.holes.len() < MAX_HOLES {
            dir.holes.push(Hole { start: dir.next, end: start, seen_ts_ns: ts_ns });
        }
        dir.next = end;
        return SeqVerdict::New;
    }
    if end - start <= 1 && start == dir.next - 1 {
        return SeqVerdict::KeepAlive;
    }
    let filled = dir.holes.iter().position(|h| start < h.end && end > h.start);
    if end > dir.next {
        dir.next = end;
    }
    let Some(i) = filled else {
        return SeqVerdict::Retransmission;
    };
    let hole = dir.holes[i];
    dir.holes.swap_remove(i);
    if start > hole.start {
        dir.holes.push(Hole { end: start, ..hole });
    }
    if end < hole.end && dir.holes.len() < MAX_HOLES {
        dir.holes.push(Hole { start: end, ..hole });
    }
    if ts_ns.saturating_sub(hole.seen_ts_ns) <= out_of_order_ns {
        SeqVerdict::OutOfOrder
    } else {
        SeqVerdict::Retransmission
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_verdicts() {
        let mut dir = Direction::default();
        dir.set_base(u32::MAX - 10); // wraps inside the test
        let cases = [
            (0, 100, 0, SeqVerdict::New),
            (0, 100, 1, SeqVerdict::Retransmission),
            (200, 300, 2, SeqVerdict::New), // 100..200 missing
            (100, 200, 1_000, SeqVerdict::OutOfOrder), // filled within 3 ms
            (400, 500, 2_000, SeqVerdict::New), // 300..400 missing
            (300, 400, 10_000_000, SeqVerdict::Retransmission), // filled 10 ms later
            (499, 500, 10_000_001, SeqVerdict::KeepAlive),
            (450, 550, 10_000_002, SeqVerdict::Retransmission), // overlaps, extends
        ];
        for (start, end, ts, want) in cases {
            let raw = (u32::MAX - 10).wrapping_add(start as u32);
            let rel = dir.rel(raw).unwrap();
            assert_eq!(rel, start, "rel of {start}");
            assert_eq!(
                classify(&mut dir, rel, end, ts, DEFAULT_OUT_OF_ORDER_NS),
                want,
                "{start}..{end}"
            );
        }
        assert_eq!(dir.next, 550);
    }
}
