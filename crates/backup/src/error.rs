//! Backup errors.

use std::path::PathBuf;

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
    /// The repository has no such point.
    #[error("repository {} has no point {point}", dir.display())]
    NoPoint { dir: PathBuf, point: u32 },
    #[error("repository {} holds no backup", dir.display())]
    Empty { dir: PathBuf },
    /// A manifest that does not parse, or names files outside its point.
    #[error("{}: invalid manifest: {reason}", path.display())]
    BadManifest { path: PathBuf, reason: String },
    #[error("point {point} has no disk {disk:?}; it has {have:?}")]
    NoDisk {
        point: u32,
        disk: String,
        have: Vec<String>,
    },
    /// The point an incremental builds on does not hash the whole disk.
    #[error("the previous point has {have} hashes for a disk of {blocks} blocks")]
    HashCount { have: usize, blocks: usize },
    /// An instant machine runs on a point of the repository: rewriting its
    /// files would pull the ground from under it.
    #[error("machine {machine} runs on point {point} of {} (instant restore); finish it (refpoint restore --finish {machine}) or discard it first", dir.display())]
    InUse {
        dir: PathBuf,
        machine: String,
        point: u32,
    },
    /// Consolidation must keep at least one point.
    #[error("consolidation must keep at least 1 point")]
    KeepNone,
    #[error("{path}: I/O error while {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;
