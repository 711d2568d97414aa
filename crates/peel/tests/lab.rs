//! `peel lab` as a user runs it: ready line, requests over loopback, Ctrl-C/SIGTERM, final counters,
//! exit codes, and nothing left behind (no PostgreSQL process, no temporary directory).

#![allow(clippy::print_stderr)] // skipped tests say why

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const PEEL: &str = env!("CARGO_BIN_EXE_peel");

/// Starts `peel lab` on free ports with JSON output, bounded by `--duration`.
fn spawn_lab(extra: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut command = Command::new(PEEL);
    command
        .args(["lab", "--port", "0", "--app-port", "0", "--db-port", "0", "--format", "json"])
        .args(["--duration", "60s"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => panic!("cannot run {PEEL}: {err}"),
    };
    let stdout = child.stdout.take().map(BufReader::new);
    match stdout {
        Some(stdout) => (child, stdout),
        None => panic!("no stdout pipe"),
    }
}

fn next_json(stdout: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    let _ = stdout.read_line(&mut line);
    serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line:?}"))
}

fn get(addr: &str, path: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr) else { return 0 };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status();
    assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{name} failed");
}

fn counter(stopped: &Value, name: &str) -> u64 {
    stopped[name].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn sigterm_stops_a_sim_lab_and_prints_its_counters() {
    let (mut child, mut stdout) = spawn_lab(&["--db", "sim", "--sim-connect-cost", "1ms"]);
    let ready = next_json(&mut stdout);
    assert_eq!(ready["event"], "ready");
    assert_eq!(ready["db"], "sim");
    assert_eq!(ready["db_mode"], "per-request");
    let frontend = ready["frontend_addr"].as_str().unwrap_or_default().to_string();
    for _ in 0..4 {
        assert_eq!(get(&frontend, "/db"), 200);
    }
    assert_eq!(get(&frontend, "/cached"), 200);
    signal(&child, "TERM");
    let stopped = next_json(&mut stdout);
    assert_eq!(stopped["event"], "stopped");
    assert_eq!(counter(&stopped, "frontend_requests"), 5);
    assert_eq!(counter(&stopped, "db_connections_opened"), 4);
    assert_eq!(counter(&stopped, "app_requests_cached"), 1);
    let status = child.wait().map(|s| s.code());
    assert_eq!(status.ok().flatten(), Some(0));
    assert!(TcpStream::connect(&frontend).is_err(), "frontend still listening after exit");
}

fn postgres_available() -> bool {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
            .unwrap_or(false)
    };
    on_path("initdb") && on_path("pg_ctl")
}

#[test]
fn ctrl_c_stops_real_postgres_and_deletes_its_directory() {
    if !postgres_available() {
        eprintln!("skipped: initdb/pg_ctl are not on PATH (install PostgreSQL to run this test)");
        return;
    }
    let (mut child, mut stdout) =
        spawn_lab(&["--db", "real", "--db-mode", "persistent", "--workers", "2"]);
    let ready = next_json(&mut stdout);
    assert_eq!(ready["db"], "postgres", "{ready}");
    let dir = ready["postgres_dir"].as_str().unwrap_or_default().to_string();
    assert!(std::path::Path::new(&dir).join("data").is_dir(), "{ready}");
    let frontend = ready["frontend_addr"].as_str().unwrap_or_default().to_string();
    for _ in 0..5 {
        assert_eq!(get(&frontend, "/db"), 200);
    }
    signal(&child, "INT");
    let stopped = next_json(&mut stdout);
    assert!((1..=2).contains(&counter(&stopped, "db_connections_opened")), "{stopped}");
    assert_eq!(counter(&stopped, "db_queries"), 5);
    assert_eq!(child.wait().map(|s| s.code()).ok().flatten(), Some(0));
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
    let leftovers: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(&dir))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}

fn run_lab(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(PEEL).arg("lab").args(args).output();
    match output {
        Ok(output) => (output.status.code(), String::from_utf8_lossy(&output.stderr).to_string()),
        Err(err) => panic!("cannot run {PEEL}: {err}"),
    }
}

#[test]
fn bad_settings_exit_2_with_the_knob_named() {
    let cases: [(&[&str], &str); 4] = [
        (&["--workers", "0", "--db", "sim"], "invalid lab setting workers = 0: expected 1..=256"),
        (&["--db-mode", "sometimes"], "expected per-request or persistent"),
        (&["--ephemeral-ports", "50-10"], "FIRST-LAST"),
        (&["--slow-close", "soon"], "--slow-close"),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run_lab(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_taken_port_exits_3_with_a_hint() {
    let Ok(taken) = std::net::TcpListener::bind("127.0.0.1:0") else { return };
    let port = taken.local_addr().map(|addr| addr.port()).unwrap_or(0).to_string();
    let (code, stderr) =
        run_lab(&["--db", "sim", "--port", &port, "--app-port", "0", "--db-port", "0"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} for the frontend tier")),
        "{stderr}"
    );
    assert!(stderr.contains("hint: another process holds the port"), "{stderr}");
}
