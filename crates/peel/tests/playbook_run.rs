//! `peel run`, `peel recover` end to end on loopback: exec + wait + query + compare, a background
//! process stopped at its stage's end, cleanup after SIGINT, and `peel recover` after SIGKILL.
//! Every process these tests start is bounded (sleep N) and every address is 127.0.0.1.

#![allow(clippy::print_stderr)] // skip reasons are printed on purpose
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn peel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peel"))
}

fn write_playbook(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("playbook.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(playbook: &Path, out: &Path, extra: &[&str]) -> Output {
    peel().arg("run").arg(playbook).arg("--out").arg(out).args(extra).output().unwrap()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn statuses(summary: &serde_json::Value) -> Vec<String> {
    summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}={}",
                s["stage"].as_str().unwrap(),
                s["name"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect()
}

fn pid_alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text.trim().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("peel did not exit");
}

const CHECKS: &str = r#"
[playbook]
name = "loopback-checks"

[vars]
port = 0
improvement = "50%"

[[reproduce.steps]]
kind = "wait"
port = "127.0.0.1:${port}"
timeout = "10s"

[[reproduce.steps]]
kind = "exec"
name = "hello"
argv = ["sh", "-c", "echo hello from $PEEL_STAGE"]

[[reproduce.steps]]
kind = "query"
name = "arith"
sql = "SELECT 6 * 7 AS answer, 1200.0 AS p99_server_us"
expect = ["answer == 42", "p99(server_us) < 2ms"]

[[verify-fix.steps]]
kind = "compare"
name = "latency"
metric = "p99_us"
sql = "SELECT CASE WHEN '${stage}' = 'reproduce' THEN 1000.0 ELSE 400.0 END AS p99_us"
baseline = "reproduce"
improves_by = "${improvement}"
"#;

#[test]
fn exec_wait_query_compare_pass_and_fail() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(dir.path(), CHECKS);

    let out = dir.path().join("pass");
    let output = run(&playbook, &out, &["--set", &format!("port={port}")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let s = summary(&out);
    assert_eq!(
        statuses(&s),
        [
            "reproduce/wait-1=passed",
            "reproduce/hello=passed",
            "reproduce/arith=passed",
            "verify-fix/latency=passed"
        ]
    );
    assert_eq!(s["status"], "passed");
    let sha256sum = Command::new("sha256sum").arg(&playbook).output().unwrap();
    let sha256 = String::from_utf8_lossy(&sha256sum.stdout).split(' ').next().unwrap().to_string();
    assert_eq!(sha256.len(), 64);
    assert_eq!(s["playbook_sha256"], sha256.as_str());
    let runs = peel()
        .arg("sql")
        .arg(out.join("run.duckdb"))
        .arg("SELECT playbook_sha256 FROM runs")
        .output()
        .unwrap();
    let runs = String::from_utf8_lossy(&runs.stdout);
    assert!(runs.contains(&sha256), "runs.playbook_sha256 is not the file's SHA-256: {runs}");
    let hello = std::fs::read_to_string(out.join("steps/001-reproduce-hello.stdout")).unwrap();
    assert_eq!(hello, "hello from reproduce\n");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| PASS | verify-fix | latency | p99_us improves by 50% (lower is better) | p99_us reproduce = 1000, verify-fix = 400 (-60.0%) |"), "{report}");
    assert!(stdout.contains("verdict: passed"), "{stdout}");
    assert!(
        report.contains(&format!("- playbook: `playbook.toml`, sha256 `{sha256}`")),
        "{report}"
    );

    // The same run asking for 70%: the check fails, exit 1.
    let out = dir.path().join("fail");
    let output =
        run(&playbook, &out, &["--set", &format!("port={port}"), "--set", "improvement=70%"]);
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(summary(&out)["status"], "failed");
    drop(listener);
}

#[test]
fn invalid_playbook_exits_2_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(
        dir.path(),
        "[playbook]\nname = \"x\"\n\n[[reproduce.steps]]\nkind = \"wiat\"\n",
    );
    let output = run(&playbook, &dir.path().join("out"), &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("playbook.toml:5:8: unknown step kind 'wiat'"), "{stderr}");
    assert!(stderr.contains("did you mean 'wait'?"), "{stderr}");
    assert!(!dir.path().join("out").exists(), "an invalid playbook must not create a run folder");
}

/// An exec step whose undo leaves `undo.marker` in the run folder: proof that cleanup ran.
macro_rules! undoable_step {
    () => {
        r#"[[reproduce.steps]]
kind = "exec"
name = "undoable"
argv = ["true"]
undo = ["sh", "-c", "echo undone > \"$PEEL_RUN_DIR/undo.marker\""]
"#
    };
}

const BACKGROUND: &str = concat!(
    r#"
[playbook]
name = "background"

[[reproduce.steps]]
kind = "exec"
name = "server"
shell = true
command = "echo $$ > \"$PEEL_RUN_DIR/bg.pid\"; exec sleep 120"
background = true

"#,
    undoable_step!(),
    r#"
[[reproduce.steps]]
kind = "wait"
for = "${hold}"

[[verify-fix.steps]]
kind = "exec"
name = "server-is-gone"
shell = true
command = "pid=$(cat \"$PEEL_RUN_DIR/bg.pid\"); ! kill -0 \"$pid\" 2>/dev/null"

[vars]
hold = "100ms"
"#
);

#[test]
fn background_process_is_stopped_when_its_stage_ends() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(dir.path(), BACKGROUND);
    let out = dir.path().join("run");
    let output = run(&playbook, &out, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        statuses(&summary(&out)),
        [
            "reproduce/server=passed",
            "reproduce/undoable=passed",
            "reproduce/wait-3=passed",
            "verify-fix/server-is-gone=passed"
        ]
    );
    assert_eq!(std::fs::read_to_string(out.join("undo.marker")).unwrap(), "undone\n");
}

fn start_and_signal(signal: &str) -> (tempfile::TempDir, PathBuf, String, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(dir.path(), BACKGROUND);
    let out = dir.path().join("run");
    let mut child = peel()
        .arg("run")
        .arg(&playbook)
        .arg("--out")
        .arg(&out)
        .args(["--set", "hold=60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bg_pid = wait_for_file(&out.join("bg.pid"));
    // Let the undo step register and the wait step start.
    let journal = out.join("journal.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&journal).unwrap_or_default().contains("\"name\":\"wait-3\"") {
        assert!(Instant::now() < deadline, "the wait step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pid_alive(&bg_pid));
    let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let code = wait_exit(&mut child);
    (dir, out, bg_pid, code)
}

#[test]
fn sigint_stops_the_run_and_cleans_up() {
    let (_dir, out, bg_pid, code) = start_and_signal("-INT");
    assert_eq!(code, Some(3));
    assert!(!pid_alive(&bg_pid), "background process {bg_pid} survived SIGINT");
    assert_eq!(std::fs::read_to_string(out.join("undo.marker")).unwrap(), "undone\n");
    let s = summary(&out);
    assert_eq!(s["status"], "interrupted");
    assert_eq!(
        statuses(&s),
        [
            "reproduce/server=passed",
            "reproduce/undoable=passed",
            "reproduce/wait-3=interrupted",
            "verify-fix/server-is-gone=skipped"
        ]
    );
    // Nothing is left for recover.
    let output = peel().arg("recover").arg(&out).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("nothing to clean up"));
}

#[test]
fn recover_finishes_cleanup_after_sigkill() {
    let (_dir, out, bg_pid, code) = start_and_signal("-KILL");
    assert_eq!(code, None, "SIGKILL leaves no exit code");
    assert!(pid_alive(&bg_pid), "without cleanup the background process lives on");
    assert!(!out.join("undo.marker").exists());

    let output = peel().arg("recover").arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(&bg_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pid_alive(&bg_pid), "recover did not stop {bg_pid}");
    assert_eq!(std::fs::read_to_string(out.join("undo.marker")).unwrap(), "undone\n");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("ok   undo undoable: sh -c"),
        "undo runs first (registered last): {stdout}"
    );
    assert!(lines[1].starts_with("ok   stop server (process group"), "{stdout}");
    assert!(
        lines[2].starts_with("ok   seal the run database: kept what was committed"),
        "{stdout}"
    );
    // The steps that finished before the kill are in the database.
    let sql = peel()
        .args(["sql"])
        .arg(out.join("run.duckdb"))
        .arg("SELECT name, status FROM steps ORDER BY step_id")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&sql.stdout);
    assert!(
        table.contains("undoable") && table.contains("passed"),
        "{table}{}",
        String::from_utf8_lossy(&sql.stderr)
    );

    // A second recover finds nothing left.
    let output = peel().arg("recover").arg(&out).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("nothing to clean up"));
}

/// The background playbook with a guard that trips once the wait step runs (and not before, so
/// the steps before it finish whenever the guard is checked).
const GUARD: &str = r#"
[[reproduce.guards]]
sql = "SELECT count(*) AS waiting FROM steps WHERE name = 'wait-3' AND status = 'running'"
expect = "waiting < 1"
every = "100ms"
"#;

#[test]
fn a_tripped_guard_aborts_the_stage_and_cleanup_runs() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(dir.path(), &format!("{BACKGROUND}{GUARD}"));
    let out = dir.path().join("run");
    let output = run(&playbook, &out, &["--set", "hold=60s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let s = summary(&out);
    assert_eq!(s["status"], "error");
    assert_eq!(
        statuses(&s),
        [
            "reproduce/server=passed",
            "reproduce/undoable=passed",
            "reproduce/wait-3=interrupted",
            "verify-fix/server-is-gone=skipped"
        ]
    );
    let hold = &s["steps"][2]["message"];
    assert!(
        hold.as_str().unwrap().contains(
            "playbook.toml:31:1) failed during step 'wait-3': waiting = 1 \
             (bound 1; sql: SELECT count(*) AS waiting FROM steps"
        ) && hold.as_str().unwrap().contains("guard 'waiting < 1' ("),
        "{hold}"
    );
    assert_eq!(s["guard"]["metric"], "waiting");
    assert_eq!(s["guard"]["value"], 1.0);
    let bg_pid = std::fs::read_to_string(out.join("bg.pid")).unwrap().trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(&bg_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pid_alive(&bg_pid), "background process {bg_pid} survived the guard");
    assert_eq!(std::fs::read_to_string(out.join("undo.marker")).unwrap(), "undone\n");
}

const FIN_TIMEOUT: &str = "/proc/sys/net/ipv4/tcp_fin_timeout";

/// Puts the old value back when the test ends, whatever peel did.
struct RestoreSysctl(String);

impl Drop for RestoreSysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(FIN_TIMEOUT, &self.0);
    }
}

#[test]
fn sysctl_is_restored_after_sigint() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        eprintln!("skipped: setting net.ipv4.tcp_fin_timeout needs root");
        return;
    }
    let old = std::fs::read_to_string(FIN_TIMEOUT).unwrap().trim().to_string();
    let _restore = RestoreSysctl(old.clone());
    let new = (old.parse::<u32>().unwrap() + 7).to_string();
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(
        dir.path(),
        &format!(
            "[playbook]\nname = \"sysctl-sigint\"\n\n[[reproduce.steps]]\nkind = \"sysctl\"\n\
             set = {{ \"net.ipv4.tcp_fin_timeout\" = \"{new}\" }}\n\n[[reproduce.steps]]\n\
             kind = \"wait\"\nname = \"hold\"\nfor = \"60s\"\n"
        ),
    );
    let out = dir.path().join("run");
    let mut child = peel()
        .arg("run")
        .arg(&playbook)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = out.join("journal.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&journal).unwrap_or_default().contains("\"name\":\"hold\"") {
        assert!(Instant::now() < deadline, "the wait step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(FIN_TIMEOUT).unwrap().trim(), new, "the step set it");
    let status = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    assert_eq!(wait_exit(&mut child), Some(3));
    assert_eq!(std::fs::read_to_string(FIN_TIMEOUT).unwrap().trim(), old, "not restored");
    assert_eq!(
        statuses(&summary(&out)),
        ["reproduce/sysctl-1=passed", "reproduce/hold=interrupted"]
    );
}

const MATRIX: &str = r#"
[playbook]
name = "matrix"

[vars]
port = 0
rate = 10

[reproduce.matrix]
var = "rate"
values = [10, 20]

[[reproduce.steps]]
kind = "exec"
name = "server"
argv = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "${port}"]
background = true

[[reproduce.steps]]
kind = "wait"
port = "127.0.0.1:${port}"
timeout = "20s"

[[reproduce.steps]]
kind = "load"
name = "load"
url = "http://127.0.0.1:${port}/"
rate = "${rate}"
duration = "1s"
timeout = "5s"
"#;

#[test]
fn matrix_results_are_tabulated_per_value_in_the_report() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 (the loopback HTTP server of this test) is not installed");
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(dir.path(), MATRIX);
    let out = dir.path().join("run");
    let output = run(&playbook, &out, &["--set", &format!("port={port}")]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let matrix = report.split("\n## Matrix\n").nth(1).expect("a Matrix section");
    let matrix = matrix.split("\n## ").next().unwrap();
    assert!(matrix.contains("### Load per value"), "{matrix}");
    let rows: Vec<&str> = matrix.lines().filter(|l| l.starts_with("| reproduce[")).collect();
    assert_eq!(rows.len(), 2, "one load row per value: {matrix}");
    assert!(rows[0].starts_with("| reproduce[rate=10] |"), "{matrix}");
    assert!(rows[1].starts_with("| reproduce[rate=20] |"), "{matrix}");
    // 10 and 20 requests per second for one second each.
    assert!(rows[0].contains("| 10 |") && rows[1].contains("| 20 |"), "{matrix}");
    // report.html charts it: one line (the URL class "/") through one point per value.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let chart = html.split("<h2>Matrix</h2>").nth(1).expect("a Matrix section in report.html");
    let chart = chart.split("<h2>").next().unwrap();
    assert!(chart.contains(">reproduce: p99 latency per URL class against rate</text>"), "{chart}");
    assert_eq!(chart.matches("<polyline").count(), 1, "{chart}");
    assert_eq!(chart.matches("<circle").count(), 2, "{chart}");
    assert!(chart.contains(">10</text>") && chart.contains(">20</text>"), "{chart}");
}

/// A loopback HTTP server that answers the first `ok` requests with 200 and every later one with
/// 500, one request per connection; it stops after `limit` connections (bounded).
fn failing_server(ok: u64, limit: u64) -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (served, stream) in listener.incoming().take(limit as usize).enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let status = if (served as u64) < ok { "200 OK" } else { "500 Internal Server Error" };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                    .as_bytes(),
            );
        }
    });
    port
}

const LOAD_GUARD: &str = concat!(
    r#"
[playbook]
name = "load-guard"

[vars]
port = 0

[[reproduce.guards]]
expect = "rate(errors) < 20%"
every = "200ms"

"#,
    undoable_step!(),
    r#"
[[reproduce.steps]]
kind = "load"
name = "load"
url = "http://127.0.0.1:${port}/"
rate = 100
duration = "60s"
keepalive = false
timeout = "2s"

[[reproduce.steps]]
kind = "note"
name = "after"
text = "never reached"
"#
);

#[test]
fn an_error_rate_guard_stops_a_load_step_long_before_its_end() {
    let port = failing_server(30, 6000);
    let dir = tempfile::tempdir().unwrap();
    let playbook = write_playbook(dir.path(), LOAD_GUARD);
    let out = dir.path().join("run");
    let output = run(&playbook, &out, &["--set", &format!("port={port}")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let s = summary(&out);
    assert_eq!(s["status"], "error");
    assert_eq!(
        statuses(&s),
        ["reproduce/undoable=passed", "reproduce/load=interrupted", "reproduce/after=skipped"]
    );
    let load = &s["steps"][1];
    let message = load["message"].as_str().unwrap();
    assert!(
        message.contains("(guard 'rate(errors) < 20%' (")
            && message.contains("playbook.toml:8:1) failed during step 'load': rate_errors = "),
        "{message}"
    );
    assert_eq!(s["guard"]["metric"], "rate_errors");
    assert_eq!(s["guard"]["bound"], 0.2);
    assert!(s["guard"]["value"].as_f64().unwrap() >= 0.2, "{}", s["guard"]);
    assert_eq!(load["outputs"]["guard"], s["guard"]);
    // Stopped by the guard, not by its 60 s: far fewer than the 6000 requests it would have sent.
    assert_eq!(load["outputs"]["stopped_early"], true);
    let requests: u64 = load["outputs"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["requests"].as_u64().unwrap())
        .sum();
    assert!((30..1500).contains(&requests), "{requests} requests");
    // Cleanup ran, and the report names the guard with its numbers.
    assert_eq!(std::fs::read_to_string(out.join("undo.marker")).unwrap(), "undone\n");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("- **guard tripped** in stage reproduce: guard 'rate(errors) < 20%'"),
        "{report}"
    );
    assert!(stderr.contains("!! reproduce: guard 'rate(errors) < 20%'"), "{stderr}");
}
