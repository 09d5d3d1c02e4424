//! Errors of machine operations. Messages state what failed; the command
//! line adds what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MachineError {
    #[error("no machine named {name:?}")]
    NoMachine { name: String },
    #[error("machine {name} already exists")]
    Exists { name: String },
    /// A machine or disk name outside `[A-Za-z0-9._-]` (not starting with '.').
    #[error("{what} name {name:?} may use letters, digits, '-', '_' and '.' (not first)")]
    BadName { what: &'static str, name: String },
    #[error("disk name {name:?} is used twice")]
    DuplicateDisk { name: String },
    #[error("a machine needs at least one disk")]
    NoDisks,
    #[error("disk {} does not exist", path.display())]
    DiskFileMissing { path: PathBuf },
    #[error("{} is already a disk of machine {machine}", path.display())]
    DiskInUse { path: PathBuf, machine: String },
    #[error("machine {machine} has no disk {disk:?}")]
    NoDisk { machine: String, disk: String },
    #[error("checkpoint {checkpoint} has no disk {disk:?}")]
    NoCheckpointDisk { checkpoint: u64, disk: String },
    #[error("machine {machine} has no checkpoint {id}")]
    NoCheckpoint { machine: String, id: u64 },
    #[error("checkpoint {id} is not the newest of machine {machine}")]
    NotNewest { machine: String, id: u64 },
    #[error("checkpoint {id} of machine {machine} is a standard checkpoint; only recovery checkpoints become reference points")]
    NotRecovery { machine: String, id: u64 },
    #[error("machine {machine} has no reference point {id}")]
    NoReferencePoint { machine: String, id: u64 },
    #[error("machine {name} still has checkpoints")]
    HasCheckpoints { name: String },
    /// The file is the frozen content of a checkpoint (or a machine's base
    /// under one): writing it would change the checkpoint.
    #[error("{} is frozen by a checkpoint of machine {machine}; its writes go to {machine}/{disk} (now {})", path.display(), active.display())]
    Frozen {
        path: PathBuf,
        machine: String,
        disk: String,
        active: PathBuf,
    },
    /// A freeze or thaw command exited unsuccessfully.
    #[error("{what} command `{command}` of machine {machine} failed ({}){}", exit_text(*code), stderr_text(stderr))]
    HookFailed {
        machine: String,
        what: &'static str,
        command: String,
        /// Exit code, `None` when killed by a signal.
        code: Option<i32>,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// A freeze or thaw command still running at its timeout; its process
    /// group was killed.
    #[error("{what} command `{command}` of machine {machine} did not finish within {}; it was killed", seconds_text(*timeout))]
    HookTimedOut {
        machine: String,
        what: &'static str,
        command: String,
        timeout: std::time::Duration,
    },
    /// A machine named twice in one operation on several machines.
    #[error("machine {name} is named twice")]
    DuplicateMachine { name: String },
    #[error("{} is not a valid machine file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A disk the pool holds could not be reopened after a file switch.
    #[error("machine {name} is not an instantly restored machine (nothing to finish or discard)")]
    NotInstant { name: String },
    #[error("machine {name} has checkpoints; an instant machine is finished without any (delete or convert them first)")]
    InstantHasCheckpoints { name: String },
    #[error("{machine}/{disk} is not open (reopening it failed; see the log)")]
    NotOpen { machine: String, disk: String },
    #[error("{}: I/O error while {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Disk(#[from] vdisk::VdiskError),
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".into(),
    }
}

fn seconds_text(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s == s.trunc() {
        format!("{s} s")
    } else {
        format!("{s:.3} s")
    }
}

fn stderr_text(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", s.trim())
    }
}

impl From<vhdx::Error> for MachineError {
    fn from(e: vhdx::Error) -> Self {
        MachineError::Disk(e.into())
    }
}

impl From<rct::RctError> for MachineError {
    fn from(e: rct::RctError) -> Self {
        MachineError::Disk(e.into())
    }
}

impl MachineError {
    /// The tracking error behind this one, if it is one.
    pub fn tracking(&self) -> Option<&rct::RctError> {
        match self {
            MachineError::Disk(d) => d.tracking(),
            _ => None,
        }
    }

    /// Whether the medium ran out of space.
    pub fn is_no_space(&self) -> bool {
        match self {
            MachineError::Disk(d) => d.is_no_space(),
            MachineError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }

    /// Whether the error names something that does not exist (a machine,
    /// disk, checkpoint or reference point).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            MachineError::NoMachine { .. }
                | MachineError::NoDisk { .. }
                | MachineError::NoCheckpoint { .. }
                | MachineError::NoCheckpointDisk { .. }
                | MachineError::NoReferencePoint { .. }
        )
    }

    /// Whether the request itself was wrong (a bad name, an operation the
    /// machine's state does not allow).
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            MachineError::Exists { .. }
                | MachineError::BadName { .. }
                | MachineError::DuplicateDisk { .. }
                | MachineError::DuplicateMachine { .. }
                | MachineError::NoDisks
                | MachineError::DiskFileMissing { .. }
                | MachineError::DiskInUse { .. }
                | MachineError::NotNewest { .. }
                | MachineError::NotRecovery { .. }
                | MachineError::HasCheckpoints { .. }
                | MachineError::NotInstant { .. }
                | MachineError::InstantHasCheckpoints { .. }
                | MachineError::Frozen { .. }
        ) || matches!(
            self,
            MachineError::Disk(vdisk::VdiskError::Vhdx(vhdx::Error::InvalidParameter(_)))
        )
    }

    /// A stable name of the error's kind, for scripts and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            MachineError::NoMachine { .. }
            | MachineError::NoDisk { .. }
            | MachineError::NoCheckpoint { .. }
            | MachineError::NoCheckpointDisk { .. }
            | MachineError::NoReferencePoint { .. } => "not_found",
            MachineError::Frozen { .. } => "frozen",
            MachineError::HookFailed { .. } | MachineError::HookTimedOut { .. } => "hook_failed",
            MachineError::NotOpen { .. } => "unavailable",
            MachineError::Disk(vdisk::VdiskError::Tracking(t)) => t.kind(),
            MachineError::Disk(vdisk::VdiskError::OutOfRange { .. }) => "out_of_range",
            e if e.is_invalid() => "invalid",
            _ => "io",
        }
    }
}

pub type Result<T, E = MachineError> = std::result::Result<T, E>;
