//! Files and directories as one time-ordered capture: ring-buffer output (`tcpdump -W`, `dumpcap -b`)
//! or captures from several hosts are merged by timestamp before the engine sees them.
//!
//! Only files whose time ranges overlap are open at once (files are ordered by their first packet
//! and opened when the merge reaches that time), so a directory of a thousand ring files costs
//! one or two open readers, not a thousand.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use crate::analyzer::{AnalysisEnd, Analyzer, Config, Packet, SourceId};
use crate::error::WireError;
use crate::reader::{CaptureReader, PacketMeta};
use crate::records::FinishedConnection;

/// The capture files `paths` stand for: files as given, directories expanded (sorted by name).
pub fn capture_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, WireError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .map_err(|source| WireError::Open { path: path.clone(), source })?;
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .map_err(|source| WireError::Open { path: path.clone(), source })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| p.is_file() && looks_like_capture(p))
            .collect();
        if found.is_empty() {
            return Err(WireError::EmptyDirectory { path: path.clone() });
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn looks_like_capture(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let name = name.to_ascii_lowercase();
    !name.starts_with('.')
        && (name.contains(".pcap") || name.contains(".cap") || name.ends_with(".gz"))
}

struct Cursor {
    reader: CaptureReader,
    source: SourceId,
    current: PacketMeta,
}

/// Analyzes files and directories as one capture; finished connections go to `sink`.
///
/// An unreadable file (missing, not a capture, broken header) is an error naming it; damage later
/// in a file is a warning in the result and the packets before it are analyzed.
pub fn analyze_paths<F: FnMut(FinishedConnection)>(
    paths: &[PathBuf],
    config: Config,
    sink: &mut F,
) -> Result<AnalysisEnd, WireError> {
    analyze_paths_with(paths, config, sink)
}

/// [`analyze_paths`] with the sink behind a reference: the packet loop is not generic, so it is
/// compiled (and optimized) here, not in the caller's crate at the caller's optimization level.
fn analyze_paths_with(
    paths: &[PathBuf],
    config: Config,
    mut sink: &mut dyn FnMut(FinishedConnection),
) -> Result<AnalysisEnd, WireError> {
    let files = capture_files(paths)?;
    let mut analyzer = Analyzer::new(config);
    // First pass: every file's first timestamp (and every header checked before any work is done).
    let mut order: Vec<(i64, usize, PathBuf)> = Vec::with_capacity(files.len());
    for (i, path) in files.into_iter().enumerate() {
        let mut reader = CaptureReader::open(&path)?;
        let first = reader.next_packet()?.map_or(i64::MIN, |m| m.ts_ns);
        order.push((first, i, path));
    }
    order.sort();
    let mut cursors: Vec<Option<Cursor>> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut waiting = order.into_iter().peekable();
    loop {
        // Open every file that starts before (or when) the earliest packet in hand.
        while let Some((first_ts, _, _)) = waiting.peek() {
            let due = match heap.peek() {
                None => true,
                Some(Reverse((ts, _))) => first_ts <= ts,
            };
            if !due {
                break;
            }
            let Some((_, _, path)) = waiting.next() else { break };
            let mut reader = CaptureReader::open(&path)?;
            let source = analyzer.add_source(&path.display().to_string());
            match reader.next_packet()? {
                Some(current) => {
                    heap.push(Reverse((current.ts_ns, cursors.len())));
                    cursors.push(Some(Cursor { reader, source, current }));
                }
                None => analyzer.add_warnings(source, reader.take_warnings()),
            }
        }
        let Some(Reverse((_, slot))) = heap.pop() else {
            break;
        };
        let Some(cursor) = cursors.get_mut(slot).and_then(Option::as_mut) else {
            continue;
        };
        // Stay on this file while it holds the earliest packet (always, for a single file): the
        // heap is only touched when another file's packet comes first.
        loop {
            let meta = cursor.current;
            let packet = Packet {
                ts_ns: meta.ts_ns,
                linktype: meta.linktype,
                interface_id: meta.interface_id,
                data: cursor.reader.data(),
                orig_len: meta.orig_len,
                source: cursor.source,
                index: meta.index,
            };
            analyzer.push(&packet, &mut sink);
            // The common record first: its metadata stays in registers (through `next_packet`'s
            // Result it went to memory and back, a store-forwarding stall per packet).
            let next = match cursor.reader.next_clean() {
                Some(meta) => Some(meta),
                None => cursor.reader.next_packet()?,
            };
            let Some(next) = next else {
                let warnings = cursor.reader.take_warnings();
                analyzer.add_warnings(cursor.source, warnings);
                cursors[slot] = None;
                break;
            };
            cursor.current = next;
            let heap_first = heap.peek().is_none_or(|Reverse((ts, _))| next.ts_ns <= *ts);
            let file_first = waiting.peek().is_none_or(|(first_ts, _, _)| next.ts_ns < *first_ts);
            if !(heap_first && file_first) {
                heap.push(Reverse((next.ts_ns, slot)));
                break;
            }
        }
    }
    Ok(analyzer.finish(&mut sink))
}
