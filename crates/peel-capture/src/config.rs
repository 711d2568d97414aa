//! What a capture is asked to do, with defaults chosen for an incident: small snaplen (evidence
//! without bodies), a kernel buffer big enough for bursts, and a disk-space floor.
//!
//! Validation here is pure (no libpcap, no privilege) so a playbook can check a capture stage before
//! it runs anything.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::CaptureError;

/// Default bytes kept of each packet: link + IP + TCP headers and the first ~100-150 payload bytes,
/// enough for an HTTP request line or status line, not for bodies.
pub const DEFAULT_SNAPLEN_BYTES: u32 = 256;
/// Snaplen that keeps whole packets (`--full`), libpcap's maximum.
pub const FULL_SNAPLEN_BYTES: u32 = 262_144;
/// Default kernel capture buffer per interface. libpcap's own default (2 MB) drops packets in short
/// bursts on a busy host; 32 MiB holds about 100k small packets.
pub const DEFAULT_BUFFER_BYTES: u32 = 32 * 1024 * 1024;
/// Default floor of free space on the output filesystem, as a fraction of its size.
pub const DEFAULT_MIN_FREE_FRACTION: f64 = 0.05;
/// One megabyte as `--ring SIZE_MB:COUNT` counts it (decimal, as `tcpdump -C` does).
pub const RING_MB_BYTES: u64 = 1_000_000;

/// Rotation: at most `file_count` files of at most `file_size_bytes` each, per interface; the oldest
/// file is deleted when a new one would exceed the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSpec {
    /// Largest size of one file, in bytes (a file is rotated before a packet would cross it).
    pub file_size_bytes: u64,
    /// Most files kept per interface.
    pub file_count: u32,
}

impl FromStr for RingSpec {
    type Err = CaptureError;

    /// Parses `SIZE_MB:COUNT`, for example `100:10` (10 files of 100 MB).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| CaptureError::InvalidRing {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (size, count) = spec.split_once(':').ok_or_else(|| fail("expected SIZE_MB:COUNT"))?;
        let size_mb: u64 =
            size.trim().parse().map_err(|_| fail("SIZE_MB must be a whole number of megabytes"))?;
        let file_count: u32 =
            count.trim().parse().map_err(|_| fail("COUNT must be a whole number of files"))?;
        if size_mb == 0 {
            return Err(fail("SIZE_MB must be at least 1"));
        }
        if file_count == 0 {
            return Err(fail("COUNT must be at least 1"));
        }
        let file_size_bytes =
            size_mb.checked_mul(RING_MB_BYTES).ok_or_else(|| fail("SIZE_MB is too large"))?;
        Ok(RingSpec { file_size_bytes, file_count })
    }
}

/// Everything [`crate::Capture::start`] needs.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Interface names as libpcap knows them (`lo`, `eth0`, `any`); one capture thread each.
    pub interfaces: Vec<String>,
    /// A BPF filter expression (tcpdump syntax), compiled and checked before capture starts.
    pub bpf_filter: Option<String>,
    /// Bytes kept of each packet.
    pub snaplen_bytes: u32,
    /// Kernel capture buffer per interface.
    pub buffer_bytes: u32,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many packets in total over all interfaces.
    pub max_packets: Option<u64>,
    /// Directory the pcap files are written into (created if missing).
    pub out_dir: PathBuf,
    /// File rotation; `None` writes one growing file per interface.
    pub ring: Option<RingSpec>,
    /// Stop when free space on `out_dir`'s filesystem falls under this fraction of its size.
    pub min_free_fraction: f64,
    /// Also send a copy of every captured packet to [`crate::CaptureHandle::take_packets`]
    /// (for a live analysis; costs one copy per packet).
    pub tap_packets: bool,
}

impl CaptureConfig {
    /// A config with peel's defaults for one or more interfaces writing into `out_dir`.
    pub fn new(interfaces: Vec<String>, out_dir: impl Into<PathBuf>) -> Self {
        CaptureConfig {
            interfaces,
            bpf_filter: None,
            snaplen_bytes: DEFAULT_SNAPLEN_BYTES,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            duration: None,
            max_packets: None,
            out_dir: out_dir.into(),
            ring: None,
            min_free_fraction: DEFAULT_MIN_FREE_FRACTION,
            tap_packets: false,
        }
    }

    /// Checks the values that need no system access; [`crate::Capture::start`] calls it first.
    pub fn validate(&self) -> Result<(), CaptureError> {
        let invalid =
            |field: &'static str, reason: String| CaptureError::InvalidConfig { field, reason };
        if self.interfaces.is_empty() {
            return Err(invalid(
                "interfaces",
                "name at least one interface (for example lo or any)".into(),
            ));
        }
        for (index, name) in self.interfaces.iter().enumerate() {
            if name.is_empty() {
                return Err(invalid("interfaces", "an interface name is empty".into()));
            }
            if self.interfaces[..index].contains(name) {
                return Err(invalid("interfaces", format!("'{name}' is named twice")));
            }
        }
        if !(1..=FULL_SNAPLEN_BYTES).contains(&self.snaplen_bytes) {
            return Err(invalid(
                "snaplen_bytes",
                format!("{} is outside 1..={FULL_SNAPLEN_BYTES}", self.snaplen_bytes),
            ));
        }
        if self.buffer_bytes < self.snaplen_bytes || self.buffer_bytes > i32::MAX as u32 {
            return Err(invalid(
                "buffer_bytes",
                format!(
                    "{} must be at least the snaplen ({}) and at most {}",
                    self.buffer_bytes,
                    self.snaplen_bytes,
                    i32::MAX
                ),
            ));
        }
        if self.max_packets == Some(0) {
            return Err(invalid("max_packets", "must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.min_free_fraction) {
            return Err(invalid(
                "min_free_fraction",
                format!("{} is outside 0.0..1.0", self.min_free_fraction),
            ));
        }
        if self.out_dir.to_str().is_none() {
            return Err(invalid(
                "out_dir",
                format!("{} is not valid UTF-8", self.out_dir.display()),
            ));
        }
        if let Some(ring) = self.ring {
            // A file must hold its header and at least one whole packet record.
            let smallest = crate::pcap_file::GLOBAL_HEADER_BYTES
                + crate::pcap_file::RECORD_HEADER_BYTES
                + u64::from(self.snaplen_bytes);
            if ring.file_size_bytes < smallest || ring.file_count == 0 {
                return Err(invalid(
                    "ring",
                    format!("files must hold at least {smallest} bytes and COUNT be at least 1"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_specs() {
        let ok: &[(&str, u64, u32)] =
            &[("100:10", 100_000_000, 10), ("1:1", 1_000_000, 1), (" 5 : 3 ", 5_000_000, 3)];
        for (spec, size, count) in ok {
            assert_eq!(
                spec.parse::<RingSpec>().unwrap(),
                RingSpec { file_size_bytes: *size, file_count: *count },
                "{spec}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("100", "expected SIZE_MB:COUNT"),
            ("x:3", "SIZE_MB must be a whole number of megabytes"),
            ("1.5:3", "SIZE_MB must be a whole number of megabytes"),
            ("100:", "COUNT must be a whole number of files"),
            ("0:3", "SIZE_MB must be at least 1"),
            ("10:0", "COUNT must be at least 1"),
            ("18446744073709551615:2", "SIZE_MB is too large"),
        ];
        for (spec, reason) in bad {
            match spec.parse::<RingSpec>() {
                Err(CaptureError::InvalidRing { reason: got, .. }) => {
                    assert_eq!(got, *reason, "{spec}")
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        let config = CaptureConfig::new(vec!["lo".into()], "/tmp/peel");
        assert_eq!(config.snaplen_bytes, 256);
        assert!(config.validate().is_ok());

        type Change = fn(&mut CaptureConfig);
        let cases: &[(&str, Change)] = &[
            ("interfaces", |c| c.interfaces.clear()),
            ("interfaces", |c| c.interfaces.push("lo".into())),
            ("snaplen_bytes", |c| c.snaplen_bytes = 0),
            ("snaplen_bytes", |c| c.snaplen_bytes = FULL_SNAPLEN_BYTES + 1),
            ("buffer_bytes", |c| c.buffer_bytes = 100),
            ("max_packets", |c| c.max_packets = Some(0)),
            ("min_free_fraction", |c| c.min_free_fraction = 1.0),
            ("ring", |c| c.ring = Some(RingSpec { file_size_bytes: 100, file_count: 2 })),
        ];
        for (field, change) in cases {
            let mut config = CaptureConfig::new(vec!["lo".into()], "/tmp/peel");
            change(&mut config);
            match config.validate() {
                Err(CaptureError::InvalidConfig { field: got, .. }) => assert_eq!(got, *field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
