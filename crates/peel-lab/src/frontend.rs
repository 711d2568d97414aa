//! The frontend tier: the story's Next.js server, which renders pages by calling the app over
//! internal TCP.
//!
//! Each client connection gets a thread (up to a limit); each request is proxied to the app over a
//! new upstream connection (the default, as in the story) or over a pooled keep-alive one. The
//! knobs the shipped playbooks turn live here: who closes an upstream connection first, a delayed
//! close (the story's 826 ms), and a restricted range of local ports for upstream connections (to
//! reproduce ephemeral port exhaustion without touching system settings).

use std::io::{self, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::config::{Closer, PortRange};
use crate::counters::Counters;
use crate::http::{self, Head};
use crate::tier::{self, lock, Slots, Stop, Threads};

/// What the frontend needs to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrontendSettings {
    pub(crate) upstream: SocketAddr,
    pub(crate) keepalive: bool,
    pub(crate) pool_size: usize,
    pub(crate) close: Closer,
    pub(crate) slow_close: Duration,
    pub(crate) ephemeral_ports: Option<PortRange>,
    pub(crate) max_connections: usize,
    pub(crate) io_timeout: Duration,
}

/// One frontend -> app connection.
#[derive(Debug)]
struct Upstream {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// Everything the connection threads share.
#[derive(Debug)]
struct Shared {
    settings: FrontendSettings,
    stop: Arc<Stop>,
    counters: Arc<Counters>,
    threads: Threads,
    slots: Slots,
    /// Idle pooled connections and how many exist in all (keep-alive only).
    pool: Mutex<(Vec<Upstream>, usize)>,
    pool_returned: Condvar,
    /// Next port to try in `ephemeral_ports`.
    port_cursor: AtomicUsize,
    /// Connections waiting out `slow_close`.
    closer: Mutex<Option<Sender<(Instant, TcpStream)>>>,
}

/// A running frontend's threads.
#[derive(Debug)]
pub(crate) struct Frontend {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    closer: Option<JoinHandle<()>>,
}

impl Frontend {
    pub(crate) fn start(
        listener: &TcpListener,
        settings: FrontendSettings,
        stop: &Arc<Stop>,
        counters: &Arc<Counters>,
    ) -> io::Result<Frontend> {
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            settings,
            stop: Arc::clone(stop),
            counters: Arc::clone(counters),
            threads: Threads::default(),
            slots: Slots::new(settings.max_connections),
            pool: Mutex::new((Vec::new(), 0)),
            pool_returned: Condvar::new(),
            port_cursor: AtomicUsize::new(0),
            closer: Mutex::new(Some(sender)),
        });
        let closer = {
            let stop = Arc::clone(stop);
            std::thread::Builder::new()
                .name("lab-frontend-closer".into())
                .spawn(move || close_later(&receiver, &stop))?
        };
        let acceptor = {
            let (listener, shared) = (listener.try_clone()?, Arc::clone(&shared));
            std::thread::Builder::new()
                .name("lab-frontend-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
        };
        let acceptor = match acceptor {
            Ok(acceptor) => acceptor,
            Err(err) => {
                lock(&shared.closer).take();
                let _ = closer.join();
                return Err(err);
            }
        };
        Ok(Frontend { shared, acceptor: Some(acceptor), closer: Some(closer) })
    }

    /// Joins every frontend thread; the caller has already begun the stop and woken the acceptor.
    pub(crate) fn join(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.shared.pool_returned.notify_all();
        self.shared.threads.join_all();
        lock(&self.shared.pool).0.clear();
        lock(&self.shared.closer).take();
        if let Some(closer) = self.closer.take() {
            let _ = closer.join();
        }
    }
}

/// Closes connections once their `slow_close` delay has passed (FIFO: every delay is the same).
fn close_later(receiver: &Receiver<(Instant, TcpStream)>, stop: &Stop) {
    while let Ok((deadline, stream)) = receiver.recv() {
        let now = Instant::now();
        if deadline > now {
            stop.sleep(deadline - now);
        }
        drop(stream);
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while shared.slots.acquire(&shared.stop) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                shared.slots.release();
                if !shared.stop.is_stopping() {
                    std::thread::sleep(Duration::from_millis(5)); // EMFILE and friends
                }
                continue;
            }
        };
        Counters::bump(&shared.counters.frontend_connections);
        let for_thread = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("lab-frontend-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve_client(stream, &for_thread);
                for_thread.slots.release();
            });
        match spawned {
            Ok(handle) => shared.threads.push(handle),
            Err(_) => shared.slots.release(),
        }
    }
}

fn serve_client(stream: TcpStream, shared: &Shared) {
    let Some(_tracked) = shared.stop.track(&stream) else { return };
    if tier::tune(&stream, shared.settings.io_timeout).is_err() {
        return;
    }
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let Ok(Some(head)) = http::read_head(&mut reader) else { return };
        let Ok(body) = http::read_body(&mut reader, head.content_length) else { return };
        let (status, response) = match proxy(&head, &body, shared) {
            Ok(answer) => answer,
            Err(err) => {
                Counters::bump(&shared.counters.upstream_errors);
                if err.kind() == io::ErrorKind::AddrInUse {
                    Counters::bump(&shared.counters.upstream_ports_exhausted);
                }
                (502, format!("frontend: upstream failed: {err}\n").into_bytes())
            }
        };
        Counters::bump(&shared.counters.frontend_requests);
        let close = head.close || shared.stop.is_stopping();
        if http::write_response(&mut writer, status, &response, close).is_err() || close {
            return;
        }
    }
}

/// Sends one request upstream and returns the app's status and body.
fn proxy(head: &Head, body: &[u8], shared: &Shared) -> io::Result<(u16, Vec<u8>)> {
    let settings = &shared.settings;
    let mut upstream = checkout(shared)?;
    // Without keep-alive, `Connection: close` makes the app close first (gunicorn's way); a frontend
    // that closes first simply does not ask, and hangs up after the response.
    let ask_close = !settings.keepalive && settings.close == Closer::App;
    let exchange = (|| {
        http::write_request(&mut upstream.writer, &head.first, &head.second, body, ask_close)?;
        let response = http::read_head(&mut upstream.reader)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "app closed before answering")
        })?;
        let response_body = http::read_body(&mut upstream.reader, response.content_length)?;
        let status = response.second.parse::<u16>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status {:?} from app", response.second),
            )
        })?;
        Ok((status, response_body, response.close))
    })();
    match exchange {
        Ok((status, response_body, app_closes)) => {
            release(shared, upstream, app_closes);
            Ok((status, response_body))
        }
        Err(err) => {
            if settings.keepalive {
                forget_pooled(shared);
            }
            Err(err)
        }
    }
}

/// Takes an upstream connection: a pooled one, or a new one (waiting when the pool is full).
fn checkout(shared: &Shared) -> io::Result<Upstream> {
    let settings = &shared.settings;
    if !settings.keepalive {
        return open_upstream(shared);
    }
    let mut pool = lock(&shared.pool);
    loop {
        if let Some(upstream) = pool.0.pop() {
            return Ok(upstream);
        }
        if pool.1 < settings.pool_size {
            pool.1 += 1;
            drop(pool);
            return open_upstream(shared).inspect_err(|_| forget_pooled(shared));
        }
        if shared.stop.is_stopping() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "lab is stopping"));
        }
        pool = match shared.pool_returned.wait_timeout(pool, Duration::from_millis(100)) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}

/// A pooled connection died: make room for a new one.
fn forget_pooled(shared: &Shared) {
    let mut pool = lock(&shared.pool);
    pool.1 = pool.1.saturating_sub(1);
    shared.pool_returned.notify_one();
}

/// Returns a connection to the pool, or closes it the way the settings say.
fn release(shared: &Shared, mut upstream: Upstream, app_closes: bool) {
    let settings = &shared.settings;
    if settings.keepalive && !app_closes && !shared.stop.is_stopping() {
        lock(&shared.pool).0.push(upstream);
        shared.pool_returned.notify_one();
        return;
    }
    if settings.keepalive {
        forget_pooled(shared);
    }
    if settings.close == Closer::App || app_closes {
        // Wait for the app's FIN so the close order is the app's, every time.
        let mut byte = [0u8; 1];
        let _ = upstream.reader.read(&mut byte);
    }
    if settings.slow_close.is_zero() {
        return;
    }
    let deadline = Instant::now() + settings.slow_close;
    if let Some(sender) = lock(&shared.closer).as_ref() {
        let _ = sender.send((deadline, upstream.writer));
    }
}

/// Opens a frontend -> app connection, from a port in `ephemeral_ports` when set.
fn open_upstream(shared: &Shared) -> io::Result<Upstream> {
    let settings = &shared.settings;
    let stream = match settings.ephemeral_ports {
        None => TcpStream::connect_timeout(&settings.upstream, settings.io_timeout)?,
        Some(range) => connect_from_range(shared, range)?,
    };
    Counters::bump(&shared.counters.upstream_connections_opened);
    tier::tune(&stream, settings.io_timeout)?;
    Ok(Upstream { reader: BufReader::new(stream.try_clone()?), writer: stream })
}

/// Binds the next free port of `range` (a port whose last connection sits in TIME_WAIT is not free)
/// and connects; `AddrInUse` when every port is taken.
fn connect_from_range(shared: &Shared, range: PortRange) -> io::Result<TcpStream> {
    let settings = &shared.settings;
    for _ in 0..range.len() {
        let offset = shared.port_cursor.fetch_add(1, Ordering::Relaxed) % range.len();
        let port = range.first + offset as u16; // offset < range.len() <= 65535 - first + 1
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        match socket.bind(&local.into()) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => continue,
            Err(err) => return Err(err),
        }
        match socket.connect_timeout(&settings.upstream.into(), settings.io_timeout) {
            Ok(()) => return Ok(socket.into()),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                ) =>
            {
                continue
            }
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free local port in {range} (TIME_WAIT holds them)"),
    ))
}
