//! A relay in front of the lab's PostgreSQL that holds every new connection for a fixed delay
//! before connecting it through.
//!
//! In the story the database was a managed service on another host: a new connection paid for TLS
//! and authentication round trips over the network on top of PostgreSQL's fork. On loopback those
//! round trips cost nothing, so the app would only see the fork, which burns CPU; this relay adds
//! the network part as waiting time, so the outage shows its real signature (slow, yet CPU idle).
//! Only connection setup is delayed: bytes of an established connection pass straight through, so
//! queries stay as fast as in the story.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::tier::{PerConnectionServer, Stop, Threads};

/// A running relay.
#[derive(Debug)]
pub(crate) struct DelayRelay {
    server: PerConnectionServer,
}

/// Where the relay forwards to and how long it holds a new connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelaySettings {
    pub(crate) upstream: SocketAddr,
    pub(crate) setup_delay: Duration,
    pub(crate) io_timeout: Duration,
}

impl DelayRelay {
    pub(crate) fn start(port: u16, settings: RelaySettings) -> io::Result<DelayRelay> {
        let server =
            PerConnectionServer::start(port, "lab-db-relay", move |client, stop, threads| {
                relay(client, stop, threads, settings);
            })?;
        Ok(DelayRelay { server })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub(crate) fn stop(&mut self) {
        self.server.stop();
    }
}

/// Holds `client` for the setup delay, then pipes it to the upstream both ways until either ends.
fn relay(client: TcpStream, stop: &Arc<Stop>, threads: &Threads, settings: RelaySettings) {
    if !stop.sleep(settings.setup_delay) {
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&settings.upstream, settings.io_timeout) else {
        return; // the client sees its connection close, as with an unreachable database
    };
    let Some(_upstream_tracked) = stop.track(&upstream) else { return };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(client_reader), Ok(upstream_writer)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let forward = std::thread::Builder::new()
        .name("lab-db-relay-up".into())
        .stack_size(128 * 1024)
        .spawn(move || pipe(client_reader, upstream_writer));
    pipe(upstream, client);
    if let Ok(forward) = forward {
        threads.push(forward);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn bytes_pass_through_both_ways_after_the_delay() -> io::Result<()> {
        let echo = crate::tier::listen(0, 8)?;
        let upstream = echo.local_addr()?;
        let server = std::thread::spawn(move || -> io::Result<()> {
            let (mut stream, _) = echo.accept()?;
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf)?;
            stream.write_all(&buf)?;
            Ok(())
        });
        let settings = RelaySettings {
            upstream,
            setup_delay: Duration::from_millis(5),
            io_timeout: Duration::from_secs(5),
        };
        let mut relay = DelayRelay::start(0, settings)?;
        let mut client = TcpStream::connect(relay.addr())?;
        client.set_read_timeout(Some(Duration::from_secs(5)))?;
        client.write_all(b"hello")?;
        let mut answer = [0u8; 5];
        client.read_exact(&mut answer)?;
        assert_eq!(&answer, b"hello");
        assert!(server.join().map(|result| result.is_ok()).unwrap_or(false));
        drop(client);
        relay.stop();
        assert!(TcpStream::connect(relay.addr()).is_err(), "relay still listening after stop");
        Ok(())
    }
}
