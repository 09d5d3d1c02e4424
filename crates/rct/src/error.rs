//! Typed tracking errors. Each one means "this tracking cannot prove which
//! ranges changed": the caller must fall back to a full backup.

use crate::id::RctId;

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RctError {
    #[error("change tracking is disabled on {disk}; enable it with `refpoint rct enable` and take a full backup")]
    Disabled { disk: String },
    #[error("RCT ID {id} is unknown to {disk} (never issued, or tracking was reset since); a full backup is needed")]
    UnknownId { disk: String, id: String },
    #[error("RCT ID {id} of {disk} was released; a full backup is needed")]
    ReleasedId { disk: String, id: RctId },
    #[error("{0:?} is not an RCT ID (expected rct:<tracking-guid>:<8 hex digits>)")]
    MalformedId(String),
    #[error("tracking file {path} is missing; changes since any earlier RCT ID cannot be proven, a full backup is needed")]
    FileMissing { path: String },
    #[error("tracking file {path} is corrupt at offset {offset:#x}: {what}; a full backup is needed (re-enable tracking to start over)")]
    FileCorrupt {
        path: String,
        offset: u64,
        what: String,
    },
    #[error("{disk} was modified while it was not tracked (its identity is {found}, tracking last saw {expected}); a full backup is needed")]
    ModifiedWhileUntracked {
        disk: String,
        expected: String,
        found: String,
    },
    #[error(
        "range offset {offset} length {len} lies past the end of the {size}-byte virtual disk"
    )]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("invalid tracking parameter: {0}")]
    InvalidParameter(String),
    #[error("I/O error on tracking file {path} while {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// A flush of the disk failed earlier: data counted as written may be
    /// lost on the medium, so changes since any ID cannot be proven.
    #[error("changes of {disk} cannot be proven since {reason}; a full backup is needed (it starts tracking over)")]
    Unproven { disk: String, reason: String },
    /// An error left the tracking file and the tracker's memory possibly
    /// disagreeing; the tracker refuses all work until it is opened again,
    /// which settles what the file says.
    #[error("tracking of {path} stopped after an error it could not undo: {cause}")]
    Failed { path: String, cause: Box<RctError> },
}

impl RctError {
    /// A short, stable name of the error kind (for `--json` and scripts).
    pub fn kind(&self) -> &'static str {
        match self {
            RctError::Disabled { .. } => "tracking_disabled",
            RctError::UnknownId { .. } => "unknown_id",
            RctError::ReleasedId { .. } => "released_id",
            RctError::MalformedId(_) => "malformed_id",
            RctError::FileMissing { .. } => "tracking_file_missing",
            RctError::FileCorrupt { .. } => "tracking_file_corrupt",
            RctError::ModifiedWhileUntracked { .. } => "modified_while_untracked",
            RctError::OutOfRange { .. } => "out_of_range",
            RctError::InvalidParameter(_) => "invalid_parameter",
            RctError::Io { .. } => "io",
            RctError::Failed { .. } => "tracking_failed",
            RctError::Unproven { .. } => "unproven_after_io_error",
        }
    }

    /// Whether the error is a full medium (ENOSPC), here or as the cause.
    pub fn is_no_space(&self) -> bool {
        match self {
            RctError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            RctError::Failed { cause, .. } => cause.is_no_space(),
            _ => false,
        }
    }
}

pub type Result<T, E = RctError> = std::result::Result<T, E>;
