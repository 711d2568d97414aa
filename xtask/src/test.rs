//! `cargo xtask test`: every check a change must pass, in the order that fails fastest.
//!
//! Clippy and the tests share the dev profile, so DuckDB's C++ is compiled once for both.

use crate::{run, setup};

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    setup::run(setup::Mode::Install)?;
    run::cmd("cargo", ["fmt", "--all", "--check"])?;
    run::cmd("cargo", ["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    if run::on_path("cargo-nextest") {
        let mut args = vec!["nextest", "run", "--workspace", "--no-fail-fast"];
        args.extend(extra.iter().map(String::as_str));
        run::cmd("cargo", args)?;
        // nextest does not run doctests.
        run::cmd("cargo", ["test", "--workspace", "--doc"])?;
    } else {
        let mut args = vec!["test", "--workspace", "--no-fail-fast"];
        args.extend(extra.iter().map(String::as_str));
        run::cmd("cargo", args)?;
    }
    eprintln!("xtask test: all checks passed");
    Ok(())
}
