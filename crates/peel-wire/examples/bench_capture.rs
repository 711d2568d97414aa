//! Writes the benchmark capture and/or analyzes a capture with a sink that only counts, printing
//! elapsed time: `cargo run --release -p peel-wire --example bench_capture -- write FILE CONNS`
//! or `... -- analyze FILE...`. `cargo xtask bench` uses `peel analyze`; this isolates the library.

#![allow(clippy::print_stdout)]

use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use peel_wire::synth::{write_http_load, LoadSpec, PcapWriter};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") if args.len() == 3 => {
            let file = std::fs::File::create(&args[1])?;
            let mut w = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
            let spec = LoadSpec {
                connections: args[2].parse()?,
                concurrency: 64,
                start_ts_ns: 1_700_000_000_000_000_000,
            };
            let packets = write_http_load(&mut w, &spec)?;
            w.into_inner()?;
            println!("wrote {packets} packets");
        }
        Some("analyze") => {
            let paths: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
            let started = Instant::now();
            let mut connections = 0u64;
            let end = peel_wire::analyze_paths(&paths, peel_wire::Config::default(), &mut |_| {
                connections += 1
            })?;
            println!(
                "{} packets, {connections} connections, {} warnings in {:.3} s",
                end.stats.packets,
                end.warnings.len(),
                started.elapsed().as_secs_f64()
            );
        }
        Some("summary") => {
            // The engine plus the per-endpoint summary: what `peel analyze` does for its table.
            let paths: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
            let started = Instant::now();
            let mut builder = peel_wire::summary::SummaryBuilder::new();
            let end = peel_wire::analyze_paths(&paths, peel_wire::Config::default(), &mut |c| {
                builder.add(&c)
            })?;
            let summary = builder.finish(&end);
            println!(
                "{} packets, {} endpoints in {:.3} s",
                end.stats.packets,
                summary.endpoints.len(),
                started.elapsed().as_secs_f64()
            );
        }
        Some(stage @ ("read" | "decode")) if args.len() == 2 => {
            // Cost of the stages below the engine: reading records, and decoding them too.
            let started = Instant::now();
            let mut reader = peel_wire::reader::CaptureReader::open(std::path::Path::new(&args[1]))?;
            let (mut packets, mut tcp) = (0u64, 0u64);
            while let Some(meta) = reader.next_packet()? {
                packets += 1;
                if stage == "decode" {
                    let cut = (reader.data().len() as u64) < u64::from(meta.orig_len);
                    if let peel_wire::decode::Decoded::Tcp(_) = peel_wire::decode::decode(meta.linktype, reader.data(), cut) {
                        tcp += 1;
                    }
                }
            }
            println!("{stage}: {packets} packets ({tcp} TCP) in {:.3} s", started.elapsed().as_secs_f64());
        }
        _ => return Err("usage: bench_capture write FILE CONNECTIONS | analyze FILE... | summary FILE... | read FILE | decode FILE".into()),
    }
    Ok(())
}
