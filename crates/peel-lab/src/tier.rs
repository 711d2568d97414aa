//! Plumbing every lab server shares: a loopback listen socket with a chosen accept-queue length, a
//! stop signal that also interrupts sleeps, and the set of live connections a stop must cut so that
//! no thread stays blocked in a read after the lab is torn down.
//!
//! It is not a server framework: each tier owns its own accept loop and protocol.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Opens a listen socket on 127.0.0.1:`port` (0: any free port) with an accept queue of `backlog`.
///
/// std's `TcpListener::bind` always asks for 128; the app tier's backlog is one of the lab's knobs.
pub(crate) fn listen(port: u16, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).into())?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Wakes every thread blocked in `accept` on this listener (Linux returns EINVAL to them once the
/// listening socket is shut down).
pub(crate) fn wake_acceptors(listener: &TcpListener) {
    if let Ok(clone) = listener.try_clone() {
        let _ = Socket::from(clone).shutdown(Shutdown::Both);
    }
}

/// Applies the lab's per-socket settings: timeouts so no peer pins a thread, and no Nagle delay.
pub(crate) fn tune(stream: &TcpStream, io_timeout: Duration) -> io::Result<()> {
    stream.set_read_timeout(Some(io_timeout))?;
    stream.set_write_timeout(Some(io_timeout))?;
    stream.set_nodelay(true)
}

/// The stop signal of one tier plus the connections it must cut when stopping.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopping: Mutex<bool>,
    wake: Condvar,
    live: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked lab thread must not wedge teardown: the data under these locks stays consistent.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Stop {
    pub(crate) fn is_stopping(&self) -> bool {
        *lock(&self.stopping)
    }

    /// Signals the stop, wakes sleepers and shuts down every tracked connection.
    pub(crate) fn begin(&self) {
        *lock(&self.stopping) = true;
        self.wake.notify_all();
        for stream in lock(&self.live).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Sleeps for `duration` unless the stop comes first; returns false when it did.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut stopping = lock(&self.stopping);
        while !*stopping {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            stopping = match self.wake.wait_timeout(stopping, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        false
    }

    /// Tracks a connection until the returned guard drops; `None` when the tier is already stopping
    /// (the caller should drop the connection).
    pub(crate) fn track(self: &Arc<Self>, stream: &TcpStream) -> Option<Tracked> {
        let clone = stream.try_clone().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stopping = lock(&self.stopping);
        if *stopping {
            return None;
        }
        lock(&self.live).insert(id, clone);
        drop(stopping);
        Some(Tracked { stop: Arc::clone(self), id })
    }
}

/// Removes its connection from the stop set when dropped.
#[derive(Debug)]
pub(crate) struct Tracked {
    stop: Arc<Stop>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.stop.live).remove(&self.id);
    }
}

/// Threads started per connection, joined at stop; finished ones are pruned as new ones start.
#[derive(Debug, Default)]
pub(crate) struct Threads {
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    pub(crate) fn push(&self, handle: JoinHandle<()>) {
        let mut handles = lock(&self.handles);
        if handles.len() >= 64 {
            let (finished, running): (Vec<_>, Vec<_>) =
                handles.drain(..).partition(|h| h.is_finished());
            *handles = running;
            for handle in finished {
                let _ = handle.join();
            }
        }
        handles.push(handle);
    }

    pub(crate) fn join_all(&self) {
        let handles: Vec<_> = lock(&self.handles).drain(..).collect();
        for handle in handles {
            let _ = handle.join();
        }
    }
}

/// A listener that serves each accepted connection on its own thread (PostgreSQL's process per
/// connection), used by the simulated database and the setup-delay relay.
#[derive(Debug)]
pub(crate) struct PerConnectionServer {
    pub(crate) addr: SocketAddr,
    listener: TcpListener,
    stop: Arc<Stop>,
    threads: Arc<Threads>,
    acceptor: Option<JoinHandle<()>>,
}

impl PerConnectionServer {
    /// Listens on 127.0.0.1:`port` and calls `serve` on a new thread for every connection; the
    /// connection is tracked (cut at stop) while `serve` runs.
    pub(crate) fn start<F>(port: u16, name: &'static str, serve: F) -> io::Result<Self>
    where
        F: Fn(TcpStream, &Arc<Stop>, &Threads) + Send + Sync + 'static,
    {
        let listener = listen(port, 1024)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(Stop::default());
        let threads = Arc::new(Threads::default());
        let acceptor = {
            let (listener, stop, threads) =
                (listener.try_clone()?, Arc::clone(&stop), Arc::clone(&threads));
            let serve = Arc::new(serve);
            std::thread::Builder::new().name(format!("{name}-accept")).spawn(move || {
                while !stop.is_stopping() {
                    let Ok((stream, _)) = listener.accept() else {
                        if !stop.is_stopping() {
                            std::thread::sleep(Duration::from_millis(5)); // EMFILE and friends
                        }
                        continue;
                    };
                    let (stop, for_thread, serve) =
                        (Arc::clone(&stop), Arc::clone(&threads), Arc::clone(&serve));
                    let spawned = std::thread::Builder::new()
                        .name(name.into())
                        .stack_size(128 * 1024)
                        .spawn(move || {
                            let Some(_tracked) = stop.track(&stream) else { return };
                            serve(stream, &stop, &for_thread);
                        });
                    if let Ok(handle) = spawned {
                        threads.push(handle);
                    }
                }
            })?
        };
        Ok(PerConnectionServer { addr, listener, stop, threads, acceptor: Some(acceptor) })
    }

    /// Stops accepting, cuts every connection and joins every thread; safe to call twice.
    pub(crate) fn stop(&mut self) {
        self.stop.begin();
        wake_acceptors(&self.listener);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.threads.join_all();
    }
}

impl Drop for PerConnectionServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A counting semaphore that gives up when the tier stops.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    pub(crate) fn new(count: usize) -> Self {
        Slots { free: Mutex::new(count), freed: Condvar::new() }
    }

    /// Waits for a free slot; false when `stop` began meanwhile.
    pub(crate) fn acquire(&self, stop: &Stop) -> bool {
        let mut free = lock(&self.free);
        loop {
            if stop.is_stopping() {
                return false;
            }
            if *free > 0 {
                *free -= 1;
                return true;
            }
            free = match self.freed.wait_timeout(free, Duration::from_millis(100)) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    pub(crate) fn release(&self) {
        *lock(&self.free) += 1;
        self.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn stop_cuts_tracked_connections_and_wakes_acceptors() -> io::Result<()> {
        let listener = listen(0, 4)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(Stop::default());
        let client = TcpStream::connect(addr)?;
        let (server_side, _) = listener.accept()?;
        let tracked = stop.track(&server_side);
        assert!(tracked.is_some());

        let acceptor = {
            let listener = listener.try_clone()?;
            std::thread::spawn(move || listener.accept().is_err())
        };
        let reader = std::thread::spawn(move || {
            let mut server_side = server_side;
            let mut buf = [0u8; 1];
            server_side.read(&mut buf).map(|n| n == 0).unwrap_or(true)
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.begin();
        wake_acceptors(&listener);
        assert!(
            acceptor.join().unwrap_or(false),
            "accept must fail once the listener is shut down"
        );
        assert!(reader.join().unwrap_or(false), "a tracked read must end at stop");
        assert!(stop.track(&client).is_none(), "nothing new is tracked after stop");
        assert!(!stop.sleep(Duration::from_secs(5)), "sleeps end early after stop");
        Ok(())
    }
}
