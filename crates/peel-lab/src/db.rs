//! The app workers' side of the database: one connection type over the real PostgreSQL client or
//! the simulated protocol, and the two connection policies the lab compares (a connection per
//! request, or one persistent connection per worker checked before reuse, as Django's
//! `CONN_MAX_AGE` + `CONN_HEALTH_CHECKS` do).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::DbMode;
use crate::counters::Counters;
use crate::sim_db::SimClient;

/// Where the app's database is and which protocol it speaks.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DbTarget {
    Sim(SocketAddr),
    Postgres(SocketAddr),
}

/// The PostgreSQL role and database the lab creates and the app uses.
pub(crate) const PG_USER: &str = "peel";
pub(crate) const PG_DATABASE: &str = "postgres";
/// Rows in the lab's table; `/db` reads one of them.
pub(crate) const ITEM_ROWS: u32 = 1000;

/// Why a database call failed (counted, and sent back in the 503 body).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbCallError {
    #[error("database I/O: {0}")]
    Io(#[from] io::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("postgres: no row for id {0}")]
    NoRow(u32),
}

/// One open database connection.
pub(crate) enum DbConn {
    Sim(SimClient),
    Postgres(Box<postgres::Client>),
}

impl std::fmt::Debug for DbConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbConn::Sim(client) => f.debug_tuple("Sim").field(client).finish(),
            DbConn::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

pub(crate) fn postgres_config(addr: SocketAddr, io_timeout: Duration) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host(&addr.ip().to_string())
        .port(addr.port())
        .user(PG_USER)
        .dbname(PG_DATABASE)
        .application_name("peel-lab-app")
        .connect_timeout(io_timeout);
    config
}

impl DbConn {
    pub(crate) fn connect(target: DbTarget, io_timeout: Duration) -> Result<DbConn, DbCallError> {
        match target {
            DbTarget::Sim(addr) => Ok(DbConn::Sim(SimClient::connect(addr, io_timeout)?)),
            DbTarget::Postgres(addr) => {
                let client = postgres_config(addr, io_timeout).connect(postgres::NoTls)?;
                Ok(DbConn::Postgres(Box::new(client)))
            }
        }
    }

    /// The `/db` endpoint's one query: fetch an item by id.
    pub(crate) fn query(&mut self, id: u32) -> Result<String, DbCallError> {
        match self {
            DbConn::Sim(client) => Ok(client.query(id)?),
            DbConn::Postgres(client) => {
                // The simple protocol (one round trip, no prepared statement), as psycopg does for
                // Django; `id` is our own integer, never user text.
                let messages = client
                    .simple_query(&format!("SELECT id, name FROM lab_items WHERE id = {id}"))?;
                messages
                    .iter()
                    .find_map(|message| match message {
                        postgres::SimpleQueryMessage::Row(row) => Some(format!(
                            "ROW {} {}",
                            row.get(0).unwrap_or(""),
                            row.get(1).unwrap_or("")
                        )),
                        _ => None,
                    })
                    .ok_or(DbCallError::NoRow(id))
            }
        }
    }

    /// The check before reusing a persistent connection (Django runs `SELECT 1`).
    pub(crate) fn health_check(&mut self, io_timeout: Duration) -> Result<(), DbCallError> {
        match self {
            DbConn::Sim(client) => Ok(client.ping()?),
            DbConn::Postgres(client) => Ok(client.is_valid(io_timeout)?),
        }
    }

    pub(crate) fn close(self) {
        match self {
            DbConn::Sim(client) => client.close(),
            DbConn::Postgres(client) => {
                let _ = client.close();
            }
        }
    }
}

/// One worker's database access under the configured policy.
#[derive(Debug)]
pub(crate) struct WorkerDb {
    target: DbTarget,
    mode: DbMode,
    io_timeout: Duration,
    kept: Option<DbConn>,
}

impl WorkerDb {
    pub(crate) fn new(target: DbTarget, mode: DbMode, io_timeout: Duration) -> Self {
        WorkerDb { target, mode, io_timeout, kept: None }
    }

    fn open(&self, counters: &Counters) -> Result<DbConn, DbCallError> {
        let conn = DbConn::connect(self.target, self.io_timeout);
        Counters::bump(if conn.is_ok() {
            &counters.db_connections_opened
        } else {
            &counters.db_errors
        });
        conn
    }

    /// Runs the `/db` query with a connection chosen by the policy.
    pub(crate) fn query(&mut self, id: u32, counters: &Counters) -> Result<String, DbCallError> {
        let result = match self.mode {
            DbMode::PerRequest => {
                let mut conn = self.open(counters)?;
                let result = conn.query(id);
                conn.close();
                result
            }
            DbMode::Persistent => {
                let mut conn = match self.kept.take() {
                    Some(mut conn) => {
                        Counters::bump(&counters.db_health_checks);
                        match conn.health_check(self.io_timeout) {
                            Ok(()) => conn,
                            Err(_) => {
                                Counters::bump(&counters.db_errors);
                                self.open(counters)?
                            }
                        }
                    }
                    None => self.open(counters)?,
                };
                let result = conn.query(id);
                if result.is_ok() {
                    self.kept = Some(conn); // a failed connection is dropped, the next request reconnects
                }
                result
            }
        };
        Counters::bump(if result.is_ok() { &counters.db_queries } else { &counters.db_errors });
        result
    }

    /// Closes the kept connection, if any (worker exit).
    pub(crate) fn close(&mut self) {
        if let Some(conn) = self.kept.take() {
            conn.close();
        }
    }
}
