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
        reap_stale_clusters(&std::env::temp_dir());
        let dir = tempfile::Builder::new().prefix(DIR_PREFIX).tempdir().map_err(|source| {
            LabError::Io { what: "creating the PostgreSQL temporary directory".into(), source }
        })?;
        // Who owns this cluster: a later lab removes it if this process dies without cleaning up.
        fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string()).map_err(
            |source| LabError::Io {
                what: format!("writing {}", dir.path().join(OWNER_FILE).display()),
                source,
            },
        )?;
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
        quit_postmaster(&self.data_dir());
    }
}

/// Temporary directories of lab clusters start with this.
const DIR_PREFIX: &str = "peel-lab-pg-";
/// File in a lab cluster's directory holding the pid of the process that started it.
const OWNER_FILE: &str = "peel-lab.pid";

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Immediate shutdown (SIGQUIT) of the postmaster of `data`, waiting up to 5 s for it to exit.
fn quit_postmaster(data: &Path) {
    let Some(raw) = read_pid(&data.join("postmaster.pid")) else { return };
    let Some(pid) = rustix::process::Pid::from_raw(raw) else { return };
    if rustix::process::kill_process(pid, rustix::process::Signal::QUIT).is_err() {
        return;
    }
    for _ in 0..50 {
        if !alive(raw) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes lab clusters whose starting process died without cleaning up (SIGKILL, power loss),
/// stopping their PostgreSQL first. Clusters of live processes, and directories without an owner
/// file (still being created), are left alone. Returns how many were removed.
pub(crate) fn reap_stale_clusters(temp_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(temp_dir) else { return 0 };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let is_lab = entry.file_name().to_str().is_some_and(|name| name.starts_with(DIR_PREFIX));
        let Some(owner) = is_lab.then(|| read_pid(&path.join(OWNER_FILE))).flatten() else {
            continue;
        };
        if alive(owner) {
            continue;
        }
        quit_postmaster(&path.join("data"));
        if fs::remove_dir_all(&path).is_ok() {
            reaped += 1;
        }
    }
    reaped
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
    fn only_clusters_of_dead_owners_are_reaped() -> std::io::Result<()> {
        let temp = tempfile::tempdir()?;
        let make = |name: &str, owner: Option<String>| -> std::io::Result<PathBuf> {
            let dir = temp.path().join(name);
            fs::create_dir_all(dir.join("data"))?;
            if let Some(owner) = owner {
                fs::write(dir.join(OWNER_FILE), owner)?;
            }
            Ok(dir)
        };
        // A pid above the kernel's pid_max (4194304) never names a live process.
        let dead = make("peel-lab-pg-dead", Some("4194305".into()))?;
        let live = make("peel-lab-pg-live", Some(std::process::id().to_string()))?;
        let creating = make("peel-lab-pg-creating", None)?;
        let other = make("someone-else", Some("4194305".into()))?;
        assert_eq!(reap_stale_clusters(temp.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists() && creating.exists() && other.exists());
        Ok(())
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        assert_eq!(tail("a\n\nb\nc\nd\ne\nf\n"), "b | c | d | e | f");
    }
}
