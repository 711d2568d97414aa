//! peel-lab: a local incident lab that reproduces the outage peel exists for, on loopback.
//!
//! Three tiers, each real TCP on 127.0.0.1 so captures, socket snapshots and kernel counters see
//! what they would see in production:
//!
//! ```text
//! client -> frontend (proxy, new upstream connection per request) -> app (N sync workers, one
//!           accept queue) -> database (real PostgreSQL 15, or a simulated one)
//! ```
//!
//! [`Lab::start`] runs every tier in background threads (and PostgreSQL as a child cluster in a
//! temporary directory); [`LabHandle::stop`] or dropping the handle tears everything down. The lab
//! never prints; the `peel lab` command and the playbook engine decide what to show.

mod app;
mod config;
mod counters;
mod db;
mod db_relay;
mod frontend;
mod http;
mod postgres_server;
mod sim_db;
mod tier;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::{Closer, DbChoice, DbMode, LabConfig, PortRange};
pub use counters::LabCounters;

use counters::Counters;
use db::DbTarget;
use db_relay::{DelayRelay, RelaySettings};
use frontend::{Frontend, FrontendSettings};
use postgres_server::PgServer;
use sim_db::{SimCosts, SimDb};
use tier::Stop;

/// Why a lab could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid lab setting {key} = {value}: expected {expected}")]
    InvalidConfig { key: &'static str, value: String, expected: &'static str },
    #[error("cannot listen on 127.0.0.1:{port} for the {tier} tier: {source}")]
    Listen { tier: &'static str, port: u16, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("PostgreSQL's {tool} is not on PATH (install PostgreSQL, or use --db sim)")]
    PostgresMissing { tool: &'static str },
    #[error("PostgreSQL refuses to run as root and there is no 'postgres' or 'nobody' user to run it as")]
    PostgresAsRoot,
    #[error("PostgreSQL {step} failed: {detail}")]
    Postgres { step: &'static str, detail: String },
}

/// Which database a started lab actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    Sim,
}

/// The lab's entry point.
#[derive(Debug)]
pub struct Lab;

/// A running lab. Dropping it stops every tier and deletes PostgreSQL's directory.
#[derive(Debug)]
pub struct LabHandle {
    config: LabConfig,
    frontend_addr: SocketAddr,
    app_addr: SocketAddr,
    db_addr: SocketAddr,
    db_kind: DbKind,
    db_fallback_reason: Option<String>,
    counters: Arc<Counters>,
    frontend: Option<(TcpListener, Arc<Stop>, Frontend)>,
    app: Option<(TcpListener, Arc<Stop>, Vec<JoinHandle<()>>)>,
    db: Option<Database>,
}

#[derive(Debug)]
enum Database {
    Sim(SimDb),
    /// The server, and the relay the app connects through when `pg_setup_delay` is set.
    Postgres(PgServer, Option<DelayRelay>),
}

impl Lab {
    /// Validates `config` and starts the database, the app tier and the frontend, in that order.
    ///
    /// On error everything already started is torn down before returning.
    pub fn start(config: LabConfig) -> Result<LabHandle, LabError> {
        config.validate()?;
        let counters = Arc::new(Counters::default());
        let (db, db_fallback_reason) = start_database(&config, &counters)?;
        let (db_addr, db_kind, db_target) = match &db {
            Database::Sim(sim) => (sim.addr(), DbKind::Sim, DbTarget::Sim(sim.addr())),
            Database::Postgres(pg, relay) => {
                let addr = relay.as_ref().map_or(pg.addr, DelayRelay::addr);
                (addr, DbKind::Postgres, DbTarget::Postgres(addr))
            }
        };
        let mut handle = LabHandle {
            frontend_addr: db_addr,
            app_addr: db_addr,
            db_addr,
            db_kind,
            db_fallback_reason,
            counters,
            frontend: None,
            app: None,
            db: Some(db),
            config,
        };
        handle.start_app(db_target)?;
        handle.start_frontend()?;
        Ok(handle)
    }
}

fn start_database(
    config: &LabConfig,
    counters: &Arc<Counters>,
) -> Result<(Database, Option<String>), LabError> {
    let start_sim = || {
        let costs = SimCosts {
            connect: config.sim_connect_cost,
            query: config.sim_query_cost,
            io_timeout: config.io_timeout,
        };
        SimDb::start(config.db_port, costs, Arc::clone(counters)).map(Database::Sim).map_err(
            |source| LabError::Listen { tier: "simulated database", port: config.db_port, source },
        )
    };
    match config.db {
        DbChoice::Sim => Ok((start_sim()?, None)),
        DbChoice::Real => Ok((start_postgres(config)?, None)),
        DbChoice::Auto => match start_postgres(config) {
            Ok(pg) => Ok((pg, None)),
            Err(err) => Ok((start_sim()?, Some(err.to_string()))),
        },
    }
}

/// PostgreSQL, behind the setup-delay relay (which then owns `db_port`) when one is configured.
fn start_postgres(config: &LabConfig) -> Result<Database, LabError> {
    if config.pg_setup_delay.is_zero() {
        return Ok(Database::Postgres(PgServer::start(config.db_port, config.io_timeout)?, None));
    }
    let pg = PgServer::start(0, config.io_timeout)?;
    let settings = RelaySettings {
        upstream: pg.addr,
        setup_delay: config.pg_setup_delay,
        io_timeout: config.io_timeout,
    };
    let relay = DelayRelay::start(config.db_port, settings).map_err(|source| LabError::Listen {
        tier: "database relay",
        port: config.db_port,
        source,
    })?;
    Ok(Database::Postgres(pg, Some(relay)))
}

impl LabHandle {
    fn start_app(&mut self, db: DbTarget) -> Result<(), LabError> {
        let config = &self.config;
        let port = config.app_port;
        let listener = tier::listen(port, config.listen_backlog)
            .map_err(|source| LabError::Listen { tier: "app", port, source })?;
        let listen_error = |source| LabError::Listen { tier: "app", port, source };
        self.app_addr = listener.local_addr().map_err(listen_error)?;
        let stop = Arc::new(Stop::default());
        let settings = app::AppSettings {
            workers: config.workers,
            db,
            db_mode: config.db_mode,
            io_timeout: config.io_timeout,
        };
        let workers = app::start(&listener, settings, &stop, &self.counters)
            .map_err(|source| LabError::Io { what: "starting app workers".into(), source })?;
        self.app = Some((listener, stop, workers));
        Ok(())
    }

    fn start_frontend(&mut self) -> Result<(), LabError> {
        let config = &self.config;
        let port = config.frontend_port;
        let listen_error = |source| LabError::Listen { tier: "frontend", port, source };
        let listener = tier::listen(port, 4096).map_err(listen_error)?;
        self.frontend_addr = listener.local_addr().map_err(listen_error)?;
        let settings = FrontendSettings {
            upstream: self.app_addr,
            keepalive: config.upstream_keepalive,
            pool_size: config.workers,
            close: config.upstream_close,
            slow_close: config.slow_close,
            ephemeral_ports: config.ephemeral_ports,
            max_connections: config.frontend_max_connections,
            io_timeout: config.io_timeout,
        };
        let stop = Arc::new(Stop::default());
        let frontend = Frontend::start(&listener, settings, &stop, &self.counters)
            .map_err(|source| LabError::Io { what: "starting the frontend".into(), source })?;
        self.frontend = Some((listener, stop, frontend));
        Ok(())
    }

    /// The frontend's address (what clients and load generators call).
    pub fn frontend_addr(&self) -> SocketAddr {
        self.frontend_addr
    }

    /// The app tier's address (its shared listen socket).
    pub fn app_addr(&self) -> SocketAddr {
        self.app_addr
    }

    /// The database address the app connects to (the setup-delay relay when there is one).
    pub fn db_addr(&self) -> SocketAddr {
        self.db_addr
    }

    /// Where PostgreSQL itself listens (behind the relay when `pg_setup_delay` is set).
    pub fn postgres_addr(&self) -> Option<SocketAddr> {
        match &self.db {
            Some(Database::Postgres(pg, _)) => Some(pg.addr),
            _ => None,
        }
    }

    /// `http://127.0.0.1:PORT` of the frontend.
    pub fn frontend_url(&self) -> String {
        format!("http://{}", self.frontend_addr)
    }

    /// Which database runs.
    pub fn db_kind(&self) -> DbKind {
        self.db_kind
    }

    /// With `DbChoice::Auto`: why real PostgreSQL could not start and the simulated one runs instead.
    pub fn db_fallback_reason(&self) -> Option<&str> {
        self.db_fallback_reason.as_deref()
    }

    /// PostgreSQL's temporary directory (cluster `data/`, `postgres.log`), while it runs.
    pub fn postgres_dir(&self) -> Option<&std::path::Path> {
        match &self.db {
            Some(Database::Postgres(pg, _)) => pg.dir(),
            _ => None,
        }
    }

    /// The configuration the lab runs with.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// The counters so far.
    pub fn counters(&self) -> LabCounters {
        self.counters.snapshot()
    }

    /// Stops the frontend, then the app workers, then the database, and deletes PostgreSQL's
    /// directory. Safe to call more than once; the error is the database's, if its stop failed.
    pub fn stop(&mut self) -> Result<(), LabError> {
        if let Some((listener, stop, mut frontend)) = self.frontend.take() {
            stop.begin();
            tier::wake_acceptors(&listener);
            frontend.join();
        }
        if let Some((listener, stop, workers)) = self.app.take() {
            stop.begin();
            tier::wake_acceptors(&listener);
            for worker in workers {
                let _ = worker.join();
            }
        }
        match self.db.take() {
            Some(Database::Sim(mut sim)) => {
                sim.stop();
                Ok(())
            }
            Some(Database::Postgres(mut pg, relay)) => {
                if let Some(mut relay) = relay {
                    relay.stop();
                }
                pg.stop()
            }
            None => Ok(()),
        }
    }
}

impl Drop for LabHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
