//! Any bytes as the two directions of an HTTP/1.x connection, cut into segments at arbitrary
//! points: the message framer must never panic and must keep its counts consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    peel_wire::fuzzing::http_exchanges(data);
});
