//! Turns a connection's in-order payload (client and server streams, with gaps) into
//! request/response exchanges: HTTP/1.x by message framing (pipelining by a FIFO of pending
//! requests), everything else by turn-taking (a new exchange starts when the client speaks after
//! the server has). PostgreSQL start-up gives `db_setup`.
//!
//! It sees only bytes the TCP layer ([`crate::conn`]) has already put in order; it knows nothing
//! about sequence numbers or retransmissions.

use std::collections::VecDeque;

use crate::http::{looks_like_message_start, HttpEvent, HttpFramer, RequestKind};
use crate::pg::{self, PgOutcome, PgStartup};
use crate::records::{ExchangeRecord, Phase, Protocol, Side};

// One per connection, mostly `Http`: boxing the framers would cost two allocations per connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Mode {
    /// No payload yet (or only a server banner).
    Undecided,
    Http {
        request: HttpFramer,
        response: HttpFramer,
    },
    Turns,
}

#[derive(Debug, Clone, Default)]
struct Pending {
    request_start_ts_ns: i64,
    request_end_ts_ns: Option<i64>,
    response_start_ts_ns: Option<i64>,
    response_end_ts_ns: Option<i64>,
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    request_bytes: u64,
    response_bytes: u64,
    /// The final response is complete (HTTP) or the server has answered (turns).
    answered: bool,
}

/// Spare queues kept at most (each holds a handful of entries' worth of capacity).
const SPARE_QUEUES: usize = 256;
/// A queue that grew beyond this capacity (deep pipelining) is freed rather than kept.
const SPARE_CAPACITY: usize = 16;

/// Scratch space the analyzer keeps across connections: the HTTP events of one segment, and the
/// emptied per-connection queues of finished connections, so a new connection reuses their
/// allocations instead of making its own (two allocations and two frees less per connection).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    events: Vec<HttpEvent>,
    pending: Vec<VecDeque<Pending>>,
    awaiting: Vec<VecDeque<RequestKind>>,
}

/// Keeps an emptied queue for reuse, unless the spares are full or it grew large.
fn keep_spare<T>(spares: &mut Vec<VecDeque<T>>, mut queue: VecDeque<T>) {
    if queue.capacity() > 0 && queue.capacity() <= SPARE_CAPACITY && spares.len() < SPARE_QUEUES {
        queue.clear();
        spares.push(queue);
    }
}

/// Exchange tracking for one connection.
#[derive(Debug)]
pub(crate) struct Exchanges {
    mode: Mode,
    protocol: Option<Protocol>,
    pending: VecDeque<Pending>,
    /// Index in `pending` of the exchange the next HTTP response belongs to.
    response_cursor: usize,
    /// Whether the response being framed is a final (non-1xx) one for `response_cursor`.
    response_is_final: bool,
    done: Vec<ExchangeRecord>,
    next_seq: u32,
    pub(crate) http_requests: u32,
    pub(crate) http_responses: u32,
    pub(crate) first_request_ts_ns: Option<i64>,
    last_response_end_ts_ns: Option<i64>,
    idle_ns: i64,
    last_server_data_ts_ns: Option<i64>,
    pg: Option<(PgStartup, i64)>,
    pub(crate) db_setup_ns: Option<i64>,
    /// The server's first bytes decide whether an unrecognized client stream was HTTP after all.
    sniff_server: bool,
}

impl Exchanges {
    pub(crate) fn new() -> Exchanges {
        Exchanges {
            mode: Mode::Undecided,
            protocol: None,
            pending: VecDeque::new(),
            response_cursor: 0,
            response_is_final: false,
            done: Vec::new(),
            next_seq: 0,
            http_requests: 0,
            http_responses: 0,
            first_request_ts_ns: None,
            last_response_end_ts_ns: None,
            idle_ns: 0,
            last_server_data_ts_ns: None,
            pg: None,
            db_setup_ns: None,
            sniff_server: false,
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or(Protocol::Other)
    }

    /// In-order payload bytes from `side`, captured in the segment at `ts_ns`. `scratch` is space
    /// the caller keeps across connections (allocations for the run, not for each connection).
    pub(crate) fn data(
        &mut self,
        side: Side,
        ts_ns: i64,
        data: &[u8],
        conn_id: u64,
        scratch: &mut Scratch,
    ) {
        if data.is_empty() {
            return;
        }
        if matches!(self.mode, Mode::Undecided) {
            self.decide(side, ts_ns, data);
        }
        if side == Side::Server {
            self.last_server_data_ts_ns = Some(ts_ns);
            self.pg_server_bytes(ts_ns, data);
            if std::mem::take(&mut self.sniff_server) && looks_like_message_start(data, false) {
                // The client's bytes were not HTTP we could parse, but the server answers in HTTP
                // (a malformed request, or HTTP behind another preamble): follow the responses.
                self.mode = Mode::Http {
                    request: HttpFramer::lost(true),
                    response: HttpFramer::new(false),
                };
                self.protocol = Some(Protocol::Http);
                self.response_cursor = self.pending.len().saturating_sub(1);
            }
        }
        if side == Side::Client
            && matches!(self.mode, Mode::Turns)
            && self.protocol == Some(Protocol::Other)
            && self.pending.back().is_none_or(|p| p.response_start_ts_ns.is_some())
            && looks_like_message_start(data, true)
        {
            // HTTP after a preamble of another protocol (SOCKS, a proxy handshake).
            if let Some(p) = self.pending.back_mut() {
                p.answered = true;
            }
            self.pop_answered(conn_id);
            self.mode =
                Mode::Http { request: HttpFramer::new(true), response: HttpFramer::new(false) };
            self.protocol = Some(Protocol::Http);
            self.response_cursor = self.pending.len();
        }
        // Reuse a finished connection's queues before this one would allocate its own.
        if self.pending.capacity() == 0 {
            if let Some(queue) = scratch.pending.pop() {
                self.pending = queue;
            }
        }
        if let Mode::Http { response, .. } = &mut self.mode {
            if response.awaiting.capacity() == 0 {
                if let Some(queue) = scratch.awaiting.pop() {
                    response.awaiting = queue;
                }
            }
        }
        match &mut self.mode {
            Mode::Undecided => {}
            Mode::Turns => self.turn(side, ts_ns, data.len() as u64, conn_id),
            Mode::Http { request, response } => {
                let events = &mut scratch.events;
                events.clear();
                if side == Side::Client {
                    request.feed(ts_ns, data, events);
                } else {
                    response.feed(ts_ns, data, events);
                }
                let give_up = side == Side::Client && self.http_requests == 0 && request.is_lost();
                // Events are moved out (their method and path become the exchange's, uncopied).
                for event in events.drain(..) {
                    self.http_event(side, event, conn_id);
                }
                if give_up {
                    // It looked like HTTP but is not: fall back to turn-taking.
                    self.mode = Mode::Turns;
                    self.sniff_server = true;
                    self.protocol = Some(Protocol::Other);
                    self.turn(side, ts_ns, data.len() as u64, conn_id);
                }
            }
        }
    }

    /// `missing` bytes from `side` were never captured.
    pub(crate) fn gap(&mut self, side: Side, missing: u64) {
        if side == Side::Server {
            if let Some((pg, _)) = &mut self.pg {
                pg.gap();
            }
        }
        if let Mode::Http { request, response } = &mut self.mode {
            match side {
                Side::Client => request.gap(missing),
                Side::Server => response.gap(missing),
            }
        }
    }

    fn decide(&mut self, side: Side, ts_ns: i64, data: &[u8]) {
        let protocol = match side {
            Side::Client if looks_like_message_start(data, true) => Protocol::Http,
            Side::Client if pg::is_startup(data) => {
                self.pg = Some((PgStartup::new(data), ts_ns));
                Protocol::Postgresql
            }
            Side::Client if data.len() >= 3 && data[0] == 0x16 && data[1] == 0x03 => Protocol::Tls,
            Side::Client => Protocol::Other,
            // A capture that starts mid-connection may show a response first.
            Side::Server if looks_like_message_start(data, false) => Protocol::Http,
            Side::Server => return, // a banner (SSH, SMTP, FTP): wait for the client
        };
        self.protocol = Some(protocol);
        self.mode = match protocol {
            Protocol::Http => {
                Mode::Http { request: HttpFramer::new(true), response: HttpFramer::new(false) }
            }
            _ => {
                self.sniff_server = protocol == Protocol::Other;
                Mode::Turns
            }
        };
    }

    fn pg_server_bytes(&mut self, ts_ns: i64, data: &[u8]) {
        let Some((pg, start_ts)) = &mut self.pg else {
            return;
        };
        if pg.server_bytes(data) == PgOutcome::Ready {
            self.db_setup_ns = Some(ts_ns.saturating_sub(*start_ts));
        }
    }

    fn turn(&mut self, side: Side, ts_ns: i64, bytes: u64, conn_id: u64) {
        match side {
            Side::Client => {
                let answered =
                    self.pending.back().is_some_and(|p| p.response_start_ts_ns.is_some());
                if answered || self.pending.is_empty() {
                    if answered {
                        if let Some(p) = self.pending.back_mut() {
                            p.answered = true;
                        }
                        self.pop_answered(conn_id);
                    }
                    self.start_request(ts_ns, None, None);
                }
                if let Some(p) = self.pending.back_mut() {
                    p.request_end_ts_ns = Some(ts_ns);
                    p.request_bytes += bytes;
                }
            }
            Side::Server => {
                if let Some(p) = self.pending.back_mut() {
                    p.response_start_ts_ns.get_or_insert(ts_ns);
                    p.response_end_ts_ns = Some(ts_ns);
                    p.response_bytes += bytes;
                }
            }
        }
    }

    fn start_request(&mut self, ts_ns: i64, method: Option<String>, path: Option<String>) {
        self.first_request_ts_ns.get_or_insert(ts_ns);
        if let Some(end) = self.last_response_end_ts_ns.take() {
            self.idle_ns = self.idle_ns.saturating_add(ts_ns.saturating_sub(end).max(0));
        }
        self.pending.push_back(Pending {
            request_start_ts_ns: ts_ns,
            method,
            path,
            ..Pending::default()
        });
    }

    fn http_event(&mut self, side: Side, event: HttpEvent, conn_id: u64) {
        match (side, event) {
            (Side::Client, HttpEvent::RequestStart { ts_ns, method, path, simple }) => {
                self.http_requests += 1;
                let kind = match method.as_str() {
                    _ if simple => RequestKind::Simple,
                    "HEAD" => RequestKind::Head,
                    "CONNECT" => RequestKind::Connect,
                    _ => RequestKind::Normal,
                };
                if let Mode::Http { response, .. } = &mut self.mode {
                    response.awaiting.push_back(kind);
                }
                self.start_request(ts_ns, Some(method), Some(path));
            }
            (Side::Client, HttpEvent::MessageEnd { ts_ns, bytes }) => {
                if let Some(p) = self.pending.back_mut() {
                    p.request_end_ts_ns = Some(ts_ns);
                    p.request_bytes = bytes;
                }
                self.pop_answered(conn_id);
            }
            (Side::Server, HttpEvent::ResponseStart { ts_ns, status }) => {
                // An HTTP/0.9 response (status 0) is not counted: it has no status line to count.
                self.http_responses += u32::from(status != 0);
                self.response_is_final = status >= 200 || status == 0;
                if let Some(p) = self.pending.get_mut(self.response_cursor) {
                    if self.response_is_final {
                        p.response_start_ts_ns = Some(ts_ns);
                        p.status = (status != 0).then_some(status);
                    }
                }
            }
            (Side::Server, HttpEvent::MessageEnd { ts_ns, bytes }) => {
                let is_final = self.response_is_final;
                if let Some(p) = self.pending.get_mut(self.response_cursor) {
                    p.response_bytes += bytes;
                    if is_final {
                        p.response_end_ts_ns = Some(ts_ns);
                        p.answered = true;
                        self.response_cursor += 1;
                        self.last_response_end_ts_ns = Some(ts_ns);
                    }
                }
                self.pop_answered(conn_id);
            }
            (_, HttpEvent::Tunnel) => {
                self.pop_answered(conn_id);
                self.mode = Mode::Turns;
            }
            _ => {}
        }
    }

    /// Emits exchanges from the front whose request and response are both complete.
    fn pop_answered(&mut self, conn_id: u64) {
        while self.pending.front().is_some_and(|p| p.answered && p.request_end_ts_ns.is_some()) {
            if let Some(p) = self.pending.pop_front() {
                self.response_cursor = self.response_cursor.saturating_sub(1);
                if let Some(end) = p.response_end_ts_ns {
                    self.last_response_end_ts_ns = Some(end);
                }
                self.emit(p, conn_id);
            }
        }
    }

    fn emit(&mut self, p: Pending, conn_id: u64) {
        if self.done.len() >= MAX_EXCHANGES_KEPT {
            // Counted, not kept: memory stays bounded on a connection with millions of requests.
            self.next_seq += 1;
            return;
        }
        let request_end = p.request_end_ts_ns.unwrap_or(p.request_start_ts_ns);
        self.done.push(ExchangeRecord {
            conn_id,
            seq: self.next_seq,
            request_start_ts_ns: p.request_start_ts_ns,
            request_end_ts_ns: request_end,
            response_start_ts_ns: p.response_start_ts_ns,
            response_end_ts_ns: p.response_end_ts_ns,
            server_us: p.response_start_ts_ns.map(|s| micros(s.saturating_sub(request_end))),
            response_us: match (p.response_start_ts_ns, p.response_end_ts_ns) {
                (Some(s), Some(e)) => Some(micros(e.saturating_sub(s))),
                _ => None,
            },
            method: p.method,
            path: p.path,
            status: p.status,
            request_bytes: p.request_bytes,
            response_bytes: p.response_bytes,
        });
        self.next_seq += 1;
    }

    /// The phase the application exchange is in (for the RST's phase).
    pub(crate) fn phase(&self) -> Phase {
        match self.pending.back() {
            None if self.done.is_empty() => Phase::RequestWait,
            None => Phase::Idle,
            Some(p) if p.answered => Phase::Idle,
            Some(p) if p.response_start_ts_ns.is_some() => Phase::Response,
            Some(p) if p.request_end_ts_ns.is_some() => Phase::Server,
            Some(_) => Phase::Request,
        }
    }

    /// Ends the connection: an until-close response ends with the server's last byte; every
    /// request seen becomes an exchange, with what is known of its response.
    /// Returns the exchange records kept, the idle time, and the number of exchanges seen.
    /// The emptied queues go back to `scratch` for the next connection.
    /// (By reference: moving the tracker out of its connection first would copy it whole.)
    pub(crate) fn finish(
        &mut self,
        conn_id: u64,
        scratch: &mut Scratch,
    ) -> (Vec<ExchangeRecord>, Option<i64>, u32) {
        if let Mode::Http { response, .. } = &self.mode {
            if let (true, Some(bytes), Some(end)) =
                (response.until_close(), response.open_message_bytes(), self.last_server_data_ts_ns)
            {
                if let Some(p) = self.pending.get_mut(self.response_cursor) {
                    p.response_end_ts_ns = Some(end);
                    p.response_bytes += bytes;
                }
            }
        }
        let mut pending = std::mem::take(&mut self.pending);
        for p in pending.drain(..) {
            self.emit(p, conn_id);
        }
        keep_spare(&mut scratch.pending, pending);
        if let Mode::Http { response, .. } = &mut self.mode {
            keep_spare(&mut scratch.awaiting, std::mem::take(&mut response.awaiting));
        }
        let idle = (self.idle_ns > 0 || self.next_seq > 1).then_some(self.idle_ns);
        (std::mem::take(&mut self.done), idle, self.next_seq)
    }
}

/// Exchange records kept per connection; later ones are counted but not kept (a warning says so).
pub(crate) const MAX_EXCHANGES_KEPT: usize = 100_000;

/// Nanoseconds to microseconds, exactly as f64 allows.
pub(crate) fn micros(ns: i64) -> f64 {
    ns as f64 / 1000.0
}
