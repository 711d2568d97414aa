//! A streaming HTTP/1.x message framer for one direction of a connection: finds where each request
//! or response starts and ends (start line, headers, Content-Length or chunked body, or "until
//! close"), across segment boundaries, with pipelining handled by the caller's queue.
//!
//! It is not an HTTP library: it keeps only method, target and status, never headers or bodies,
//! and it gives up (`Lost`) rather than guess when bytes are missing inside headers; the caller
//! resynchronizes at the next segment that starts like a message.

/// Longest start line or header line kept; longer means this is not HTTP (or is hostile).
use std::collections::VecDeque;

const MAX_LINE_BYTES: usize = 16 << 10;
const MAX_METHOD_BYTES: usize = 24;

/// What the framer found in the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpEvent {
    /// A request line was parsed (its first byte was in the segment at `ts_ns`).
    RequestStart { ts_ns: i64, method: String, path: String, simple: bool },
    /// A status line was parsed (`status` 0: an HTTP/0.9 response, which has none).
    ResponseStart { ts_ns: i64, status: u16 },
    /// The message that started last is complete; `bytes` counts start line, headers and body.
    MessageEnd { ts_ns: i64, bytes: u64 },
    /// The stream switched protocols (CONNECT 2xx, 101): no more HTTP in either direction.
    Tunnel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StartLine,
    Headers,
    Body { remaining: u64 },
    ChunkSize,
    ChunkData { remaining: u64 },
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Lost,
    Tunnel,
}

/// How the caller wants a response's body framed (it knows the request's method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Normal,
    Head,
    Connect,
    /// HTTP/0.9: the response has no status line and ends with the connection.
    Simple,
}

/// One direction's framer.
#[derive(Debug)]
pub(crate) struct HttpFramer {
    is_request: bool,
    state: State,
    line: Vec<u8>,
    msg_bytes: u64,
    msg_open: bool,
    msg_start_ts: i64,
    content_length: Option<u64>,
    chunked: bool,
    status: u16,
    /// Kinds of the requests still waiting for a final response (the caller pushes them).
    pub(crate) awaiting: VecDeque<RequestKind>,
}

impl HttpFramer {
    pub(crate) fn new(is_request: bool) -> HttpFramer {
        HttpFramer {
            is_request,
            state: State::StartLine,
            line: Vec::new(),
            msg_bytes: 0,
            msg_open: false,
            msg_start_ts: 0,
            content_length: None,
            chunked: false,
            status: 0,
            awaiting: VecDeque::new(),
        }
    }

    /// A framer that waits for the next segment that starts like a message.
    pub(crate) fn lost(is_request: bool) -> HttpFramer {
        HttpFramer { state: State::Lost, ..HttpFramer::new(is_request) }
    }

    /// True once the framer could not follow the stream.
    pub(crate) fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// True when the current message ends only when the connection closes.
    pub(crate) fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Bytes of the message still open (for ending an until-close response).
    pub(crate) fn open_message_bytes(&self) -> Option<u64> {
        self.msg_open.then_some(self.msg_bytes)
    }

    /// `missing` bytes of the stream were not captured.
    pub(crate) fn gap(&mut self, missing: u64) {
        match &mut self.state {
            State::Body { remaining } | State::ChunkData { remaining } if *remaining >= missing => {
                *remaining -= missing;
                self.msg_bytes += missing;
            }
            State::UntilClose | State::Tunnel | State::Lost => self.msg_bytes += missing,
            _ => {
                self.state = State::Lost;
                self.msg_open = false;
            }
        }
    }

    /// Feeds one segment's in-order bytes.
    pub(crate) fn feed(&mut self, ts_ns: i64, mut data: &[u8], out: &mut Vec<HttpEvent>) {
        if self.state == State::Lost {
            if !looks_like_message_start(data, self.is_request) {
                return;
            }
            self.state = State::StartLine;
            self.line.clear();
        }
        if !self.is_request
            && self.state == State::StartLine
            && !self.msg_open
            && self.awaiting.front() == Some(&RequestKind::Simple)
        {
            self.awaiting.pop_front();
            self.msg_open = true;
            self.msg_bytes = 0;
            self.msg_start_ts = ts_ns;
            out.push(HttpEvent::ResponseStart { ts_ns, status: 0 });
            self.state = State::UntilClose;
        }
        while !data.is_empty() {
            let used = match self.state {
                State::StartLine | State::Headers | State::ChunkSize | State::Trailers => {
                    self.take_line(ts_ns, data, out)
                }
                State::Body { remaining } | State::ChunkData { remaining } => {
                    let used = usize::try_from(remaining).unwrap_or(usize::MAX).min(data.len());
                    let left = remaining - used as u64;
                    self.msg_bytes += used as u64;
                    self.state = match (self.state, left) {
                        (State::Body { .. }, 0) => {
                            self.end_message(ts_ns, out);
                            State::StartLine
                        }
                        (State::Body { .. }, _) => State::Body { remaining: left },
                        (_, 0) => State::ChunkDataEnd,
                        (_, _) => State::ChunkData { remaining: left },
                    };
                    used
                }
                State::ChunkDataEnd => {
                    // The CRLF after a chunk's data.
                    let used = memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1);
                    self.msg_bytes += used as u64;
                    if data[used - 1] == b'\n' {
                        self.state = State::ChunkSize;
                    }
                    used
                }
                State::UntilClose | State::Tunnel => {
                    self.msg_bytes += data.len() as u64;
                    data.len()
                }
                State::Lost => return,
            };
            data = &data[used..];
        }
    }

    /// Consumes up to and including a '\n' (or all of `data`), handling the line when complete.
    fn take_line(&mut self, ts_ns: i64, data: &[u8], out: &mut Vec<HttpEvent>) -> usize {
        let newline = memchr::memchr(b'\n', data);
        let used = newline.map_or(data.len(), |i| i + 1);
        if self.state == State::StartLine && !self.msg_open {
            // Blank lines between messages are tolerated (RFC 9112 2.2) and belong to no message.
            let skip = data[..used].iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            if skip == used && self.line.is_empty() {
                return used;
            }
            self.msg_open = true;
            self.msg_bytes = 0;
            self.msg_start_ts = ts_ns;
        }
        self.msg_bytes += used as u64;
        if self.line.len() + used > MAX_LINE_BYTES {
            self.lose();
            return data.len();
        }
        if newline.is_some() && self.line.is_empty() {
            // The whole line is in this segment (the usual case): no copy.
            let mut line = &data[..used];
            while let [rest @ .., b'\n' | b'\r'] = line {
                line = rest;
            }
            self.handle_line(ts_ns, line, out);
            return used;
        }
        self.line.extend_from_slice(&data[..used]);
        if newline.is_none() {
            return used;
        }
        let mut line = std::mem::take(&mut self.line);
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        self.handle_line(ts_ns, &line, out);
        line.clear();
        self.line = line;
        used
    }
}

impl HttpFramer {
    fn handle_line(&mut self, ts_ns: i64, line: &[u8], out: &mut Vec<HttpEvent>) {
        match self.state {
            State::StartLine => {
                let start = self.msg_start_ts;
                let event = if self.is_request {
                    if let Some(path) = parse_simple_request(line) {
                        // HTTP/0.9 `GET /path`: no headers, and the response is raw until close.
                        out.push(HttpEvent::RequestStart {
                            ts_ns: start,
                            method: "GET".into(),
                            path,
                            simple: true,
                        });
                        self.end_message(ts_ns, out);
                        return;
                    }
                    parse_request_line(line).map(|(method, path)| HttpEvent::RequestStart {
                        ts_ns: start,
                        method,
                        path,
                        simple: false,
                    })
                } else {
                    parse_status_line(line).map(|status| {
                        self.status = status;
                        HttpEvent::ResponseStart { ts_ns: start, status }
                    })
                };
                match event {
                    Some(event) => {
                        out.push(event);
                        self.content_length = None;
                        self.chunked = false;
                        self.state = State::Headers;
                    }
                    None => self.lose(),
                }
            }
            State::Headers if line.is_empty() => self.headers_done(ts_ns, out),
            State::Headers => self.header(line),
            State::ChunkSize => {
                let digits = line.split(|&b| b == b';').next().unwrap_or(&[]);
                let text = std::str::from_utf8(digits).unwrap_or("").trim();
                match u64::from_str_radix(text, 16) {
                    Ok(0) => self.state = State::Trailers,
                    Ok(size) => self.state = State::ChunkData { remaining: size },
                    Err(_) => self.lose(),
                }
            }
            State::Trailers if line.is_empty() => {
                self.end_message(ts_ns, out);
                self.state = State::StartLine;
            }
            _ => {}
        }
    }

    fn header(&mut self, line: &[u8]) {
        let Some(colon) = memchr::memchr(b':', line) else {
            return;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        // The value is decoded only for the two headers that frame the body: most lines are neither.
        let text = || std::str::from_utf8(value).unwrap_or("").trim();
        if name.eq_ignore_ascii_case(b"content-length") {
            self.content_length = text().parse().ok();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.chunked = text().to_ascii_lowercase().contains("chunked");
        }
    }

    fn headers_done(&mut self, ts_ns: i64, out: &mut Vec<HttpEvent>) {
        if !self.is_request {
            let status = self.status;
            let informational = (100..200).contains(&status);
            let answering = self.awaiting.front().copied().unwrap_or(RequestKind::Normal);
            if !informational {
                self.awaiting.pop_front();
            }
            if status == 101 || (answering == RequestKind::Connect && (200..300).contains(&status))
            {
                self.end_message(ts_ns, out);
                out.push(HttpEvent::Tunnel);
                self.state = State::Tunnel;
                return;
            }
            if informational || status == 204 || status == 304 || answering == RequestKind::Head {
                self.end_message(ts_ns, out);
                self.state = State::StartLine;
                return;
            }
        }
        self.state = if self.chunked {
            State::ChunkSize
        } else {
            match self.content_length {
                Some(0) => {
                    self.end_message(ts_ns, out);
                    State::StartLine
                }
                Some(length) => State::Body { remaining: length },
                None if self.is_request => {
                    self.end_message(ts_ns, out);
                    State::StartLine
                }
                None => State::UntilClose,
            }
        };
    }

    fn end_message(&mut self, ts_ns: i64, out: &mut Vec<HttpEvent>) {
        if self.msg_open {
            out.push(HttpEvent::MessageEnd { ts_ns, bytes: self.msg_bytes });
        }
        self.msg_open = false;
        self.msg_bytes = 0;
    }

    fn lose(&mut self) {
        self.state = State::Lost;
        self.msg_open = false;
        self.line.clear();
    }
}

/// `METHOD SP target SP HTTP/1.x` (any token method, so WebDAV and custom verbs count).
fn parse_request_line(line: &[u8]) -> Option<(String, String)> {
    parse_full_request_line(line).or_else(|| parse_bare_method(line))
}

/// `GET /path` without a version: an HTTP/0.9 simple request.
fn parse_simple_request(line: &[u8]) -> Option<String> {
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(b"GET"), Some(target), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    target.starts_with(b"/").then(|| owned_text(target))
}

/// A start line holding only a well-known method (`OPTIONS`): a broken request, but a request.
fn parse_bare_method(line: &[u8]) -> Option<(String, String)> {
    KNOWN_METHODS.contains(&line).then(|| (owned_text(line), String::new()))
}

const KNOWN_METHODS: &[&[u8]] =
    &[b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"];

fn parse_full_request_line(line: &[u8]) -> Option<(String, String)> {
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let method = parts.next()?;
    let mut target = parts.next()?;
    let version = match parts.next() {
        Some(version) => version,
        // `OPTIONS HTTP/1.1`: a client that left the target out; still a request.
        None if target.starts_with(b"HTTP/1.") => std::mem::take(&mut target),
        // `GET /HTTP/1.1`: the space before the version is missing.
        None => {
            let at = target.windows(7).position(|w| w == b"HTTP/1.")?;
            let (path, version) = target.split_at(at);
            target = path;
            version
        }
    };
    if !is_method(method) || !version.starts_with(b"HTTP/1.") {
        return None;
    }
    Some((owned_text(method), owned_text(target)))
}

/// The bytes as text, invalid UTF-8 replaced (as `from_utf8_lossy`); valid text, the usual
/// case, takes the faster validating path.
fn owned_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// `HTTP/1.x SP 3DIGIT ...`
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn is_method(token: &[u8]) -> bool {
    !token.is_empty()
        && token.len() <= MAX_METHOD_BYTES
        && token.iter().all(|&b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
}

/// Whether a segment's first bytes can start a request (`METHOD SP`) or a response (`HTTP/1.`).
pub(crate) fn looks_like_message_start(data: &[u8], is_request: bool) -> bool {
    if !is_request {
        return data.starts_with(b"HTTP/1.");
    }
    if KNOWN_METHODS.iter().any(|m| {
        data.strip_prefix(*m).is_some_and(|rest| matches!(rest.first(), Some(b'\r' | b'\n')))
    }) {
        return true;
    }
    let Some(space) = data.iter().take(MAX_METHOD_BYTES + 1).position(|&b| b == b' ') else {
        return false;
    };
    is_method(&data[..space])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framer: &mut HttpFramer, pieces: &[(i64, &[u8])]) -> Vec<HttpEvent> {
        let mut out = Vec::new();
        for (ts, data) in pieces {
            framer.feed(*ts, data, &mut out);
        }
        out
    }

    fn req(ts_ns: i64, method: &str, path: &str) -> HttpEvent {
        HttpEvent::RequestStart { ts_ns, method: method.into(), path: path.into(), simple: false }
    }

    #[test]
    fn requests_across_segments_and_pipelined() {
        let mut f = HttpFramer::new(true);
        let events = run(
            &mut f,
            &[
                (1, b"GET /a HT"),
                (2, b"TP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
                (3, b"cdeGET /c HTTP/1.1\r\n\r\n"),
            ],
        );
        assert_eq!(
            events,
            vec![
                req(1, "GET", "/a"),
                HttpEvent::MessageEnd { ts_ns: 2, bytes: 28 },
                req(2, "POST", "/b"),
                HttpEvent::MessageEnd { ts_ns: 3, bytes: 44 },
                req(3, "GET", "/c"),
                HttpEvent::MessageEnd { ts_ns: 3, bytes: 19 },
            ]
        );
    }

    #[test]
    fn response_bodies_by_length_chunked_head_and_close() {
        type Case = (RequestKind, Vec<&'static [u8]>, Vec<HttpEvent>);
        let cases: Vec<Case> = vec![
            (
                RequestKind::Normal,
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", b"abc"],
                vec![
                    HttpEvent::ResponseStart { ts_ns: 0, status: 200 },
                    HttpEvent::MessageEnd { ts_ns: 1, bytes: 41 },
                ],
            ),
            (
                RequestKind::Normal,
                vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
                    b"c\r\n0\r\n\r\n",
                ],
                vec![
                    HttpEvent::ResponseStart { ts_ns: 0, status: 200 },
                    HttpEvent::MessageEnd { ts_ns: 1, bytes: 60 },
                ],
            ),
            (
                RequestKind::Head,
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"],
                vec![
                    HttpEvent::ResponseStart { ts_ns: 0, status: 200 },
                    HttpEvent::MessageEnd { ts_ns: 0, bytes: 39 },
                ],
            ),
            (
                RequestKind::Normal,
                vec![b"HTTP/1.0 200 OK\r\n\r\n", b"body until close"],
                vec![HttpEvent::ResponseStart { ts_ns: 0, status: 200 }],
            ),
        ];
        for (kind, pieces, want) in cases {
            let mut f = HttpFramer::new(false);
            f.awaiting.push_back(kind);
            let pieces: Vec<(i64, &[u8])> =
                pieces.into_iter().enumerate().map(|(i, p)| (i as i64, p)).collect();
            assert_eq!(run(&mut f, &pieces), want, "{kind:?} {pieces:?}");
        }
    }

    #[test]
    fn gap_in_body_is_skipped_gap_in_headers_resyncs() {
        let mut f = HttpFramer::new(false);
        let mut out = Vec::new();
        f.feed(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", &mut out);
        f.gap(5);
        f.feed(1, b"cde", &mut out);
        assert_eq!(out.last(), Some(&HttpEvent::MessageEnd { ts_ns: 1, bytes: 49 }));
        f.feed(2, b"HTTP/1.1 200 OK\r\nConte", &mut out);
        f.gap(10);
        assert!(f.is_lost());
        f.feed(3, b"garbage", &mut out);
        f.feed(4, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", &mut out);
        assert_eq!(out.len(), 5);
        assert_eq!(out[3], HttpEvent::ResponseStart { ts_ns: 4, status: 404 });
    }

    #[test]
    fn not_http_is_lost_immediately() {
        let mut f = HttpFramer::new(true);
        assert!(run(&mut f, &[(0, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n")]).is_empty());
        assert!(f.is_lost());
    }
}
