//! Recognizes the PostgreSQL connection start-up: the client's SSLRequest/GSSENCRequest or
//! StartupMessage, then the server's messages up to the first ReadyForQuery. The time between the
//! two is `db_setup`, the price of opening a DB connection that our outage paid on every request.
//!
//! It does not parse queries or results; exchanges on a PostgreSQL connection come from turn-taking.

const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
const PROTOCOL_3: u32 = 196_608;
const MAX_STARTUP_BYTES: u32 = 10_000;

/// Whether the client's first bytes are a PostgreSQL start-up packet.
pub(crate) fn is_startup(data: &[u8]) -> bool {
    let (Some(len), Some(code)) = (be_u32(data, 0), be_u32(data, 4)) else {
        return false;
    };
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => len == 8,
        PROTOCOL_3 => (8..=MAX_STARTUP_BYTES).contains(&len),
        _ => false,
    }
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Follows the server's side of the start-up until ReadyForQuery, an error, or TLS.
#[derive(Debug)]
pub(crate) struct PgStartup {
    /// The client asked for SSL/GSS encryption: the server answers with one byte first.
    awaiting_encryption_reply: bool,
    header: [u8; 5],
    header_len: usize,
    body_left: u64,
    finished: bool,
}

/// What the server's bytes showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PgOutcome {
    /// Still in the start-up.
    Pending,
    /// ReadyForQuery: the connection is usable.
    Ready,
    /// An ErrorResponse, an accepted TLS/GSS negotiation, or unparseable bytes: no setup time.
    Abandoned,
}

impl PgStartup {
    pub(crate) fn new(first_client_bytes: &[u8]) -> PgStartup {
        let code = be_u32(first_client_bytes, 4);
        PgStartup {
            awaiting_encryption_reply: matches!(code, Some(SSL_REQUEST_CODE | GSSENC_REQUEST_CODE)),
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            finished: false,
        }
    }

    /// Feeds in-order server bytes.
    pub(crate) fn server_bytes(&mut self, mut data: &[u8]) -> PgOutcome {
        if self.finished {
            return PgOutcome::Pending;
        }
        if self.awaiting_encryption_reply {
            let Some((&reply, rest)) = data.split_first() else {
                return PgOutcome::Pending;
            };
            self.awaiting_encryption_reply = false;
            if reply != b'N' {
                // 'S'/'G': the rest is encrypted; we cannot see ReadyForQuery.
                return self.finish(PgOutcome::Abandoned);
            }
            data = rest;
        }
        while !data.is_empty() {
            if self.body_left > 0 {
                let used = usize::try_from(self.body_left).unwrap_or(usize::MAX).min(data.len());
                self.body_left -= used as u64;
                data = &data[used..];
                continue;
            }
            let need = 5 - self.header_len;
            let used = need.min(data.len());
            self.header[self.header_len..self.header_len + used].copy_from_slice(&data[..used]);
            self.header_len += used;
            data = &data[used..];
            if self.header_len < 5 {
                break;
            }
            self.header_len = 0;
            let kind = self.header[0];
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]);
            if len < 4 {
                return self.finish(PgOutcome::Abandoned);
            }
            match kind {
                b'Z' => return self.finish(PgOutcome::Ready),
                b'E' => return self.finish(PgOutcome::Abandoned),
                b'R' | b'S' | b'K' | b'N' | b'v' => self.body_left = u64::from(len - 4),
                _ => return self.finish(PgOutcome::Abandoned),
            }
        }
        PgOutcome::Pending
    }

    /// Bytes of the server stream were not captured: the start-up cannot be followed.
    pub(crate) fn gap(&mut self) -> PgOutcome {
        if self.finished {
            return PgOutcome::Pending;
        }
        self.finish(PgOutcome::Abandoned)
    }

    fn finish(&mut self, outcome: PgOutcome) -> PgOutcome {
        self.finished = true;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend((body.len() as u32 + 4).to_be_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn startup_detection() {
        let mut startup = 16u32.to_be_bytes().to_vec();
        startup.extend(PROTOCOL_3.to_be_bytes());
        startup.extend(b"user\0x\0\0");
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend(SSL_REQUEST_CODE.to_be_bytes());
        assert!(is_startup(&startup));
        assert!(is_startup(&ssl));
        assert!(!is_startup(b"GET / HTTP/1.1\r\n"));
        assert!(!is_startup(&[0, 0, 0]));
    }

    #[test]
    fn ready_for_query_after_auth_split_across_segments() {
        let mut startup = 16u32.to_be_bytes().to_vec();
        startup.extend(PROTOCOL_3.to_be_bytes());
        let mut pg = PgStartup::new(&startup);
        let mut server = msg(b'R', &[0, 0, 0, 0]);
        server.extend(msg(b'S', b"server_version\x0016\0"));
        server.extend(msg(b'K', &[0; 8]));
        server.extend(msg(b'Z', b"I"));
        let (a, b) = server.split_at(server.len() - 3);
        assert_eq!(pg.server_bytes(a), PgOutcome::Pending);
        assert_eq!(pg.server_bytes(b), PgOutcome::Ready);
    }

    #[test]
    fn ssl_refused_then_error_is_abandoned() {
        let mut ssl = 8u32.to_be_bytes().to_vec();
        ssl.extend(SSL_REQUEST_CODE.to_be_bytes());
        let mut pg = PgStartup::new(&ssl);
        assert_eq!(pg.server_bytes(b"N"), PgOutcome::Pending);
        assert_eq!(pg.server_bytes(&msg(b'E', b"SFATAL\0")), PgOutcome::Abandoned);
        let mut pg = PgStartup::new(&ssl);
        assert_eq!(pg.server_bytes(b"S"), PgOutcome::Abandoned);
    }
}
