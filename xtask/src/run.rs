//! Running child commands with the command line echoed, and failing with the command in the error.

use std::ffi::OsStr;
use std::process::Command;

use anyhow::{bail, Context};

/// Echoes `program args...`, runs it in the workspace root, and fails unless it exits 0.
pub fn cmd<I, S>(program: &str, args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args).current_dir(crate::workspace_root());
    status(&mut command)
}

/// Runs a prepared command (echoed first) and fails unless it exits 0.
pub fn status(command: &mut Command) -> anyhow::Result<()> {
    let line = render(command);
    eprintln!("$ {line}");
    let status = command.status().with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Whether `program` is found on PATH.
pub fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// True when the process runs as root.
pub fn is_root() -> bool {
    // /proc/self/status "Uid:" line: real, effective, saved, fs.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("Uid:")
                    .and_then(|ids| ids.split_whitespace().nth(1))
                    .map(|euid| euid == "0")
            })
        })
        .unwrap_or(false)
}

fn render(command: &Command) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}
