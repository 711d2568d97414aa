//! `cargo xtask`: the project's automation as a Rust program (setup, test, demo, bench, fuzz), so it
//! behaves the same on a laptop and in CI and needs nothing but cargo.
//!
//! Printing is this crate's job (it is a binary), hence the lint allowances.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod demo;
mod fuzz;
mod run;
mod setup;
mod test;

use std::path::PathBuf;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup            check system prerequisites; install them with apt-get when root
  test             setup checks, cargo fmt --check, clippy -D warnings, the whole test suite
  demo [ARGS...]   run playbooks/lab-db-churn.toml against the local lab (extra ARGS go to `peel run`)
  bench [NAME...]  run the benchmarks (all, or the named ones) and print ratios against peers
  fuzz [SECONDS]   run every fuzz target for a bounded time (default 60 s each)
";

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return std::process::ExitCode::from(2);
    };
    let result = match command.as_str() {
        "setup" => setup::run(setup::Mode::Install),
        "test" => test::run(rest),
        "demo" => demo::run(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("error: unknown xtask command '{other}'\n\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Where cargo puts build output: `CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The `peel` binary of the dev profile, which xtask builds before using it.
fn built_peel() -> anyhow::Result<PathBuf> {
    let peel = target_dir().join("debug").join("peel");
    if !peel.is_file() {
        anyhow::bail!("built peel but cannot find it at {}", peel.display());
    }
    Ok(peel)
}

/// The workspace root (xtask lives one level below it).
///
/// `cargo run` sets `CARGO_MANIFEST_DIR` for the running process too, and that one wins: checkouts
/// at different paths that share a target dir (CI clones, worktrees) share one xtask binary, which
/// cargo does not rebuild when only the path changed, so the compile-time value can name another
/// checkout.
fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}
