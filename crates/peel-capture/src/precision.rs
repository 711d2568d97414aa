//! Asks libpcap which timestamp precision a live handle really delivers.
//!
//! `pcap::Capture::precision` requests nanoseconds but ignores libpcap's answer, and the pcap crate
//! does not expose `pcap_get_tstamp_precision`. Writing a nanosecond file header over microsecond
//! timestamps would shift every time by a factor of 1000, so peel asks. This is the crate's only
//! unsafe code: one call into the libpcap the `pcap` crate already links.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};

use crate::pcap_file::TimestampPrecision;

extern "C" {
    fn pcap_get_tstamp_precision(p: *mut c_void) -> c_int;
}

/// libpcap's PCAP_TSTAMP_PRECISION_NANO.
const PCAP_TSTAMP_PRECISION_NANO: c_int = 1;

/// The precision of the timestamps `capture` returns.
pub(crate) fn of_capture(capture: &pcap::Capture<pcap::Active>) -> TimestampPrecision {
    // SAFETY: `as_ptr` is the live pcap_t owned by `capture`, which outlives this call;
    // pcap_get_tstamp_precision only reads a field of it (libpcap >= 1.5, which the pcap crate's
    // `precision` setter requires too).
    let precision = unsafe { pcap_get_tstamp_precision(capture.as_ptr().cast::<c_void>()) };
    if precision == PCAP_TSTAMP_PRECISION_NANO {
        TimestampPrecision::Nanos
    } else {
        TimestampPrecision::Micros
    }
}
