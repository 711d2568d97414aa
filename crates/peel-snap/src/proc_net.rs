//! Parsers for the text socket tables in `<proc-root>/net`: `tcp`, `tcp6` (the fallback when
//! netlink is unavailable or a copied /proc is read), `udp`, `udp6` and `unix` (counted by state).
//!
//! A line that does not parse is skipped and reported as a warning (`file:line: why`), so one odd
//! line never costs the whole snapshot. /proc/net/tcp does not carry tcp_info or the listen backlog:
//! those fields stay `None` here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::Result;
use crate::proc_root::ProcRoot;
use crate::records::{SocketCountRecord, SocketRecord};

/// Kernel TCP state names (include/net/tcp_states.h); request sockets (NEW_SYN_RECV) read as SYN_RECV.
pub(crate) fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 | 12 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        13 => "BOUND_INACTIVE",
        _ => "UNKNOWN",
    }
}

/// Timer names as `ss` prints them (`timer:(keepalive,...)`).
pub(crate) fn timer_name(timer: u8) -> &'static str {
    match timer {
        0 => "off",
        1 => "on",
        2 => "keepalive",
        3 => "timewait",
        4 => "probe",
        _ => "unknown",
    }
}

/// TCP sockets from `<root>/net/tcp` and `<root>/net/tcp6` (a missing tcp6 means no IPv6).
/// Records get `snap_id` 0; the caller sets it.
pub(crate) fn read_tcp(root: &ProcRoot, warnings: &mut Vec<String>) -> Result<Vec<SocketRecord>> {
    let mut sockets = Vec::new();
    let text = root.read("net/tcp")?;
    parse_tcp_table(&text, "net/tcp", &mut sockets, warnings);
    if let Some(text) = root.read_optional("net/tcp6")? {
        parse_tcp_table(&text, "net/tcp6", &mut sockets, warnings);
    }
    Ok(sockets)
}

/// Parses one /proc/net/tcp{,6} table into `sockets`; `file` names it in warnings.
pub(crate) fn parse_tcp_table(
    text: &str,
    file: &str,
    sockets: &mut Vec<SocketRecord>,
    warnings: &mut Vec<String>,
) {
    for (index, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        match parse_tcp_line(line) {
            Ok(socket) => sockets.push(socket),
            Err(why) => warnings.push(format!("{file}:{}: {why}", index + 1)),
        }
    }
}

/// The fields shared by the tcp and udp tables.
struct Row {
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    state: u8,
    tx_queue: u32,
    rx_queue: u32,
    timer: u8,
    expires_ticks: u64,
    retransmits: u32,
    uid: u32,
    inode: u64,
}

fn parse_row(line: &str) -> Result<Row, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 10 {
        return Err(format!("expected at least 10 fields, found {}", fields.len()));
    }
    let (tx, rx) = split_pair(fields[4], "tx_queue:rx_queue")?;
    let (timer, expires) = split_pair(fields[5], "tr:tm->when")?;
    Ok(Row {
        local: parse_endpoint(fields[1])?,
        remote: parse_endpoint(fields[2])?,
        state: hex(fields[3], "state")?,
        tx_queue: hex(tx, "tx_queue")?,
        rx_queue: hex(rx, "rx_queue")?,
        timer: hex(timer, "timer")?,
        expires_ticks: hex(expires, "timer expiry")?,
        retransmits: hex(fields[6], "retransmits")?,
        uid: decimal(fields[7], "uid")?,
        inode: decimal(fields[9], "inode")?,
    })
}

fn parse_tcp_line(line: &str) -> Result<SocketRecord, String> {
    let row = parse_row(line)?;
    let listening = row.state == 10;
    let family = if row.local.0.is_ipv4() { "ipv4" } else { "ipv6" };
    Ok(SocketRecord {
        snap_id: 0,
        family: family.to_owned(),
        state: tcp_state_name(row.state).to_owned(),
        local_ip: row.local.0.to_string(),
        local_port: row.local.1,
        remote_ip: row.remote.0.to_string(),
        remote_port: row.remote.1,
        send_q_bytes: if listening { 0 } else { row.tx_queue },
        recv_q_bytes: if listening { 0 } else { row.rx_queue },
        timer: timer_name(row.timer).to_owned(),
        // tm->when is in clock ticks of USER_HZ (100 per second).
        timer_expires_ms: row.expires_ticks.saturating_mul(10),
        retransmits: row.retransmits,
        uid: row.uid,
        inode: row.inode,
        accept_queue: listening.then_some(row.rx_queue),
        // Owner and tcp_info: not in /proc/net/tcp (the owner is filled in later).
        ..SocketRecord::default()
    })
}

fn split_pair<'a>(field: &'a str, what: &str) -> Result<(&'a str, &'a str), String> {
    field
        .split_once(':')
        .ok_or_else(|| format!("{what}: expected two values joined by ':', got '{field}'"))
}

fn hex<T: TryFrom<u64>>(field: &str, what: &str) -> Result<T, String> {
    u64::from_str_radix(field, 16)
        .ok()
        .and_then(|value| T::try_from(value).ok())
        .ok_or_else(|| format!("{what}: '{field}' is not a hex number in range"))
}

fn decimal<T: std::str::FromStr>(field: &str, what: &str) -> Result<T, String> {
    field.parse().map_err(|_| format!("{what}: '{field}' is not a number"))
}

/// `0100007F:1F90` or the 32-hex-digit IPv6 form. Addresses are 32-bit words printed in the host's
/// byte order (little-endian on x86): a copy from a host of the other endianness reads wrongly.
fn parse_endpoint(field: &str) -> Result<(IpAddr, u16), String> {
    let (addr, port) =
        field.split_once(':').ok_or_else(|| format!("address '{field}' has no ':port'"))?;
    let port: u16 = hex(port, "port")?;
    let word = |chunk: &str| u32::from_str_radix(chunk, 16).map(u32::to_ne_bytes);
    let bad = || format!("address '{addr}' is not 8 or 32 hex digits");
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr).map_err(|_| bad())?)),
        32 if addr.is_ascii() => {
            let mut octets = [0u8; 16];
            for (i, out) in octets.chunks_exact_mut(4).enumerate() {
                out.copy_from_slice(&word(&addr[i * 8..i * 8 + 8]).map_err(|_| bad())?);
            }
            let v6 = Ipv6Addr::from(octets);
            // Dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d; ss prints them the same way.
            IpAddr::V6(v6)
        }
        _ => return Err(bad()),
    };
    Ok((ip, port))
}

/// UDP sockets by state (`udp`, `udp6`) and Unix sockets by type and state.
pub(crate) fn read_socket_counts(
    root: &ProcRoot,
    warnings: &mut Vec<String>,
) -> Result<Vec<SocketCountRecord>> {
    let mut counts: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
    for (file, protocol) in [("net/udp", "udp"), ("net/udp6", "udp6")] {
        let Some(text) = root.read_optional(file)? else { continue };
        for (index, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            match parse_row(line) {
                Ok(row) => *counts.entry((protocol, udp_state_name(row.state))).or_default() += 1,
                Err(why) => warnings.push(format!("{file}:{}: {why}", index + 1)),
            }
        }
    }
    if let Some(text) = root.read_optional("net/unix")? {
        parse_unix_counts(&text, &mut counts, warnings);
    }
    Ok(counts
        .into_iter()
        .map(|((protocol, state), count)| SocketCountRecord {
            snap_id: 0,
            protocol: protocol.to_owned(),
            state: state.to_owned(),
            count,
        })
        .collect())
}

fn udp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        7 => "UNCONN",
        _ => tcp_state_name(state),
    }
}

/// /proc/net/unix: `Num RefCount Protocol Flags Type St Inode [Path]`, all hex except the inode.
fn parse_unix_counts(
    text: &str,
    counts: &mut BTreeMap<(&'static str, &'static str), u64>,
    warnings: &mut Vec<String>,
) {
    const ACCEPTING: u32 = 0x10000; // __SO_ACCEPTCON: a listening socket
    for (index, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let parsed = (fields.len() >= 7)
            .then(|| {
                let flags = u32::from_str_radix(fields[3], 16).ok()?;
                let kind = u16::from_str_radix(fields[4], 16).ok()?;
                let state = u8::from_str_radix(fields[5], 16).ok()?;
                Some((flags, kind, state))
            })
            .flatten();
        let Some((flags, kind, state)) = parsed else {
            warnings.push(format!(
                "net/unix:{}: expected 'Num RefCount Protocol Flags Type St Inode'",
                index + 1
            ));
            continue;
        };
        let protocol = match kind {
            1 => "unix_stream",
            2 => "unix_dgram",
            5 => "unix_seqpacket",
            _ => "unix_other",
        };
        let state = match state {
            _ if flags & ACCEPTING != 0 => "LISTEN",
            1 => "UNCONN",
            2 => "CONNECTING",
            3 => "ESTABLISHED",
            4 => "DISCONNECTING",
            _ => "UNKNOWN",
        };
        *counts.entry((protocol, state)).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000081 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 08 00000000:00000010 02:000000C8 00000003  1000        0 4243 1 0000000000000000 20 4 30 10 -1
   2: garbage line
";

    #[test]
    fn tcp_rows_listen_close_wait_and_a_bad_line() {
        let mut sockets = Vec::new();
        let mut warnings = Vec::new();
        parse_tcp_table(TCP, "net/tcp", &mut sockets, &mut warnings);
        assert_eq!(sockets.len(), 2);
        let listen = &sockets[0];
        assert_eq!(
            (listen.state.as_str(), listen.local_ip.as_str(), listen.local_port),
            ("LISTEN", "127.0.0.1", 8080)
        );
        assert_eq!((listen.accept_queue, listen.recv_q_bytes, listen.inode), (Some(0x81), 0, 4242));
        let close_wait = &sockets[1];
        assert_eq!(close_wait.state, "CLOSE_WAIT");
        assert_eq!(
            (close_wait.remote_port, close_wait.recv_q_bytes, close_wait.accept_queue),
            (50000, 16, None)
        );
        assert_eq!(
            (close_wait.timer.as_str(), close_wait.timer_expires_ms, close_wait.retransmits),
            ("keepalive", 2000, 3)
        );
        assert_eq!(warnings, vec!["net/tcp:4: expected at least 10 fields, found 3".to_owned()]);
    }

    #[test]
    fn endpoints() {
        let cases = [
            ("0100007F:0050", Ok(("127.0.0.1", 80))),
            ("00000000000000000000000001000000:1F90", Ok(("::1", 8080))),
            ("0000000000000000FFFF00000100007F:01BB", Ok(("::ffff:127.0.0.1", 443))),
            ("0100007F", Err(())),
            ("0100007G:0050", Err(())),
            ("0100007F:10000", Err(())),
        ];
        for (field, expected) in cases {
            let got =
                parse_endpoint(field).map(|(ip, port)| (ip.to_string(), port)).map_err(|_| ());
            assert_eq!(got, expected.map(|(ip, port)| (ip.to_owned(), port)), "{field}");
        }
    }

    #[test]
    fn unix_counts_by_type_and_state() {
        let text = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 100 /run/gunicorn.sock
0000000000000000: 00000003 00000000 00000000 0001 03 101 /run/gunicorn.sock
0000000000000000: 00000003 00000000 00000000 0001 03 102
0000000000000000: 00000002 00000000 00000000 0002 01 103
bad
";
        let mut counts = BTreeMap::new();
        let mut warnings = Vec::new();
        parse_unix_counts(text, &mut counts, &mut warnings);
        let got: Vec<_> = counts.into_iter().collect();
        assert_eq!(
            got,
            vec![
                (("unix_dgram", "UNCONN"), 1),
                (("unix_stream", "ESTABLISHED"), 2),
                (("unix_stream", "LISTEN"), 1)
            ]
        );
        assert_eq!(warnings.len(), 1);
    }
}
