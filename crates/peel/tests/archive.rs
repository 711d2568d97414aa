//! `peel archive` end to end: create prints the SHA-256; verify passes, then fails (exit 1) when a
//! byte of the archive changes; two hosts' archives import into one database that `peel sql`
//! queries across hosts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn peel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peel")).args(args).output().expect("peel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A run folder for `host` with a database (written through `peel sql --write`) and a report.
fn run_dir(root: &Path, run_id: &str, host: &str) -> PathBuf {
    let dir = root.join(run_id);
    fs::create_dir_all(&dir).unwrap();
    let db = dir.join("peel.duckdb");
    let insert = format!(
        "INSERT INTO runs (run_id, host, playbook, started_ts_ns, status, tool_version, kernel) \
         VALUES ('{run_id}', '{host}', 'lab-db-churn', 1795575600000000000, 'passed', 'test', '6.1.0'); \
         INSERT INTO commands (run_id, host, command_id, purpose, argv_json, started_ts_ns, \
           duration_us, exit_code, timed_out) \
         VALUES ('{run_id}', '{host}', 0, 'step', '[\"true\"]', 1795575600000000000, 812.5, 0, false); \
         INSERT INTO connections (run_id, host, stage, conn_id, client_ip, client_port, server_ip, \
           server_port, interface_id, syn_retransmits, exchanges, close_us, half_closed, retransmits, \
           out_of_order, dup_acks, zero_windows, window_full, bytes_c2s, bytes_s2c, first_ts_ns, \
           last_ts_ns, lifetime_us, packets, state, protocol, expired) \
         VALUES ('{run_id}', '{host}', 'reproduce', 1, '10.0.0.1', 40001, '10.0.0.2', 8000, 0, 0, 1, \
           826461.507, false, 0, 0, 0, 0, 0, 1, 1, 1795575600000000000, 1795575601000000000, \
           1000000, 10, 'complete', 'http', false)"
    );
    let output = peel(&["sql", db.to_str().unwrap(), "--write", &insert]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    fs::write(dir.join("report.md"), format!("# {run_id} on {host}\n")).unwrap();
    dir
}

fn create(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["archive", "create", dir.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    peel(&args)
}

#[test]
fn create_prints_the_sha256_and_verify_accepts_the_archive() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let out = root.path().join("evidence.tar.zst");
    let created = create(&dir, &out, &[]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let stdout = text(&created.stdout);
    let sha_line = stdout.lines().find(|line| line.starts_with("sha256 ")).expect("a sha256 line");
    let sha = sha_line.split_whitespace().nth(1).unwrap();
    assert_eq!(sha.len(), 64);
    assert!(
        stdout.starts_with(&format!("wrote {} (2 members + manifest.json", out.display())),
        "{stdout}"
    );

    let verified = peel(&["archive", "verify", out.to_str().unwrap()]);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified.stdout));
    assert_eq!(
        text(&verified.stdout),
        format!("OK {0}: 2 members match manifest.json\nsha256 {sha}  {0}\n", out.display())
    );
}

#[test]
fn a_changed_byte_fails_verification_with_exit_1() {
    let root = tempfile::tempdir().unwrap();
    let dir = run_dir(root.path(), "r1", "host-a");
    let out = root.path().join("evidence.tar.zst");
    assert!(create(&dir, &out, &[]).status.success());
    let mut bytes = fs::read(&out).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&out, bytes).unwrap();
    let verified = peel(&["archive", "verify", out.to_str().unwrap(), "--format", "json"]);
    assert_eq!(verified.status.code(), Some(1), "{}", text(&verified.stderr));
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(!report["problems"].as_array().unwrap().is_empty());
}

#[test]
fn archives_from_two_hosts_merge_for_cross_host_queries() {
    let root = tempfile::tempdir().unwrap();
    let a = create(&run_dir(root.path(), "run-a", "host-a"), &root.path().join("a.tar.zst"), &[]);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let b = create(
        &run_dir(root.path(), "run-b", "host-b"),
        &root.path().join("b.tar.zst"),
        &["--parquet"],
    );
    assert!(b.status.success(), "{}", text(&b.stderr));
    let merged = root.path().join("merged.duckdb");
    let imported = peel(&[
        "archive",
        "import",
        root.path().join("a.tar.zst").to_str().unwrap(),
        root.path().join("b.tar.zst").to_str().unwrap(),
        "--db",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(imported.status.code(), Some(0), "{}", text(&imported.stderr));
    assert!(text(&imported.stdout).contains("runs: run-b (host-b)"), "{}", text(&imported.stdout));
    let query = peel(&[
        "sql",
        merged.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT host, count(*) AS connections, max(close_us) AS close_us FROM connections \
         GROUP BY host ORDER BY host",
    ]);
    assert_eq!(
        text(&query.stdout),
        "host,connections,close_us\nhost-a,1,826461.507\nhost-b,1,826461.507\n"
    );

    let again = peel(&[
        "archive",
        "import",
        root.path().join("a.tar.zst").to_str().unwrap(),
        "--db",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("already holds run run-a from host host-a"),
        "{}",
        text(&again.stderr)
    );
}
