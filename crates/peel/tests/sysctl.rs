//! `peel sysctl` against the real binary: reading a fixture /proc, refusing unknown keys and values
//! the kernel rejects, and changes that are always undone: restored after SIGINT, restorable with
//! `peel sysctl restore` after SIGKILL. Writes to the live kernel happen only inside a network
//! namespace the test creates (net.* sysctls are per namespace), so the host is never touched.

#![allow(clippy::print_stderr)] // a skipped test says why

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn peel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peel")).args(args).output().expect("the peel binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peel-snap/tests/data/proc-incident")
}

/// A writable copy of the fixture's sys/ tree.
fn writable_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let core = dir.path().join("sys/net/core");
    std::fs::create_dir_all(&core).expect("fixture dirs");
    std::fs::write(core.join("somaxconn"), "4096\n").expect("fixture file");
    dir
}

#[test]
fn get_reads_keys_and_globs_under_a_proc_root() {
    let root = fixture();
    let root = root.to_str().expect("utf-8 path");
    let output = peel(&[
        "sysctl",
        "get",
        "--proc-root",
        root,
        "net.core.somaxconn",
        "net.ipv4.tcp_keepalive_*",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "net.core.somaxconn             4096\n\
         net.ipv4.tcp_keepalive_intvl   75\n\
         net.ipv4.tcp_keepalive_probes  9\n\
         net.ipv4.tcp_keepalive_time    7200\n"
    );
}

#[test]
fn unknown_keys_exit_2_with_the_key_named() {
    let root = fixture();
    let output =
        peel(&["sysctl", "get", "--proc-root", root.to_str().expect("utf-8"), "net.core.somaxcon"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("error: unknown sysctl key 'net.core.somaxcon'"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
}

#[test]
fn diff_of_a_snapshot_file_against_a_proc_root() {
    let root = writable_root();
    let root_arg = root.path().to_str().expect("utf-8");
    let before = root.path().join("before.json");
    let output =
        peel(&["sysctl", "get", "--proc-root", root_arg, "net.core.*", "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    std::fs::write(&before, &output.stdout).expect("write snapshot");
    std::fs::write(root.path().join("sys/net/core/somaxconn"), "65535\n").expect("change");
    let output =
        peel(&["sysctl", "diff", before.to_str().expect("utf-8"), "--proc-root", root_arg]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "  KEY                 BEFORE  AFTER\n  net.core.somaxconn  4096    65535\n"
    );
}

#[test]
fn set_for_a_while_then_restore_under_a_proc_root() {
    let root = writable_root();
    let journal = root.path().join("journal.json");
    let output = peel(&[
        "sysctl",
        "set",
        "net.core.somaxconn=8192",
        "--for",
        "100ms",
        "--proc-root",
        root.path().to_str().expect("utf-8"),
        "--journal",
        journal.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("set net.core.somaxconn = 8192 (was 4096)"), "{stderr}");
    assert!(stderr.contains("restored net.core.somaxconn = 4096"), "{stderr}");
    let value = std::fs::read_to_string(root.path().join("sys/net/core/somaxconn")).expect("value");
    assert_eq!(value, "4096\n");
    assert!(!journal.exists());
}

/// A network namespace that is deleted when the test ends.
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Option<Netns> {
        let name = format!("peel-test-{}-{tag}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Netns { name })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    fn read(&self, key_path: &str) -> String {
        let output = self.command("cat").arg(key_path).output().expect("cat in the namespace");
        text(&output.stdout).trim().to_owned()
    }

    fn spawn_set(&self, assignment: &str, journal: &Path) -> Child {
        self.command(env!("CARGO_BIN_EXE_peel"))
            .args(["sysctl", "set", assignment, "--journal", journal.to_str().expect("utf-8")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("peel sysctl set in the namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

const FIN_TIMEOUT: &str = "/proc/sys/net/ipv4/tcp_fin_timeout";

/// Waits (bounded) until `peel sysctl set` has written its journal and the new value.
fn wait_until_set(netns: &Netns, journal: &Path, value: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if journal.exists() && netns.read(FIN_TIMEOUT) == value {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn sigint_restores_the_old_value() {
    let Some(netns) = Netns::create("int") else {
        eprintln!("skipped: cannot create a network namespace (needs root and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let journal = dir.path().join("journal.json");
    let original = netns.read(FIN_TIMEOUT);
    assert_ne!(original, "33");
    let child = netns.spawn_set("net.ipv4.tcp_fin_timeout=33", &journal);
    assert!(wait_until_set(&netns, &journal, "33"), "the value was never set");
    assert_ne!(
        std::fs::read_to_string(FIN_TIMEOUT).expect("host value").trim(),
        "33",
        "the host was touched"
    );
    signal(&child, "INT");
    let output = child.wait_with_output().expect("peel exits");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(&format!("restored net.ipv4.tcp_fin_timeout = {original}"))
    );
    assert_eq!(netns.read(FIN_TIMEOUT), original);
    assert!(!journal.exists());
}

#[test]
fn sigkill_leaves_a_journal_that_restore_undoes() {
    let Some(netns) = Netns::create("kill") else {
        eprintln!("skipped: cannot create a network namespace (needs root and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let journal = dir.path().join("journal.json");
    let original = netns.read(FIN_TIMEOUT);
    let mut child = netns.spawn_set("net.ipv4.tcp_fin_timeout=33", &journal);
    assert!(wait_until_set(&netns, &journal, "33"), "the value was never set");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    assert_eq!(netns.read(FIN_TIMEOUT), "33", "nothing can restore after SIGKILL");
    assert!(journal.exists());

    // A second set refuses to stack on an unrestored journal.
    let output = netns
        .command(env!("CARGO_BIN_EXE_peel"))
        .args([
            "sysctl",
            "set",
            "net.ipv4.tcp_fin_timeout=44",
            "--journal",
            journal.to_str().expect("utf-8"),
        ])
        .output()
        .expect("peel runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("peel sysctl restore"), "{}", text(&output.stderr));

    let output = netns
        .command(env!("CARGO_BIN_EXE_peel"))
        .args(["sysctl", "restore", journal.to_str().expect("utf-8")])
        .output()
        .expect("peel runs");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!("restored net.ipv4.tcp_fin_timeout = {original} (was set to 33)\n")
    );
    assert_eq!(netns.read(FIN_TIMEOUT), original);
    assert!(!journal.exists());
}

#[test]
fn rejected_values_and_unknown_keys_change_nothing() {
    let Some(netns) = Netns::create("reject") else {
        eprintln!("skipped: cannot create a network namespace (needs root and iproute2)");
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let journal = dir.path().join("journal.json");
    let original = netns.read(FIN_TIMEOUT);
    for (assignments, message) in [
        (
            vec!["net.ipv4.tcp_fin_timeout=33", "net.ipv4.tcp_tw_reuse=5"],
            "the kernel rejected net.ipv4.tcp_tw_reuse=5",
        ),
        (
            vec!["net.ipv4.tcp_fin_timeout=33", "net.ipv4.tcp_no_such_key=1"],
            "unknown sysctl key 'net.ipv4.tcp_no_such_key'",
        ),
    ] {
        let output = netns
            .command(env!("CARGO_BIN_EXE_peel"))
            .arg("sysctl")
            .arg("set")
            .args(&assignments)
            .args(["--for", "2s", "--journal", journal.to_str().expect("utf-8")])
            .output()
            .expect("peel runs");
        assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
        assert!(text(&output.stderr).contains(message), "{}", text(&output.stderr));
        assert_eq!(netns.read(FIN_TIMEOUT), original, "the first key was put back");
        assert!(!journal.exists());
    }
}
