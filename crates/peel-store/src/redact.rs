//! Redaction of packet captures on their way into an evidence archive.
//!
//! Each packet is cut after its protocol headers: link, IP, TCP/UDP, and for TCP payloads either
//! the HTTP/1.x header block (with the values of `Authorization`, `Proxy-Authorization`, `Cookie`
//! and `Set-Cookie` masked) or a few bytes of protocol framing (a TLS record header, a PostgreSQL
//! message type and length, a PostgreSQL StartupMessage's length and version). The original
//! length of every packet is kept, so phase analysis (which uses sequence numbers and timestamps)
//! still works on a redacted capture.
//!
//! Optionally, IP addresses are pseudonymized consistently: one [`IpMap`] maps each address to the
//! same pseudonym in every capture and in the database of the archive, and it is saved in a file
//! outside the archive, so the owner can map back and the recipient cannot.
//!
//! This is a small pcap/pcapng record walker of its own (not peel-wire's reader): it must rewrite
//! records byte-exactly, including blocks an analyzer skips, and it must drop pcapng blocks that
//! would leak what redaction removes (decryption secrets, name resolution, comments).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Result, StoreError};

/// Bytes of a non-HTTP TCP payload kept: a TLS record header or a PostgreSQL message header.
const FRAMING_BYTES: usize = 5;
/// Bytes kept of a PostgreSQL StartupMessage/SSLRequest (length and protocol code).
const PG_STARTUP_BYTES: usize = 8;
/// Header names whose values are masked.
const MASKED_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "set-cookie"];
/// Pseudonyms: 240.0.0.0/8 (IPv4, reserved) and 100::/64 (IPv6, discard-only).
const V4_BASE: u32 = 0xf000_0000;
const V4_INDEX: u32 = 0x00ff_ffff;
const V6_BASE: u128 = 0x0100 << 112;
const V6_INDEX: u128 = u64::MAX as u128;
const HTTP_METHODS: &[&str] =
    &["GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "];

/// A consistent mapping of real IP addresses to pseudonyms (IPv4 to 240.0.0.0/8, reserved and never
/// routed; IPv6 to 100::/64, the discard-only prefix), so a pseudonym never looks like a real one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpMap {
    forward: BTreeMap<IpAddr, IpAddr>,
    next_v4: u32,
    next_v6: u128,
}

impl IpMap {
    /// Loads a map saved by [`IpMap::save`], or an empty map if the file does not exist.
    pub fn load(path: &Path) -> Result<IpMap> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(IpMap::default()),
            Err(err) => return Err(StoreError::Io { path: path.to_path_buf(), source: err }),
        };
        let ip_map_err = |reason: String| StoreError::IpMap { path: path.to_path_buf(), reason };
        let pairs: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|err| ip_map_err(err.to_string()))?;
        let mut map = IpMap::default();
        for (real, pseudo) in pairs {
            let real: IpAddr =
                real.parse().map_err(|_| ip_map_err(format!("'{real}' is not an IP address")))?;
            let pseudo: IpAddr = pseudo
                .parse()
                .map_err(|_| ip_map_err(format!("'{pseudo}' is not an IP address")))?;
            match pseudo {
                IpAddr::V4(v4) => map.next_v4 = map.next_v4.max(u32::from(v4) & V4_INDEX),
                IpAddr::V6(v6) => map.next_v6 = map.next_v6.max(u128::from(v6) & V6_INDEX),
            }
            map.forward.insert(real, pseudo);
        }
        Ok(map)
    }

    /// Saves the map as a JSON object `{ "real": "pseudonym" }`, mode 0600, via a temporary name.
    pub fn save(&self, path: &Path) -> Result<()> {
        let pairs: BTreeMap<String, String> = self
            .forward
            .iter()
            .map(|(real, pseudo)| (real.to_string(), pseudo.to_string()))
            .collect();
        let text = serde_json::to_string_pretty(&pairs).map_err(|err| StoreError::IpMap {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
        crate::archive::write_file_atomically(path, text.as_bytes())
    }

    /// The pseudonym of `ip`, allocating the next free one the first time `ip` is seen.
    pub fn pseudonym(&mut self, ip: IpAddr) -> IpAddr {
        if let Some(pseudo) = self.forward.get(&ip) {
            return *pseudo;
        }
        let pseudo = match ip {
            IpAddr::V4(_) => {
                self.next_v4 += 1;
                IpAddr::V4(Ipv4Addr::from(V4_BASE | (self.next_v4 & V4_INDEX)))
            }
            IpAddr::V6(_) => {
                self.next_v6 += 1;
                IpAddr::V6(Ipv6Addr::from(V6_BASE | (self.next_v6 & V6_INDEX)))
            }
        };
        self.forward.insert(ip, pseudo);
        pseudo
    }

    /// Addresses mapped so far.
    pub fn len(&self) -> usize {
        self.forward.len()
    }

    /// Whether no address is mapped yet.
    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }
}

/// What redaction did to one capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RedactStats {
    pub packets: u64,
    /// Packets whose captured bytes were shortened.
    pub packets_cut: u64,
    /// Payload bytes removed.
    pub bytes_removed: u64,
    /// Header values masked (Authorization, Cookie, ...).
    pub headers_masked: u64,
    /// pcapng blocks dropped (decryption secrets, name resolution, custom blocks).
    pub blocks_dropped: u64,
    /// Packets of link types this walker does not decode: cut to zero bytes.
    pub packets_unknown_link: u64,
}

impl std::ops::AddAssign for RedactStats {
    fn add_assign(&mut self, other: RedactStats) {
        self.packets += other.packets;
        self.packets_cut += other.packets_cut;
        self.bytes_removed += other.bytes_removed;
        self.headers_masked += other.headers_masked;
        self.blocks_dropped += other.blocks_dropped;
        self.packets_unknown_link += other.packets_unknown_link;
    }
}

/// The capture format of a file, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureKind {
    Pcap,
    Pcapng,
    /// gzip; whether it holds a capture is known only after decompressing.
    Gzip,
}

/// Recognizes a capture by its magic number.
pub fn capture_kind(head: &[u8]) -> Option<CaptureKind> {
    let magic: [u8; 4] = head.get(..4)?.try_into().ok()?;
    match magic {
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d] => Some(CaptureKind::Pcap),
        [0x0a, 0x0d, 0x0d, 0x0a] => Some(CaptureKind::Pcapng),
        [0x1f, 0x8b, _, _] => Some(CaptureKind::Gzip),
        _ => None,
    }
}

/// Redacts the capture at `input` into `output` (plain pcap or pcapng; a gzip'd capture is
/// written decompressed). `ips`: pseudonymize addresses with this map.
pub fn redact_file(input: &Path, output: &Path, ips: Option<&mut IpMap>) -> Result<RedactStats> {
    let mut data = fs::read(input).map_err(StoreError::io(input))?;
    if capture_kind(&data) == Some(CaptureKind::Gzip) {
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(data.as_slice())
            .read_to_end(&mut plain)
            .map_err(|err| redact_err(input, 0, format!("gzip: {err}")))?;
        data = plain;
    }
    let mut out = Vec::with_capacity(data.len() / 2);
    let stats = match capture_kind(&data) {
        Some(CaptureKind::Pcap) => redact_pcap(input, &data, &mut out, ips)?,
        Some(CaptureKind::Pcapng) => redact_pcapng(input, &data, &mut out, ips)?,
        _ => return Err(redact_err(input, 0, "not a pcap or pcapng file".to_string())),
    };
    let mut file = fs::File::create(output).map_err(StoreError::io(output))?;
    file.write_all(&out).map_err(StoreError::io(output))?;
    Ok(stats)
}

fn redact_err(path: &Path, offset: usize, reason: String) -> StoreError {
    StoreError::Redact { path: path.to_path_buf(), offset: offset as u64, reason }
}

/// Byte order of a capture's integers.
#[derive(Debug, Clone, Copy)]
struct Endian {
    big: bool,
}

impl Endian {
    fn u16(self, bytes: &[u8]) -> u16 {
        let pair = [bytes[0], bytes[1]];
        if self.big {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        }
    }

    fn u32(self, bytes: &[u8]) -> u32 {
        let quad = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if self.big {
            u32::from_be_bytes(quad)
        } else {
            u32::from_le_bytes(quad)
        }
    }

    fn put_u32(self, value: u32) -> [u8; 4] {
        if self.big {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        }
    }
}

fn redact_pcap(
    path: &Path,
    data: &[u8],
    out: &mut Vec<u8>,
    mut ips: Option<&mut IpMap>,
) -> Result<RedactStats> {
    if data.len() < 24 {
        return Err(redact_err(path, 0, "pcap header needs 24 bytes".to_string()));
    }
    let endian = Endian { big: data[0] == 0xa1 };
    let link_type = endian.u32(&data[20..24]) & 0x0fff_ffff;
    out.extend_from_slice(&data[..24]);
    let mut stats = RedactStats::default();
    let mut offset = 24;
    while offset < data.len() {
        let Some(header) = data.get(offset..offset + 16) else {
            // A capture killed mid-write: the cut record is dropped, like a reader would.
            break;
        };
        let captured = endian.u32(&header[8..12]) as usize;
        let Some(packet) = data.get(offset + 16..offset + 16 + captured) else {
            break;
        };
        let mut packet = packet.to_vec();
        let kept = redact_packet(link_type, &mut packet, ips.as_deref_mut(), &mut stats);
        out.extend_from_slice(&header[..8]);
        out.extend_from_slice(&endian.put_u32(kept as u32));
        out.extend_from_slice(&header[12..16]);
        out.extend_from_slice(&packet[..kept]);
        offset += 16 + captured;
    }
    Ok(stats)
}

fn redact_pcapng(
    path: &Path,
    data: &[u8],
    out: &mut Vec<u8>,
    mut ips: Option<&mut IpMap>,
) -> Result<RedactStats> {
    let mut stats = RedactStats::default();
    let mut endian = Endian { big: false };
    let mut link_types: Vec<u32> = Vec::new();
    let mut offset = 0;
    while offset + 12 <= data.len() {
        let block_type_raw = &data[offset..offset + 4];
        if block_type_raw == [0x0a, 0x0d, 0x0d, 0x0a] {
            // Section header: its byte-order magic sets the endianness of the section.
            let Some(bom) = data.get(offset + 8..offset + 12) else { break };
            endian = Endian { big: bom == [0x1a, 0x2b, 0x3c, 0x4d] };
            link_types.clear();
        }
        let block_type = endian.u32(block_type_raw);
        let total = endian.u32(&data[offset + 4..offset + 8]) as usize;
        if total < 12 || !total.is_multiple_of(4) {
            return Err(redact_err(
                path,
                offset,
                format!("pcapng block length {total} is invalid"),
            ));
        }
        let Some(block) = data.get(offset..offset + total) else {
            break; // cut short: drop the partial block
        };
        match block_type {
            // Interface description: remember the link type, keep the block.
            1 => {
                link_types.push(u32::from(endian.u16(&block[8..10])));
                out.extend_from_slice(block);
            }
            // Enhanced packet: cut the data, drop the options (comments can hold anything).
            6 if total >= 32 => {
                let interface = endian.u32(&block[8..12]) as usize;
                let captured = endian.u32(&block[20..24]) as usize;
                let Some(packet) = block.get(28..28 + captured) else {
                    return Err(redact_err(
                        path,
                        offset,
                        "packet longer than its block".to_string(),
                    ));
                };
                let link_type = link_types.get(interface).copied().unwrap_or(u32::MAX);
                let mut packet = packet.to_vec();
                let kept = redact_packet(link_type, &mut packet, ips.as_deref_mut(), &mut stats);
                let padded = kept.div_ceil(4) * 4;
                let new_total = (28 + padded + 4) as u32;
                out.extend_from_slice(&block[..4]);
                out.extend_from_slice(&endian.put_u32(new_total));
                out.extend_from_slice(&block[8..20]);
                out.extend_from_slice(&endian.put_u32(kept as u32));
                out.extend_from_slice(&block[24..28]);
                out.extend_from_slice(&packet[..kept]);
                out.resize(out.len() + (padded - kept), 0);
                out.extend_from_slice(&endian.put_u32(new_total));
            }
            // Simple packet: its captured length is implied by the block, so payload bytes past
            // the headers are zeroed instead of cut.
            3 if total >= 16 => {
                let link_type = link_types.first().copied().unwrap_or(u32::MAX);
                let mut block = block.to_vec();
                let body_end = total - 4;
                let mut packet = block[12..body_end].to_vec();
                let kept = redact_packet(link_type, &mut packet, ips.as_deref_mut(), &mut stats);
                packet[kept..].fill(0);
                block[12..body_end].copy_from_slice(&packet);
                out.extend_from_slice(&block);
            }
            // Name resolution (0x4), decryption secrets (0xA), custom blocks (0xBAD, 0x40000BAD),
            // and the obsolete packet block (0x2, rarely written) are dropped.
            0x4 | 0xA | 0xBAD | 0x4000_0BAD | 0x2 => stats.blocks_dropped += 1,
            _ => out.extend_from_slice(block),
        }
        offset += total;
    }
    Ok(stats)
}

/// Cuts (and, with `ips`, pseudonymizes) one packet in place; returns the bytes to keep.
fn redact_packet(
    link_type: u32,
    packet: &mut [u8],
    ips: Option<&mut IpMap>,
    stats: &mut RedactStats,
) -> usize {
    stats.packets += 1;
    let kept = match network_offset(link_type, packet) {
        Some(ip_offset) => redact_ip(packet, ip_offset, ips, stats),
        None => {
            stats.packets_unknown_link += 1;
            0
        }
    };
    let kept = kept.min(packet.len());
    if kept < packet.len() {
        stats.packets_cut += 1;
        stats.bytes_removed += (packet.len() - kept) as u64;
    }
    kept
}

/// Offset of the IP header for the link types peel captures on; `None` for others.
fn network_offset(link_type: u32, packet: &[u8]) -> Option<usize> {
    match link_type {
        // Ethernet, with any number of 802.1Q / 802.1ad tags.
        1 => {
            let mut offset = 12;
            loop {
                let ethertype =
                    u16::from_be_bytes([*packet.get(offset)?, *packet.get(offset + 1)?]);
                match ethertype {
                    0x8100 | 0x88a8 | 0x9100 => offset += 4,
                    0x0800 | 0x86dd => return Some(offset + 2),
                    _ => return None,
                }
            }
        }
        // Linux cooked v1 (protocol at 14) and v2 (protocol at 0).
        113 => is_ip_ethertype(packet.get(14..16)?).then_some(16),
        276 => is_ip_ethertype(packet.get(0..2)?).then_some(20),
        // BSD loopback (host / network byte order family): the family is not needed, the IP
        // version nibble tells.
        0 | 108 => (packet.len() > 4).then_some(4),
        // Raw IP.
        12 | 14 | 101 | 228 | 229 => Some(0),
        _ => None,
    }
}

fn is_ip_ethertype(bytes: &[u8]) -> bool {
    matches!(u16::from_be_bytes([bytes[0], bytes[1]]), 0x0800 | 0x86dd)
}

/// Redacts from the IP header on; returns the bytes of the packet to keep.
fn redact_ip(
    packet: &mut [u8],
    ip: usize,
    ips: Option<&mut IpMap>,
    stats: &mut RedactStats,
) -> usize {
    let Some(&first) = packet.get(ip) else { return packet.len().min(ip) };
    match first >> 4 {
        4 => redact_ipv4(packet, ip, ips, stats),
        6 => redact_ipv6(packet, ip, ips, stats),
        _ => ip,
    }
}

fn redact_ipv4(
    packet: &mut [u8],
    ip: usize,
    ips: Option<&mut IpMap>,
    stats: &mut RedactStats,
) -> usize {
    let header_len = usize::from(packet[ip] & 0x0f) * 4;
    if header_len < 20 || packet.len() < ip + header_len {
        return packet.len().min(ip);
    }
    if let Some(map) = ips {
        for field in [ip + 12, ip + 16] {
            let real = Ipv4Addr::new(
                packet[field],
                packet[field + 1],
                packet[field + 2],
                packet[field + 3],
            );
            if let IpAddr::V4(pseudo) = map.pseudonym(IpAddr::V4(real)) {
                packet[field..field + 4].copy_from_slice(&pseudo.octets());
            }
        }
        let checksum = ipv4_checksum(&packet[ip..ip + header_len]);
        packet[ip + 10..ip + 12].copy_from_slice(&checksum.to_be_bytes());
    }
    let protocol = packet[ip + 9];
    let fragment_offset = u16::from_be_bytes([packet[ip + 6], packet[ip + 7]]) & 0x1fff;
    let transport = ip + header_len;
    if fragment_offset != 0 {
        return transport;
    }
    redact_transport(packet, protocol, transport, stats)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (index, pair) in header.chunks(2).enumerate() {
        if index == 5 {
            continue; // the checksum field itself
        }
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn redact_ipv6(
    packet: &mut [u8],
    ip: usize,
    ips: Option<&mut IpMap>,
    stats: &mut RedactStats,
) -> usize {
    if packet.len() < ip + 40 {
        return packet.len().min(ip);
    }
    if let Some(map) = ips {
        for field in [ip + 8, ip + 24] {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&packet[field..field + 16]);
            if let IpAddr::V6(pseudo) = map.pseudonym(IpAddr::V6(Ipv6Addr::from(octets))) {
                packet[field..field + 16].copy_from_slice(&pseudo.octets());
            }
        }
    }
    let mut next = packet[ip + 6];
    let mut offset = ip + 40;
    loop {
        match next {
            // Hop-by-hop, routing, destination options: (next, length in 8-byte units - 1).
            0 | 43 | 60 => {
                let (Some(&following), Some(&len)) = (packet.get(offset), packet.get(offset + 1))
                else {
                    return packet.len().min(offset);
                };
                next = following;
                offset += (usize::from(len) + 1) * 8;
            }
            // Fragment header: only the first fragment carries the transport header.
            44 => {
                let Some(header) = packet.get(offset..offset + 8) else {
                    return packet.len().min(offset);
                };
                next = header[0];
                let fragment_offset = u16::from_be_bytes([header[2], header[3]]) >> 3;
                offset += 8;
                if fragment_offset != 0 {
                    return offset.min(packet.len());
                }
            }
            // Authentication header: length in 4-byte units - 2.
            51 => {
                let (Some(&following), Some(&len)) = (packet.get(offset), packet.get(offset + 1))
                else {
                    return packet.len().min(offset);
                };
                next = following;
                offset += (usize::from(len) + 2) * 4;
            }
            protocol => return redact_transport(packet, protocol, offset, stats),
        }
        if offset > packet.len() {
            return packet.len();
        }
    }
}

/// Keeps the transport header and, for TCP, the protocol headers of the payload.
fn redact_transport(
    packet: &mut [u8],
    protocol: u8,
    offset: usize,
    stats: &mut RedactStats,
) -> usize {
    match protocol {
        6 => {
            let Some(&data_offset) = packet.get(offset + 12) else {
                return packet.len().min(offset);
            };
            let payload = offset + usize::from(data_offset >> 4) * 4;
            if payload >= packet.len() {
                return packet.len();
            }
            payload + redact_tcp_payload(&mut packet[payload..], stats)
        }
        17 => (offset + 8).min(packet.len()),
        // ICMP and ICMPv6: type, code, checksum and 4 bytes.
        1 | 58 => (offset + 8).min(packet.len()),
        _ => offset.min(packet.len()),
    }
}

/// Bytes of a TCP payload to keep (after masking secrets in place).
fn redact_tcp_payload(payload: &mut [u8], stats: &mut RedactStats) -> usize {
    if is_http_start(payload) {
        return redact_http_headers(payload, stats);
    }
    if payload.len() >= PG_STARTUP_BYTES {
        let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        // StartupMessage protocol 3.0, SSLRequest, GSSENCRequest, CancelRequest.
        if matches!(code, 0x0003_0000 | 80_877_103 | 80_877_104 | 80_877_102) {
            return PG_STARTUP_BYTES;
        }
    }
    FRAMING_BYTES.min(payload.len())
}

fn is_http_start(payload: &[u8]) -> bool {
    payload.starts_with(b"HTTP/1.")
        || HTTP_METHODS.iter().any(|method| payload.starts_with(method.as_bytes()))
}

/// Keeps the HTTP header block (up to and including the blank line) and masks secret values.
fn redact_http_headers(payload: &mut [u8], stats: &mut RedactStats) -> usize {
    let end = payload
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map_or(payload.len(), |position| position + 4);
    let mut line_start = 0;
    while line_start < end {
        let line_end = payload[line_start..end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(end, |position| line_start + position + 1);
        if let Some(colon) = payload[line_start..line_end].iter().position(|&b| b == b':') {
            let name = &payload[line_start..line_start + colon];
            let masked =
                MASKED_HEADERS.iter().any(|header| name.eq_ignore_ascii_case(header.as_bytes()));
            if masked {
                let mut value_start = line_start + colon + 1;
                while value_start < line_end && payload[value_start] == b' ' {
                    value_start += 1;
                }
                let mut value_end = line_end;
                while value_end > value_start && matches!(payload[value_end - 1], b'\r' | b'\n') {
                    value_end -= 1;
                }
                payload[value_start..value_end].fill(b'*');
                stats.headers_masked += 1;
            }
        }
        line_start = line_end;
    }
    end
}

/// Paths of the redacted outputs inside a scratch directory.
pub(crate) fn redacted_name(member: &str) -> String {
    member.strip_suffix(".gz").unwrap_or(member).to_string()
}

/// Where the IP map goes by default: next to the archive, never inside it.
pub fn default_ip_map_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_os_string();
    name.push(".ipmap.json");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/TCP packet carrying `payload` from 192.0.2.1:40000 to 192.0.2.2:80.
    fn tcp_packet(payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0u8; 14];
        packet[12] = 0x08;
        let total = 20 + 20 + payload.len();
        let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
        let checksum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        packet.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 5 << 4;
        packet.extend_from_slice(&tcp);
        packet.extend_from_slice(payload);
        packet
    }

    fn redact(payload: &[u8], ips: Option<&mut IpMap>) -> (Vec<u8>, RedactStats) {
        let mut packet = tcp_packet(payload);
        let mut stats = RedactStats::default();
        let kept = redact_packet(1, &mut packet, ips, &mut stats);
        packet.truncate(kept);
        (packet, stats)
    }

    #[test]
    fn http_headers_are_kept_with_secrets_masked_and_body_cut() {
        let request = b"POST /login HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer s3cr3t\r\n\
cookie: session=abc\r\nContent-Length: 9\r\n\r\npassword!";
        let (packet, stats) = redact(request, None);
        let kept = String::from_utf8_lossy(&packet[54..]).into_owned();
        assert_eq!(
            kept,
            "POST /login HTTP/1.1\r\nHost: shop\r\nAuthorization: *************\r\n\
cookie: ***********\r\nContent-Length: 9\r\n\r\n"
        );
        assert_eq!(stats.headers_masked, 2);
        assert_eq!(stats.bytes_removed, 9);
    }

    #[test]
    fn non_http_payloads_keep_only_their_framing() {
        let cases: &[(&[u8], usize)] = &[
            (b"\x16\x03\x01\x02\x00secret-client-hello", FRAMING_BYTES),
            (b"Q\x00\x00\x00\x0eSELECT 1\x00", FRAMING_BYTES),
            (b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00alice\x00", PG_STARTUP_BYTES),
            (b"+OK", 3),
        ];
        for (payload, expected) in cases {
            let (packet, _) = redact(payload, None);
            assert_eq!(packet.len(), 54 + expected, "payload {payload:?}");
        }
    }

    #[test]
    fn addresses_map_consistently_and_the_checksum_stays_valid() {
        let mut map = IpMap::default();
        let (first, _) = redact(b"", Some(&mut map));
        let (second, _) = redact(b"", Some(&mut map));
        assert_eq!(&first[26..34], &[240, 0, 0, 1, 240, 0, 0, 2]);
        assert_eq!(first, second);
        assert_eq!(map.len(), 2);
        let header = &first[14..34];
        let stored = u16::from_be_bytes([header[10], header[11]]);
        assert_eq!(ipv4_checksum(header), stored);
    }

    #[test]
    fn ip_map_survives_save_and_load_and_continues_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.json");
        let mut map = IpMap::default();
        let a = map.pseudonym("192.0.2.7".parse().unwrap());
        map.pseudonym("2001:db8::1".parse().unwrap());
        map.save(&path).unwrap();
        let mut loaded = IpMap::load(&path).unwrap();
        assert_eq!(loaded, map);
        assert_eq!(loaded.pseudonym("192.0.2.7".parse().unwrap()), a);
        assert_eq!(loaded.pseudonym("192.0.2.8".parse().unwrap()).to_string(), "240.0.0.2");
    }

    #[test]
    fn pcap_records_are_rewritten_with_shorter_captured_lengths() {
        let packet = tcp_packet(b"GET / HTTP/1.1\r\nCookie: a=b\r\n\r\n");
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&65535u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        let mut record = Vec::new();
        record.extend_from_slice(&7u32.to_le_bytes());
        record.extend_from_slice(&8u32.to_le_bytes());
        record.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        record.extend_from_slice(&(packet.len() as u32 + 100).to_le_bytes());
        record.extend_from_slice(&packet);
        file.extend_from_slice(&record);
        file.extend_from_slice(&record[..10]); // a record cut by a killed capture
        let mut out = Vec::new();
        let stats = redact_pcap(Path::new("t.pcap"), &file, &mut out, None).unwrap();
        assert_eq!(stats.packets, 1);
        assert_eq!(&out[..24], &file[..24]);
        let captured = u32::from_le_bytes(out[32..36].try_into().unwrap()) as usize;
        let original = u32::from_le_bytes(out[36..40].try_into().unwrap()) as usize;
        assert_eq!(original, packet.len() + 100);
        assert_eq!(captured, packet.len());
        assert_eq!(out.len(), 40 + captured);
        assert!(out.windows(3).any(|w| w == b"***"));
    }
}
