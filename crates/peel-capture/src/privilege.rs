//! Whether this process may capture, decided from the effective capability set (`CapEff` in
//! `/proc/self/status`) before libpcap is asked.
//!
//! libpcap's own failure ("socket: Operation not permitted") names neither the capability nor the
//! fix; during an incident the engineer needs both in one line. Root normally holds every capability,
//! so checking the set covers root, `setcap`-granted binaries and containers that drop capabilities
//! alike. This module does not grant anything.

use std::fmt;
use std::path::Path;

use crate::CaptureError;

/// A Linux capability that live capture needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// `CAP_NET_RAW`: open the packet socket libpcap reads from.
    NetRaw,
    /// `CAP_NET_ADMIN`: interface settings libpcap may change (promiscuous mode, buffer sizes).
    NetAdmin,
}

impl Capability {
    /// Every capability capture needs, in the order they are reported.
    pub const NEEDED: [Capability; 2] = [Capability::NetRaw, Capability::NetAdmin];

    /// The capability's bit number in the kernel's capability sets (linux/capability.h).
    pub fn bit(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
        }
    }

    /// The name used by the kernel and `capsh`, for example `CAP_NET_RAW`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::NetAdmin => "CAP_NET_ADMIN",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads the effective capability mask from a `/proc/<pid>/status` text; `None` if absent or garbled.
pub fn effective_capabilities(status_text: &str) -> Option<u64> {
    let line = status_text.lines().find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// The capabilities in [`Capability::NEEDED`] that `cap_eff` lacks.
pub fn missing_capabilities(cap_eff: u64) -> Vec<Capability> {
    Capability::NEEDED.into_iter().filter(|cap| cap_eff & (1u64 << cap.bit()) == 0).collect()
}

/// Fails with [`CaptureError::MissingPrivilege`] unless this process may capture.
///
/// `exe` is the program to name in the `setcap` command (normally `std::env::current_exe()`).
pub fn check_capture_privilege(exe: &Path) -> Result<(), CaptureError> {
    check_status_file(Path::new("/proc/self/status"), exe)
}

pub(crate) fn check_status_file(status_path: &Path, exe: &Path) -> Result<(), CaptureError> {
    let text = std::fs::read_to_string(status_path).map_err(|source| {
        CaptureError::ReadCapabilities { path: status_path.to_path_buf(), source }
    })?;
    let cap_eff = effective_capabilities(&text).ok_or_else(|| CaptureError::ReadCapabilities {
        path: status_path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no readable CapEff line"),
    })?;
    let missing = missing_capabilities(cap_eff);
    if missing.is_empty() {
        return Ok(());
    }
    Err(CaptureError::MissingPrivilege {
        missing,
        setcap_command: format!("setcap cap_net_raw,cap_net_admin=eip {}", exe.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_STATUS: &str = "Name:\tpeel\nUmask:\t0022\nCapInh:\t0000000000000000\n\
        CapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";

    #[test]
    fn cap_eff_is_read_as_hex() {
        let cases: &[(&str, Option<u64>)] = &[
            (ROOT_STATUS, Some(0x1ff_ffff_ffff)),
            ("CapEff:\t0000000000003000\n", Some(0x3000)),
            ("CapEff:\t0000000000000000\n", Some(0)),
            ("CapPrm:\t0000000000003000\n", None),
            ("CapEff:\tzz\n", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(effective_capabilities(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn missing_capabilities_by_mask() {
        use Capability::*;
        let cases: &[(u64, &[Capability])] = &[
            (0x1ff_ffff_ffff, &[]),
            (1 << 12 | 1 << 13, &[]),
            (1 << 12, &[NetRaw]),
            (1 << 13, &[NetAdmin]),
            (0, &[NetRaw, NetAdmin]),
        ];
        for (mask, expected) in cases {
            assert_eq!(missing_capabilities(*mask), *expected, "{mask:#x}");
        }
    }

    #[test]
    fn error_names_capability_and_setcap_command() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        std::fs::write(&status, "Name:\tpeel\nCapEff:\t0000000000001000\n").unwrap();
        let err = check_status_file(&status, Path::new("/usr/local/bin/peel")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "live capture needs CAP_NET_RAW, which this process lacks (run as root, or grant it \
             once with: setcap cap_net_raw,cap_net_admin=eip /usr/local/bin/peel)"
        );
        std::fs::write(&status, ROOT_STATUS).unwrap();
        assert!(check_status_file(&status, Path::new("peel")).is_ok());
    }
}
