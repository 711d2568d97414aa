//! `cargo xtask fuzz [SECONDS] [TARGET...]`: runs every cargo-fuzz target of the workspace
//! (crates/*/fuzz), or the named ones, for a bounded time each, seeded from the target's seed folder (`seeds/<target>/`) and from the folders
//! listed in `seeds/<target>.paths` (one per line, relative to the workspace root), so test data
//! can seed a fuzzer where it lives. cargo-fuzz needs nightly features; on this project's stable
//! toolchain they are enabled with RUSTC_BOOTSTRAP=1.

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
    let wanted = args.get(1..).unwrap_or_default();
    if let Some(unknown) = wanted.iter().find(|w| !targets.iter().any(|(_, t)| t == *w)) {
        let names: Vec<&str> = targets.iter().map(|(_, t)| t.as_str()).collect();
        bail!("no fuzz target '{unknown}' (targets: {})", names.join(", "));
    }
    targets.retain(|(_, t)| wanted.is_empty() || wanted.contains(t));
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
        for dir in seed_paths(&root, &fuzz_dir, &target)? {
            command.arg(dir);
        }
        command.arg("--").arg(format!("-max_total_time={seconds}"));
        run::status(&mut command)?;
    }
    Ok(())
}

/// The folders named in `seeds/<target>.paths`; a listed folder that does not exist is an error,
/// so a moved test-data folder cannot silently stop seeding.
fn seed_paths(
    root: &std::path::Path,
    fuzz_dir: &std::path::Path,
    target: &str,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let list = fuzz_dir.join("seeds").join(format!("{target}.paths"));
    let Ok(text) = std::fs::read_to_string(&list) else { return Ok(Vec::new()) };
    let mut dirs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let dir = root.join(line);
        if !dir.is_dir() {
            bail!("{}: '{line}' is not a folder under {}", list.display(), root.display());
        }
        dirs.push(dir);
    }
    Ok(dirs)
}
