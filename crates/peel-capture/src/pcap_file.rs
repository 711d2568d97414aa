//! Writes classic pcap files (nanosecond or microsecond magic) and rotates them as a ring.
//!
//! peel writes the format itself instead of using libpcap's `pcap_dump`: `pcap_dump` swallows
//! write errors (a full disk would go unnoticed and the files would silently end), and opening the
//! next file of a ring needs the capture handle that `pcap_dispatch` is borrowing. The format is
//! small and fixed (a 24-byte header, then 16 bytes + data per packet). Reading files is
//! peel-wire's job, not this module's.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::config::RingSpec;

/// Size of the pcap global header.
pub const GLOBAL_HEADER_BYTES: u64 = 24;
/// Size of a pcap packet record header.
pub const RECORD_HEADER_BYTES: u64 = 16;

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Resolution of the timestamps given to [`PcapWriter::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampPrecision {
    /// The sub-second field counts microseconds.
    Micros,
    /// The sub-second field counts nanoseconds.
    Nanos,
}

/// One file peel wrote (or is writing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes, header included.
    pub bytes: u64,
    /// Packets in it.
    pub packets: u64,
}

/// The header fields every file of one capture shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileFormat {
    pub(crate) linktype: i32,
    pub(crate) snaplen_bytes: u32,
    pub(crate) precision: TimestampPrecision,
}

/// A single pcap file being written, in native byte order (as libpcap writes).
#[derive(Debug)]
pub(crate) struct PcapWriter {
    out: BufWriter<File>,
    file: WrittenFile,
}

impl PcapWriter {
    pub(crate) fn create(path: &Path, format: FileFormat) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, File::create(path)?);
        let magic = match format.precision {
            TimestampPrecision::Micros => MAGIC_MICROS,
            TimestampPrecision::Nanos => MAGIC_NANOS,
        };
        out.write_all(&magic.to_ne_bytes())?;
        out.write_all(&2u16.to_ne_bytes())?; // version major
        out.write_all(&4u16.to_ne_bytes())?; // version minor
        out.write_all(&0i32.to_ne_bytes())?; // thiszone: timestamps are UTC
        out.write_all(&0u32.to_ne_bytes())?; // sigfigs
        out.write_all(&format.snaplen_bytes.to_ne_bytes())?;
        // The link type is never negative (libpcap's DLT/LINKTYPE values).
        out.write_all(&(format.linktype as u32).to_ne_bytes())?;
        let file = WrittenFile { path: path.to_path_buf(), bytes: GLOBAL_HEADER_BYTES, packets: 0 };
        Ok(PcapWriter { out, file })
    }

    /// Appends one packet; `ts_frac` is micro- or nanoseconds as the file's precision says.
    pub(crate) fn write(
        &mut self,
        ts_sec: u32,
        ts_frac: u32,
        orig_len: u32,
        data: &[u8],
    ) -> std::io::Result<()> {
        // Callers never pass more than the snaplen (at most 262144), so the length fits in u32.
        let caplen = data.len() as u32;
        self.out.write_all(&ts_sec.to_ne_bytes())?;
        self.out.write_all(&ts_frac.to_ne_bytes())?;
        self.out.write_all(&caplen.to_ne_bytes())?;
        self.out.write_all(&orig_len.to_ne_bytes())?;
        self.out.write_all(data)?;
        self.file.bytes += RECORD_HEADER_BYTES + u64::from(caplen);
        self.file.packets += 1;
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Flushes and closes the file, returning what was written.
    pub(crate) fn finish(mut self) -> std::io::Result<WrittenFile> {
        self.out.flush()?;
        Ok(self.file)
    }
}

/// Files of one interface: a new file when the current one would pass the ring's size, the oldest
/// deleted when there would be more than the ring's count.
#[derive(Debug)]
pub(crate) struct RingWriter {
    format: FileFormat,
    ring: Option<RingSpec>,
    /// Path prefix: files are `<prefix>-<seq>.pcap`.
    prefix: PathBuf,
    next_seq: u32,
    current: Option<PcapWriter>,
    kept: VecDeque<WrittenFile>,
    deleted_files: u64,
}

impl RingWriter {
    pub(crate) fn new(prefix: PathBuf, format: FileFormat, ring: Option<RingSpec>) -> Self {
        RingWriter {
            format,
            ring,
            prefix,
            next_seq: 1,
            current: None,
            kept: VecDeque::new(),
            deleted_files: 0,
        }
    }

    /// Path of the file with sequence number `seq`.
    pub(crate) fn file_path(&self, seq: u32) -> PathBuf {
        let mut name = self.prefix.as_os_str().to_owned();
        name.push(format!("-{seq:05}.pcap"));
        PathBuf::from(name)
    }

    /// Opens the first file, so a capture that sees no packet still leaves a readable file.
    pub(crate) fn open_first(&mut self) -> Result<(), (PathBuf, std::io::Error)> {
        self.rotate()
    }

    pub(crate) fn write(
        &mut self,
        ts_sec: u32,
        ts_frac: u32,
        orig_len: u32,
        data: &[u8],
    ) -> Result<(), (PathBuf, std::io::Error)> {
        let record_bytes = RECORD_HEADER_BYTES + data.len() as u64;
        let full = match (&self.current, self.ring) {
            (None, _) => true,
            (Some(current), Some(ring)) => {
                current.file.packets > 0 && current.file.bytes + record_bytes > ring.file_size_bytes
            }
            (Some(_), None) => false,
        };
        if full {
            self.rotate()?;
        }
        match self.current.as_mut() {
            Some(current) => current
                .write(ts_sec, ts_frac, orig_len, data)
                .map_err(|e| (current.file.path.clone(), e)),
            // rotate() either opened a file or returned its error above.
            None => Err((self.prefix.clone(), std::io::Error::other("no open capture file"))),
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), (PathBuf, std::io::Error)> {
        match self.current.as_mut() {
            Some(current) => current.flush().map_err(|e| (current.file.path.clone(), e)),
            None => Ok(()),
        }
    }

    fn rotate(&mut self) -> Result<(), (PathBuf, std::io::Error)> {
        self.close_current()?;
        if let Some(ring) = self.ring {
            while self.kept.len() >= ring.file_count as usize {
                let Some(oldest) = self.kept.pop_front() else { break };
                std::fs::remove_file(&oldest.path).map_err(|e| (oldest.path.clone(), e))?;
                self.deleted_files += 1;
            }
        }
        let path = self.file_path(self.next_seq);
        self.next_seq += 1;
        let writer = PcapWriter::create(&path, self.format).map_err(|e| (path.clone(), e))?;
        self.current = Some(writer);
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), (PathBuf, std::io::Error)> {
        let Some(current) = self.current.take() else { return Ok(()) };
        let path = current.file.path.clone();
        let file = current.finish().map_err(|e| (path, e))?;
        self.kept.push_back(file);
        Ok(())
    }

    /// Closes the open file and says what is left on disk.
    pub(crate) fn finish(mut self) -> Result<RingOutcome, (PathBuf, std::io::Error)> {
        self.close_current()?;
        Ok(RingOutcome {
            files: self.kept.into_iter().collect(),
            deleted_files: self.deleted_files,
        })
    }
}

/// What a [`RingWriter`] left on disk.
#[derive(Debug)]
pub(crate) struct RingOutcome {
    pub(crate) files: Vec<WrittenFile>,
    pub(crate) deleted_files: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: FileFormat =
        FileFormat { linktype: 1, snaplen_bytes: 256, precision: TimestampPrecision::Nanos };

    #[test]
    fn header_and_records_are_pcap_nanos() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.pcap");
        let mut writer = PcapWriter::create(&path, FORMAT).unwrap();
        writer.write(1_700_000_000, 123_456_789, 1500, &[0xaa; 10]).unwrap();
        let file = writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(file.bytes, bytes.len() as u64);
        assert_eq!(file.packets, 1);
        assert_eq!(bytes.len(), 24 + 16 + 10);
        let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(word(0), MAGIC_NANOS);
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 2);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), 4);
        assert_eq!(word(16), 256, "snaplen");
        assert_eq!(word(20), 1, "linktype");
        assert_eq!(
            [word(24), word(28), word(32), word(36)],
            [1_700_000_000, 123_456_789, 10, 1500]
        );
        assert_eq!(&bytes[40..], &[0xaa; 10]);
    }

    #[test]
    fn libpcap_reads_what_we_write_with_nanosecond_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-back.pcap");
        let mut writer = PcapWriter::create(&path, FORMAT).unwrap();
        writer.write(7, 999_999_999, 60, &[1, 2, 3]).unwrap();
        writer.write(8, 1, 3, &[4, 5, 6]).unwrap();
        writer.finish().unwrap();

        let mut cap =
            pcap::Capture::from_file_with_precision(&path, pcap::Precision::Nano).unwrap();
        assert_eq!(cap.get_datalink(), pcap::Linktype(1));
        let first = cap.next_packet().unwrap();
        assert_eq!((first.header.ts.tv_sec, first.header.ts.tv_usec), (7, 999_999_999));
        assert_eq!((first.header.caplen, first.header.len, first.data), (3, 60, &[1u8, 2, 3][..]));
        let second = cap.next_packet().unwrap();
        assert_eq!((second.header.ts.tv_sec, second.header.ts.tv_usec), (8, 1));
        assert!(matches!(cap.next_packet(), Err(pcap::Error::NoMorePackets)));
    }

    #[test]
    fn ring_keeps_at_most_count_files_of_at_most_size() {
        let dir = tempfile::tempdir().unwrap();
        // Header 24 + 3 records of 16 + 100 = 372 bytes per file at most.
        let ring = RingSpec { file_size_bytes: 400, file_count: 3 };
        let mut writer = RingWriter::new(dir.path().join("lo-1"), FORMAT, Some(ring));
        writer.open_first().unwrap();
        for n in 0..20u32 {
            writer.write(n, 0, 100, &[0u8; 100]).unwrap();
        }
        let outcome = writer.finish().unwrap();
        let names: Vec<String> = outcome
            .files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        // 20 packets, 3 per file: files 1..=7, of which the newest 3 are kept.
        assert_eq!(names, ["lo-1-00005.pcap", "lo-1-00006.pcap", "lo-1-00007.pcap"]);
        let packets: Vec<u64> = outcome.files.iter().map(|f| f.packets).collect();
        assert_eq!(packets, [3, 3, 2]);
        assert_eq!(outcome.deleted_files, 4);
        let mut on_disk: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap()).collect();
        on_disk.sort_by_key(|e| e.file_name());
        assert_eq!(on_disk.len(), 3);
        for (entry, file) in on_disk.iter().zip(&outcome.files) {
            assert_eq!(entry.metadata().unwrap().len(), file.bytes);
            assert!(file.bytes <= 400);
        }
    }

    #[test]
    fn a_packet_larger_than_the_ring_size_still_gets_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let ring = RingSpec { file_size_bytes: 50, file_count: 2 };
        let mut writer = RingWriter::new(dir.path().join("x"), FORMAT, Some(ring));
        writer.write(1, 0, 100, &[0u8; 100]).unwrap();
        writer.write(2, 0, 100, &[0u8; 100]).unwrap();
        let outcome = writer.finish().unwrap();
        assert_eq!(outcome.files.iter().map(|f| f.packets).collect::<Vec<_>>(), [1, 1]);
    }

    #[test]
    fn without_ring_one_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = RingWriter::new(dir.path().join("any-5"), FORMAT, None);
        writer.open_first().unwrap();
        for n in 0..100u32 {
            writer.write(n, 0, 100, &[0u8; 100]).unwrap();
        }
        let outcome = writer.finish().unwrap();
        assert_eq!(outcome.files.len(), 1);
        assert_eq!(outcome.files[0].bytes, 24 + 100 * 116);
        assert_eq!(outcome.files[0].packets, 100);
        assert_eq!(outcome.deleted_files, 0);
    }
}
