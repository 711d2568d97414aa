//! A throwaway PostgreSQL for the lab: `initdb` into a temporary directory, `pg_ctl start` on a
//! loopback port, `pg_ctl stop -m fast` and delete the directory when done.
//!
//! PostgreSQL refuses to run as root, so when peel runs as root the cluster belongs to the
//! `postgres` user (or `nobody` when there is none) and the temporary directory is handed to it.
//! Nothing here touches an existing cluster, a system service or a port that is not ours.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::db::{postgres_config, ITEM_ROWS, PG_USER};
use crate::LabError;

/// A running lab cluster; dropping it stops the server and deletes its directory.
#[derive(Debug)]
pub(crate) struct PgServer {
    pub(crate) addr: SocketAddr,
    dir: Option<tempfile::TempDir>,
    pg_ctl: PathBuf,
    owner: Option<Owner>,
}

/// The unprivileged user the cluster runs as when peel is root.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// Finds `name` in the directories of PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        fs::metadata(candidate)
            .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Looks a user up in /etc/passwd (no NSS: the lab only needs local system users).
fn passwd_user(passwd: &str, name: &str) -> Option<Owner> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Owner { uid, gid })
    })
}

/// A free loopback port (the OS picks; the tiny window before PostgreSQL binds it is accepted).
pub(crate) fn free_port() -> std::io::Result<u16> {
    let probe = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(probe.local_addr()?.port())
}

/// Last lines of a tool's output or log, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Quotes a value for postgresql.conf.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

impl PgServer {
    /// Creates, configures, starts and seeds a cluster listening on 127.0.0.1:`port` (0: any).
    pub(crate) fn start(port: u16, io_timeout: Duration) -> Result<PgServer, LabError> {
        let initdb = which("initdb").ok_or(LabError::PostgresMissing { tool: "initdb" })?;
        let pg_ctl = which("pg_ctl").ok_or(LabError::PostgresMissing { tool: "pg_ctl" })?;
        let owner =
            if rustix::process::geteuid().is_root() { Some(unprivileged_owner()?) } else { None };
        let dir = tempfile::Builder::new().prefix("peel-lab-pg-").tempdir().map_err(|source| {
            LabError::Io { what: "creating the PostgreSQL temporary directory".into(), source }
        })?;
        if let Some(owner) = owner {
            std::os::unix::fs::chown(dir.path(), Some(owner.uid), Some(owner.gid)).map_err(
                |source| LabError::Io {
                    what: format!("handing {} to uid {}", dir.path().display(), owner.uid),
                    source,
                },
            )?;
        }
        let port = if port == 0 {
            free_port()
                .map_err(|source| LabError::Io { what: "finding a free port".into(), source })?
        } else {
            port
        };
        let server = PgServer {
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
            dir: Some(dir),
            pg_ctl,
            owner,
        };
        let data = server.data_dir();
        let data_arg = data.display().to_string();
        let output = server.run(
            &initdb,
            &[
                "-D",
                &data_arg,
                "-A",
                "trust",
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        check("initdb", &output, None)?;
        server.configure(port)?;
        let log = server.log_file().display().to_string();
        let output = server
            .run(&server.pg_ctl, &["start", "-D", &data_arg, "-w", "-t", "60", "-s", "-l", &log])?;
        check("pg_ctl start", &output, Some(&server.log_file()))?;
        server.seed(io_timeout)?;
        Ok(server)
    }

    /// The temporary directory holding the cluster (`data/`, `postgres.log`, the unix socket).
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|dir| dir.path())
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/nonexistent"), |dir| dir.path())
    }

    fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root().join("postgres.log")
    }

    /// Runs a PostgreSQL tool as the cluster's owner.
    fn run(&self, program: &Path, args: &[&str]) -> Result<Output, LabError> {
        let mut command = Command::new(program);
        command.args(args).current_dir(self.root()).env("LC_ALL", "C").env("LANG", "C");
        if let Some(owner) = self.owner {
            command.uid(owner.uid).gid(owner.gid);
        }
        command.output().map_err(|source| LabError::Io {
            what: format!("running {}", program.display()),
            source,
        })
    }

    /// Loopback only, the socket directory inside our temp dir, and no durability (a lab is disposable).
    fn configure(&self, port: u16) -> Result<(), LabError> {
        let conf = self.data_dir().join("postgresql.conf");
        let settings = format!(
            "\n# peel lab\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = {}\n\
             max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
            conf_quote(&self.root().display().to_string())
        );
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .map_err(|source| LabError::Io { what: format!("writing {}", conf.display()), source })
    }

    /// The table `/db` reads.
    fn seed(&self, io_timeout: Duration) -> Result<(), LabError> {
        let sql = format!(
            "CREATE TABLE lab_items (id integer PRIMARY KEY, name text NOT NULL);
             INSERT INTO lab_items SELECT i, 'item-' || i FROM generate_series(1, {ITEM_ROWS}) AS i;
             ANALYZE lab_items;"
        );
        postgres_config(self.addr, io_timeout)
            .connect(postgres::NoTls)
            .and_then(|mut client| client.batch_execute(&sql))
            .map_err(|err| LabError::Postgres {
                step: "creating the lab table",
                detail: err.to_string(),
            })
    }

    /// Stops the server (fast shutdown) and deletes the directory; safe to call twice.
    pub(crate) fn stop(&mut self) -> Result<(), LabError> {
        let Some(dir) = self.dir.as_ref() else { return Ok(()) };
        let data = self.data_dir();
        let mut result = Ok(());
        if data.join("postmaster.pid").exists() {
            let data_arg = data.display().to_string();
            match self
                .run(&self.pg_ctl, &["stop", "-D", &data_arg, "-m", "fast", "-w", "-t", "30", "-s"])
            {
                Ok(output) if output.status.success() => {}
                Ok(output) => {
                    result = check("pg_ctl stop", &output, Some(&self.log_file()));
                    self.kill_postmaster();
                }
                Err(err) => {
                    result = Err(err);
                    self.kill_postmaster();
                }
            }
        }
        let path = dir.path().to_path_buf();
        if let Some(dir) = self.dir.take() {
            if let Err(source) = dir.close() {
                result = result.and(Err(LabError::Io {
                    what: format!("deleting {}", path.display()),
                    source,
                }));
            }
        }
        result
    }

    /// Last resort when `pg_ctl stop` failed: immediate shutdown via SIGQUIT to the postmaster.
    fn kill_postmaster(&self) {
        let Ok(pid_file) = fs::read_to_string(self.data_dir().join("postmaster.pid")) else {
            return;
        };
        let Some(pid) = pid_file.lines().next().and_then(|line| line.trim().parse::<i32>().ok())
        else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn unprivileged_owner() -> Result<Owner, LabError> {
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|source| LabError::Io { what: "reading /etc/passwd".into(), source })?;
    ["postgres", "nobody"]
        .iter()
        .find_map(|name| passwd_user(&passwd, name))
        .filter(|owner| owner.uid != 0)
        .ok_or(LabError::PostgresAsRoot)
}

fn check(step: &'static str, output: &Output, log: Option<&Path>) -> Result<(), LabError> {
    if output.status.success() {
        return Ok(());
    }
    let mut detail = tail(&String::from_utf8_lossy(&output.stderr));
    if let Some(log) = log.and_then(|log| fs::read_to_string(log).ok()) {
        detail = format!("{detail} | log: {}", tail(&log));
    }
    Err(LabError::Postgres {
        step,
        detail: format!("{} ({})", detail.trim_matches([' ', '|']), output.status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup_finds_uid_and_gid() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104::/var/lib/postgresql:/bin/bash\n";
        let found = passwd_user(passwd, "postgres").map(|o| (o.uid, o.gid));
        assert_eq!(found, Some((101, 104)));
        assert!(passwd_user(passwd, "nobody").is_none());
        assert!(passwd_user("broken:x:abc:1::/:/bin/sh", "broken").is_none());
    }

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("/tmp/peel-lab-pg-x"), "'/tmp/peel-lab-pg-x'");
        assert_eq!(conf_quote("/tmp/it's"), "'/tmp/it''s'");
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        assert_eq!(tail("a\n\nb\nc\nd\ne\nf\n"), "b | c | d | e | f");
    }
}
