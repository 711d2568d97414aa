//! The simulated database: a server with PostgreSQL's cost shape and none of its machinery, for
//! machines without PostgreSQL.
//!
//! Like PostgreSQL it starts one thread ("backend") per connection and makes the client wait through
//! a setup cost (fork + authentication) before the first query; the cost is a sleep, so, as in the
//! story, a slow database connection shows up as latency while the CPU stays idle.
//!
//! Protocol, one line each way, over real TCP:
//! `HELLO <app>` -> `READY` (after the setup cost), `QUERY <id>` -> `ROW <id> item-<id>` (after the
//! query cost), `PING` -> `PONG`, `QUIT` or end of stream closes.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::counters::Counters;
use crate::tier::{self, PerConnectionServer, Stop};

/// A running simulated database.
#[derive(Debug)]
pub(crate) struct SimDb {
    server: PerConnectionServer,
}

/// Costs of the simulated database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimCosts {
    pub(crate) connect: Duration,
    pub(crate) query: Duration,
    pub(crate) io_timeout: Duration,
}

impl SimDb {
    pub(crate) fn start(port: u16, costs: SimCosts, counters: Arc<Counters>) -> io::Result<SimDb> {
        let server =
            PerConnectionServer::start(port, "lab-simdb-backend", move |stream, stop, _| {
                counters.sim_db_connections_accepted.fetch_add(1, Ordering::Relaxed);
                let _ = serve_backend(stream, stop, costs, &counters);
            })?;
        Ok(SimDb { server })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub(crate) fn stop(&mut self) {
        self.server.stop();
    }
}

fn serve_backend(
    stream: TcpStream,
    stop: &Stop,
    costs: SimCosts,
    counters: &Counters,
) -> io::Result<()> {
    tier::tune(&stream, costs.io_timeout)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 || !line.starts_with("HELLO") {
        return writer.write_all(b"ERROR expected HELLO\n");
    }
    if !stop.sleep(costs.connect) {
        return Ok(());
    }
    writer.write_all(b"READY\n")?;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        if command == "QUIT" {
            return Ok(());
        }
        if command == "PING" {
            writer.write_all(b"PONG\n")?;
            continue;
        }
        let Some(id) = command.strip_prefix("QUERY ").and_then(|id| id.parse::<u32>().ok()) else {
            writer.write_all(b"ERROR unknown command\n")?;
            continue;
        };
        if !stop.sleep(costs.query) {
            return Ok(());
        }
        counters.sim_db_queries.fetch_add(1, Ordering::Relaxed);
        writer.write_all(format!("ROW {id} item-{id}\n").as_bytes())?;
    }
}

/// The app side of one simulated database connection.
#[derive(Debug)]
pub(crate) struct SimClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: String,
}

fn protocol_error(expected: &str, got: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("simulated database: expected {expected}, got {:?}", got.trim_end()),
    )
}

impl SimClient {
    /// Connects and waits through the setup cost.
    pub(crate) fn connect(addr: SocketAddr, io_timeout: Duration) -> io::Result<SimClient> {
        let stream = TcpStream::connect_timeout(&addr, io_timeout)?;
        tier::tune(&stream, io_timeout)?;
        let mut client = SimClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            line: String::new(),
        };
        client.call("HELLO peel-lab-app\n", "READY")?;
        Ok(client)
    }

    fn call(&mut self, request: &str, expected_prefix: &str) -> io::Result<&str> {
        self.writer.write_all(request.as_bytes())?;
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "simulated database closed the connection",
            ));
        }
        if !self.line.starts_with(expected_prefix) {
            return Err(protocol_error(expected_prefix, &self.line));
        }
        Ok(self.line.trim_end())
    }

    /// Runs the lab's one query and returns the row as text.
    pub(crate) fn query(&mut self, id: u32) -> io::Result<String> {
        self.call(&format!("QUERY {id}\n"), "ROW ").map(str::to_string)
    }

    /// The health check before reuse.
    pub(crate) fn ping(&mut self) -> io::Result<()> {
        self.call("PING\n", "PONG").map(|_| ())
    }

    /// Says goodbye; the connection closes when `self` drops.
    pub(crate) fn close(mut self) {
        let _ = self.writer.write_all(b"QUIT\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_connects_queries_pings_and_each_connection_is_counted() -> io::Result<()> {
        let counters = Arc::new(Counters::default());
        let costs = SimCosts {
            connect: Duration::from_millis(1),
            query: Duration::ZERO,
            io_timeout: Duration::from_secs(5),
        };
        let mut db = SimDb::start(0, costs, Arc::clone(&counters))?;
        for _ in 0..3 {
            let mut client = SimClient::connect(db.addr(), Duration::from_secs(5))?;
            assert_eq!(client.query(7)?, "ROW 7 item-7");
            client.ping()?;
            client.close();
        }
        db.stop();
        assert_eq!(counters.sim_db_connections_accepted.load(Ordering::Relaxed), 3);
        assert_eq!(counters.sim_db_queries.load(Ordering::Relaxed), 3);
        Ok(())
    }

    #[test]
    fn a_wrong_greeting_is_a_protocol_error() -> io::Result<()> {
        let costs = SimCosts {
            connect: Duration::ZERO,
            query: Duration::ZERO,
            io_timeout: Duration::from_secs(5),
        };
        let db = SimDb::start(0, costs, Arc::new(Counters::default()))?;
        let stream = TcpStream::connect(db.addr())?;
        let mut client = SimClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            line: String::new(),
        };
        let err = client.call("QUERY 1\n", "READY").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("simulated database: expected READY, got \"ERROR expected HELLO\"")
        );
        Ok(())
    }
}
