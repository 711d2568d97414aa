//! The lab started by a playbook is torn down when the run does not pass: after a step that cannot
//! be done (exit 3), after a failed check (exit 1) and after Ctrl-C in the middle of a stage
//! (exit 3). Torn down means: the `peel lab` process and every process it started are gone, the
//! PostgreSQL postmaster (which `pg_ctl` detaches from the lab) is gone, and its data directory is
//! deleted. (demo.rs covers the passing run and Ctrl-C during the load.)
//!
//! The playbook holds the stage at a gate step until the test has seen the lab running: the gate
//! waits for a file the test creates, then exits with the code the case wants.

#![allow(clippy::print_stderr)] // the skip reason is printed on purpose
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PEEL: &str = env!("CARGO_BIN_EXE_peel");

const PLAYBOOK: &str = r#"
[playbook]
name = "lab-teardown"
description = "A lab started by a stage that does not pass"

[vars]
peel = "peel"
frontend_port = "18080"
app_port = "18081"
db_port = "18082"
go = "/nonexistent"
gate_exit = "0"
min_one = "0"

[reproduce]
description = "Start the lab, hold at the gate, then fail a step or a check"

[[reproduce.steps]]
kind = "exec"
name = "lab"
argv = ["${peel}", "lab", "--db", "real", "--db-mode", "per-request", "--workers", "2",
        "--port", "${frontend_port}", "--app-port", "${app_port}", "--db-port", "${db_port}",
        "--format", "json"]
background = true

[[reproduce.steps]]
kind = "wait"
port = "127.0.0.1:${frontend_port}"
timeout = "60s"

[[reproduce.steps]]
kind = "exec"
name = "gate"
argv = ["sh", "-c", "n=0; while [ ! -e \"$0\" ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done; exit $1",
        "${go}", "${gate_exit}"]
timeout = "180s"

[[reproduce.steps]]
kind = "query"
name = "check"
sql = "SELECT 1 AS one"
expect = "one > ${min_one}"
"#;

fn postgres_available() -> bool {
    ["initdb", "pg_ctl"].iter().all(|tool| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
    })
}

/// A started `peel run` of [`PLAYBOOK`] on free loopback ports.
struct Run {
    child: Child,
    out: PathBuf,
    go: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(gate_exit: u8, min_one: u8) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("lab-teardown.toml");
    std::fs::write(&playbook, PLAYBOOK).unwrap();
    let (out, go) = (dir.path().join("run"), dir.path().join("go"));
    // Bound together so that the three ports differ; released just before the lab binds them.
    let sockets: Vec<TcpListener> =
        (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let mut command = Command::new(PEEL);
    command.arg("run").arg(&playbook).arg("--out").arg(&out).arg("--yes");
    let ports = sockets.iter().map(|s| s.local_addr().unwrap().port());
    for (name, port) in ["frontend_port", "app_port", "db_port"].iter().zip(ports) {
        command.args(["--set", &format!("{name}={port}")]);
    }
    command
        .args(["--set", &format!("peel={PEEL}")])
        .args(["--set", &format!("go={}", go.display())])
        .args(["--set", &format!("gate_exit={gate_exit}")])
        .args(["--set", &format!("min_one={min_one}")]);
    drop(sockets);
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    Run { child, out, go, _dir: dir }
}

/// What the lab left to check: the processes below `peel run` (the lab) and the postmaster.
struct LabTrace {
    pids: Vec<u32>,
    postgres_dir: PathBuf,
}

/// Waits until the lab is up and the run sits at the gate, then notes the lab's processes.
fn trace_lab(run: &mut Run) -> LabTrace {
    let deadline = Instant::now() + Duration::from_secs(120);
    let ready = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            panic!(
                "peel run exited ({status}) before the lab was ready; see {}",
                run.out.display()
            );
        }
        assert!(Instant::now() < deadline, "the lab never got ready: {}", run.out.display());
        let at_gate = std::fs::read_to_string(run.out.join("journal.jsonl"))
            .is_ok_and(|journal| journal.contains(r#""name":"gate""#));
        if let (true, Some(ready)) = (at_gate, ready_line(&run.out)) {
            break ready;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready["db"], "postgres", "{ready}");
    let postgres_dir = PathBuf::from(ready["postgres_dir"].as_str().unwrap());
    let pid_file = std::fs::read_to_string(postgres_dir.join("data/postmaster.pid")).unwrap();
    let postmaster: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    let mut pids = descendants(run.child.id());
    assert!(
        pids.iter().any(|&pid| cmdline(pid).contains(" lab ")),
        "no `peel lab` below `peel run`: {:?}",
        pids.iter().map(|&pid| cmdline(pid)).collect::<Vec<_>>()
    );
    pids.push(postmaster);
    pids.extend(descendants(postmaster));
    LabTrace { pids, postgres_dir }
}

/// The lab's `ready` line from the lab step's stdout, once it is there.
fn ready_line(out: &Path) -> Option<serde_json::Value> {
    let steps = std::fs::read_dir(out.join("steps")).ok()?;
    let stdout = steps.flatten().map(|e| e.path()).find(|p| {
        p.file_name().is_some_and(|n| n.to_string_lossy().ends_with("-reproduce-lab.stdout"))
    })?;
    let text = std::fs::read_to_string(stdout).ok()?;
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|value| value["event"] == "ready")
}

/// `(pid, parent pid, state)` of every process.
fn processes() -> Vec<(u32, u32, char)> {
    let entries = std::fs::read_dir("/proc").unwrap().flatten();
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = rest.next()?.chars().next()?;
            Some((pid, rest.next()?.parse().ok()?, state))
        })
        .collect()
}

/// Every live process below `root`.
fn descendants(root: u32) -> Vec<u32> {
    let all = processes();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(all.iter().filter(|p| p.1 == parent && p.2 != 'Z').map(|p| p.0));
        next += 1;
    }
    found.remove(0);
    found
}

fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Waits for `peel run` to exit (bounded) and returns its exit code.
fn exit_code(run: &mut Run) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = run.child.kill();
            panic!("peel run did not exit; see {}", run.out.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// No process of the trace is alive (zombies awaiting their reaper count as gone) and the data
/// directory is deleted. Processes get a few seconds to finish exiting.
fn assert_torn_down(trace: &LabTrace, out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live: Vec<(u32, String)> = processes()
            .into_iter()
            .filter(|p| trace.pids.contains(&p.0) && p.2 != 'Z')
            .map(|p| (p.0, cmdline(p.0)))
            .collect();
        if live.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "lab processes left after {}: {live:?}", out.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = &trace.postgres_dir;
    assert!(!dir.exists(), "PostgreSQL directory {} left behind", dir.display());
}

fn summary_status(out: &Path) -> String {
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    summary["status"].as_str().unwrap_or_default().to_string()
}

/// Runs one case: start, see the lab, then `release` the gate (or interrupt), and check the end.
fn case(gate_exit: u8, min_one: u8, release: impl FnOnce(&Run), code: i32, status: &str) {
    if !postgres_available() {
        eprintln!("skipped: initdb/pg_ctl are not on PATH (install PostgreSQL to run this test)");
        return;
    }
    let mut run = start(gate_exit, min_one);
    let trace = trace_lab(&mut run);
    release(&run);
    assert_eq!(exit_code(&mut run), Some(code), "see {}", run.out.display());
    assert_eq!(summary_status(&run.out), status);
    assert_torn_down(&trace, &run.out);
}

fn open_gate(run: &Run) {
    std::fs::write(&run.go, b"go").unwrap();
}

#[test]
fn a_step_that_cannot_be_done_exits_3_and_tears_the_lab_down() {
    case(1, 0, open_gate, 3, "error");
}

#[test]
fn a_failed_check_exits_1_and_tears_the_lab_down() {
    case(0, 5, open_gate, 1, "failed");
}

#[test]
fn ctrl_c_at_an_exec_step_exits_3_and_tears_the_lab_down() {
    let interrupt = |run: &Run| {
        let pid = run.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    };
    case(0, 0, interrupt, 3, "interrupted");
}
