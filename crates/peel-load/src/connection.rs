//! TCP connections under the generator's exact control: a pool of N slots, each holding at most one
//! HTTP/1.1 connection (hyper's low-level `client::conn::http1`, no hidden pool), a socket wrapper
//! that timestamps the first response byte, and the mapping of I/O failures to [`ErrorKind`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::records::ErrorKind;

/// Converts monotonic instants into Unix-epoch nanoseconds from one wall-clock reading, so record
/// timestamps never go backwards within a run and still line up with capture timestamps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        let base = Instant::now();
        let base_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Clock { base, base_unix_ns }
    }

    pub(crate) fn base(&self) -> Instant {
        self.base
    }

    pub(crate) fn unix_ns(&self, at: Instant) -> u64 {
        let since =
            u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.base_unix_ns.saturating_add(since)
    }
}

/// A TCP stream that notes when the first byte of a response arrives. The generator resets the mark
/// to 0 before each request; HTTP/1.1 without pipelining means no byte of the next response can
/// arrive before the request is sent.
#[derive(Debug)]
struct TimedStream {
    inner: TcpStream,
    clock: Clock,
    first_byte_ns: Arc<AtomicU64>,
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled_before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(())))
            && buf.filled().len() > filled_before
            && this.first_byte_ns.load(Ordering::Relaxed) == 0
        {
            this.first_byte_ns.store(this.clock.unix_ns(Instant::now()), Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One open HTTP/1.1 connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) sender: SendRequest<Empty<Bytes>>,
    pub(crate) id: u64,
    pub(crate) local_port: Option<u16>,
    pub(crate) first_byte_ns: Arc<AtomicU64>,
    /// Requests this connection has carried to completion.
    pub(crate) requests_done: u64,
}

/// Opens a TCP connection to the first address that accepts and starts hyper's HTTP/1.1 state
/// machine on it (as a task of its own, as hyper requires).
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    clock: Clock,
    next_id: &AtomicU64,
) -> Result<Conn, ErrorKind> {
    let mut last_error = ErrorKind::Other;
    for addr in addrs {
        let stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(err) => {
                last_error = classify_io(&err);
                continue;
            }
        };
        // Requests are small and latency is what we measure: do not let Nagle delay them.
        let _ = stream.set_nodelay(true);
        let local_port = stream.local_addr().ok().map(|a| a.port());
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let first_byte_ns = Arc::new(AtomicU64::new(0));
        let io = TimedStream { inner: stream, clock, first_byte_ns: Arc::clone(&first_byte_ns) };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| classify_hyper(&e))?;
        tokio::spawn(async move {
            // Errors surface on the request that was in flight; nothing else to do with them here.
            let _ = connection.await;
        });
        return Ok(Conn { sender, id, local_port, first_byte_ns, requests_done: 0 });
    }
    Err(last_error)
}

/// Maps an I/O error to the kind of failure a user cares about.
pub(crate) fn classify_io(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => ErrorKind::Reset,
        _ => ErrorKind::Other,
    }
}

/// Maps a hyper error: the I/O error underneath if there is one; a connection closed by the peer
/// before the response was complete counts as `reset`.
pub(crate) fn classify_hyper(err: &hyper::Error) -> ErrorKind {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io_err) = cause.downcast_ref::<io::Error>() {
            return classify_io(io_err);
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return ErrorKind::Reset;
    }
    ErrorKind::Other
}

/// N connection slots. Taking a slot is what bounds the requests in flight; a slot keeps its
/// connection between requests only with keep-alive.
#[derive(Debug)]
pub(crate) struct Pool {
    permits: Arc<Semaphore>,
    slots: Mutex<Vec<Option<Conn>>>,
}

impl Pool {
    pub(crate) fn new(size: u32) -> Pool {
        let size = usize::try_from(size).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Pool {
            permits: Arc::new(Semaphore::new(size)),
            slots: Mutex::new((0..size).map(|_| None).collect()),
        }
    }

    /// Waits for a free slot (FIFO: requests get slots in the order they asked).
    pub(crate) async fn acquire(self: &Arc<Self>) -> SlotGuard {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("invariant: the pool's semaphore is never closed");
        // A permit guarantees a slot is in the vector: there are as many slots as permits.
        let conn = self.lock_slots().pop().flatten();
        SlotGuard { pool: Arc::clone(self), conn, _permit: permit }
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Vec<Option<Conn>>> {
        // A poisoned lock only means another task panicked while pushing/popping; the Vec is intact.
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A taken slot. Dropping it returns the slot to the pool, with the connection only if
/// [`SlotGuard::keep`] was called (a request that was cancelled or failed leaves the connection in an
/// unknown state, so it is closed).
#[derive(Debug)]
pub(crate) struct SlotGuard {
    pool: Arc<Pool>,
    conn: Option<Conn>,
    _permit: OwnedSemaphorePermit,
}

impl SlotGuard {
    /// The connection the slot held, if any.
    pub(crate) fn take(&mut self) -> Option<Conn> {
        self.conn.take()
    }

    /// Puts a healthy connection back in the slot for the next request.
    pub(crate) fn keep(&mut self, conn: Conn) {
        self.conn = Some(conn);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let conn = self.conn.take();
        self.pool.lock_slots().push(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_kinds() {
        let cases = [
            (io::ErrorKind::ConnectionRefused, ErrorKind::ConnectRefused),
            (io::ErrorKind::TimedOut, ErrorKind::Timeout),
            (io::ErrorKind::ConnectionReset, ErrorKind::Reset),
            (io::ErrorKind::BrokenPipe, ErrorKind::Reset),
            (io::ErrorKind::UnexpectedEof, ErrorKind::Reset),
            (io::ErrorKind::PermissionDenied, ErrorKind::Other),
        ];
        for (io_kind, expected) in cases {
            assert_eq!(classify_io(&io::Error::from(io_kind)), expected, "{io_kind:?}");
        }
    }

    #[test]
    fn clock_is_monotonic_from_its_base() {
        let clock = Clock::start();
        let later = clock.base() + std::time::Duration::from_millis(5);
        assert_eq!(clock.unix_ns(later) - clock.unix_ns(clock.base()), 5_000_000);
        assert_eq!(
            clock.unix_ns(clock.base() - std::time::Duration::from_millis(1)),
            clock.base_unix_ns
        );
    }
}
