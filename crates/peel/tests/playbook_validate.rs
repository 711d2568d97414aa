//! `peel validate` and `peel plan` on the shipped playbooks and on broken ones: exit codes, every
//! error with its location, and the resolved plan pinned as a snapshot.

use std::path::Path;
use std::process::Command;

fn peel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peel"))
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn shipped_playbooks_validate() {
    let output = peel()
        .current_dir(root())
        .args(["validate", "playbooks/lab-db-churn.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("ok: playbooks/lab-db-churn.toml (")
    );
}

#[test]
fn broken_playbook_reports_every_error_and_exits_2() {
    let file = "crates/peel-playbook-spec/tests/data/invalid/many-errors.toml";
    let output = peel().current_dir(root()).args(["validate", file]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = std::fs::read_to_string(root().join(file).with_extension("expected"))
        .unwrap()
        .replace("tests/data/", "crates/peel-playbook-spec/tests/data/");
    assert!(stderr.starts_with(&expected), "{stderr}");
    assert!(stderr.contains("error: 1 playbook is invalid"), "{stderr}");
}

#[test]
fn plan_resolves_variables_and_touches_nothing() {
    let file = "crates/peel-playbook-spec/tests/data/valid/loopback.toml";
    let output =
        peel().current_dir(root()).args(["plan", file, "--set", "port=9999"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    insta::assert_snapshot!(String::from_utf8_lossy(&output.stdout));
}

#[test]
fn set_of_an_unknown_variable_exits_2_with_a_suggestion() {
    let file = "crates/peel-playbook-spec/tests/data/valid/loopback.toml";
    let output =
        peel().current_dir(root()).args(["plan", file, "--set", "prot=1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--set prot: the playbook declares no variable 'prot'"), "{stderr}");
    assert!(stderr.contains("did you mean 'port'?"), "{stderr}");
}
