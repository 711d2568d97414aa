//! `cargo xtask demo`: the first thing a newcomer runs. Builds peel, checks the prerequisites, and
//! runs the demo playbook against the local lab, unattended. Without capture privilege it runs the
//! playbook without its capture steps, and the report says so.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;

use crate::{run, setup};

const DEMO_PLAYBOOK: &str = "playbooks/lab-db-churn.toml";

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    if !root.join(DEMO_PLAYBOOK).is_file() {
        bail!(
            "the demo playbook {DEMO_PLAYBOOK} does not exist yet (issue 8 brings it with the lab); \
             nothing was run"
        );
    }
    setup::run(setup::Mode::Install)?;
    run::cmd("cargo", ["build", "-p", "peel"])?;

    let peel = crate::built_peel()?;

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let out_dir = root.join("runs").join(format!("demo-{stamp}"));
    let mut command = Command::new(&peel);
    command.current_dir(&root).args(["run", DEMO_PLAYBOOK, "--yes"]);
    command.arg("--out").arg(&out_dir);
    // The playbook starts the lab with `${peel} lab ...`: use the binary just built, not one on PATH.
    command.arg("--set").arg(format!("peel={}", peel.display()));
    if !can_capture() {
        eprintln!(
            "demo: no capture privilege (not root, no CAP_NET_RAW): running without capture steps; \
             run as root or `sudo setcap cap_net_raw,cap_net_admin=eip <peel binary>` for the full demo"
        );
        command.args(["--skip", "capture"]);
    }
    command.args(extra);
    let result = run::status(&mut command);
    eprintln!("demo: run folder {}", out_dir.display());
    eprintln!("demo: report     {}", out_dir.join("report.md").display());
    result
}

/// Root, or CAP_NET_RAW (bit 13) in the effective capability set.
fn can_capture() -> bool {
    if run::is_root() {
        return true;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 13) != 0)
}
