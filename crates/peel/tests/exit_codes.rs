//! The documented exit codes (docs/exit-codes.md), each checked against the real binary.

use std::process::{Command, Output};

fn peel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peel")).args(args).output().expect("the peel binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_and_version_exit_0() {
    let help = peel(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Exit codes: 0 success/verified"), "{text}");

    let version = peel(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(text.starts_with(concat!("peel ", env!("CARGO_PKG_VERSION"), " (")), "{text}");
}

#[test]
fn completions_for_each_shell_exit_0() {
    for shell in ["bash", "zsh", "fish"] {
        let output = peel(&["completions", shell]);
        assert_eq!(output.status.code(), Some(0), "{shell}: {}", stderr(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains("peel"), "{shell}");
    }
}

#[test]
fn unknown_flag_exits_2_with_a_clear_message() {
    let output = peel(&["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("unexpected argument '--no-such-flag'"), "{text}");
}

#[test]
fn unknown_shell_exits_2() {
    let output = peel(&["completions", "tcsh"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("invalid value 'tcsh'"), "{}", stderr(&output));
}

#[test]
fn bad_sql_is_an_input_error_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("run.duckdb");
    let db = db.to_str().expect("utf-8 temp path");
    let created = peel(&["sql", db, "--write", "CREATE TABLE t (x INTEGER)"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let output = peel(&["sql", db, "SELEC 1"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.starts_with("error: "), "{text}");
    assert!(text.contains("syntax error"), "{text}");
}

#[test]
fn tampered_archive_fails_verification_exit_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).expect("run dir");
    std::fs::write(run_dir.join("report.md"), "# report\n").expect("report");
    let db = run_dir.join("run.duckdb");
    let created = peel(&["sql", db.to_str().unwrap(), "--write", "CREATE TABLE t (x INTEGER)"]);
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let archive = dir.path().join("evidence.tar.zst");
    let (run_arg, archive_arg) = (run_dir.to_str().unwrap(), archive.to_str().unwrap());
    let create = peel(&["archive", "create", run_arg, "--out", archive_arg]);
    assert_eq!(create.status.code(), Some(0), "{}", stderr(&create));
    let verify = peel(&["archive", "verify", archive_arg]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));

    // Replace the archive by one whose report differs: same members, other bytes.
    std::fs::write(run_dir.join("report.md"), "# r3port\n").expect("report");
    let other = dir.path().join("other.tar.zst");
    let create = peel(&["archive", "create", run_arg, "--out", other.to_str().unwrap()]);
    assert_eq!(create.status.code(), Some(0), "{}", stderr(&create));
    let original_manifest = manifest_of(&archive);
    let tampered = swap_manifest(&other, &original_manifest, dir.path());
    let verify = peel(&["archive", "verify", tampered.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(1), "{}", stderr(&verify));
    let report = format!("{}{}", String::from_utf8_lossy(&verify.stdout), stderr(&verify));
    assert!(report.contains("report.md"), "{report}");
}

#[test]
fn port_in_use_is_an_environment_error_exit_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = taken.local_addr().expect("local addr").port().to_string();
    let output = peel(&[
        "lab",
        "--db",
        "sim",
        "--port",
        &port,
        "--app-port",
        "0",
        "--db-port",
        "0",
        "--duration",
        "1s",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.starts_with("error: "), "{text}");
    assert!(text.contains("hint: "), "{text}");
}

/// The manifest.json member of a .tar.zst archive.
fn manifest_of(archive: &std::path::Path) -> Vec<u8> {
    let list = Command::new("tar")
        .args(["--zstd", "-xOf"])
        .arg(archive)
        .arg("manifest.json")
        .output()
        .expect("tar runs");
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    list.stdout
}

/// Re-packs `archive` with `manifest` in place of its own, as a tamperer would.
fn swap_manifest(
    archive: &std::path::Path,
    manifest: &[u8],
    scratch: &std::path::Path,
) -> std::path::PathBuf {
    let unpacked = scratch.join("unpacked");
    std::fs::create_dir_all(&unpacked).expect("unpack dir");
    let status =
        Command::new("tar").args(["--zstd", "-xf"]).arg(archive).arg("-C").arg(&unpacked).status();
    assert!(status.expect("tar runs").success());
    std::fs::write(unpacked.join("manifest.json"), manifest).expect("manifest");
    let mut names: Vec<String> = std::fs::read_dir(&unpacked)
        .expect("list unpacked")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let tampered = scratch.join("tampered.tar.zst");
    let status = Command::new("tar")
        .args(["--zstd", "-cf"])
        .arg(&tampered)
        .arg("-C")
        .arg(&unpacked)
        .args(&names)
        .status();
    assert!(status.expect("tar runs").success());
    tampered
}

#[test]
fn output_cut_short_by_a_closed_pipe_is_not_an_error() {
    use std::io::Read;
    use std::process::Stdio;
    // `peel completions bash | head -c 10`: the reader goes away before peel is done writing.
    let mut child = Command::new(env!("CARGO_BIN_EXE_peel"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the peel binary runs");
    let mut first = [0u8; 10];
    child.stdout.take().expect("stdout").read_exact(&mut first).expect("some output");
    let output = child.wait_with_output().expect("peel exits");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
}
