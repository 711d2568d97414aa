//! TCP sockets through netlink sock_diag (`inet_diag`), the interface `ss` uses: one dump returns
//! every socket with tcp_info, and for LISTEN sockets the accept queue and
//! the backlog (which /proc/net/tcp does not show).
//!
//! Messages are built and parsed here from their documented byte layouts (linux/inet_diag.h,
//! linux/tcp.h); the socket calls are in `netlink_sys`. Parsing checks every length, so a short or
//! odd message is an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink_sys::DiagSocket;
use crate::owners::IntMap;
use crate::proc_net::{tcp_state_name, timer_name};
use crate::records::SocketRecord;

const NLMSG_HDR_BYTES: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// The original inet_diag request type (linux/inet_diag.h), answered for IPv4 and IPv6 at once.
const TCPDIAG_GETSOCK: u16 = 18;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_INFO: u16 = 2;
/// `struct inet_diag_msg`: family, state, timer, retrans, 48-byte id, expires, rqueue, wqueue, uid, inode.
const DIAG_MSG_BYTES: usize = 72;
const RECV_BUFFER_BYTES: usize = 256 * 1024;

/// Reads every TCP socket of the current network namespace, IPv4 and IPv6.
///
/// The first request is the original `TCPDIAG_GETSOCK` form (`struct inet_diag_req`), which the
/// kernel answers for both families in a single walk of its socket hash tables; with
/// `SOCK_DIAG_BY_FAMILY` (one family per request) each of the two dumps walks every socket of both
/// families, which costs a third more. A kernel that refuses the old form gets the per-family one.
/// `expected` sizes the result up front (the previous dump's count in a series): growing a vector
/// of 100,000 records by doubling copies it several times.
pub(crate) fn dump_tcp(expected: usize) -> std::io::Result<Vec<SocketRecord>> {
    let socket = DiagSocket::open()?;
    let mut dump = Dump {
        socket,
        buffer: vec![0u8; RECV_BUFFER_BYTES],
        names: IpNames::default(),
        sockets: Vec::with_capacity(expected + expected / 8),
    };
    let both = compat_request(1);
    if dump.run(&both, TCPDIAG_GETSOCK).is_ok() {
        return Ok(dump.sockets);
    }
    dump.sockets.clear();
    dump.run(&family_request(libc::AF_INET as u8, 2), SOCK_DIAG_BY_FAMILY)?;
    dump.run(&family_request(libc::AF_INET6 as u8, 3), SOCK_DIAG_BY_FAMILY)?;
    Ok(dump.sockets)
}

/// One netlink socket and what its dumps collected.
#[derive(Debug)]
struct Dump {
    socket: DiagSocket,
    buffer: Vec<u8>,
    names: IpNames,
    sockets: Vec<SocketRecord>,
}

impl Dump {
    /// Sends `request` and parses the replies of type `reply` until the dump is done.
    fn run(&mut self, request: &[u8], reply: u16) -> std::io::Result<()> {
        self.socket.send(request)?;
        loop {
            let received = self.socket.recv(&mut self.buffer)?;
            if received == 0 {
                return Err(invalid("netlink socket closed during a dump"));
            }
            let mut rest = &self.buffer[..received];
            while rest.len() >= NLMSG_HDR_BYTES {
                let length = u32_ne(rest, 0) as usize;
                let kind = u16_ne(rest, 4);
                if length < NLMSG_HDR_BYTES || length > rest.len() {
                    return Err(invalid("netlink message length out of bounds"));
                }
                let payload = &rest[NLMSG_HDR_BYTES..length];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return Err(std::io::Error::from_raw_os_error(-errno));
                    }
                    kind if kind == reply => {
                        self.sockets.push(parse_diag_msg(payload, &mut self.names)?);
                    }
                    _ => {}
                }
                rest = &rest[align4(length).min(rest.len())..];
            }
        }
    }
}

/// nlmsghdr for a dump request of `kind` carrying `body_bytes`.
fn request_header(kind: u16, sequence: u32, body_bytes: usize) -> Vec<u8> {
    let mut message = Vec::with_capacity(NLMSG_HDR_BYTES + body_bytes);
    message.extend_from_slice(&((NLMSG_HDR_BYTES + body_bytes) as u32).to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message.extend_from_slice(&sequence.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    message
}

/// `struct inet_diag_req` (the old form): TCP sockets of both families in every state, with
/// tcp_info.
fn compat_request(sequence: u32) -> Vec<u8> {
    // family, src_len, dst_len, ext, 48-byte inet_diag_sockid, states, dbs.
    const REQUEST_BYTES: usize = 60;
    let mut message = request_header(TCPDIAG_GETSOCK, sequence, REQUEST_BYTES);
    message.push(0); // family: ignored, the kernel dumps both
    message.push(0); // src_len
    message.push(0); // dst_len
    message.push(1 << (INET_DIAG_INFO - 1)); // idiag_ext: ask for tcp_info
    message.resize(NLMSG_HDR_BYTES + 52, 0); // inet_diag_sockid: match everything
    message.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: every state
    message.extend_from_slice(&0u32.to_ne_bytes()); // idiag_dbs
    message
}

/// `struct inet_diag_req_v2`: TCP sockets of `family` in every state, with tcp_info.
fn family_request(family: u8, sequence: u32) -> Vec<u8> {
    const REQUEST_BYTES: usize = 56;
    let mut message = request_header(SOCK_DIAG_BY_FAMILY, sequence, REQUEST_BYTES);
    message.push(family);
    message.push(libc::IPPROTO_TCP as u8);
    message.push(1 << (INET_DIAG_INFO - 1)); // idiag_ext: ask for tcp_info
    message.push(0); // pad
    message.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: every state
    message.resize(NLMSG_HDR_BYTES + REQUEST_BYTES, 0); // inet_diag_sockid: match everything
    message
}

/// Text forms of the addresses seen in a dump: most sockets share a handful of local addresses and
/// a few thousand peers, and formatting an address costs more than copying its text.
#[derive(Debug, Default)]
struct IpNames {
    v4: IntMap<u32, String>,
    v6: IntMap<u128, String>,
}

impl IpNames {
    const MAX_KNOWN: usize = 65_536;

    fn name(&mut self, ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(v4) => {
                if self.v4.len() > Self::MAX_KNOWN {
                    self.v4.clear();
                }
                self.v4.entry(u32::from(v4)).or_insert_with(|| v4.to_string()).clone()
            }
            IpAddr::V6(v6) => {
                if self.v6.len() > Self::MAX_KNOWN {
                    self.v6.clear();
                }
                self.v6.entry(u128::from(v6)).or_insert_with(|| v6.to_string()).clone()
            }
        }
    }
}

fn parse_diag_msg(payload: &[u8], names: &mut IpNames) -> std::io::Result<SocketRecord> {
    if payload.len() < DIAG_MSG_BYTES {
        return Err(invalid("inet_diag_msg shorter than 72 bytes"));
    }
    let family = payload[0];
    let state = payload[1];
    let timer = payload[2];
    let retransmits = payload[3];
    // inet_diag_sockid: sport, dport (big-endian), src[16], dst[16], if, cookie.
    let local_port = u16::from_be_bytes([payload[4], payload[5]]);
    let remote_port = u16::from_be_bytes([payload[6], payload[7]]);
    let (local_ip, remote_ip) = match i32::from(family) {
        libc::AF_INET => (ipv4(&payload[8..12]), ipv4(&payload[24..28])),
        _ => (ipv6(&payload[8..24]), ipv6(&payload[24..40])),
    };
    let expires_ms = u32_ne(payload, 52);
    let rqueue = u32_ne(payload, 56);
    let wqueue = u32_ne(payload, 60);
    let uid = u32_ne(payload, 64);
    let inode = u32_ne(payload, 68);
    let listening = state == 10;
    let mut socket = SocketRecord {
        snap_id: 0,
        family: if i32::from(family) == libc::AF_INET { "ipv4" } else { "ipv6" }.to_owned(),
        state: tcp_state_name(state).to_owned(),
        local_ip: names.name(local_ip),
        local_port,
        remote_ip: names.name(remote_ip),
        remote_port,
        // For LISTEN, rqueue is the accept queue and wqueue the backlog (tcp_diag_get_info).
        send_q_bytes: if listening { 0 } else { wqueue },
        recv_q_bytes: if listening { 0 } else { rqueue },
        timer: timer_name(timer).to_owned(),
        timer_expires_ms: u64::from(expires_ms),
        retransmits: u32::from(retransmits),
        uid,
        inode: u64::from(inode),
        listen_backlog: listening.then_some(wqueue),
        accept_queue: listening.then_some(rqueue),
        // Owner (filled in later) and tcp_info (from the INET_DIAG_INFO attribute below).
        ..SocketRecord::default()
    };
    let mut attributes = &payload[DIAG_MSG_BYTES..];
    while attributes.len() >= 4 {
        let length = usize::from(u16_ne(attributes, 0));
        let kind = u16_ne(attributes, 2);
        if length < 4 || length > attributes.len() {
            break;
        }
        if kind == INET_DIAG_INFO && !listening {
            apply_tcp_info(&mut socket, &attributes[4..length]);
        }
        attributes = &attributes[align4(length).min(attributes.len())..];
    }
    Ok(socket)
}

/// Copies the tcp_info fields we keep; fields beyond what an older kernel sent stay `None`.
fn apply_tcp_info(socket: &mut SocketRecord, info: &[u8]) {
    let u32_at = |offset: usize| {
        info.get(offset..offset + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |offset: usize| {
        info.get(offset..offset + 8)
            .map(|b| u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    // Offsets of struct tcp_info (linux/tcp.h).
    socket.unacked_segments = u32_at(24);
    socket.lost_segments = u32_at(32);
    socket.retrans_segments = u32_at(36);
    socket.last_send_ms = u32_at(44);
    socket.last_recv_ms = u32_at(52);
    socket.rtt_us = u32_at(68);
    socket.rttvar_us = u32_at(72);
    socket.cwnd_segments = u32_at(80);
    socket.total_retrans_segments = u32_at(100);
    socket.bytes_acked = u64_at(120);
    socket.bytes_received = u64_at(128);
}

fn ipv4(bytes: &[u8]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
}

fn ipv6(bytes: &[u8]) -> IpAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[..16]);
    IpAddr::V6(Ipv6Addr::from(octets))
}

fn u16_ne(bytes: &[u8], offset: usize) -> u16 {
    u16::from_ne_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_ne(bytes: &[u8], offset: usize) -> u32 {
    u32::from_ne_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

fn invalid(message: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen_message() -> Vec<u8> {
        let mut payload = vec![0u8; DIAG_MSG_BYTES];
        payload[0] = libc::AF_INET as u8;
        payload[1] = 10; // LISTEN
        payload[4..6].copy_from_slice(&8080u16.to_be_bytes());
        payload[8..12].copy_from_slice(&[127, 0, 0, 1]);
        payload[56..60].copy_from_slice(&129u32.to_ne_bytes()); // accept queue
        payload[60..64].copy_from_slice(&128u32.to_ne_bytes()); // backlog
        payload[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        payload
    }

    #[test]
    fn listen_socket_reports_accept_queue_against_backlog() {
        let socket =
            parse_diag_msg(&listen_message(), &mut IpNames::default()).expect("valid message");
        assert_eq!(
            (socket.state.as_str(), socket.local_ip.as_str(), socket.local_port),
            ("LISTEN", "127.0.0.1", 8080)
        );
        assert_eq!(
            (socket.accept_queue, socket.listen_backlog, socket.inode),
            (Some(129), Some(128), 4242)
        );
        assert_eq!(socket.recv_q_bytes, 0);
    }

    #[test]
    fn tcp_info_attribute_fills_rtt_and_cwnd() {
        let mut payload = listen_message();
        payload[1] = 1; // ESTABLISHED
        let mut info = vec![0u8; 136];
        info[68..72].copy_from_slice(&250u32.to_ne_bytes());
        info[80..84].copy_from_slice(&10u32.to_ne_bytes());
        info[128..136].copy_from_slice(&4096u64.to_ne_bytes());
        payload.extend_from_slice(&((4 + info.len()) as u16).to_ne_bytes());
        payload.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
        payload.extend_from_slice(&info);
        let socket = parse_diag_msg(&payload, &mut IpNames::default()).expect("valid message");
        assert_eq!(
            (socket.rtt_us, socket.cwnd_segments, socket.bytes_received),
            (Some(250), Some(10), Some(4096))
        );
        assert_eq!(socket.accept_queue, None);
        assert_eq!(socket.recv_q_bytes, 129);
    }

    /// The single dump and the per-family fallback find the same listener.
    #[test]
    fn both_request_forms_see_the_same_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("address").port();
        let find = |request: Vec<u8>, reply: u16| {
            let mut dump = Dump {
                socket: DiagSocket::open().expect("netlink socket"),
                buffer: vec![0u8; RECV_BUFFER_BYTES],
                names: IpNames::default(),
                sockets: Vec::new(),
            };
            dump.run(&request, reply).expect("dump");
            dump.sockets
                .into_iter()
                .find(|s| s.state == "LISTEN" && s.local_port == port && s.local_ip == "127.0.0.1")
                .map(|s| s.inode)
        };
        let both = find(compat_request(1), TCPDIAG_GETSOCK);
        assert!(both.is_some_and(|inode| inode != 0));
        assert_eq!(both, find(family_request(libc::AF_INET as u8, 1), SOCK_DIAG_BY_FAMILY));
    }

    #[test]
    fn short_messages_are_errors() {
        assert!(parse_diag_msg(&[0u8; 40], &mut IpNames::default()).is_err());
    }
}
