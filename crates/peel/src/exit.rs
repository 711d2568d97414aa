//! Exit codes and the one-line error a user sees.
//!
//! Every command returns `anyhow::Result<Outcome>`. Errors that are the user's to fix (bad flags, bad
//! input files) are wrapped in [`Fail::usage`]; anything else is a runtime/environment error. The
//! numbers are part of peel's interface (docs/exit-codes.md) and pinned by `tests/exit_codes.rs`.

use std::fmt;
use std::process::ExitCode;

/// What a command concluded when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0: the work was done (and any checks passed).
    Success,
    /// Exit 1: the work was done, and a verification or check failed.
    VerificationFailed,
}

/// Documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success = 0,
    VerificationFailed = 1,
    Usage = 2,
    Runtime = 3,
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code as u8)
    }
}

impl From<Outcome> for Code {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => Code::Success,
            Outcome::VerificationFailed => Code::VerificationFailed,
        }
    }
}

/// An error with an explicit exit code and an optional hint line.
#[derive(Debug)]
pub struct Fail {
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
}

impl Fail {
    /// A usage or input error (exit 2): the user can fix it by changing what they typed or gave.
    pub fn usage(message: impl fmt::Display) -> Self {
        Fail { code: Code::Usage, message: message.to_string(), hint: None }
    }

    /// A runtime or environment error (exit 3): privilege, missing tool, I/O.
    pub fn runtime(message: impl fmt::Display) -> Self {
        Fail { code: Code::Runtime, message: message.to_string(), hint: None }
    }

    /// Adds the line that tells the user what to do next.
    pub fn hint(mut self, hint: impl fmt::Display) -> Self {
        self.hint = Some(hint.to_string());
        self
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

/// True when the error is stdout closing under us (`peel ... | head`): not worth a message, and not
/// a failure of peel's (ripgrep and the coreutils treat it the same way).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Turns a command's error into its exit code, message line and hint.
pub fn classify(err: &anyhow::Error) -> (Code, String, Option<String>) {
    // A `Fail` may sit under context layers; its code wins, the full chain is the message.
    let fail = err.chain().find_map(|cause| cause.downcast_ref::<Fail>());
    let message = format!("{err:#}");
    match fail {
        Some(fail) => (fail.code, message, fail.hint.clone()),
        None => (Code::Runtime, message, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn fail_under_context_keeps_its_code_and_hint() {
        let err = anyhow::Error::new(Fail::usage("bad port 'x'").hint("use a number"))
            .context("reading playbook.toml");
        let (code, message, hint) = classify(&err);
        assert_eq!(code, Code::Usage);
        assert_eq!(message, "reading playbook.toml: bad port 'x'");
        assert_eq!(hint.as_deref(), Some("use a number"));
    }

    #[test]
    fn broken_pipe_is_recognized_under_context() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::new(pipe).context("writing the table")));
        let other = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(!is_broken_pipe(&anyhow::Error::new(other)));
    }

    #[test]
    fn plain_errors_are_runtime_errors() {
        let err =
            std::fs::read("/nonexistent/peel").context("reading /nonexistent/peel").unwrap_err();
        let (code, message, hint) = classify(&err);
        assert_eq!(code, Code::Runtime);
        assert!(message.starts_with("reading /nonexistent/peel: "), "{message}");
        assert_eq!(hint, None);
    }
}
