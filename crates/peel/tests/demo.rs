//! Issue 8's acceptance test: the demo playbook `playbooks/lab-db-churn.toml` end to end against
//! the lab on loopback, with short loads, and the lab torn down afterwards (no lab or PostgreSQL
//! process, no `peel-lab-pg-*` data directory left), after success and after Ctrl-C.
//!
//! Each test takes its own free loopback ports (the lab's defaults 18080-18082 may be in use by
//! other tests running in parallel) and passes them with `--set`. As root the run includes packet
//! capture; otherwise it runs with `--skip capture`, says so, and checks only what does not need
//! packets (the capture-based churn numbers cannot exist then).

#![allow(clippy::print_stderr)] // skip reasons are printed on purpose
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PEEL: &str = env!("CARGO_BIN_EXE_peel");

fn playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../playbooks/lab-db-churn.toml")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
}

/// Three loopback ports free right now: frontend, app, database.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> =
        (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    [ports[0], ports[1], ports[2]]
}

fn run_command(out: &Path, ports: [u16; 3], duration: &str) -> Command {
    let mut command = Command::new(PEEL);
    command
        .arg("run")
        .arg(playbook())
        .arg("--out")
        .arg(out)
        .arg("--yes")
        .args(["--set", &format!("peel={PEEL}")])
        .args(["--set", &format!("frontend_port={}", ports[0])])
        .args(["--set", &format!("app_port={}", ports[1])])
        .args(["--set", &format!("db_port={}", ports[2])])
        .args(["--set", &format!("duration={duration}")])
        .args(["--set", "timeout=10s"]);
    if !is_root() {
        eprintln!("not root: running the demo with --skip capture (no packets, no churn numbers)");
        command.args(["--skip", "capture"]);
    }
    command
}

/// The `ready` lines the lab printed (one per lab started): its PostgreSQL data directory, if any.
fn lab_postgres_dirs(out: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(out.join("steps")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.contains("lab-") && name.ends_with(".stdout")) {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(dir) = value["postgres_dir"].as_str() {
                dirs.push(PathBuf::from(dir));
            }
        }
    }
    dirs
}

/// Live (non-zombie) processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if cmdline.contains(needle) && !stat.contains(") Z ") {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// Nothing of the lab is left: no process naming this run's ports or PostgreSQL data directory,
/// and no data directory. Processes get a few seconds to finish exiting.
fn assert_torn_down(out: &Path, ports: [u16; 3], pg_dirs: &[PathBuf]) {
    let mut needles: Vec<String> = ports.iter().map(|p| format!("--port {p} ")).collect();
    needles.extend(pg_dirs.iter().map(|d| d.display().to_string()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = needles.iter().flat_map(|n| processes_mentioning(n)).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "lab processes left after {}: {left:?}", out.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    for dir in pg_dirs {
        assert!(!dir.exists(), "PostgreSQL data directory {} left behind", dir.display());
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn demo_playbook_passes_archives_and_tears_the_lab_down() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let ports = free_ports();
    let output = run_command(&out, ports, "3s").output().unwrap();
    let all = text(&output);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let checks: Vec<(String, bool)> = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "compare")
        .flat_map(|s| s["checks"].as_array().unwrap().iter())
        .map(|c| (c["name"].as_str().unwrap_or_default().to_string(), c["passed"] == true))
        .collect();

    if is_root() {
        assert_eq!(output.status.code(), Some(0), "{all}");
        assert_eq!(summary["status"], "passed", "{all}");
        assert!(all.contains("verdict: passed"), "{all}");
        assert_eq!(checks.len(), 2, "two compare checks: {checks:?}\n{all}");
        assert!(checks.iter().all(|(_, passed)| *passed), "{checks:?}");
        assert!(checks[0].0.contains("latency_p99_us improves by 50%"), "{checks:?}");
        assert!(checks[1].0.contains("new_conn_per_s improves by 90%"), "{checks:?}");
    } else {
        // Without packets the churn query and comparison have nothing to measure; the latency
        // comparison comes from the load generator and still decides.
        assert!(checks.iter().any(|(d, p)| d.contains("latency_p99_us") && *p), "{checks:?}");
    }

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let headings: Vec<&str> = report.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(headings.first(), Some(&"## Findings"), "findings come first: {headings:?}");
    if is_root() {
        assert!(report.contains("a new DB connection per request"), "{report}");
    }

    let archive = out.join("evidence.tar.zst");
    let verify = Command::new(PEEL).args(["archive", "verify"]).arg(&archive).output().unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("OK "), "{}", text(&verify));

    let pg_dirs = lab_postgres_dirs(&out);
    assert_torn_down(&out, ports, &pg_dirs);
}

fn wait_for_journal(out: &Path, needle: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(out.join("journal.jsonl")).unwrap_or_default().contains(needle) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("peel run exited ({status}) before {needle}");
        }
        assert!(Instant::now() < deadline, "{needle} never reached the journal");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_during_the_reproduce_load_exits_3_and_tears_the_lab_down() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let ports = free_ports();
    let mut child = run_command(&out, ports, "60s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The lab is up (the wait step passed) and the load is running.
    wait_for_journal(&out, r#""stage":"reproduce","name":"load""#, &mut child);
    std::thread::sleep(Duration::from_millis(500));
    let pg_dirs = lab_postgres_dirs(&out);
    let live: Vec<String> = processes_mentioning(&format!("--port {} ", ports[0]));
    assert!(!live.is_empty(), "the lab is not running before the signal");

    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("peel run did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(3));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "interrupted");
    assert_torn_down(&out, ports, &pg_dirs);
    // Cleanup finished: nothing is left for `peel recover`.
    let recover = Command::new(PEEL).arg("recover").arg(&out).output().unwrap();
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover));
    assert!(String::from_utf8_lossy(&recover.stdout).starts_with("nothing to clean up"));
}
