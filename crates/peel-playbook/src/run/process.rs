//! Child processes of exec steps: each in its own process group, so a timeout or a stop reaches the
//! whole tree (a shell's children, a server's workers), and identified by pid plus start time, so a
//! recovered run never signals a recycled pid.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use super::RunError;
use crate::model::{ExecStep, Program};

/// How long a stopped process group gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Starts `exec` with stdout/stderr into the given files and `env_vars` added to its environment.
pub fn spawn(
    exec: &ExecStep,
    env_vars: &[(String, String)],
    stdout: &Path,
    stderr: &Path,
) -> Result<Child, RunError> {
    let (program, args): (&str, Vec<&str>) = match &exec.program {
        Program::Argv(argv) => (argv[0].as_str(), argv[1..].iter().map(String::as_str).collect()),
        Program::Shell(command) => ("/bin/sh", vec!["-c", command.as_str()]),
    };
    let mut command = Command::new(program);
    command.args(&args);
    command.envs(env_vars.iter().map(|(k, v)| (k, v)));
    command.envs(&exec.env);
    if let Some(cwd) = &exec.cwd {
        command.current_dir(cwd);
    }
    spawn_command(command, program, stdout, stderr)
}

/// Starts an `undo` argv.
pub fn spawn_argv(
    argv: &[String],
    env: &[(String, String)],
    cwd: Option<&Path>,
    stdout: &Path,
    stderr: &Path,
) -> Result<Child, RunError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(RunError::Spawn {
            program: String::new(),
            source: std::io::Error::other("empty argv"),
        });
    };
    let mut command = Command::new(program);
    command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    spawn_command(command, program, stdout, stderr)
}

fn spawn_command(
    mut command: Command,
    program: &str,
    stdout: &Path,
    stderr: &Path,
) -> Result<Child, RunError> {
    use std::os::unix::process::CommandExt;
    let open = |path: &Path| {
        File::create(path)
            .map_err(|source| RunError::Io { what: format!("creating {}", path.display()), source })
    };
    command.stdin(Stdio::null()).stdout(open(stdout)?).stderr(open(stderr)?);
    // Its own process group: terminal Ctrl-C reaches peel only, and peel stops the group itself.
    command.process_group(0);
    command.spawn().map_err(|source| RunError::Spawn { program: program.to_string(), source })
}

/// How waiting for a child ended.
#[derive(Debug)]
pub enum Waited {
    Exited(ExitStatus),
    TimedOut,
    Interrupted,
}

/// Waits for `child`, killing its group on timeout or when `cancel` is set. `tick` runs about
/// every 100 ms (guards, progress); returning `Some(reason)` from it aborts like `cancel`.
pub fn wait(
    child: &mut Child,
    timeout: Option<Duration>,
    cancel: &AtomicBool,
    tick: &mut dyn FnMut() -> bool,
) -> Result<Waited, RunError> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Waited::Exited(status)),
            Ok(None) => {}
            Err(source) => {
                return Err(RunError::Io { what: "waiting for a child process".into(), source })
            }
        }
        if cancel.load(Ordering::SeqCst) || tick() {
            stop_group(child.id() as i32, Some(child));
            return Ok(Waited::Interrupted);
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            // A timed-out step is killed with its whole group, at once.
            signal_group(child.id() as i32, Signal::KILL);
            let _ = child.wait();
            return Ok(Waited::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to the group, then SIGKILL after [`STOP_GRACE`]; reaps `child` when it is ours.
/// Returns true when the group went away on SIGTERM.
pub fn stop_group(pgid: i32, mut child: Option<&mut Child>) -> bool {
    signal_group(pgid, Signal::TERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Some(child) = child.as_deref_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                // The leader is gone; stragglers in its group still get the SIGKILL below.
                signal_group(pgid, Signal::KILL);
                return true;
            }
        } else if !group_alive(pgid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(pgid, Signal::KILL);
    if let Some(child) = child {
        let _ = child.wait();
    }
    false
}

fn signal_group(pgid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid) {
        // ESRCH (already gone) is the outcome we want anyway.
        let _ = kill_process_group(pid, signal);
    }
}

/// Whether any process of group `pgid` is still alive (signal 0 probe).
pub fn group_alive(pgid: i32) -> bool {
    Pid::from_raw(pgid).is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Describes an exit status: `exit 3` or `signal 9`.
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown status".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_of_self_is_stable() {
        let me = std::process::id() as i32;
        let first = start_ticks(me).unwrap();
        assert_eq!(start_ticks(me), Some(first));
        assert_eq!(start_ticks(i32::MAX), None);
    }
}
