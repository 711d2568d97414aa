//! peel-wire: reads pcap/pcapng captures (files, directories, gzip'd files, or packets pushed by a
//! live capture), decodes them without copying, and splits every TCP connection into phases
//! (handshake, request wait, server, response, idle, close) with HTTP/1.x and PostgreSQL exchanges.
//!
//! It is pure Rust (no libpcap) and never touches a database: it returns plain records
//! ([`records`]) that peel-store ingests and the `peel` binary renders.

pub mod records;
