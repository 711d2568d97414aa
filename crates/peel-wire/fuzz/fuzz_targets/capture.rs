//! Any bytes as a capture file: the pcap/pcapng reader, every link-layer decoder, the TCP flow
//! engine and the HTTP/PostgreSQL recognizers must return data or errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = peel_wire::fuzzing::capture_bytes(data);
});
