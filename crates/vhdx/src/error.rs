//! Typed errors. Every corruption has its own [`Corruption`] variant; the
//! [`Error`] that carries it names the file and the offset.

use std::io;
use uuid::Uuid;

/// One violation of MS-VHDX found in a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("the file type identifier signature is not \"vhdxfile\" (not a VHDX file)")]
    BadFileSignature,
    #[error("header has a bad signature")]
    BadHeaderSignature,
    #[error("header checksum mismatch")]
    BadHeaderChecksum,
    #[error("no valid header: both copies have a bad signature or checksum")]
    NoValidHeader,
    #[error("header Version is {0}, only 1 is defined")]
    UnsupportedVersion(u16),
    #[error("header LogVersion is {0}, only 0 is defined, and the log is not empty")]
    UnsupportedLogVersion(u16),
    #[error("log at {offset:#x} length {length:#x} is not 1 MB aligned, overlaps the header section or lies past the end of the file")]
    BadLogLocation { offset: u64, length: u32 },
    #[error("region table has a bad signature")]
    BadRegionTableSignature,
    #[error("region table checksum mismatch")]
    BadRegionTableChecksum,
    #[error("region table EntryCount {0} exceeds 2047")]
    TooManyRegions(u32),
    #[error("no valid region table: both copies are damaged")]
    NoValidRegionTable,
    #[error("region {0} is listed twice")]
    DuplicateRegion(Uuid),
    #[error("region {guid} at {offset:#x} length {length:#x} is not 1 MB aligned, lies inside the header section or ends past the largest file offset")]
    BadRegionLocation {
        guid: Uuid,
        offset: u64,
        length: u32,
    },
    #[error("required region {0} is not known to this implementation")]
    UnknownRequiredRegion(Uuid),
    #[error("required region {0} (BAT or metadata) is missing")]
    MissingRegion(Uuid),
    #[error("region {guid} at {offset:#x} length {length:#x} lies past the end of the file ({file_len:#x}): it was truncated")]
    RegionPastEof {
        guid: Uuid,
        offset: u64,
        length: u32,
        file_len: u64,
    },
    #[error("objects overlap: {0}")]
    Overlap(String),
    #[error("metadata table has a bad signature")]
    BadMetadataSignature,
    #[error("metadata table EntryCount {0} exceeds 2047")]
    TooManyMetadataEntries(u16),
    #[error("more than 1024 user metadata items")]
    TooManyUserMetadataEntries,
    #[error("metadata item {0} is listed twice")]
    DuplicateMetadataItem(Uuid),
    #[error("metadata item {item} at offset {offset:#x} length {length:#x} does not fit the metadata region or overlaps the table")]
    BadMetadataItemLocation {
        item: Uuid,
        offset: u32,
        length: u32,
    },
    #[error("required metadata item {0} is not known to this implementation")]
    UnknownRequiredMetadata(Uuid),
    #[error("required metadata item {0} is missing")]
    MissingMetadata(&'static str),
    #[error("metadata item {item} has invalid value: {why}")]
    BadMetadataValue { item: &'static str, why: String },
    #[error("parent locator is malformed: {0}")]
    BadParentLocator(String),
    #[error("BAT region is {have} bytes, {need} are needed for this disk")]
    BatTooSmall { have: u64, need: u64 },
    #[error("BAT entry {index} has invalid state {state} for a {disk_type} disk")]
    BadBatState {
        index: usize,
        state: u8,
        disk_type: &'static str,
    },
    #[error("BAT entry {index} has nonzero reserved bits")]
    BatReservedBits { index: usize },
    #[error("BAT entry {index} points to {offset:#x}, inside the header section")]
    BatInHeaderSection { index: usize, offset: u64 },
    #[error("BAT entry {index} points to {offset:#x}, past the end of the file ({file_len:#x})")]
    BatPastEof {
        index: usize,
        offset: u64,
        file_len: u64,
    },
    #[error(
        "payload block {block} is partially present but its sector bitmap block is not present"
    )]
    PartialWithoutBitmap { block: u64 },
    #[error("the log is not empty but holds no valid, complete log sequence")]
    NoValidLogSequence,
    #[error("the file is {file_len:#x} bytes, shorter than the log's FlushedFileOffset {flushed:#x}: it was truncated")]
    Truncated { file_len: u64, flushed: u64 },
    #[error("log entry descriptor writes to {offset:#x}, inside the header section")]
    LogWriteInHeaderSection { offset: u64 },
    #[error("the log would grow the file from {file_len:#x} to {needed:#x} bytes, more than a log entry can account for: the log is corrupt")]
    LogGrowsFile { file_len: u64, needed: u64 },
}

/// What went wrong in a `vhdx` operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process (or handle) has the file open for writing.
    #[error("{file} is open for writing elsewhere (a running `refpoint serve`, or another tool holds its lock); stop that writer, or go through the daemon")]
    Locked { file: String },
    #[error("{file}: I/O error while {op} at offset {offset:#x}: {source}")]
    Io {
        file: String,
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{file}: corrupt VHDX at file offset {offset:#x}: {kind} (run `refpoint vhd check` for a full report)")]
    Corrupt {
        file: String,
        offset: u64,
        kind: Corruption,
    },
    #[error("{file}: {what} is not supported")]
    Unsupported { file: String, what: String },
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("{file}: range offset {offset} length {len} lies past the end of the {size}-byte virtual disk")]
    OutOfRange {
        file: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("{file}: opened read-only; open it writable to modify it")]
    ReadOnly { file: String },
    #[error("{file}: parent disk not found; tried {tried:?}. Move the parent back or re-point the child")]
    ParentNotFound { file: String, tried: Vec<String> },
    #[error("{file}: parent {parent} has DataWriteGuid {found}, but the child expects {expected}: the parent was modified after the child was created, so the chain is not consistent")]
    ParentMismatch {
        file: String,
        parent: String,
        expected: Uuid,
        found: Uuid,
    },
    #[error("{file}: {why}")]
    BadChain { file: String, why: String },
}

impl Error {
    /// The corruption this error reports, if it is one.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Error::Corrupt { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Whether the medium ran out of space.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }

    /// Whether this is a payload write (or the file extension before it)
    /// that found no space: nothing of it is recorded in the file's
    /// metadata, so the same write can be issued again once there is space.
    /// Errors of a flush are never such: a failed flush may have lost
    /// earlier writes.
    pub fn is_retryable_no_space(&self) -> bool {
        matches!(self, Error::Io { source, op, .. }
            if source.kind() == io::ErrorKind::StorageFull
                && matches!(*op, "writing payload" | "extending the file"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
