//! `cargo xtask setup`: the system prerequisites peel needs to build and test, checked one by one,
//! installed with apt-get when we are root, otherwise printed as the exact command to run.

use std::path::Path;

use anyhow::bail;

use crate::run;

/// Whether missing prerequisites may be installed or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Install,
}

/// One thing the build or the tests need from the system.
struct Prerequisite {
    what: &'static str,
    why: &'static str,
    debian_package: &'static str,
    present: fn() -> bool,
    /// Optional prerequisites are installed when we can, and never fail setup.
    required: bool,
}

fn prerequisites() -> Vec<Prerequisite> {
    vec![
        Prerequisite {
            what: "C compiler (cc)",
            why: "builds bundled C code (DuckDB, zstd)",
            debian_package: "gcc",
            present: || run::on_path("cc") || run::on_path("gcc"),
            required: true,
        },
        Prerequisite {
            what: "C++ compiler (c++)",
            why: "builds the bundled DuckDB",
            debian_package: "g++",
            present: || run::on_path("c++") || run::on_path("g++"),
            required: true,
        },
        Prerequisite {
            what: "libpcap headers (pcap.h)",
            why: "the `pcap` crate links libpcap for live capture",
            debian_package: "libpcap-dev",
            present: || {
                Path::new("/usr/include/pcap.h").exists()
                    || Path::new("/usr/include/pcap/pcap.h").exists()
            },
            required: true,
        },
        Prerequisite {
            what: "iproute2 (ip, ss)",
            why: "network namespaces in tests and the `ss` cross-check",
            debian_package: "iproute2",
            present: || run::on_path("ss") && run::on_path("ip"),
            required: true,
        },
        Prerequisite {
            what: "ccache",
            why:
                "optional: rebuilds of DuckDB's C++ after a dependency change take minutes, not 25",
            debian_package: "ccache",
            present: || run::on_path("ccache"),
            required: false,
        },
    ]
}

/// Checks every prerequisite; installs the missing ones when root, else fails with the command.
pub fn run(mode: Mode) -> anyhow::Result<()> {
    let missing: Vec<Prerequisite> =
        prerequisites().into_iter().filter(|p| !(p.present)()).collect();
    if missing.is_empty() {
        eprintln!("setup: all prerequisites present");
        return Ok(());
    }
    for prerequisite in &missing {
        eprintln!("setup: missing {} ({})", prerequisite.what, prerequisite.why);
    }
    let packages: Vec<&str> = missing.iter().map(|p| p.debian_package).collect();
    let install = format!("apt-get install -y {}", packages.join(" "));
    let can_install = mode == Mode::Install && run::is_root() && run::on_path("apt-get");
    if can_install {
        run::cmd("apt-get", ["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q"];
        args.extend(&packages);
        run::cmd("apt-get", args)?;
    }
    let still_missing: Vec<&str> = prerequisites()
        .into_iter()
        .filter(|p| p.required && !(p.present)())
        .map(|p| p.what)
        .collect();
    if still_missing.is_empty() {
        return Ok(());
    }
    if can_install {
        bail!("still missing after apt-get: {}", still_missing.join(", "));
    }
    bail!("missing system packages; install them with:\n    sudo {install}")
}
