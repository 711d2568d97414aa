//! Counting problems per (file, reason) instead of failing: a capture with a thousand cut packets
//! yields one warning row saying "1000 times, first at packet N", not a thousand lines.

use crate::records::{CaptureWarning, WarningReason};

/// Warnings of one file (or live source), one entry per reason, in order of first occurrence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WarningTally {
    file: String,
    entries: Vec<CaptureWarning>,
}

impl WarningTally {
    /// An empty tally for `file` (empty string for live capture).
    pub fn new(file: String) -> WarningTally {
        WarningTally { file, entries: Vec::new() }
    }

    /// Counts one occurrence; `detail` is only built for the first occurrence of a reason.
    pub fn add(
        &mut self,
        reason: WarningReason,
        packet_index: Option<u64>,
        byte_offset: Option<u64>,
        detail: impl FnOnce() -> String,
    ) {
        self.add_many(reason, 1, packet_index, byte_offset, detail);
    }

    /// Counts `count` occurrences at once.
    pub fn add_many(
        &mut self,
        reason: WarningReason,
        count: u64,
        packet_index: Option<u64>,
        byte_offset: Option<u64>,
        detail: impl FnOnce() -> String,
    ) {
        if count == 0 {
            return;
        }
        if let Some(entry) = self.entries.iter_mut().find(|e| e.reason == reason) {
            entry.count += count;
            return;
        }
        self.entries.push(CaptureWarning {
            file: self.file.clone(),
            packet_index,
            reason,
            count,
            byte_offset,
            detail: Some(detail()),
        });
    }

    /// Adds every entry of `other` into this tally (same file or not: entries keep their file).
    pub fn merge(&mut self, other: WarningTally) {
        for entry in other.entries {
            match self.entries.iter_mut().find(|e| e.reason == entry.reason && e.file == entry.file)
            {
                Some(mine) => mine.count += entry.count,
                None => self.entries.push(entry),
            }
        }
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The warning rows.
    pub fn into_records(self) -> Vec<CaptureWarning> {
        self.entries
    }

    /// The warning rows, borrowed.
    pub fn records(&self) -> &[CaptureWarning] {
        &self.entries
    }
}
