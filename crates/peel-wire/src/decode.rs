//! From a captured frame to a TCP segment, zero-copy: link layer (Ethernet with 802.1Q/QinQ tags
//! and MPLS, Linux SLL and SLL2, BSD NULL/LOOP, raw IP, NFLOG, Ethernet mPackets), then IPv4/IPv6
//! with extension headers and TCP through `etherparse`'s lax slices, so a snaplen-cut payload still
//! gives its header. VXLAN (UDP 4789) is unwrapped so the inner connection is analyzed, as tshark does.
//!
//! Nothing here keeps state or allocates; anything that is not TCP is `NotTcp`, anything broken is
//! a [`WarningReason`] for the caller to count. It never panics on any input (fuzzed).

use std::net::IpAddr;

use etherparse::{
    EtherType, Ethernet2Slice, IpNumber, LaxIpSlice, LenSource, SingleVlanSlice, TcpOptionElement,
    TcpSlice, UdpSlice,
};

use crate::records::WarningReason;

/// LINKTYPE_* values peel decodes.
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const RAW: u32 = 101;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const NFLOG: u32 = 239;
    pub const ETHERNET_MPACKET: u32 = 274;
    pub const LINUX_SLL2: u32 = 276;
}

pub(crate) const FLAG_FIN: u8 = 0x01;
pub(crate) const FLAG_SYN: u8 = 0x02;
pub(crate) const FLAG_RST: u8 = 0x04;
pub(crate) const FLAG_ACK: u8 = 0x10;

const VXLAN_PORT: u16 = 4789;
const MAX_VLAN_TAGS: usize = 4;

/// One decoded TCP segment, borrowing the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// All VLAN ids packed 12 bits each (outermost in the low bits); 0 when untagged.
    pub vlan_key: u64,
    /// Outermost VLAN id.
    pub vlan: Option<u16>,
    pub seq: u32,
    pub ack: u32,
    /// FIN, SYN, RST, PSH, ACK, URG, ECE, CWR as in the TCP header's flag byte.
    pub flags: u8,
    pub window: u16,
    /// Window scale option (only meaningful on SYN segments).
    pub window_scale: Option<u8>,
    /// Captured payload (may be shorter than `payload_len` when the snapshot length cut it).
    pub payload: &'a [u8],
    /// Payload length on the wire, from the IP length fields.
    pub payload_len: u32,
    /// The TCP options were cut off by the snapshot length (only the fixed header was decoded).
    pub header_cut: bool,
}

impl Segment<'_> {
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What a frame turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    Tcp(Segment<'a>),
    /// Valid, but not TCP (ARP, UDP, ICMP, ...): not a warning.
    NotTcp,
    /// Skipped for a reason worth counting.
    Skipped(WarningReason),
}

#[derive(Debug, Default, Clone, Copy)]
struct Tags {
    key: u64,
    count: usize,
    outer: Option<u16>,
}

impl Tags {
    fn push(&mut self, id: u16) {
        if self.count < MAX_VLAN_TAGS {
            self.key |= u64::from(id & 0x0fff) << (12 * self.count);
        }
        if self.outer.is_none() {
            self.outer = Some(id);
        }
        self.count += 1;
    }
}

/// Decodes one frame of link type `linktype`; `cut` says the capture kept fewer bytes than the wire had.
#[inline]
pub fn decode(linktype: u32, frame: &[u8], cut: bool) -> Decoded<'_> {
    // The per-packet common case first: untagged Ethernet carrying a plain IPv4/TCP packet (what
    // the general path gives for it, without its layers; anything else takes the general path).
    if linktype == linktype::ETHERNET {
        if let (Some([0x08, 0x00]), Some(ip)) = (frame.get(12..14), frame.get(14..)) {
            if let Some(seg) = plain_ipv4_tcp(ip, Tags::default()) {
                return Decoded::Tcp(seg);
            }
        }
    }
    decode_depth(linktype, frame, cut, 0)
}

fn decode_depth(linktype: u32, frame: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    let tags = Tags::default();
    match linktype {
        linktype::ETHERNET => ethernet(frame, cut, depth),
        linktype::ETHERNET_MPACKET => {
            // 7 preamble bytes and the SMD byte precede the frame (IEEE 802.3br).
            match frame.get(8..) {
                Some(rest) => ethernet(rest, cut, depth),
                None => link_error(cut),
            }
        }
        linktype::RAW | linktype::IPV4 | linktype::IPV6 => ip(frame, tags, cut, depth),
        linktype::NULL | linktype::LOOP => null_loopback(frame, cut, depth),
        linktype::LINUX_SLL => match (frame.get(14..16), frame.get(16..)) {
            (Some(proto), Some(rest)) => ether_type(proto_u16(proto), rest, tags, cut, depth),
            _ => link_error(cut),
        },
        linktype::LINUX_SLL2 => match (frame.get(0..2), frame.get(20..)) {
            (Some(proto), Some(rest)) => ether_type(proto_u16(proto), rest, tags, cut, depth),
            _ => link_error(cut),
        },
        linktype::NFLOG => nflog(frame, cut, depth),
        _ => Decoded::Skipped(WarningReason::UnsupportedLinkType),
    }
}

fn proto_u16(b: &[u8]) -> u16 {
    match b {
        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

fn link_error(cut: bool) -> Decoded<'static> {
    Decoded::Skipped(if cut { WarningReason::SnaplenCut } else { WarningReason::MalformedLink })
}

fn ethernet(frame: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    match Ethernet2Slice::from_slice_without_fcs(frame) {
        Ok(eth) => ether_type(eth.ether_type().0, eth.payload_slice(), Tags::default(), cut, depth),
        Err(_) => link_error(cut),
    }
}

fn ether_type(mut kind: u16, mut rest: &[u8], mut tags: Tags, cut: bool, depth: u8) -> Decoded<'_> {
    loop {
        match EtherType(kind) {
            EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME => {
                let Ok(vlan) = SingleVlanSlice::from_slice(rest) else {
                    return link_error(cut);
                };
                tags.push(vlan.vlan_identifier().value());
                kind = vlan.ether_type().0;
                rest = vlan.payload_slice();
            }
            EtherType::IPV4 | EtherType::IPV6 => return ip(rest, tags, cut, depth),
            // IEEE 802.3 length field: LLC follows; SNAP (AA AA 03, OUI) carries an EtherType.
            EtherType(length) if length < 0x0600 => match rest {
                [0xaa, 0xaa, 0x03, _, _, _, hi, lo, payload @ ..] => {
                    kind = u16::from_be_bytes([*hi, *lo]);
                    rest = payload;
                }
                _ => return Decoded::NotTcp,
            },
            EtherType(0x8847) | EtherType(0x8848) => return mpls(rest, tags, cut, depth),
            _ => return Decoded::NotTcp,
        }
    }
}

/// MPLS label stack, then IP sniffed by its version nibble (what tshark does for plain MPLS).
fn mpls(mut rest: &[u8], tags: Tags, cut: bool, depth: u8) -> Decoded<'_> {
    loop {
        let Some(label) = rest.get(0..4) else {
            return link_error(cut);
        };
        let bottom = label[2] & 0x01 != 0;
        rest = &rest[4..];
        if bottom {
            break;
        }
    }
    match rest.first().map(|b| b >> 4) {
        Some(4) | Some(6) => ip(rest, tags, cut, depth),
        _ => Decoded::NotTcp,
    }
}

/// BSD loopback: a 4-byte address family in the capturing host's byte order (NULL) or network order (LOOP).
fn null_loopback(frame: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    let (Some(family), Some(rest)) = (frame.get(0..4), frame.get(4..)) else {
        return link_error(cut);
    };
    let family = [family[0], family[1], family[2], family[3]];
    let le = u32::from_le_bytes(family);
    let be = u32::from_be_bytes(family);
    // AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD/OpenBSD), 28 (FreeBSD), 30 (macOS), 10 (Linux).
    let known = |v: u32| matches!(v, 2 | 10 | 24 | 28 | 30);
    if known(le) || known(be) {
        ip(rest, Tags::default(), cut, depth)
    } else {
        Decoded::NotTcp
    }
}

/// NFLOG: a 4-byte header, then TLVs (host byte order lengths); type 9 holds the IP packet.
fn nflog(frame: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    let mut at = 4usize;
    while let Some(tlv) = frame.get(at..at + 4) {
        let len = usize::from(u16::from_le_bytes([tlv[0], tlv[1]]));
        let kind = u16::from_le_bytes([tlv[2], tlv[3]]);
        if len < 4 {
            return link_error(cut);
        }
        if kind == 9 {
            let end = (at + len).min(frame.len());
            return match frame.get(at + 4..end) {
                Some(payload) => ip(payload, Tags::default(), cut, depth),
                None => link_error(cut),
            };
        }
        at += len.div_ceil(4) * 4;
    }
    link_error(cut)
}

fn ip(data: &[u8], tags: Tags, cut: bool, depth: u8) -> Decoded<'_> {
    match plain_ipv4_tcp(data, tags) {
        Some(seg) => Decoded::Tcp(seg),
        None => ip_general(data, tags, cut, depth),
    }
}

/// The per-packet common case, read directly: IPv4 without options or fragmentation carrying a
/// complete TCP header, not a SYN (SYNs go the general way for their window-scale option). Gives
/// exactly what [`ip_general`] gives for such a packet (a test compares them); `None` for anything else.
fn plain_ipv4_tcp(data: &[u8], tags: Tags) -> Option<Segment<'_>> {
    let header: &[u8; 20] = data.get(..20)?.try_into().ok()?;
    // Version 4, IHL 5; protocol TCP; neither More Fragments nor a fragment offset.
    if header[0] != 0x45 || header[9] != 6 || header[6] & 0x3f != 0 || header[7] != 0 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let tcp = data.get(20..total_len)?;
    let fixed: &[u8; 20] = tcp.get(..20)?.try_into().ok()?;
    let header_len = usize::from(fixed[12] >> 4) * 4;
    let flags = fixed[13];
    if header_len < 20 || flags & FLAG_SYN != 0 {
        return None;
    }
    let payload = tcp.get(header_len..)?;
    let addr = |i: usize| IpAddr::from([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    Some(from_fixed_header((addr(12), addr(16)), fixed, tags, payload, payload_len))
}

/// A segment from the fixed 20 bytes of a TCP header (no options read).
fn from_fixed_header<'a>(
    (src, dst): (IpAddr, IpAddr),
    fixed: &[u8; 20],
    tags: Tags,
    payload: &'a [u8],
    payload_len: u32,
) -> Segment<'a> {
    let be16 = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
    Segment {
        src,
        dst,
        src_port: be16(0),
        dst_port: be16(2),
        vlan_key: tags.key,
        vlan: tags.outer,
        seq: be32(4),
        ack: be32(8),
        flags: fixed[13],
        window: be16(14),
        window_scale: None,
        payload,
        payload_len,
        header_cut: false,
    }
}

/// Any IP packet, through `etherparse`'s lax slices.
fn ip_general(data: &[u8], tags: Tags, cut: bool, depth: u8) -> Decoded<'_> {
    let Ok((slice, _ext_err)) = LaxIpSlice::from_slice(data) else {
        return Decoded::Skipped(if cut {
            WarningReason::SnaplenCut
        } else {
            WarningReason::MalformedIp
        });
    };
    let payload = slice.payload();
    if payload.fragmented {
        return Decoded::Skipped(WarningReason::IpFragment);
    }
    match payload.ip_number {
        IpNumber::TCP => {}
        IpNumber::UDP => return udp(payload.payload, cut, depth),
        _ => return Decoded::NotTcp,
    }
    // Wire length of the IP payload: the header's claim when it is consistent, else what we have.
    let declared = match (&slice, payload.len_source) {
        (_, LenSource::Slice) if !payload.incomplete => payload.payload.len(),
        (LaxIpSlice::Ipv4(v4), _) => {
            let header = v4.header();
            usize::from(header.total_len()).saturating_sub(
                usize::from(header.ihl()) * 4 + v4.extensions().auth.map_or(0, |a| a.slice().len()),
            )
        }
        (LaxIpSlice::Ipv6(v6), _) => {
            let length = usize::from(v6.header().payload_length());
            if length == 0 {
                payload.payload.len() // jumbogram: the hop-by-hop option carries the length
            } else {
                length.saturating_sub(v6.extensions().slice().len())
            }
        }
    };
    let tcp = match TcpSlice::from_slice(payload.payload) {
        Ok(tcp) => tcp,
        Err(etherparse::err::tcp::HeaderSliceError::Content(_)) => {
            return Decoded::Skipped(WarningReason::MalformedTcp);
        }
        Err(etherparse::err::tcp::HeaderSliceError::Len(_)) => {
            // Options cut by the snapshot length: the fixed 20 bytes still say what the segment is.
            if let Some(seg) = fixed_header_only(&slice, payload.payload, declared, tags) {
                return Decoded::Tcp(seg);
            }
            let truncated = cut || payload.incomplete;
            return Decoded::Skipped(if truncated {
                WarningReason::SnaplenCut
            } else {
                WarningReason::MalformedTcp
            });
        }
    };
    let header_len = tcp.header_slice().len();
    let captured = tcp.payload();
    let payload_len = declared.saturating_sub(header_len).max(captured.len());
    let flags = tcp.header_slice().get(13).copied().unwrap_or(0);
    let window_scale = if tcp.syn() {
        tcp.options_iterator().find_map(|option| match option {
            Ok(TcpOptionElement::WindowScale(shift)) => Some(shift.min(14)),
            _ => None,
        })
    } else {
        None
    };
    Decoded::Tcp(Segment {
        src: slice.source_addr(),
        dst: slice.destination_addr(),
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        vlan_key: tags.key,
        vlan: tags.outer,
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags,
        window: tcp.window_size(),
        window_scale,
        payload: captured,
        payload_len: u32::try_from(payload_len).unwrap_or(u32::MAX),
        header_cut: false,
    })
}

/// A TCP segment whose options were cut off: ports, numbers, flags and window from the fixed header.
fn fixed_header_only<'a>(
    ip: &LaxIpSlice<'a>,
    tcp: &'a [u8],
    declared: usize,
    tags: Tags,
) -> Option<Segment<'a>> {
    let fixed: &[u8; 20] = tcp.get(..20)?.try_into().ok()?;
    let header_len = usize::from(fixed[12] >> 4) * 4;
    if header_len < 20 {
        return None;
    }
    let payload_len = u32::try_from(declared.saturating_sub(header_len)).unwrap_or(u32::MAX);
    let addrs = (ip.source_addr(), ip.destination_addr());
    Some(Segment { header_cut: true, ..from_fixed_header(addrs, fixed, tags, &[], payload_len) })
}

fn udp(data: &[u8], cut: bool, depth: u8) -> Decoded<'_> {
    let Ok(udp) = UdpSlice::from_slice_lax(data) else {
        return Decoded::NotTcp;
    };
    if udp.destination_port() != VXLAN_PORT || depth > 0 {
        return Decoded::NotTcp;
    }
    // VXLAN: 8-byte header with the I flag, then an Ethernet frame.
    match udp.payload().get(8..) {
        Some(inner) if udp.payload().first().is_some_and(|f| f & 0x08 != 0) => {
            decode_depth(linktype::ETHERNET, inner, cut, depth + 1)
        }
        _ => Decoded::NotTcp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1000, 65535)
            .ack(5);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let frame = tcp_frame(b"GET");
        let Decoded::Tcp(seg) = decode(linktype::ETHERNET, &frame, false) else { panic!() };
        assert_eq!((seg.src_port, seg.dst_port, seg.seq, seg.ack), (40000, 80, 1000, 5));
        assert_eq!((seg.payload, seg.payload_len, seg.vlan), (&b"GET"[..], 3, None));
        assert!(seg.has(FLAG_ACK) && !seg.has(FLAG_SYN));
    }

    #[test]
    fn snaplen_cut_payload_keeps_wire_length() {
        let frame = tcp_frame(&[b'x'; 100]);
        let cut = &frame[..frame.len() - 60];
        let Decoded::Tcp(seg) = decode(linktype::ETHERNET, cut, true) else { panic!() };
        assert_eq!((seg.payload.len(), seg.payload_len), (40, 100));
    }

    #[test]
    fn vlan_stack_is_part_of_the_key() {
        let inner = tcp_frame(b"");
        let mut frame = inner[..12].to_vec();
        for id in [100u16, 200, 300] {
            frame.extend([0x81, 0x00]);
            frame.extend(id.to_be_bytes());
        }
        frame.extend(&inner[12..]);
        let Decoded::Tcp(seg) = decode(linktype::ETHERNET, &frame, false) else { panic!() };
        assert_eq!(seg.vlan, Some(100));
        assert_eq!(seg.vlan_key, 100 | (200 << 12) | (300 << 24));
    }

    #[test]
    fn other_link_types_reach_tcp() {
        let eth = tcp_frame(b"hi");
        let ip = &eth[14..];
        let mut sll = vec![0u8; 14];
        sll.extend([0x08, 0x00]);
        sll.extend(ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend([0u8; 18]);
        sll2.extend(ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend(ip);
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend(ip);
        for (lt, frame) in [
            (linktype::RAW, ip.to_vec()),
            (linktype::IPV4, ip.to_vec()),
            (linktype::LINUX_SLL, sll),
            (linktype::LINUX_SLL2, sll2),
            (linktype::NULL, null),
            (linktype::LOOP, lo),
        ] {
            let Decoded::Tcp(seg) = decode(lt, &frame, false) else { panic!("linktype {lt}") };
            assert_eq!(seg.payload, b"hi", "linktype {lt}");
        }
    }

    /// The direct IPv4 path agrees with the general one on every packet it takes.
    #[test]
    fn plain_ipv4_path_matches_the_general_path() {
        let mut frames = Vec::new();
        for payload in [&b""[..], b"GET / HTTP/1.1\r\n\r\n", &[7u8; 1400]] {
            frames.push(tcp_frame(payload));
            let mut padded = tcp_frame(payload);
            padded.extend([0u8; 6]); // Ethernet padding after the IP packet
            frames.push(padded);
            let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 80, 1000, 65535)
                .syn()
                .ack(5)
                .options(&[TcpOptionElement::WindowScale(7), TcpOptionElement::Noop])
                .unwrap();
            let mut with_options = Vec::new();
            builder.write(&mut with_options, payload).unwrap();
            frames.push(with_options.clone());
            with_options[14 + 20 + 13] &= !FLAG_SYN; // options on a non-SYN segment
            frames.push(with_options);
        }
        let base = tcp_frame(b"data");
        let mut variants = Vec::new();
        for (at, value) in [
            (14 + 6, 0x20u8),     // More Fragments
            (14 + 7, 1),          // fragment offset
            (14 + 6, 0x40),       // Don't Fragment
            (14 + 6, 0x80),       // reserved bit
            (14, 0x46),           // IHL 6
            (14 + 9, 17),         // UDP
            (14 + 3, 0),          // total length 0 (TSO)
            (14 + 3, 30),         // total length below the headers
            (14 + 3, 0xff),       // total length beyond the frame
            (14 + 20 + 12, 0x40), // TCP data offset 4
            (14 + 20 + 12, 0xf0), // TCP data offset beyond the segment
        ] {
            let mut frame = base.clone();
            frame[at] = value;
            variants.push(frame);
        }
        frames.extend(variants);
        for len in 0..base.len() {
            frames.push(base[..len].to_vec());
        }
        let mut direct = 0;
        for frame in &frames {
            // The Ethernet shortcut in `decode` agrees with the layered path (also on cut frames).
            let layered = decode_depth(linktype::ETHERNET, frame, false, 0);
            assert_eq!(decode(linktype::ETHERNET, frame, false), layered, "frame {frame:02x?}");
            let Some(packet) = frame.get(14..) else { continue };
            let general = ip_general(packet, Tags::default(), false, 0);
            if let Some(seg) = plain_ipv4_tcp(packet, Tags::default()) {
                assert_eq!(Decoded::Tcp(seg), general, "frame {frame:02x?}");
                direct += 1;
            }
            assert_eq!(ip(packet, Tags::default(), false, 0), general, "frame {frame:02x?}");
        }
        // Plain and padded frames, options on a non-SYN, DF, reserved bit: 3 payloads x 3, plus 2.
        assert_eq!(direct, 11);
    }

    #[test]
    fn broken_frames_are_counted_not_panicked_on() {
        let frame = tcp_frame(b"data");
        for len in 0..frame.len() {
            let _ = decode(linktype::ETHERNET, &frame[..len], true);
            let _ = decode(linktype::ETHERNET, &frame[..len], false);
        }
        assert_eq!(
            decode(linktype::ETHERNET, &frame[..20], false),
            Decoded::Skipped(WarningReason::MalformedIp)
        );
        assert_eq!(
            decode(linktype::ETHERNET, &frame[..40], true),
            Decoded::Skipped(WarningReason::SnaplenCut)
        );
        assert_eq!(
            decode(9999, &frame, false),
            Decoded::Skipped(WarningReason::UnsupportedLinkType)
        );
    }
}
