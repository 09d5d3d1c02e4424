//! Backup errors.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error(transparent)]
    Disk(#[from] vdisk::VdiskError),
    #[error(transparent)]
    Machine(#[from] machine::MachineError),
    #[error(transparent)]
    Vhdx(#[from] vhdx::Error),
    #[error(transparent)]
    Copy(#[from] vdisk::copy::CopyError),
    #[error("backup repository: {0}")]
    Repository(String),
    #[error("{path}: I/O error while {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;
