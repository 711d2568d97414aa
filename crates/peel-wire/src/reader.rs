//! A streaming reader for one capture file: classic pcap (microsecond and nanosecond, both byte
//! orders) and pcapng (several interfaces, per-interface `if_tsresol`/`if_tsoffset`, EPB/SPB/OPB),
//! optionally gzip'd. One reusable buffer holds the current packet, so reading allocates nothing
//! per packet.
//!
//! Damage is handled the way an on-call engineer needs it: a file that cannot be interpreted at all
//! is a [`WireError`] naming the file and why; damage after the first packet (a capture killed
//! mid-write, a corrupt block) becomes a [`CaptureWarning`](crate::records::CaptureWarning) with the
//! byte offset, and the packets before it are analyzed. It is not a decoder: link layers and TCP
//! are [`crate::decode`]'s job.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::WireError;
use crate::records::WarningReason;
use crate::warnings::WarningTally;

const PCAP_MAGIC_USEC: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NSEC: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_OPB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
/// Larger records are corrupt, not packets (BIG TCP jumbograms are ~80 KB; 16 MiB leaves room).
const MAX_RECORD_BYTES: u32 = 16 << 20;
const READ_BUFFER_BYTES: usize = 256 << 10;
const NANOS_PER_SEC: i64 = 1_000_000_000;

/// One packet's metadata; its bytes are [`CaptureReader::data`] until the next call to `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// Epoch nanoseconds.
    pub ts_ns: i64,
    /// LINKTYPE_* value of the interface the packet came from.
    pub linktype: u32,
    /// pcapng interface index; 0 for classic pcap.
    pub interface_id: u32,
    /// Length on the wire (may exceed the captured bytes when the snapshot length cut it).
    pub orig_len: u32,
    /// 0-based index of the packet within its file.
    pub index: u64,
    /// Byte offset of the packet's record in the (decompressed) file.
    pub offset: u64,
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    /// Timestamp units per second (10^n or 2^n from if_tsresol; default 10^6).
    units_per_sec: u64,
    offset_ns: i64,
}

#[derive(Debug)]
enum Format {
    Pcap { swapped: bool, nanos: bool, snaplen: u32, linktype: u32 },
    Pcapng { big_endian: bool, interfaces: Vec<Interface> },
}

/// Reads one capture file packet by packet.
pub struct CaptureReader {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    format: Format,
    /// Bytes consumed so far from the decompressed stream.
    offset: u64,
    buf: Vec<u8>,
    data_start: usize,
    data_len: usize,
    /// The current packet lies in the read buffer (not in `buf`) and is consumed on the next call.
    borrowed: bool,
    pending_consume: usize,
    packets: u64,
    last_ts_ns: i64,
    done: bool,
    warnings: WarningTally,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("offset", &self.offset)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

impl CaptureReader {
    /// Opens a capture file, decompressing gzip transparently, and validates its header.
    pub fn open(path: &Path) -> Result<CaptureReader, WireError> {
        let open_err = |source| WireError::Open { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(open_err)?;
        if file.metadata().map_err(open_err)?.is_dir() {
            return Err(WireError::NotACapture {
                path: path.to_path_buf(),
                reason: "it is a directory".into(),
            });
        }
        let mut prefix = [0u8; 2];
        let got = read_full(&mut file, &mut prefix).map_err(open_err)?;
        let head = Cursor::new(prefix[..got].to_vec());
        let input: Box<dyn Read + Send> = if got == 2 && prefix == [0x1f, 0x8b] {
            Box::new(MultiGzDecoder::new(head.chain(file)))
        } else {
            Box::new(head.chain(file))
        };
        Self::from_reader(path, input)
    }

    /// Reads a capture from any byte stream (already decompressed); `path` names it in messages.
    pub fn from_reader(
        path: &Path,
        input: Box<dyn Read + Send>,
    ) -> Result<CaptureReader, WireError> {
        let mut reader = CaptureReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(READ_BUFFER_BYTES, input),
            format: Format::Pcapng { big_endian: false, interfaces: Vec::new() },
            offset: 0,
            buf: Vec::with_capacity(2048),
            data_start: 0,
            data_len: 0,
            borrowed: false,
            pending_consume: 0,
            packets: 0,
            last_ts_ns: i64::MIN,
            done: false,
            warnings: WarningTally::new(path.display().to_string()),
        };
        reader.read_file_header()?;
        Ok(reader)
    }

    /// The path this reader was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current packet's captured bytes.
    pub fn data(&self) -> &[u8] {
        let range = self.data_start..self.data_start + self.data_len;
        if self.borrowed {
            self.input.buffer().get(range).unwrap_or(&[])
        } else {
            self.buf.get(range).unwrap_or(&[])
        }
    }

    /// Warnings collected so far (truncation, bad records), taken out of the reader.
    pub fn take_warnings(&mut self) -> WarningTally {
        let file = self.path.display().to_string();
        std::mem::replace(&mut self.warnings, WarningTally::new(file))
    }

    fn read_file_header(&mut self) -> Result<(), WireError> {
        let mut magic = [0u8; 4];
        let got = self.read_bytes(&mut magic)?;
        if got == 0 {
            return Err(self.not_a_capture("the file is empty".into()));
        }
        if got < 4 {
            return Err(self.not_a_capture(format!("only {got} bytes long")));
        }
        let le = u32::from_le_bytes(magic);
        let be = u32::from_be_bytes(magic);
        match (le, be) {
            (PCAP_MAGIC_USEC, _) => self.read_pcap_header(false, false),
            (PCAP_MAGIC_NSEC, _) => self.read_pcap_header(false, true),
            (_, PCAP_MAGIC_USEC) => self.read_pcap_header(true, false),
            (_, PCAP_MAGIC_NSEC) => self.read_pcap_header(true, true),
            (PCAPNG_SHB, _) => {
                let packet = self.read_shb_rest(0)?;
                debug_assert!(packet.is_none());
                Ok(())
            }
            _ => Err(self.not_a_capture(format!("unknown magic number {:02x?}", magic))),
        }
    }

    fn read_pcap_header(&mut self, swapped: bool, nanos: bool) -> Result<(), WireError> {
        let mut rest = [0u8; 20];
        let got = self.read_bytes(&mut rest)?;
        if got < 20 {
            return Err(self.bad_header(
                got as u64 + 4,
                format!("file header incomplete: {} of 24 bytes", got + 4),
            ));
        }
        let u16_at = |i: usize| {
            let b = [rest[i], rest[i + 1]];
            if swapped {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let u32_at = |i: usize| {
            let b = [rest[i], rest[i + 1], rest[i + 2], rest[i + 3]];
            if swapped {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (major, minor) = (u16_at(0), u16_at(2));
        if major != 2 || minor > 4 {
            return Err(self.bad_header(
                4,
                format!("unsupported pcap version {major}.{minor} (expected 2.0 to 2.4)"),
            ));
        }
        let snaplen = u32_at(12);
        // Upper bits carry FCS information (LINKTYPE_* is the low 16 bits).
        let linktype = u32_at(16) & 0xffff;
        self.format = Format::Pcap { swapped, nanos, snaplen, linktype };
        Ok(())
    }

    /// Reads the next packet; `Ok(None)` at the end of the file (or where damage stops reading).
    /// Inlined, so the common record's metadata reaches the caller in registers.
    #[inline(always)]
    pub fn next_packet(&mut self) -> Result<Option<PacketMeta>, WireError> {
        if let Format::Pcap { swapped, nanos, snaplen, linktype } = self.format {
            if let Some(meta) = self.next_pcap_clean(swapped, nanos, snaplen, linktype) {
                return Ok(Some(meta));
            }
        }
        self.next_packet_general()
    }

    /// The next packet if it is the common case (see `next_pcap_clean`); `None` means "ask
    /// [`CaptureReader::next_packet`]", which then reads that same record.
    #[inline(always)]
    pub(crate) fn next_clean(&mut self) -> Option<PacketMeta> {
        match self.format {
            Format::Pcap { swapped, nanos, snaplen, linktype } => {
                self.next_pcap_clean(swapped, nanos, snaplen, linktype)
            }
            Format::Pcapng { .. } => None,
        }
    }

    /// The per-packet common case of classic pcap: the whole record is in the read buffer and
    /// nothing about it is worth a warning. `None` leaves the record (unread) to the general path,
    /// which refills the buffer, copies records that straddle it, and counts what is wrong.
    #[inline(always)]
    fn next_pcap_clean(
        &mut self,
        swapped: bool,
        nanos: bool,
        snaplen: u32,
        linktype: u32,
    ) -> Option<PacketMeta> {
        if self.done {
            return None;
        }
        self.input.consume(std::mem::take(&mut self.pending_consume));
        self.borrowed = false;
        let buffer = self.input.buffer();
        let header: &[u8; 16] = buffer.get(..16)?.try_into().ok()?;
        let u32_at =
            |i: usize| u32_from(swapped, [header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (sec, frac, caplen, orig_len) = (u32_at(0), u32_at(4), u32_at(8), u32_at(12));
        let (frac_limit, frac_scale) = if nanos { (1_000_000_000, 1) } else { (1_000_000, 1_000) };
        let record_len = 16 + caplen as usize;
        if caplen > MAX_RECORD_BYTES
            || (snaplen != 0 && caplen > snaplen)
            || caplen > orig_len
            || frac >= frac_limit
            || buffer.len() < record_len
        {
            return None;
        }
        let ts_ns = i64::from(sec) * NANOS_PER_SEC + i64::from(frac) * frac_scale;
        if ts_ns < self.last_ts_ns {
            return None;
        }
        let index = self.packets;
        let offset = self.offset;
        self.packets += 1;
        self.last_ts_ns = ts_ns;
        self.borrowed = true;
        self.data_start = 16;
        self.data_len = caplen as usize;
        self.pending_consume = record_len;
        self.offset += record_len as u64;
        Some(PacketMeta { ts_ns, linktype, interface_id: 0, orig_len, index, offset })
    }

    /// Any record of any format, with every check and warning.
    #[inline(never)]
    fn next_packet_general(&mut self) -> Result<Option<PacketMeta>, WireError> {
        if self.done {
            return Ok(None);
        }
        self.input.consume(std::mem::take(&mut self.pending_consume));
        self.borrowed = false;
        let result = match self.format {
            Format::Pcap { swapped, nanos, snaplen, linktype } => {
                self.next_pcap(swapped, nanos, snaplen, linktype)
            }
            Format::Pcapng { .. } => self.next_pcapng(),
        };
        match result {
            Ok(Some(meta)) => {
                self.packets += 1;
                if meta.ts_ns < self.last_ts_ns {
                    let detail = format!(
                        "packet {} is {} ns earlier than the one before it",
                        meta.index,
                        self.last_ts_ns.saturating_sub(meta.ts_ns)
                    );
                    self.warnings.add(
                        WarningReason::TimestampBackwards,
                        Some(meta.index),
                        Some(meta.offset),
                        || detail,
                    );
                }
                self.last_ts_ns = self.last_ts_ns.max(meta.ts_ns);
                Ok(Some(meta))
            }
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(err) => {
                self.done = true;
                Err(err)
            }
        }
    }

    fn next_pcap(
        &mut self,
        swapped: bool,
        nanos: bool,
        snaplen: u32,
        linktype: u32,
    ) -> Result<Option<PacketMeta>, WireError> {
        let record_offset = self.offset;
        let mut header = [0u8; 16];
        // Fast path: the record is already in the read buffer; peek at it instead of copying.
        let buffered = match self.input.fill_buf() {
            Ok(bytes) if bytes.len() >= 16 => {
                header.copy_from_slice(&bytes[..16]);
                Some(bytes.len())
            }
            _ => None,
        };
        let got = match buffered {
            Some(_) => 16,
            None => self.read_bytes(&mut header)?,
        };
        if !self.header_complete(got, 16, record_offset, "a record header") {
            return Ok(None);
        }
        let u32_at = |i: usize| {
            let b = [header[i], header[i + 1], header[i + 2], header[i + 3]];
            if swapped {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (sec, frac, caplen, orig_len) = (u32_at(0), u32_at(4), u32_at(8), u32_at(12));
        let index = self.packets;
        if caplen > MAX_RECORD_BYTES {
            self.warnings.add(
                WarningReason::BadRecordLength,
                Some(index),
                Some(record_offset),
                || {
                    format!(
                        "record claims {caplen} captured bytes; reading of the file stopped here"
                    )
                },
            );
            return Ok(None);
        }
        if snaplen != 0 && caplen > snaplen {
            self.warnings.add(
                WarningReason::BadRecordLength,
                Some(index),
                Some(record_offset),
                || format!("captured length {caplen} exceeds the snapshot length {snaplen}"),
            );
        }
        if caplen > orig_len {
            self.warnings.add(
                WarningReason::BadRecordLength,
                Some(index),
                Some(record_offset),
                || format!("captured length {caplen} exceeds the original length {orig_len}"),
            );
        }
        let (frac_limit, frac_scale) = if nanos { (1_000_000_000, 1) } else { (1_000_000, 1_000) };
        if frac >= frac_limit {
            self.warnings.add(
                WarningReason::InvalidTimestamp,
                Some(index),
                Some(record_offset),
                || format!("sub-second field {frac} is out of range; carried into the seconds"),
            );
        }
        let ts_ns = i64::from(sec) * NANOS_PER_SEC + i64::from(frac) * frac_scale;
        let record_len = 16 + caplen as usize;
        if let Some(available) = buffered {
            if available >= record_len {
                self.borrowed = true;
                self.data_start = 16;
                self.data_len = caplen as usize;
                self.pending_consume = record_len;
                self.offset += record_len as u64;
                return Ok(Some(PacketMeta {
                    ts_ns,
                    linktype,
                    interface_id: 0,
                    orig_len,
                    index,
                    offset: record_offset,
                }));
            }
            self.input.consume(16);
            self.offset += 16;
        }
        if !self.read_packet_data(caplen as usize, record_offset)? {
            return Ok(None);
        }
        self.data_start = 0;
        self.data_len = caplen as usize;
        Ok(Some(PacketMeta {
            ts_ns,
            linktype,
            interface_id: 0,
            orig_len,
            index,
            offset: record_offset,
        }))
    }

    /// Reads `len` packet bytes into the buffer; `false` (with a warning) if the file ends first.
    fn read_packet_data(&mut self, len: usize, record_offset: u64) -> Result<bool, WireError> {
        self.buf.resize(len, 0);
        let got = read_full(&mut self.input, &mut self.buf[..len])
            .map_err(|source| self.read_error(source))?;
        self.offset += got as u64;
        if got < len {
            self.truncated(
                record_offset,
                format!("file ends inside a packet record ({got} of {len} data bytes)"),
            );
            return Ok(false);
        }
        Ok(true)
    }

    fn next_pcapng(&mut self) -> Result<Option<PacketMeta>, WireError> {
        loop {
            let block_offset = self.offset;
            let mut head = [0u8; 8];
            let got = self.read_bytes(&mut head)?;
            if !self.header_complete(got, 8, block_offset, "a block header") {
                return Ok(None);
            }
            let raw_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if raw_type == PCAPNG_SHB {
                // A new section: byte order and interfaces start over.
                match self.read_shb_after_type(block_offset, [head[4], head[5], head[6], head[7]]) {
                    Ok(()) => continue,
                    Err(err) => return self.structure_problem(err),
                }
            }
            let big_endian = match &self.format {
                Format::Pcapng { big_endian, .. } => *big_endian,
                Format::Pcap { .. } => return Ok(None),
            };
            let block_type = u32_from(big_endian, [head[0], head[1], head[2], head[3]]);
            let total_len = u32_from(big_endian, [head[4], head[5], head[6], head[7]]);
            if total_len < 12 || total_len % 4 != 0 || total_len > MAX_RECORD_BYTES {
                let err = self.bad_structure(
                    block_offset,
                    format!("block of type {block_type:#x} has an invalid length {total_len}"),
                );
                return self.structure_problem(err);
            }
            let body_len = total_len as usize - 8;
            if !self.read_block_body(body_len, block_offset)? {
                return Ok(None);
            }
            let body_len = body_len - 4; // the trailing copy of the length
            match block_type {
                PCAPNG_IDB => {
                    if let Err(err) = self.parse_idb(big_endian, body_len, block_offset) {
                        return self.structure_problem(err);
                    }
                }
                PCAPNG_EPB | PCAPNG_OPB | PCAPNG_SPB => {
                    match self.parse_packet_block(block_type, big_endian, body_len, block_offset) {
                        Ok(Some(meta)) => return Ok(Some(meta)),
                        Ok(None) => continue,
                        Err(err) => return self.structure_problem(err),
                    }
                }
                _ => continue, // NRB, ISB, DSB, custom blocks: nothing for TCP timing
            }
        }
    }

    /// Damage before the first packet is an error; after it, a warning that ends reading.
    fn structure_problem(&mut self, err: WireError) -> Result<Option<PacketMeta>, WireError> {
        if self.packets == 0 {
            return Err(err);
        }
        let (offset, detail) = match &err {
            WireError::BadStructure { offset, reason, .. }
            | WireError::BadHeader { offset, reason, .. } => (Some(*offset), reason.clone()),
            other => (None, other.to_string()),
        };
        self.warnings.add(WarningReason::MalformedBlock, None, offset, || {
            format!("{detail}; reading of the file stopped here")
        });
        Ok(None)
    }

    fn read_block_body(&mut self, body_len: usize, block_offset: u64) -> Result<bool, WireError> {
        self.buf.resize(body_len, 0);
        let got = read_full(&mut self.input, &mut self.buf[..body_len])
            .map_err(|source| self.read_error(source))?;
        self.offset += got as u64;
        if got < body_len {
            self.truncated(
                block_offset,
                format!("file ends inside a block ({} of {} bytes)", got + 8, body_len + 8),
            );
            return Ok(false);
        }
        Ok(true)
    }

    /// The first section header, right after the 4-byte magic of the file.
    fn read_shb_rest(&mut self, block_offset: u64) -> Result<Option<PacketMeta>, WireError> {
        let mut len = [0u8; 4];
        let got = self.read_bytes(&mut len)?;
        if got < 4 {
            return Err(self.bad_header(
                self.offset,
                "file ends inside the pcapng section header block".into(),
            ));
        }
        self.read_shb_after_type(block_offset, len)?;
        Ok(None)
    }

    fn read_shb_after_type(
        &mut self,
        block_offset: u64,
        len_bytes: [u8; 4],
    ) -> Result<(), WireError> {
        let mut bom = [0u8; 4];
        let got = self.read_bytes(&mut bom)?;
        if got < 4 {
            return Err(self.bad_header(
                self.offset,
                "file ends inside the pcapng section header block".into(),
            ));
        }
        let big_endian = match (u32::from_le_bytes(bom), u32::from_be_bytes(bom)) {
            (PCAPNG_BOM, _) => false,
            (_, PCAPNG_BOM) => true,
            _ => {
                return Err(self.bad_header(
                    block_offset + 8,
                    format!("pcapng byte-order magic is {bom:02x?}, not 1a2b3c4d"),
                ))
            }
        };
        let total_len = u32_from(big_endian, len_bytes);
        // type, length, BOM, version (4), section length (8), trailing length: 28 bytes at least.
        if total_len < 28 || total_len % 4 != 0 || total_len > MAX_RECORD_BYTES {
            return Err(self.bad_header(
                block_offset + 4,
                format!("section header block length {total_len} is invalid (at least 28, a multiple of 4)"),
            ));
        }
        let rest = total_len as usize - 12;
        self.buf.resize(rest, 0);
        let got = read_full(&mut self.input, &mut self.buf[..rest])
            .map_err(|source| self.read_error(source))?;
        self.offset += got as u64;
        if got < rest {
            return Err(self.bad_header(
                block_offset,
                format!(
                    "file ends inside the section header block ({} of {total_len} bytes)",
                    got + 12
                ),
            ));
        }
        let major = u16_from(big_endian, [self.buf[0], self.buf[1]]);
        if major != 1 {
            return Err(
                self.bad_header(block_offset + 12, format!("unsupported pcapng version {major}"))
            );
        }
        // Options run from byte 12 of the remaining body up to the trailing length.
        if let Err(reason) = walk_options(big_endian, &self.buf[12..rest - 4], |_, _| Ok(())) {
            self.warnings.add(WarningReason::MalformedBlock, None, Some(block_offset), || {
                format!("section header options: {reason}; options ignored")
            });
        }
        self.format = Format::Pcapng { big_endian, interfaces: Vec::new() };
        Ok(())
    }

    fn parse_idb(
        &mut self,
        big_endian: bool,
        body_len: usize,
        block_offset: u64,
    ) -> Result<(), WireError> {
        if body_len < 8 {
            return Err(
                self.bad_structure(block_offset, "interface description block too short".into())
            );
        }
        let body = &self.buf[..body_len];
        let linktype = u32::from(u16_from(big_endian, [body[0], body[1]]));
        let snaplen = u32_from(big_endian, [body[4], body[5], body[6], body[7]]);
        let mut units_per_sec = 1_000_000u64;
        let mut offset_ns = 0i64;
        let options = walk_options(big_endian, &body[8..], |code, value| {
            match code {
                9 => {
                    let Some(&resol) = value.first() else {
                        return Err("if_tsresol option is empty".into());
                    };
                    let exponent = u32::from(resol & 0x7f);
                    let units = if resol & 0x80 == 0 {
                        10u64.checked_pow(exponent)
                    } else {
                        2u64.checked_pow(exponent)
                    };
                    units_per_sec = units.ok_or_else(|| {
                        format!("if_tsresol {resol:#04x} is finer than peel can represent")
                    })?;
                }
                14 if value.len() == 8 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(value);
                    let secs =
                        if big_endian { i64::from_be_bytes(b) } else { i64::from_le_bytes(b) };
                    offset_ns = secs.saturating_mul(NANOS_PER_SEC);
                }
                _ => {}
            }
            Ok(())
        });
        if let Err(reason) = options {
            return Err(
                self.bad_structure(block_offset, format!("interface description block: {reason}"))
            );
        }
        if let Format::Pcapng { interfaces, .. } = &mut self.format {
            interfaces.push(Interface { linktype, snaplen, units_per_sec, offset_ns });
        }
        Ok(())
    }

    fn parse_packet_block(
        &mut self,
        block_type: u32,
        big_endian: bool,
        body_len: usize,
        block_offset: u64,
    ) -> Result<Option<PacketMeta>, WireError> {
        let interfaces = match &self.format {
            Format::Pcapng { interfaces, .. } => interfaces,
            Format::Pcap { .. } => return Ok(None),
        };
        let body = &self.buf[..body_len];
        let u32_at =
            |i: usize| u32_from(big_endian, [body[i], body[i + 1], body[i + 2], body[i + 3]]);
        let index = self.packets;
        let (interface_id, ts_units, caplen, orig_len, data_start) = match block_type {
            PCAPNG_SPB => {
                if body_len < 4 {
                    return Err(
                        self.bad_structure(block_offset, "simple packet block too short".into())
                    );
                }
                let orig_len = u32_at(0);
                let snaplen = interfaces.first().map_or(0, |i| i.snaplen);
                let mut caplen = orig_len.min((body_len - 4) as u32);
                if snaplen != 0 {
                    caplen = caplen.min(snaplen);
                }
                (0u32, None, caplen, orig_len, 4usize)
            }
            _ => {
                if body_len < 20 {
                    return Err(self.bad_structure(block_offset, "packet block too short".into()));
                }
                let interface_id = if block_type == PCAPNG_OPB {
                    u32::from(u16_from(big_endian, [body[0], body[1]]))
                } else {
                    u32_at(0)
                };
                let ts = (u64::from(u32_at(4)) << 32) | u64::from(u32_at(8));
                (interface_id, Some(ts), u32_at(12), u32_at(16), 20usize)
            }
        };
        let Some(interface) = interfaces.get(interface_id as usize).copied() else {
            return Err(self.bad_structure(
                block_offset,
                format!(
                    "packet block refers to interface {interface_id}, but only {} interface description block(s) came before it",
                    interfaces.len()
                ),
            ));
        };
        if data_start + caplen as usize > body_len {
            return Err(self.bad_structure(
                block_offset,
                format!("packet block claims {caplen} captured bytes, more than the block holds"),
            ));
        }
        if caplen > orig_len {
            self.warnings.add(
                WarningReason::BadRecordLength,
                Some(index),
                Some(block_offset),
                || format!("captured length {caplen} exceeds the original length {orig_len}"),
            );
        }
        let ts_ns = match ts_units {
            Some(units) => {
                units_to_ns(units, interface.units_per_sec).saturating_add(interface.offset_ns)
            }
            // A simple packet block has no timestamp: it happened no earlier than the one before.
            None => self.last_ts_ns.max(0),
        };
        self.data_start = data_start;
        self.data_len = caplen as usize;
        Ok(Some(PacketMeta {
            ts_ns,
            linktype: interface.linktype,
            interface_id,
            orig_len,
            index,
            offset: block_offset,
        }))
    }

    fn read_bytes(&mut self, out: &mut [u8]) -> Result<usize, WireError> {
        let got = read_full(&mut self.input, out).map_err(|source| self.read_error(source))?;
        self.offset += got as u64;
        Ok(got)
    }

    /// Whether `got` of the `need` header bytes make a header; at a clean end of file (0 bytes) it
    /// is simply not, and a partial header is counted as a truncated file.
    /// Inlined: it runs once a record, and is true but at the file's end.
    #[inline]
    fn header_complete(&mut self, got: usize, need: usize, offset: u64, what: &str) -> bool {
        if got >= need {
            return true;
        }
        if got > 0 {
            self.header_cut(got, need, offset, what);
        }
        false
    }

    #[cold]
    fn header_cut(&mut self, got: usize, need: usize, offset: u64, what: &str) {
        self.truncated(offset, format!("file ends inside {what} ({got} of {need} bytes)"));
    }

    fn truncated(&mut self, offset: u64, detail: String) {
        let index = self.packets;
        self.warnings.add(WarningReason::TruncatedFile, Some(index), Some(offset), || detail);
    }

    fn read_error(&self, source: io::Error) -> WireError {
        WireError::Read { path: self.path.clone(), offset: self.offset, source }
    }

    fn not_a_capture(&self, reason: String) -> WireError {
        WireError::NotACapture { path: self.path.clone(), reason }
    }

    fn bad_header(&self, offset: u64, reason: String) -> WireError {
        WireError::BadHeader { path: self.path.clone(), offset, reason }
    }

    fn bad_structure(&self, offset: u64, reason: String) -> WireError {
        WireError::BadStructure { path: self.path.clone(), offset, reason }
    }
}

/// Calls `visit(code, value)` for each pcapng option until opt_endofopt or the end of `options`.
fn walk_options(
    big_endian: bool,
    options: &[u8],
    mut visit: impl FnMut(u16, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = 0usize;
    while at + 4 <= options.len() {
        let code = u16_from(big_endian, [options[at], options[at + 1]]);
        let len = usize::from(u16_from(big_endian, [options[at + 2], options[at + 3]]));
        if code == 0 {
            return Ok(());
        }
        let start = at + 4;
        let Some(value) = options.get(start..start + len) else {
            return Err(format!("option {code} is {len} bytes long, longer than its block"));
        };
        visit(code, value)?;
        at = start + len.div_ceil(4) * 4;
    }
    Ok(())
}

fn units_to_ns(units: u64, units_per_sec: u64) -> i64 {
    if units_per_sec == 0 {
        return 0;
    }
    let ns = u128::from(units) * 1_000_000_000 / u128::from(units_per_sec);
    i64::try_from(ns).unwrap_or(i64::MAX)
}

fn u32_from(big_endian: bool, b: [u8; 4]) -> u32 {
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

fn u16_from(big_endian: bool, b: [u8; 2]) -> u16 {
    if big_endian {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

/// Reads until `out` is full or the stream ends; a gzip stream cut short counts as its end.
fn read_full(input: &mut impl Read, out: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < out.len() {
        match input.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: Vec<u8>) -> Result<CaptureReader, WireError> {
        CaptureReader::from_reader(Path::new("t.pcap"), Box::new(Cursor::new(bytes)))
    }

    fn pcap_header(big_endian: bool, magic: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let fields: [u32; 6] = [magic, (4 << 16) | 2, 0, 0, 65535, 1];
        for (i, v) in fields.iter().enumerate() {
            // version is two u16: major then minor
            if i == 1 {
                let (major, minor) = (2u16, 4u16);
                if big_endian {
                    out.extend(major.to_be_bytes());
                    out.extend(minor.to_be_bytes());
                } else {
                    out.extend(major.to_le_bytes());
                    out.extend(minor.to_le_bytes());
                }
                continue;
            }
            out.extend(if big_endian { v.to_be_bytes() } else { v.to_le_bytes() });
        }
        out
    }

    fn record(big_endian: bool, sec: u32, frac: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [sec, frac, data.len() as u32, data.len() as u32] {
            out.extend(if big_endian { v.to_be_bytes() } else { v.to_le_bytes() });
        }
        out.extend(data);
        out
    }

    #[test]
    fn pcap_in_all_four_flavours_gives_nanosecond_timestamps() {
        let cases = [
            (false, PCAP_MAGIC_USEC, 123_456u32, 7_123_456_000i64),
            (true, PCAP_MAGIC_USEC, 123_456, 7_123_456_000),
            (false, PCAP_MAGIC_NSEC, 123_456_789, 7_123_456_789),
            (true, PCAP_MAGIC_NSEC, 123_456_789, 7_123_456_789),
        ];
        for (big_endian, magic, frac, want_ns) in cases {
            let mut bytes = pcap_header(big_endian, magic);
            bytes.extend(record(big_endian, 7, frac, b"abc"));
            let mut r = reader(bytes).unwrap();
            let meta = r.next_packet().unwrap().unwrap();
            assert_eq!((meta.ts_ns, meta.linktype, r.data()), (want_ns, 1, &b"abc"[..]));
            assert_eq!(r.next_packet().unwrap(), None);
        }
    }

    #[test]
    fn truncated_record_keeps_earlier_packets_and_warns_with_offset() {
        let mut bytes = pcap_header(false, PCAP_MAGIC_USEC);
        bytes.extend(record(false, 1, 0, b"first"));
        let cut = record(false, 2, 0, b"second");
        bytes.extend(&cut[..cut.len() - 2]);
        let mut r = reader(bytes).unwrap();
        assert!(r.next_packet().unwrap().is_some());
        assert_eq!(r.next_packet().unwrap(), None);
        let warnings = r.take_warnings().into_records();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].reason, WarningReason::TruncatedFile);
        assert_eq!(warnings[0].byte_offset, Some(24 + 16 + 5));
        assert_eq!(warnings[0].packet_index, Some(1));
    }

    #[test]
    fn bad_headers_are_errors_that_say_why() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "the file is empty"),
            (
                pcap_header(false, PCAP_MAGIC_USEC)[..23].to_vec(),
                "file header incomplete: 23 of 24",
            ),
            (b"GET / HTTP/1.1\r\n".to_vec(), "unknown magic number"),
        ];
        for (bytes, want) in cases {
            let err = reader(bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
            assert!(err.contains("t.pcap"), "{err}");
        }
    }

    #[test]
    fn pcapng_tsresol_and_interfaces() {
        let mut b = Vec::new();
        let block = |b: &mut Vec<u8>, kind: u32, body: &[u8]| {
            let len = (12 + body.len()) as u32;
            b.extend(kind.to_le_bytes());
            b.extend(len.to_le_bytes());
            b.extend(body);
            b.extend(len.to_le_bytes());
        };
        let mut shb = Vec::new();
        shb.extend(PCAPNG_BOM.to_le_bytes());
        shb.extend(1u16.to_le_bytes());
        shb.extend(0u16.to_le_bytes());
        shb.extend((-1i64).to_le_bytes());
        block(&mut b, PCAPNG_SHB, &shb);
        // interface 0: default microseconds; interface 1: nanoseconds (tsresol 9)
        let mut idb0 = Vec::new();
        idb0.extend(1u16.to_le_bytes());
        idb0.extend(0u16.to_le_bytes());
        idb0.extend(0u32.to_le_bytes());
        block(&mut b, PCAPNG_IDB, &idb0);
        let mut idb1 = Vec::new();
        idb1.extend(113u16.to_le_bytes());
        idb1.extend(0u16.to_le_bytes());
        idb1.extend(0u32.to_le_bytes());
        idb1.extend([9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        block(&mut b, PCAPNG_IDB, &idb1);
        let epb = |iface: u32, ts: u64| {
            let mut e = Vec::new();
            e.extend(iface.to_le_bytes());
            e.extend(((ts >> 32) as u32).to_le_bytes());
            e.extend((ts as u32).to_le_bytes());
            e.extend(2u32.to_le_bytes());
            e.extend(2u32.to_le_bytes());
            e.extend([0xaa, 0xbb, 0, 0]);
            e
        };
        block(&mut b, PCAPNG_EPB, &epb(0, 1_500_000));
        block(&mut b, PCAPNG_EPB, &epb(1, 1_500_000_001));
        let mut r = reader(b).unwrap();
        let first = r.next_packet().unwrap().unwrap();
        assert_eq!((first.ts_ns, first.linktype, first.interface_id), (1_500_000_000, 1, 0));
        assert_eq!(r.data(), &[0xaa, 0xbb]);
        let second = r.next_packet().unwrap().unwrap();
        assert_eq!((second.ts_ns, second.linktype, second.interface_id), (1_500_000_001, 113, 1));
        assert_eq!(r.next_packet().unwrap(), None);
    }
}
