//! Entry points for the cargo-fuzz targets in `fuzz/` that reach crate-private parsers. Not part
//! of peel-wire's API: hidden from the docs, and nothing else should call it.

use crate::exchange::{Exchanges, Scratch};
use crate::records::Side;

/// Feeds `data` (client bytes, a NUL byte, server bytes) to the exchange tracker in small,
/// alternating segments whose sizes come from the data itself, with a gap when a segment starts
/// with 0xff. Panics only if an invariant breaks (that is what the fuzzer looks for).
pub fn http_exchanges(data: &[u8]) {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (client, server) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    let mut exchanges = Exchanges::new();
    let (mut c, mut s, mut ts_ns) = (0usize, 0usize, 0i64);
    let mut scratch = Scratch::default();
    while c < client.len() || s < server.len() {
        for (side, stream, at) in [(Side::Client, client, &mut c), (Side::Server, server, &mut s)] {
            if *at >= stream.len() {
                continue;
            }
            let size = usize::from(stream[*at] % 17) + 1;
            let end = (*at + size).min(stream.len());
            ts_ns += 1;
            if stream[*at] == 0xff {
                exchanges.gap(side, (end - *at) as u64);
            } else {
                exchanges.data(side, ts_ns, &stream[*at..end], 0, &mut scratch);
            }
            *at = end;
        }
    }
    let (http_requests, http_responses) = (exchanges.http_requests, exchanges.http_responses);
    let (records, _idle, _seen) = exchanges.finish(0, &mut scratch);
    assert!(records.len() as u64 <= u64::from(http_requests).max(1) + client.len() as u64);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.seq as usize, i);
        assert!(record.request_end_ts_ns >= record.request_start_ts_ns);
    }
    let _ = http_responses;
}

/// Reads `data` as a whole capture file and analyzes every packet in it, as `peel analyze` would.
/// Returns the number of connections, or `None` when the file header is rejected.
pub fn capture_bytes(data: &[u8]) -> Option<u64> {
    use std::io::Cursor;
    use std::path::Path;

    use crate::reader::CaptureReader;
    use crate::{Analyzer, Config, Packet};

    let input = Box::new(Cursor::new(data.to_vec()));
    let mut reader = CaptureReader::from_reader(Path::new("fuzz.pcap"), input).ok()?;
    let mut analyzer = Analyzer::new(Config::default());
    let source = analyzer.add_source("fuzz.pcap");
    let mut connections = 0u64;
    let mut sink = |_| connections += 1;
    while let Ok(Some(meta)) = reader.next_packet() {
        let packet = Packet {
            ts_ns: meta.ts_ns,
            linktype: meta.linktype,
            interface_id: meta.interface_id,
            data: reader.data(),
            orig_len: meta.orig_len,
            source,
            index: meta.index,
        };
        analyzer.push(&packet, &mut sink);
    }
    analyzer.add_warnings(source, reader.take_warnings());
    let end = analyzer.finish(&mut sink);
    assert_eq!(end.stats.connections, connections, "every connection reaches the sink once");
    Some(connections)
}

#[cfg(test)]
mod tests {
    /// The HTTP fuzz target's function over mutations of HTTP-looking text, deterministically.
    #[test]
    fn http_exchanges_survive_mutated_messages() {
        let base: &[u8] = b"GET /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcHEAD / HTTP/1.1\r\n\r\n\0HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut data = base.to_vec();
            let at = (state % data.len() as u64) as usize;
            data[at] = (state >> 32) as u8;
            data.truncate(((state >> 40) % (base.len() as u64 + 1)) as usize);
            super::http_exchanges(&data);
        }
    }
}
