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
