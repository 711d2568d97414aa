//! A small HTTP/1.1 server on 127.0.0.1 that counts what it sees, for the generator's own tests,
//! the binary's tests and the wrk comparison in `cargo xtask bench`. It is not the incident lab
//! (peel-lab): it has no tiers and no database, only what measuring the generator needs: exact
//! connection and request counts, an optional stall per request, and a path that drops the
//! connection without answering.
//!
//! One thread per connection, blocking I/O: simple enough to trust, fast enough that a keep-alive
//! load on a few connections measures the client rather than the server.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How the server answers.
#[derive(Debug, Clone)]
pub struct ServerBehavior {
    /// Sleep this long before answering each request (a stalled backend).
    pub delay: Duration,
    /// The body of every `200 OK` response.
    pub body: Vec<u8>,
    /// Requests for this path get no response: the server closes the connection at once.
    pub drop_path: Option<String>,
}

impl Default for ServerBehavior {
    fn default() -> Self {
        ServerBehavior { delay: Duration::ZERO, body: b"ok\n".to_vec(), drop_path: None }
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections_accepted: AtomicU64,
    requests: AtomicU64,
    requests_by_path: Mutex<BTreeMap<String, u64>>,
}

/// A running server; it stops accepting when dropped.
#[derive(Debug)]
pub struct LoopbackServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl LoopbackServer {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub fn start(behavior: ServerBehavior) -> io::Result<LoopbackServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let behavior = Arc::new(behavior);
        let (accept_counters, accept_stop) = (Arc::clone(&counters), Arc::clone(&stop));
        thread::Builder::new().name("loopback-accept".into()).spawn(move || {
            accept_loop(&listener, &behavior, &accept_counters, &accept_stop);
        })?;
        Ok(LoopbackServer { addr, counters, stop })
    }

    /// The address to load, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.counters.connections_accepted.load(Ordering::SeqCst)
    }

    /// Requests read so far (answered or dropped).
    pub fn requests(&self) -> u64 {
        self.counters.requests.load(Ordering::SeqCst)
    }

    /// Requests read so far, per path.
    pub fn requests_by_path(&self) -> BTreeMap<String, u64> {
        self.counters.requests_by_path.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(
    listener: &TcpListener,
    behavior: &Arc<ServerBehavior>,
    counters: &Arc<Counters>,
    stop: &AtomicBool,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        counters.connections_accepted.fetch_add(1, Ordering::SeqCst);
        let (behavior, counters) = (Arc::clone(behavior), Arc::clone(counters));
        let spawned = thread::Builder::new().name("loopback-conn".into()).spawn(move || {
            let _ = serve(stream, &behavior, &counters);
        });
        if spawned.is_err() {
            continue;
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to close.
fn serve(mut stream: TcpStream, behavior: &ServerBehavior, counters: &Counters) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(end) = find_head_end(&buf) {
                break end;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let close = head.lines().any(|line| {
            let line = line.to_ascii_lowercase();
            line.starts_with("connection:") && line.contains("close")
        });
        counters.requests.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut by_path) = counters.requests_by_path.lock() {
            *by_path.entry(path.clone()).or_default() += 1;
        }
        if behavior.drop_path.as_deref() == Some(path.as_str()) {
            return stream.shutdown(Shutdown::Both);
        }
        if !behavior.delay.is_zero() {
            thread::sleep(behavior.delay);
        }
        let connection = if close { "close" } else { "keep-alive" };
        let mut response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n",
            behavior.body.len()
        )
        .into_bytes();
        response.extend_from_slice(&behavior.body);
        stream.write_all(&response)?;
        if close {
            return stream.shutdown(Shutdown::Write);
        }
    }
}

/// The length of the request head including its blank line, once it is complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_counts_a_keepalive_and_a_closing_request() {
        let server = LoopbackServer::start(ServerBehavior::default()).unwrap();
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .write_all(
                b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 2, "{response}");
        assert!(response.ends_with("connection: close\r\n\r\nok\n"), "{response}");
        assert_eq!(server.connections_accepted(), 1);
        assert_eq!(server.requests(), 2);
        let by_path: Vec<_> = server.requests_by_path().into_iter().collect();
        assert_eq!(by_path, vec![("/a".to_string(), 1), ("/b".to_string(), 1)]);
    }

    #[test]
    fn drop_path_closes_without_a_response() {
        let behavior =
            ServerBehavior { drop_path: Some("/gone".into()), ..ServerBehavior::default() };
        let server = LoopbackServer::start(behavior).unwrap();
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream.write_all(b"GET /gone HTTP/1.1\r\n\r\n").unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        assert!(response.is_empty());
        assert_eq!(server.requests(), 1);
    }
}
