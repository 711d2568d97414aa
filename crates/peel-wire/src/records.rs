//! The plain output records of the analysis: one [`ConnectionRecord`] per TCP connection, one
//! [`ExchangeRecord`] per request/response exchange, one [`CaptureWarning`] per (file, reason).
//!
//! These structs are the contract with peel-store (the `connections`, `exchanges` and
//! `capture_warnings` tables, docs/schema.md) and with the JSON output of `peel analyze`: field names
//! are stable, fields are only ever added. They hold numbers and strings only, never flow-table state.
//!
//! Units: instants are `i64` epoch nanoseconds (`*_ts_ns`), durations are `f64` microseconds (`*_us`,
//! computed from nanosecond differences, so a nanosecond capture keeps its resolution). A value that
//! the capture does not show is `None`, never a made-up zero.

use std::net::IpAddr;

use serde::Serialize;

/// Which end of a connection did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The sender of the first SYN (or, without a SYN, the non-service port's end).
    Client,
    /// The end that received the first SYN (or listens on the well-known port).
    Server,
}

impl Side {
    /// The text stored in the database and printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// How a connection ended, as far as the capture shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Handshake seen and both FINs acknowledged.
    Complete,
    /// Ended by a RST (including a refused connection: SYN answered by RST).
    Reset,
    /// Handshake seen, but the capture ended (or the entry expired) before the close finished.
    Open,
    /// No SYN seen: the client was chosen by the port heuristic and the handshake is unknown.
    Partial,
}

impl ConnState {
    /// The text stored in the database and printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Complete => "complete",
            ConnState::Reset => "reset",
            ConnState::Open => "open",
            ConnState::Partial => "partial",
        }
    }
}

/// The application protocol recognized on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.x requests and responses were parsed.
    Http,
    /// A PostgreSQL StartupMessage or SSLRequest opened the client's stream.
    Postgresql,
    /// A TLS handshake record opened the client's stream.
    Tls,
    /// Anything else: exchanges come from turn-taking by direction change.
    Other,
}

impl Protocol {
    /// The text stored in the database and printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Postgresql => "postgresql",
            Protocol::Tls => "tls",
            Protocol::Other => "other",
        }
    }
}

/// The phase a connection was in when something happened (a RST, an expiry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the handshake's final ACK.
    Handshake,
    /// Handshake done, no request byte yet.
    RequestWait,
    /// The client is sending a request.
    Request,
    /// The request is complete, the server has not answered yet.
    Server,
    /// The server is sending its response.
    Response,
    /// Between a response's last byte and the next request's first byte.
    Idle,
    /// After the first FIN.
    Close,
}

impl Phase {
    /// The text stored in the database and printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::RequestWait => "request_wait",
            Phase::Request => "request",
            Phase::Server => "server",
            Phase::Response => "response",
            Phase::Idle => "idle",
            Phase::Close => "close",
        }
    }
}

/// One TCP connection split into phases (a row of the `connections` table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionRecord {
    /// Unique within one analysis run, in order of the connection's first packet.
    pub conn_id: u64,
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub server_port: u16,
    /// Outermost 802.1Q VLAN id, if the packets were tagged (all tags are part of the flow key).
    pub vlan: Option<u16>,
    /// Capture interface (pcapng interface index, or the index the live capture gives); 0 for pcap.
    pub interface_id: u32,
    /// First SYN of the connection.
    pub syn_ts_ns: Option<i64>,
    /// First SYN -> the ACK that completes the handshake.
    pub handshake_us: Option<f64>,
    /// SYN/ACK -> the client's ACK: the round trip as seen from the capture point to the client.
    pub synack_to_ack_us: Option<f64>,
    /// SYNs sent again for the same attempt (accept-queue / backlog overflow signature).
    pub syn_retransmits: u32,
    /// First byte of the first request.
    pub first_request_ts_ns: Option<i64>,
    /// Handshake end -> first request byte.
    pub request_wait_us: Option<f64>,
    /// First exchange: request last byte -> response first byte.
    pub server_us: Option<f64>,
    /// First exchange: response first byte -> response last byte.
    pub response_us: Option<f64>,
    /// Request/response exchanges seen (HTTP messages, or turns for other protocols).
    pub exchanges: u32,
    /// PostgreSQL: StartupMessage/SSLRequest -> first ReadyForQuery.
    pub db_setup_us: Option<f64>,
    /// Sum of the gaps between one exchange's response end and the next request's start.
    pub idle_us: Option<f64>,
    /// First FIN (or the RST, if the connection was reset without a FIN).
    pub close_start_ts_ns: Option<i64>,
    /// First FIN -> the ACK of the last FIN (or -> the RST).
    pub close_us: Option<f64>,
    /// Sender of the first FIN.
    pub closed_by: Option<Side>,
    /// Sender of the first RST.
    pub reset_by: Option<Side>,
    /// Phase the connection was in when the first RST was seen.
    pub reset_phase: Option<Phase>,
    /// One side sent a FIN that was acknowledged, and the other side never closed in the capture.
    pub half_closed: bool,
    /// Segments that repeat sequence space already sent (by sequence numbers).
    pub retransmits: u32,
    /// Segments that arrived below the highest sequence sent, filling a gap (not repeats).
    pub out_of_order: u32,
    /// Pure ACKs repeating the previous ACK number and window while data is outstanding.
    pub dup_acks: u32,
    /// Segments advertising a zero receive window (RST excluded).
    pub zero_windows: u32,
    /// Segments that filled the peer's last advertised window exactly.
    pub window_full: u32,
    /// Payload bytes client -> server, each sequence byte counted once.
    pub bytes_c2s: u64,
    /// Payload bytes server -> client, each sequence byte counted once.
    pub bytes_s2c: u64,
    /// First packet of the connection.
    pub first_ts_ns: i64,
    /// Last packet of the connection.
    pub last_ts_ns: i64,
    /// first_ts_ns -> last_ts_ns.
    pub lifetime_us: f64,
    /// Packets in both directions.
    pub packets: u64,
    pub state: ConnState,
    pub protocol: Protocol,
    /// HTTP requests recognized (any token method, so more than tshark counts).
    pub http_requests: u32,
    /// HTTP responses recognized, interim 1xx responses included (as tshark counts them).
    pub http_responses: u32,
    /// The flow-table entry was dropped by idle expiry (memory bound) before the connection ended.
    pub expired: bool,
}

/// One request/response exchange of a connection (a row of the `exchanges` table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExchangeRecord {
    pub conn_id: u64,
    /// 0-based position of the exchange in its connection.
    pub seq: u32,
    pub request_start_ts_ns: i64,
    pub request_end_ts_ns: i64,
    pub response_start_ts_ns: Option<i64>,
    pub response_end_ts_ns: Option<i64>,
    /// Request last byte -> response first byte.
    pub server_us: Option<f64>,
    /// Response first byte -> response last byte.
    pub response_us: Option<f64>,
    /// HTTP method (`None` for other protocols).
    pub method: Option<String>,
    /// HTTP request target.
    pub path: Option<String>,
    /// HTTP status of the final (non-1xx) response.
    pub status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Why packets or records were skipped or cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningReason {
    /// The file ends inside a record or block header (a capture killed mid-write).
    TruncatedFile,
    /// A record claims more captured bytes than the file's snapshot length or original length.
    BadRecordLength,
    /// A record's sub-second field is out of range (normalized by carrying into seconds).
    InvalidTimestamp,
    /// A packet's timestamp is earlier than the previous packet's in the same file.
    TimestampBackwards,
    /// The link type is not one peel decodes; the packets were skipped.
    UnsupportedLinkType,
    /// The link-layer header is cut or invalid.
    MalformedLink,
    /// The IPv4/IPv6 header (or an IPv6 extension header) is cut or invalid.
    MalformedIp,
    /// The TCP header is cut or invalid.
    MalformedTcp,
    /// The packet was cut by the snapshot length inside the TCP payload; sequence analysis still used it.
    SnaplenCut,
    /// A non-first IP fragment carrying TCP; peel does not reassemble IP fragments.
    IpFragment,
    /// A pcapng block peel does not understand or that is malformed (skipped).
    MalformedBlock,
    /// A flow-table entry expired after the idle timeout (bounds memory; may split a connection).
    IdleExpired,
    /// A connection had more exchanges than peel keeps as records (all are counted).
    ExchangesNotKept,
    /// Packets of a connection that had already finished (late retransmitted FIN/RST/ACK), absorbed.
    AfterClose,
    /// The flow table hit its size limit and evicted the least recently seen entry.
    FlowTableFull,
}

impl WarningReason {
    /// The text stored in the database and printed in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningReason::TruncatedFile => "truncated_file",
            WarningReason::BadRecordLength => "bad_record_length",
            WarningReason::InvalidTimestamp => "invalid_timestamp",
            WarningReason::TimestampBackwards => "timestamp_backwards",
            WarningReason::UnsupportedLinkType => "unsupported_link_type",
            WarningReason::MalformedLink => "malformed_link",
            WarningReason::MalformedIp => "malformed_ip",
            WarningReason::MalformedTcp => "malformed_tcp",
            WarningReason::SnaplenCut => "snaplen_cut",
            WarningReason::IpFragment => "ip_fragment",
            WarningReason::MalformedBlock => "malformed_block",
            WarningReason::IdleExpired => "idle_expired",
            WarningReason::ExchangesNotKept => "exchanges_not_kept",
            WarningReason::AfterClose => "after_close",
            WarningReason::FlowTableFull => "flow_table_full",
        }
    }
}

/// Packets of one file skipped or cut for one reason (a row of the `capture_warnings` table).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptureWarning {
    /// The capture file (empty for live capture).
    pub file: String,
    /// 0-based index within the file of the first packet this happened to, if it is about a packet.
    pub packet_index: Option<u64>,
    pub reason: WarningReason,
    /// How many times it happened in this file.
    pub count: u64,
    /// Byte offset in the file of the first occurrence, when the reader knows it.
    pub byte_offset: Option<u64>,
    /// One human line about the first occurrence (e.g. "record header needs 16 bytes, 7 left").
    pub detail: Option<String>,
}

/// A finished connection with its exchanges, as handed to the caller's sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinishedConnection {
    pub connection: ConnectionRecord,
    pub exchanges: Vec<ExchangeRecord>,
}
