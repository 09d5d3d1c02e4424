//! Errors of disk operations.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VdiskError {
    #[error(transparent)]
    Vhdx(#[from] vhdx::Error),
    #[error(transparent)]
    Tracking(#[from] rct::RctError),
    #[error("{path}: I/O error while {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: range offset {offset} length {len} lies past the end of the {size}-byte disk"
    )]
    OutOfRange {
        path: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("{path}: opened read-only")]
    ReadOnly { path: String },
    /// An earlier error left the disk in a state it cannot vouch for (a
    /// flush failed, so acknowledged writes may be lost); every write and
    /// flush fails until the disk is opened again.
    #[error("{path}: stopped after an earlier error ({cause}); writes and flushes fail until the disk is reopened")]
    Failed {
        path: String,
        cause: String,
        no_space: bool,
    },
}

impl VdiskError {
    /// The tracking error behind this one, if it is one.
    pub fn tracking(&self) -> Option<&rct::RctError> {
        match self {
            VdiskError::Tracking(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the medium ran out of space (ENOSPC), here or as the cause.
    pub fn is_no_space(&self) -> bool {
        match self {
            VdiskError::Vhdx(e) => e.is_storage_full(),
            VdiskError::Tracking(e) => e.is_no_space(),
            VdiskError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            VdiskError::Failed { no_space, .. } => *no_space,
            _ => false,
        }
    }

    /// Whether the failed operation left nothing half done, so issuing it
    /// again once there is space is safe (a write that found no space).
    pub fn is_retryable(&self) -> bool {
        match self {
            VdiskError::Vhdx(e) => e.is_retryable_no_space(),
            VdiskError::Io { source, op, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull && *op == "writing"
            }
            // Marks stay staged after a failed append.
            VdiskError::Tracking(e) => !matches!(e, rct::RctError::Failed { .. }),
            _ => false,
        }
    }
}

pub type Result<T, E = VdiskError> = std::result::Result<T, E>;
