//! Synthetic captures at exactly chosen timestamps, built with `etherparse`'s packet builder: the
//! ground truth for accuracy tests (a phase must come out to the nanosecond) and the deterministic
//! multi-million-packet file of the benchmark.
//!
//! It writes classic nanosecond pcap over Ethernet/IPv4. It is a test-data generator, not a
//! traffic generator: nothing here touches a network.

use std::io::Write;

use etherparse::PacketBuilder;

use crate::error::WireError;
use crate::records::Side;

const PCAP_MAGIC_NSEC: u32 = 0xa1b2_3c4d;
const NANOS_PER_SEC: i64 = 1_000_000_000;
const WINDOW: u16 = 65_535;

/// Writes a nanosecond-resolution pcap file (LINKTYPE_ETHERNET).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    packets: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W) -> Result<PcapWriter<W>, WireError> {
        out.write_all(&PCAP_MAGIC_NSEC.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&262_144u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter { out, packets: 0 })
    }

    /// Writes one frame captured at `ts_ns` (epoch nanoseconds, not before 1970).
    pub fn write_frame(&mut self, ts_ns: i64, frame: &[u8]) -> Result<(), WireError> {
        let ts = ts_ns.max(0);
        let sec = u32::try_from(ts / NANOS_PER_SEC)
            .map_err(|_| WireError::Build(format!("timestamp {ts_ns} beyond 2106")))?;
        let nsec = (ts % NANOS_PER_SEC) as u32;
        let len = frame.len() as u32;
        self.out.write_all(&sec.to_le_bytes())?;
        self.out.write_all(&nsec.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(frame)?;
        self.packets += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and returns the writer.
    pub fn into_inner(mut self) -> Result<W, WireError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// TCP flags of a synthetic segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// One TCP connection between two IPv4 endpoints; each call writes one segment and advances the
/// sender's sequence number by what the segment occupies.
#[derive(Debug, Clone)]
pub struct TcpFlow {
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    /// Next sequence number of the client and of the server.
    next: [u32; 2],
    /// Last ISN of the client and of the server (for retransmitting the SYN/ACK).
    isn: [u32; 2],
    /// Optional 802.1Q tag on every frame.
    vlan: Option<u16>,
    /// Bit 0: the client sent its FIN; bit 1: the server did.
    fins: u8,
    frame: Vec<u8>,
}

fn slot(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

impl TcpFlow {
    /// A flow with the given initial sequence numbers.
    pub fn new(
        client: ([u8; 4], u16),
        server: ([u8; 4], u16),
        client_isn: u32,
        server_isn: u32,
    ) -> TcpFlow {
        TcpFlow {
            client,
            server,
            next: [client_isn, server_isn],
            isn: [client_isn, server_isn],
            vlan: None,
            fins: 0,
            frame: Vec::with_capacity(1600),
        }
    }

    /// Tags every frame with this VLAN id.
    pub fn with_vlan(mut self, vlan: u16) -> TcpFlow {
        self.vlan = Some(vlan);
        self
    }

    /// Client SYN (sent again with the same ISN when called again).
    pub fn syn<W: Write>(&mut self, w: &mut PcapWriter<W>, ts_ns: i64) -> Result<(), WireError> {
        let seq = self.isn[0];
        self.next[0] = seq.wrapping_add(1);
        self.write(w, ts_ns, Side::Client, seq, Flags { syn: true, ..Flags::default() }, &[])
    }

    /// Server SYN/ACK with ISN `server_isn` (pass the same value again for a retransmission).
    pub fn syn_ack<W: Write>(
        &mut self,
        w: &mut PcapWriter<W>,
        ts_ns: i64,
        server_isn: u32,
    ) -> Result<(), WireError> {
        self.isn[1] = server_isn;
        self.next[1] = server_isn.wrapping_add(1);
        self.write(
            w,
            ts_ns,
            Side::Server,
            server_isn,
            Flags { syn: true, ack: true, ..Flags::default() },
            &[],
        )
    }

    /// A data segment (ACK set) from `from`.
    pub fn data<W: Write>(
        &mut self,
        w: &mut PcapWriter<W>,
        ts_ns: i64,
        from: Side,
        payload: &[u8],
    ) -> Result<(), WireError> {
        let seq = self.next[slot(from)];
        self.next[slot(from)] = seq.wrapping_add(payload.len() as u32);
        self.write(w, ts_ns, from, seq, Flags { ack: true, ..Flags::default() }, payload)
    }

    /// A data segment at `back` bytes before the sender's next sequence number, which is not advanced
    /// (a retransmission when the bytes were sent before).
    pub fn resend<W: Write>(
        &mut self,
        w: &mut PcapWriter<W>,
        ts_ns: i64,
        from: Side,
        back: u32,
        payload: &[u8],
    ) -> Result<(), WireError> {
        let seq = self.next[slot(from)].wrapping_sub(back);
        self.write(w, ts_ns, from, seq, Flags { ack: true, ..Flags::default() }, payload)
    }

    /// Skips `bytes` of the sender's sequence space (a segment the capture never saw).
    pub fn skip(&mut self, from: Side, bytes: u32) {
        self.next[slot(from)] = self.next[slot(from)].wrapping_add(bytes);
    }

    /// A pure ACK from `from`.
    pub fn ack<W: Write>(
        &mut self,
        w: &mut PcapWriter<W>,
        ts_ns: i64,
        from: Side,
    ) -> Result<(), WireError> {
        let seq = self.next[slot(from)];
        self.write(w, ts_ns, from, seq, Flags { ack: true, ..Flags::default() }, &[])
    }

    /// A FIN/ACK from `from` (sent again at the same sequence number when called again).
    pub fn fin<W: Write>(
        &mut self,
        w: &mut PcapWriter<W>,
        ts_ns: i64,
        from: Side,
    ) -> Result<(), WireError> {
        let seq = self.next[slot(from)];
        let fin_seq = self.isn_fin_seq(from, seq);
        self.write(w, ts_ns, from, fin_seq, Flags { fin: true, ack: true, ..Flags::default() }, &[])
    }

    fn isn_fin_seq(&mut self, from: Side, seq: u32) -> u32 {
        // The FIN occupies one sequence number; a repeated FIN reuses it.
        let key = slot(from);
        let fin_seq = if self.fin_sent(key) { seq.wrapping_sub(1) } else { seq };
        self.next[key] = fin_seq.wrapping_add(1);
        self.fins |= 1 << key;
        fin_seq
    }

    fn fin_sent(&self, key: usize) -> bool {
        self.fins & (1 << key) != 0
    }

    /// A RST from `from`.
    pub fn rst<W: Write>(
        &mut self,
        w: &mut PcapWriter<W>,
        ts_ns: i64,
        from: Side,
    ) -> Result<(), WireError> {
        let seq = self.next[slot(from)];
        self.write(w, ts_ns, from, seq, Flags { rst: true, ack: true, ..Flags::default() }, &[])
    }

    /// Writes a segment with explicit sequence number and flags; the ACK number is the peer's next.
    pub fn write<W: Write>(
        &mut self,
        w: &mut PcapWriter<W>,
        ts_ns: i64,
        from: Side,
        seq: u32,
        flags: Flags,
        payload: &[u8],
    ) -> Result<(), WireError> {
        let ((src_ip, src_port), (dst_ip, dst_port)) = match from {
            Side::Client => (self.client, self.server),
            Side::Server => (self.server, self.client),
        };
        let ack_number = self.next[1 - slot(from)];
        let mac = |ip: [u8; 4]| [0x02, 0, ip[0], ip[1], ip[2], ip[3]];
        let eth = PacketBuilder::ethernet2(mac(src_ip), mac(dst_ip));
        let ip = match self.vlan {
            Some(id) => eth
                .single_vlan(
                    etherparse::VlanId::try_new(id).map_err(|e| WireError::Build(e.to_string()))?,
                )
                .ipv4(src_ip, dst_ip, 64),
            None => eth.ipv4(src_ip, dst_ip, 64),
        };
        let mut tcp = ip.tcp(src_port, dst_port, seq, WINDOW);
        if flags.syn {
            tcp = tcp.syn();
        }
        if flags.fin {
            tcp = tcp.fin();
        }
        if flags.rst {
            tcp = tcp.rst();
        }
        if flags.ack && !(flags.syn && from == Side::Client) {
            tcp = tcp.ack(ack_number);
        }
        if !payload.is_empty() {
            tcp = tcp.psh();
        }
        self.frame.clear();
        tcp.write(&mut self.frame, payload).map_err(|e| WireError::Build(e.to_string()))?;
        w.write_frame(ts_ns, &self.frame)
    }
}

/// The shape of a benchmark capture: many short HTTP/1.1 connections, `concurrency` of them
/// interleaved at any moment, 11 packets each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSpec {
    pub connections: u64,
    pub concurrency: u32,
    /// Timestamp of the first packet (epoch ns).
    pub start_ts_ns: i64,
}

/// Packets written per connection by [`write_http_load`].
pub const PACKETS_PER_CONNECTION: u64 = 11;

/// Writes a deterministic capture of `spec.connections` HTTP connections (SYN, SYN/ACK, ACK,
/// request, ACK, two response segments, ACK, FIN, FIN, ACK) from clients 10.1.x.y to four servers
/// on port 8000. The same spec always gives the same bytes. Returns the packets written.
pub fn write_http_load<W: Write>(w: &mut PcapWriter<W>, spec: &LoadSpec) -> Result<u64, WireError> {
    const BODY: &[u8] = &[b'x'; 100];
    let slots = spec.concurrency.max(1) as usize;
    let mut flows: Vec<Option<(TcpFlow, u64, u8)>> = vec![None; slots];
    let mut started = 0u64;
    let mut ts_ns = spec.start_ts_ns;
    let mut request = Vec::with_capacity(128);
    let response_head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        BODY.len() * 2
    );
    loop {
        let mut active = false;
        for slot in flows.iter_mut() {
            if slot.is_none() && started < spec.connections {
                let n = started;
                started += 1;
                let client =
                    ([10, 1, (n >> 16) as u8 & 0x3f, (n >> 8) as u8], 1024 + (n % 60_000) as u16);
                let server = ([10, 2, 0, (n % 4) as u8 + 1], 8000);
                let isn = (n as u32).wrapping_mul(2_654_435_761);
                *slot = Some((TcpFlow::new(client, server, isn, 0), n, 0));
            }
            let Some((flow, n, step)) = slot else { continue };
            active = true;
            // Deterministic spacing: 1.0 to 2.9 µs between packets.
            ts_ns += 1_000
                + i64::from((*n as u32).wrapping_mul(7919).wrapping_add(u32::from(*step)) % 1_900);
            let isn_server = (*n as u32).wrapping_mul(40_503);
            match *step {
                0 => flow.syn(w, ts_ns)?,
                1 => flow.syn_ack(w, ts_ns, isn_server)?,
                2 => flow.ack(w, ts_ns, Side::Client)?,
                3 => {
                    request.clear();
                    request.extend_from_slice(
                        format!("GET /item/{} HTTP/1.1\r\nHost: bench\r\n\r\n", *n % 1000)
                            .as_bytes(),
                    );
                    flow.data(w, ts_ns, Side::Client, &request)?;
                }
                4 => flow.ack(w, ts_ns, Side::Server)?,
                5 => {
                    let mut first = response_head.as_bytes().to_vec();
                    first.extend_from_slice(BODY);
                    flow.data(w, ts_ns, Side::Server, &first)?;
                }
                6 => flow.data(w, ts_ns, Side::Server, BODY)?,
                7 => flow.ack(w, ts_ns, Side::Client)?,
                8 => flow.fin(w, ts_ns, Side::Client)?,
                9 => flow.fin(w, ts_ns, Side::Server)?,
                _ => flow.ack(w, ts_ns, Side::Client)?,
            }
            *step += 1;
            if u64::from(*step) == PACKETS_PER_CONNECTION {
                *slot = None;
            }
        }
        if !active {
            break;
        }
    }
    Ok(w.packets())
}
