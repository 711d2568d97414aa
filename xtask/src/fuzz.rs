//! `cargo xtask fuzz [SECONDS]`: runs every cargo-fuzz target of the workspace (crates/*/fuzz) for a
//! bounded time each, seeded from the target's seed folder. cargo-fuzz needs nightly features; on
//! this project's stable toolchain they are enabled with RUSTC_BOOTSTRAP=1.

use std::process::Command;

use anyhow::{bail, Context};

use crate::run;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let seconds: u64 = match args.first() {
        Some(text) => {
            text.parse().with_context(|| format!("SECONDS must be a number, got '{text}'"))?
        }
        None => 60,
    };
    if !run::on_path("cargo-fuzz") {
        bail!("cargo-fuzz is not installed; install it with:\n    cargo install cargo-fuzz");
    }
    let root = crate::workspace_root();
    let mut targets = Vec::new();
    for crate_dir in std::fs::read_dir(root.join("crates")).context("listing crates/")? {
        let fuzz_dir = crate_dir?.path().join("fuzz");
        let Ok(entries) = std::fs::read_dir(fuzz_dir.join("fuzz_targets")) else { continue };
        for entry in entries {
            let path = entry?.path();
            if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                targets.push((fuzz_dir.clone(), name.to_owned()));
            }
        }
    }
    if targets.is_empty() {
        bail!("no fuzz targets found under crates/*/fuzz/fuzz_targets");
    }
    for (fuzz_dir, target) in targets {
        let seeds = fuzz_dir.join("seeds").join(&target);
        let mut command = Command::new("cargo");
        command.current_dir(&root).env("RUSTC_BOOTSTRAP", "1").arg("fuzz").arg("run");
        command.arg("--fuzz-dir").arg(&fuzz_dir).arg(&target);
        let corpus = fuzz_dir.join("corpus").join(&target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        command.arg(&corpus);
        if seeds.is_dir() {
            command.arg(&seeds);
        }
        command.arg("--").arg(format!("-max_total_time={seconds}"));
        run::status(&mut command)?;
    }
    Ok(())
}
