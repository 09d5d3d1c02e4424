//! Errors of disk operations.

#[derive(Debug, thiserror::Error)]
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
}

impl VdiskError {
    /// The tracking error behind this one, if it is one.
    pub fn tracking(&self) -> Option<&rct::RctError> {
        match self {
            VdiskError::Tracking(e) => Some(e),
            _ => None,
        }
    }
}

pub type Result<T, E = VdiskError> = std::result::Result<T, E>;
