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
    /// A host repository has no such host point.
    #[error("host repository {} has no host point {host_point}", dir.display())]
    NoHostPoint { dir: PathBuf, host_point: u32 },
    /// The host point does not include the machine.
    #[error("host point {host_point} of {} has no machine {machine:?}; it has {have:?}", dir.display())]
    NoHostMachine {
        dir: PathBuf,
        host_point: u32,
        machine: String,
        have: Vec<String>,
    },
    /// A host point record that does not parse or names no plain machine.
    #[error("{}: invalid host point record: {reason}", path.display())]
    BadHostPoint { path: PathBuf, reason: String },
    /// A single-machine backup aimed at a host repository.
    #[error("{} is a host repository (of `refpoint backup --all` or --machine); a single-machine backup of {machine} needs a plain repository", dir.display())]
    IsHostRepo { dir: PathBuf, machine: String },
    /// A host backup aimed at a plain repository.
    #[error("{} is a repository of single-machine backups; a host backup needs a host repository (a new directory)", dir.display())]
    NotHostRepo { dir: PathBuf },
    /// A point asked for as a backup of one machine is another's.
    #[error("point {point} of {} is a backup of machine {of}, not {machine}", dir.display())]
    OtherMachine {
        dir: PathBuf,
        point: u32,
        of: String,
        machine: String,
    },
    /// A restore from a host repository that does not say which machine.
    #[error("{} is a host repository: name the machine to restore (host point {host_point} has {have:?})", dir.display())]
    NeedMachine {
        dir: PathBuf,
        host_point: u32,
        have: Vec<String>,
    },
    /// A host backup of no machine.
    #[error("a host backup needs at least one machine")]
    NoMachines,
    /// One disk file named by two machines of a host backup.
    #[error("disk file {} belongs to machines {first} and {second}", path.display())]
    SharedDisk {
        path: PathBuf,
        first: String,
        second: String,
    },
    #[error("{path}: I/O error while {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;
