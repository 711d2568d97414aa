//! Live analysis of a running capture: the packet copies from [`crate::CaptureHandle::take_packets`]
//! go through peel-wire's streaming [`Analyzer`], the engine `peel analyze` runs over files (no
//! second parser), in a thread of their own so capture never waits for analysis.
//!
//! The final [`Summary`] is the one `peel analyze DIR` gives for the same packets. While running, a
//! [`LiveWindow`] summarizes the connections that finished in the last [`LIVE_WINDOW_NS`] of capture
//! time, for a view that refreshes. Rendering is the caller's.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use peel_wire::records::FinishedConnection;
use peel_wire::summary::{Summary, SummaryBuilder};
use peel_wire::{AnalysisEnd, Analyzer, CaptureStats, Config, Packet, SourceId};

use crate::{CaptureError, TappedPacket};

/// Capture time covered by a [`LiveWindow`].
pub const LIVE_WINDOW_NS: i64 = 5_000_000_000;
/// How often the window is recomputed (wall time).
const WINDOW_EVERY: Duration = Duration::from_secs(1);

/// The connections that finished recently, summarized per endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveWindow {
    /// Summary over the window (its `connections_per_sec` are per second of the window).
    pub summary: Summary,
    /// Capture time the window covers (shorter than [`LIVE_WINDOW_NS`] early in a capture).
    pub window_ns: i64,
    /// Connections still open in the analyzer.
    pub open_connections: usize,
}

/// A running live analysis.
#[derive(Debug)]
pub struct LiveAnalysis {
    latest: Arc<Mutex<Option<LiveWindow>>>,
    thread: JoinHandle<Summary>,
}

impl LiveAnalysis {
    /// Starts analyzing `packets`; `interfaces` are the capture's, in order (they name warnings).
    pub fn spawn(
        packets: Receiver<TappedPacket>,
        interfaces: &[String],
    ) -> Result<Self, CaptureError> {
        let latest = Arc::new(Mutex::new(None));
        let shared = Arc::clone(&latest);
        let interfaces = interfaces.to_vec();
        let thread = std::thread::Builder::new()
            .name("peel-capture-analysis".into())
            .spawn(move || analyze(&packets, &interfaces, &shared))
            .map_err(|source| CaptureError::Spawn { source })?;
        Ok(LiveAnalysis { latest, thread })
    }

    /// The latest window, once one second of packets was analyzed.
    pub fn window(&self) -> Option<LiveWindow> {
        self.latest.lock().ok().and_then(|latest| latest.clone())
    }

    /// Waits for the packet channel to end (the capture stopped) and returns the whole summary.
    pub fn finish(self) -> Result<Summary, CaptureError> {
        self.thread.join().map_err(|_| CaptureError::AnalysisThread)
    }
}

fn analyze(
    packets: &Receiver<TappedPacket>,
    interfaces: &[String],
    latest: &Mutex<Option<LiveWindow>>,
) -> Summary {
    let mut analyzer = Analyzer::new(Config::default());
    let sources: Vec<SourceId> = interfaces.iter().map(|name| analyzer.add_source(name)).collect();
    let mut indexes = vec![0u64; sources.len()];
    let mut whole = SummaryBuilder::new();
    let mut recent: VecDeque<FinishedConnection> = VecDeque::new();
    let mut span: Option<(i64, i64)> = None;
    let mut last_packet_at = Instant::now();
    let mut last_window = Instant::now();
    loop {
        match packets.recv_timeout(Duration::from_millis(200)) {
            Ok(tapped) => {
                let slot = tapped.interface_index as usize;
                let (Some(&source), Some(index)) = (sources.get(slot), indexes.get_mut(slot))
                else {
                    continue;
                };
                let packet = Packet {
                    ts_ns: tapped.ts_ns,
                    linktype: tapped.linktype,
                    // Files of a pcap ring carry no interface, so `peel analyze DIR` sees 0 for all.
                    interface_id: 0,
                    data: &tapped.data,
                    orig_len: tapped.orig_len,
                    source,
                    index: *index,
                };
                *index += 1;
                span = Some(span.map_or((tapped.ts_ns, tapped.ts_ns), |(first, last)| {
                    (first.min(tapped.ts_ns), last.max(tapped.ts_ns))
                }));
                last_packet_at = Instant::now();
                analyzer.push(&packet, &mut |finished: FinishedConnection| {
                    whole.add(&finished);
                    recent.push_back(finished);
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_window.elapsed() >= WINDOW_EVERY {
            last_window = Instant::now();
            if let Some((first, last)) = span {
                // On a quiet link no packet moves the analysis clock: move it by the wall time since
                // the last packet, so connections that finished lingering show up now.
                let quiet_ns =
                    i64::try_from(last_packet_at.elapsed().as_nanos()).unwrap_or(i64::MAX);
                let now_ns = last.saturating_add(quiet_ns);
                analyzer.advance_to(now_ns, &mut |finished: FinishedConnection| {
                    whole.add(&finished);
                    recent.push_back(finished);
                });
                let window = window_of(&mut recent, first, now_ns, analyzer.open_connections());
                if let Ok(mut shared) = latest.lock() {
                    *shared = Some(window);
                }
            }
        }
    }
    let end = analyzer.finish(&mut |finished: FinishedConnection| whole.add(&finished));
    whole.finish(&end)
}

/// Summarizes the connections that finished in the last window of capture time (or since the first
/// packet, early in a capture, so rates are not diluted); older ones are dropped from `recent`.
fn window_of(
    recent: &mut VecDeque<FinishedConnection>,
    first_ts_ns: i64,
    last_ts_ns: i64,
    open_connections: usize,
) -> LiveWindow {
    let start = (last_ts_ns - LIVE_WINDOW_NS).max(first_ts_ns);
    recent.retain(|f| f.connection.last_ts_ns >= start);
    let mut builder = SummaryBuilder::new();
    for finished in recent.iter() {
        builder.add(finished);
    }
    let stats = CaptureStats {
        first_ts_ns: Some(start),
        last_ts_ns: Some(last_ts_ns),
        ..CaptureStats::default()
    };
    let summary = builder.finish(&AnalysisEnd { stats, warnings: Vec::new() });
    LiveWindow { summary, window_ns: last_ts_ns - start, open_connections }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// peel-wire's deterministic capture of `connections` short HTTP connections, as tapped packets.
    fn synthetic_packets(connections: u64) -> Vec<TappedPacket> {
        use peel_wire::synth::{write_http_load, LoadSpec, PcapWriter};
        let mut writer = PcapWriter::new(Vec::new()).unwrap();
        let spec = LoadSpec { connections, concurrency: 2, start_ts_ns: 1_700_000_000_000_000_000 };
        write_http_load(&mut writer, &spec).unwrap();
        let bytes = writer.into_inner().unwrap();
        let mut reader = peel_wire::reader::CaptureReader::from_reader(
            std::path::Path::new("synthetic.pcap"),
            Box::new(std::io::Cursor::new(bytes)),
        )
        .unwrap();
        let mut packets = Vec::new();
        while let Some(meta) = reader.next_packet().unwrap() {
            packets.push(TappedPacket {
                interface_index: 0,
                linktype: meta.linktype,
                ts_ns: meta.ts_ns,
                orig_len: meta.orig_len,
                data: reader.data().to_vec(),
            });
        }
        packets
    }

    #[test]
    fn every_connection_reaches_the_final_summary() {
        let (tx, rx) = mpsc::sync_channel(1024);
        let live = LiveAnalysis::spawn(rx, &["lo".to_string()]).unwrap();
        for packet in synthetic_packets(8) {
            tx.send(packet).unwrap();
        }
        drop(tx);
        let summary = live.finish().unwrap();
        assert_eq!((summary.packets, summary.connections), (8 * 11, 8));
        // Four servers on port 8000, two connections each, one request per connection.
        assert_eq!(summary.endpoints.len(), 4);
        for endpoint in &summary.endpoints {
            assert_eq!(
                (endpoint.server_port, endpoint.connections, endpoint.exchanges),
                (8000, 2, 2)
            );
        }
    }

    #[test]
    fn the_window_keeps_recent_connections_and_rates_per_second_of_window() {
        let mut recent = VecDeque::new();
        let mut builder_input = Vec::new();
        let (tx, rx) = mpsc::sync_channel(1024);
        for packet in synthetic_packets(4) {
            tx.send(packet).unwrap();
        }
        drop(tx);
        // Collect finished connections through the analyzer directly, to feed window_of.
        let mut analyzer = Analyzer::new(Config::default());
        let source = analyzer.add_source("lo");
        for (index, tapped) in rx.iter().enumerate() {
            let packet = Packet {
                ts_ns: tapped.ts_ns,
                linktype: tapped.linktype,
                interface_id: 0,
                data: &tapped.data,
                orig_len: tapped.orig_len,
                source,
                index: index as u64,
            };
            analyzer.push(&packet, &mut |f: FinishedConnection| builder_input.push(f));
        }
        analyzer.finish(&mut |f: FinishedConnection| builder_input.push(f));
        assert_eq!(builder_input.len(), 4);
        let last_ts_ns = builder_input.iter().map(|f| f.connection.last_ts_ns).max().unwrap();
        let first_ts_ns = builder_input.iter().map(|f| f.connection.first_ts_ns).min().unwrap();
        recent.extend(builder_input.iter().cloned());
        let window = window_of(&mut recent, first_ts_ns, last_ts_ns, 0);
        assert_eq!(window.window_ns, last_ts_ns - first_ts_ns, "early: since the first packet");
        assert_eq!(window.summary.endpoints.iter().map(|e| e.connections).sum::<u64>(), 4);

        // Ten seconds later only connections that finished in the last five seconds count.
        let window = window_of(&mut recent, first_ts_ns, last_ts_ns + 10_000_000_000, 0);
        assert_eq!(window.window_ns, LIVE_WINDOW_NS);
        assert!(window.summary.endpoints.is_empty());
        assert!(recent.is_empty());
    }
}
