//! Just enough HTTP/1.1 for the lab's two tiers: a request or response head, a Content-Length body,
//! keep-alive or close. Not a general HTTP implementation (no chunked encoding, no pipelining
//! guarantees): the lab only talks to load generators and to itself.

use std::io::{self, BufRead, Read, Write};

/// Heads longer than this are refused, so a garbage peer cannot grow a buffer without bound.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Bodies longer than this are refused (the lab's own responses are a few bytes).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A parsed request or response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// Request: method; response: protocol version.
    pub first: String,
    /// Request: target (path); response: status code.
    pub second: String,
    pub content_length: usize,
    /// The peer asked (or, for HTTP/1.0 without keep-alive, implied) that the connection close.
    pub close: bool,
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Reads one head. `Ok(None)` is a clean end of stream before its first byte (the peer is done).
pub(crate) fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut line = String::new();
    let mut head_bytes = 0usize;
    let mut read_line = |line: &mut String| -> io::Result<usize> {
        line.clear();
        let limit = (MAX_HEAD_BYTES - head_bytes) as u64 + 1;
        let n = Read::take(&mut *reader, limit).read_line(line)?;
        head_bytes += n;
        if head_bytes > MAX_HEAD_BYTES {
            return Err(invalid("HTTP head too long"));
        }
        Ok(n)
    };
    if read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(first), Some(second), third) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("malformed HTTP start line"));
    };
    let version = if first.starts_with("HTTP/") { first } else { third.unwrap_or("HTTP/1.0") };
    let mut head = Head {
        first: first.to_string(),
        second: second.to_string(),
        content_length: 0,
        close: version == "HTTP/1.0",
    };
    loop {
        if read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "HTTP head ended early"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(Some(head));
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid("malformed HTTP header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().map_err(|_| invalid("bad Content-Length"))?;
            if head.content_length > MAX_BODY_BYTES {
                return Err(invalid("HTTP body too long"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if value.eq_ignore_ascii_case("close") {
                head.close = true;
            } else if value.eq_ignore_ascii_case("keep-alive") {
                head.close = false;
            }
        }
    }
}

/// Reads exactly `len` body bytes.
pub(crate) fn read_body(reader: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Writes head and body in one `write` (one segment on loopback, as a real server sends it).
fn write_message(writer: &mut impl Write, head: &str, body: &[u8]) -> io::Result<()> {
    let mut message = Vec::with_capacity(head.len() + body.len());
    message.extend_from_slice(head.as_bytes());
    message.extend_from_slice(body);
    writer.write_all(&message)?;
    writer.flush()
}

/// Writes a complete response with a Content-Length body.
pub(crate) fn write_response(
    writer: &mut impl Write,
    status: u16,
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    write_message(writer, &head, body)
}

/// Writes a GET-style request (any method, optional body) to an upstream.
pub(crate) fn write_request(
    writer: &mut impl Write,
    method: &str,
    target: &str,
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: peel-lab-app\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    write_message(writer, &head, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Head>, String> {
        read_head(&mut text.as_bytes()).map_err(|e| e.to_string())
    }

    fn head(
        first: &str,
        second: &str,
        content_length: usize,
        close: bool,
    ) -> Result<Option<Head>, String> {
        Ok(Some(Head { first: first.into(), second: second.into(), content_length, close }))
    }

    #[test]
    fn heads_parse_with_their_connection_semantics() {
        let cases: Vec<(&str, Result<Option<Head>, String>)> = vec![
            ("", Ok(None)),
            ("GET /db HTTP/1.1\r\n\r\n", head("GET", "/db", 0, false)),
            ("GET /db HTTP/1.0\r\n\r\n", head("GET", "/db", 0, true)),
            ("GET /db HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", head("GET", "/db", 0, false)),
            ("GET /x HTTP/1.1\r\nconnection: Close\r\n\r\n", head("GET", "/x", 0, true)),
            ("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n", head("POST", "/x", 5, false)),
            ("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", head("HTTP/1.1", "200", 3, false)),
            ("GET\r\n\r\n", Err("malformed HTTP start line".into())),
            ("GET / HTTP/1.1\r\nbroken\r\n\r\n", Err("malformed HTTP header".into())),
            ("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", Err("bad Content-Length".into())),
            ("GET / HTTP/1.1\r\nContent-Length: 9999999\r\n\r\n", Err("HTTP body too long".into())),
            ("GET / HTTP/1.1\r\nHost: a\r\n", Err("HTTP head ended early".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), expected, "{text:?}");
        }
    }

    #[test]
    fn an_endless_head_is_refused() {
        let text = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&text), Err("HTTP head too long".into()));
    }

    #[test]
    fn a_written_response_reads_back() {
        let mut wire = Vec::new();
        write_response(&mut wire, 503, b"db down", true).map_err(|e| e.to_string()).ok();
        let mut reader = wire.as_slice();
        let parsed = read_head(&mut reader).map_err(|e| e.to_string());
        assert_eq!(parsed, head("HTTP/1.1", "503", 7, true));
        assert_eq!(read_body(&mut reader, 7).ok(), Some(b"db down".to_vec()));
    }
}
